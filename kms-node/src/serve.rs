//! `kms server`: open the store, make the TLS identity, serve.

use std::sync::Arc;
use std::time::Duration;

use hsm_backends::{Hsm, Pkcs11Config, Pkcs11Hsm, SoftHsm};
use kms_client::ApiKey;

use crate::config::{LogFormat, ServerConfig};
use crate::node::Node;
use crate::store::Store;

use crate::config::env;
use hsm_backends::Hsms;

pub fn init_logging(format: LogFormat, level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok());
    let filter = filter.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Why the HSMs could not be set up. Exits with [`HSM_EXIT_CODE`].
pub const HSM_EXIT_CODE: i32 = 3;

/// The configured HSMs: the software HSM (`KMS_HSM_KEY`, else `hsm.key`) and
/// the PKCS#11 HSM (`KMS_HSM_PKCS11_*`, else `[hsm.pkcs11]`); with `--dev`
/// and neither, a development key kept next to the data.
pub fn hsms(cfg: &ServerConfig, dev: bool) -> Result<Hsms, String> {
    hsms_with(cfg, dev, true)
}

/// [`hsms`], optionally never creating a missing PKCS#11 key (`kms identity`).
pub fn hsms_with(cfg: &ServerConfig, dev: bool, allow_generate: bool) -> Result<Hsms, String> {
    let file = cfg.hsm_pkcs11.clone().unwrap_or_default();
    // A PIN given in the environment (either form) wins over the file's.
    let env_pin = env("HSM_PKCS11_PIN").is_some() || env("HSM_PKCS11_PIN_FILE").is_some();
    let lookup = |name: &str| -> Option<String> {
        env(name.trim_start_matches("KMS_")).or_else(|| match name {
            "KMS_HSM_PKCS11_MODULE" => file.module.clone(),
            "KMS_HSM_PKCS11_TOKEN" => file.token.clone(),
            "KMS_HSM_PKCS11_PIN" if !env_pin => file.pin.clone(),
            "KMS_HSM_PKCS11_PIN_FILE" if !env_pin => file.pin_file.clone(),
            "KMS_HSM_PKCS11_KEY" => file.key.clone(),
            "KMS_HSM_PKCS11_GENERATE_KEY" => {
                file.generate_key
                    .map(|b| if b { "1".into() } else { "0".into() })
            }
            _ => None,
        })
    };
    let pkcs11: Option<Arc<dyn Hsm>> =
        match Pkcs11Config::from_lookup(lookup).map_err(|e| e.to_string())? {
            Some(mut c) => {
                c.generate_key &= allow_generate;
                Some(Arc::new(Pkcs11Hsm::open(c).map_err(|e| e.to_string())?))
            }
            None => None,
        };
    let soft: Option<Arc<dyn Hsm>> = match env("HSM_KEY").or_else(|| cfg.hsm_key.clone()) {
        Some(k) => Some(Arc::new(
            SoftHsm::from_key_str(&k).map_err(|e| e.to_string())?,
        )),
        None if dev && pkcs11.is_none() => Some(dev_hsm(cfg)?),
        None => None,
    };
    let primary = match (env("HSM_PRIMARY").or_else(|| cfg.hsm_primary.clone()).as_deref(), &soft, &pkcs11) {
        (None, Some(s), None) | (Some("soft"), Some(s), _) => s.clone(),
        (None, None, Some(p)) | (Some("pkcs11"), _, Some(p)) => p.clone(),
        (None, None, None) => {
            return Err("no HSM configured: set KMS_HSM_KEY (generate one with `kms new-hsm-key`), or the KMS_HSM_PKCS11_* settings, or use --dev".into())
        }
        (None, Some(_), Some(_)) => {
            return Err("two HSMs are configured: set KMS_HSM_PRIMARY (or hsm.primary) to soft or pkcs11, the one that roots the root API key and inter-node trust".into())
        }
        (Some(p @ ("soft" | "pkcs11")), _, _) => return Err(format!("KMS_HSM_PRIMARY: {p} is not configured")),
        (Some(p), _, _) => return Err(format!("KMS_HSM_PRIMARY: '{p}' is not soft or pkcs11")),
    };
    let mut all = vec![primary.clone()];
    all.extend(
        soft.into_iter()
            .chain(pkcs11)
            .filter(|h| h.name() != primary.name()),
    );
    Ok(Hsms { all, primary })
}

fn dev_hsm(cfg: &ServerConfig) -> Result<Arc<dyn Hsm>, String> {
    let path = cfg.data_dir.join("dev-hsm-key.INSECURE");
    let key = match std::fs::read_to_string(&path) {
        Ok(k) => zeroize::Zeroizing::new(k),
        Err(_) if cfg.data_dir.join("db").join("CURRENT").exists() => {
            return Err(format!(
                "{} holds a store but no development HSM key: set KMS_HSM_KEY to the key it was created with",
                cfg.data_dir.display()
            ))
        }
        Err(_) => {
            std::fs::create_dir_all(&cfg.data_dir).map_err(|e| format!("cannot create {}: {e}", cfg.data_dir.display()))?;
            let k = SoftHsm::generate_key_str();
            write_private(&path, k.as_bytes())?;
            zeroize::Zeroizing::new(k.to_string())
        }
    };
    Ok(Arc::new(
        SoftHsm::from_key_str(&key).map_err(|e| format!("{}: {e}", path.display()))?,
    ))
}

fn write_private(path: &std::path::Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Why `kms server` could not start.
#[derive(Debug)]
pub enum StartError {
    /// The HSM is misconfigured, unreachable, or cannot unseal the data
    /// directory. Nothing on disk was changed. Exit code [`HSM_EXIT_CODE`]:
    /// restarting will not help until the setting is fixed.
    Hsm(String),
    Other(String),
}

impl From<String> for StartError {
    fn from(s: String) -> Self {
        StartError::Other(s)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Hsm(m) | StartError::Other(m) => f.write_str(m),
        }
    }
}

/// Runs the server until SIGINT or SIGTERM. Returns an error message for a
/// failed start.
pub async fn run(cfg: ServerConfig, dev: bool) -> Result<(), StartError> {
    // SIGHUP reloads the TLS certificate; its default action would end the
    // process, so take it over before anything else.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let hsms = hsms(&cfg, dev).map_err(StartError::Hsm)?;
    let hsm = hsms.primary.clone();
    let opened = Store::open(&cfg.data_dir, &hsms.all).map_err(|e| match e {
        crate::store::StoreError::Sealed(m) => StartError::Hsm(m),
        e => StartError::Other(e.to_string()),
    })?;
    let created = opened.created;
    let node_id = opened.meta.node_id;
    if let Some(why) = opened.store.removed().map_err(|e| e.to_string())? {
        return Err(StartError::Other(format!(
            "{why} (data directory {})",
            cfg.data_dir.display()
        )));
    }
    raise_fd_limit(cfg.limits.max_connections);
    let listener = tokio::net::TcpListener::bind(cfg.address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.address))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let host = if local.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    // The address the node records for itself in the membership at its
    // first start: --advertise; else the listen address; on a wildcard
    // listener the machine's hostname when it resolves (what other nodes can
    // reach; 127.0.0.1 would make a cluster impossible), else 127.0.0.1.
    let addr = cfg.advertise.clone().unwrap_or_else(|| {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let named = format!("{hostname}:{}", local.port());
        let resolves = || {
            use std::net::ToSocketAddrs;
            named
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some())
        };
        if local.ip().is_unspecified() && !hostname.is_empty() && resolves() {
            named
        } else {
            std::net::SocketAddr::new(host, local.port()).to_string()
        }
    });
    let host = host.to_string();
    let (certs, key, cert_path) = match &cfg.tls {
        Some((c, k)) => {
            let (certs, key) = crate::tls::load_pem(c, k)?;
            (certs, key, c.clone())
        }
        None => {
            let mut names = vec![local.ip().to_string(), host.clone()];
            if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                names.push(h.trim().to_string());
            }
            crate::tls::self_signed(&opened.store, &names)?
        }
    };
    let tls = Arc::new(crate::tls::ApiTls::new(certs, key, cfg.tls.clone())?);
    if tls.not_after() <= crate::model::Time::now().secs {
        tracing::warn!(
            certificate = %cert_path.display(),
            "the TLS certificate has expired: clients that verify it refuse to connect; \
             replace the files and send SIGHUP"
        );
    }
    let root = ApiKey::from_seed(&*hsm.derive(hsm_backends::labels::ROOT_API_KEY).map_err(
        |e| {
            StartError::Hsm(format!(
                "cannot derive the root API key from HSM {}: {e}",
                hsm.name()
            ))
        },
    )?);
    let cluster_tls =
        crate::replication::tls::ClusterTls::from_hsm(hsm.as_ref()).map_err(StartError::Hsm)?;
    let node = Node::start(
        opened,
        &hsms,
        root.identity(),
        addr.clone(),
        (cfg.max_request_bytes, cfg.limits.body_timeout),
        cfg.timing,
        cluster_tls.client.clone(),
    )?;
    println!(
        "kms {} listening on https://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  node id      {node_id}");
    println!("  data dir     {}", cfg.data_dir.display());
    println!(
        "  HSM          {} (roots trust){}",
        hsm.name(),
        hsms.all
            .iter()
            .skip(1)
            .map(|h| format!(", {}", h.name()))
            .collect::<String>()
    );
    println!(
        "  certificate  {}{}",
        cert_path.display(),
        if cfg.tls.is_none() {
            " (self-signed)"
        } else {
            ""
        }
    );
    println!("  root identity {}", root.identity());
    if created || dev {
        println!("  root API key  {}", &*root.to_secret_string());
    } else {
        println!("  root API key  (kms identity --hsm prints it)");
    }
    if dev {
        println!();
        if hsm.name().starts_with("soft:") && env("HSM_KEY").is_none() && cfg.hsm_key.is_none() {
            println!(
                "  DEVELOPMENT MODE: INSECURE. The HSM key is stored in plaintext in the data dir."
            );
        } else {
            println!("  DEVELOPMENT MODE: the address defaults to loopback.");
        }
        println!("  Try:");
        println!(
            "    export KMS_SERVER=https://{addr} KMS_INSECURE=1 KMS_API_KEY={}",
            &*root.to_secret_string()
        );
        println!("    kms ls");
        println!("    kms add-enclave enclave-1");
        println!("    kms add-key --enclave enclave-1 key-1");
        println!("    kms keygen --enclave enclave-1 key-1");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    node.metrics.set_certificate_expiry("api", tls.not_after());
    node.metrics
        .set_certificate_expiry("cluster", cluster_tls.not_after);
    spawn_tls_reload(tls.clone(), node.clone(), hup);
    spawn_hsm_checks(node.clone());
    tracing::info!(%addr, node_id, created, "serving");
    crate::notify::notify(&format!("READY=1\nSTATUS=serving on https://{addr}"));
    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tick.tick().await;
                crate::notify::notify("WATCHDOG=1");
            }
        });
    }
    crate::server::run(
        listener,
        tls,
        cluster_tls.server.clone(),
        node.clone(),
        (cfg.limits, cfg.metrics_public),
        shutdown_signal(),
    )
    .await;
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    crate::notify::notify("STOPPING=1");
    tracing::info!("shutting down");
}

/// How often the API certificate files are checked for a change.
const TLS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Reloads the API certificate on SIGHUP and when its files change.
fn spawn_tls_reload(
    tls: Arc<crate::tls::ApiTls>,
    node: Arc<Node>,
    mut hup: tokio::signal::unix::Signal,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TLS_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let signalled = tokio::select! {
                _ = hup.recv() => true,
                _ = tick.tick() => false,
            };
            let Some((cert, _)) = tls.files().cloned() else {
                if signalled {
                    tracing::info!(
                        "SIGHUP: this node uses its self-signed certificate; nothing to reload"
                    );
                }
                continue;
            };
            let t = tls.clone();
            let done = tokio::task::spawn_blocking(move || t.reload())
                .await
                .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
            match done {
                Ok(Some(not_after)) => {
                    node.metrics.record_tls_reload(true);
                    node.metrics.set_certificate_expiry("api", not_after);
                    tracing::info!(
                        certificate = %cert.display(),
                        not_after,
                        "TLS certificate reloaded: new connections use it"
                    );
                }
                Ok(None) if signalled => tracing::info!(
                    certificate = %cert.display(),
                    "SIGHUP: the TLS certificate files are unchanged"
                ),
                Ok(None) => {}
                Err(e) => {
                    node.metrics.record_tls_reload(false);
                    tracing::error!(
                        error = %e,
                        "TLS certificate reload refused: the current certificate stays in use"
                    );
                }
            }
        }
    });
}

/// A check of an HSM that takes longer than this counts as a failure.
const HSM_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const HSM_CHECK_CONTEXT: &[u8] = b"kms/v1/hsm-check";

/// Checks every configured HSM every `KMS_HSM_CHECK_SECS` seconds (default
/// 30; 0: never) by sealing and unsealing a random value, so that a failing
/// device shows (`kms_hsm_up`, `kms_hsm_errors_total`, a log line) while the
/// node still runs on its unsealed root key, not at the next restart.
fn spawn_hsm_checks(node: Arc<Node>) {
    for h in &node.configured {
        // They just unsealed the store.
        node.metrics.record_hsm(&h.name(), true);
    }
    let every = env("HSM_CHECK_SECS")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(30);
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing: Vec<String> = Vec::new();
        // A check still running (a hung device) is not started again.
        let busy: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        loop {
            tick.tick().await;
            for h in node.configured.clone() {
                let name = h.name();
                let result = if busy.lock().contains(&name) {
                    Err("the previous check has not returned".to_string())
                } else {
                    busy.lock().push(name.clone());
                    let (b, n) = (busy.clone(), name.clone());
                    let check = tokio::task::spawn_blocking(move || {
                        let r = check_hsm(h.as_ref());
                        b.lock().retain(|x| *x != n);
                        r
                    });
                    match tokio::time::timeout(HSM_CHECK_TIMEOUT, check).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => Err(format!("the check failed: {e}")),
                        Err(_) => Err(format!("no answer within {HSM_CHECK_TIMEOUT:?}")),
                    }
                };
                node.metrics.record_hsm(&name, result.is_ok());
                let was_failing = failing.contains(&name);
                match result {
                    Err(e) => {
                        tracing::error!(
                            hsm = %name,
                            error = %e,
                            "HSM check failed: the node runs on its unsealed root key, but \
                             a restart cannot unseal it while the HSM fails"
                        );
                        if !was_failing {
                            failing.push(name);
                        }
                    }
                    Ok(()) if was_failing => {
                        tracing::info!(hsm = %name, "HSM check succeeds again");
                        failing.retain(|x| *x != name);
                    }
                    Ok(()) => {}
                }
            }
        }
    });
}

/// Seals a random value and unseals it again.
fn check_hsm(h: &dyn Hsm) -> Result<(), String> {
    use rand::RngCore;
    let mut probe = zeroize::Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(&mut *probe);
    let sealed = h
        .seal(&*probe, HSM_CHECK_CONTEXT)
        .map_err(|e| format!("seal: {e}"))?;
    let back = h
        .unseal(&sealed, HSM_CHECK_CONTEXT)
        .map_err(|e| format!("unseal: {e}"))?;
    if back.as_slice() != probe.as_slice() {
        return Err("the HSM unsealed a different value".into());
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit, so that
/// `limits.max_connections` connections fit; warns if they cannot.
fn raise_fd_limit(connections: usize) {
    // Connections, plus files for RocksDB and the node's own sockets.
    let need = connections as u64 + 1024;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n >= need => {}
        Ok(n) => tracing::warn!(
            open_files = n,
            max_connections = connections,
            "the open-file limit is below limits.max_connections + 1024; raise it \
             (LimitNOFILE= in systemd, ulimit -n) or lower max_connections"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}
