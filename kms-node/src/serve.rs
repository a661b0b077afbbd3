//! `kms server`: open the store, make the TLS identity, serve.

use std::sync::Arc;

use hsm_backends::{Hsm, SoftHsm};
use kms_client::ApiKey;

use crate::config::{LogFormat, ServerConfig};
use crate::node::Node;
use crate::store::Store;

/// Reads a variable under its `KMS_*` name or its `MINIO_KMS_*` name.
pub fn env(name: &str) -> Option<String> {
    std::env::var(format!("KMS_{name}"))
        .or_else(|_| std::env::var(format!("MINIO_KMS_{name}")))
        .ok()
        .filter(|v| !v.is_empty())
}

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

/// The configured HSM: `KMS_HSM_KEY`, else the config file's `hsm.key`, else
/// (with `--dev` only) a development key kept next to the data.
pub fn hsm(cfg: &ServerConfig, dev: bool) -> Result<Arc<dyn Hsm>, String> {
    if let Some(k) = env("HSM_KEY").or_else(|| cfg.hsm_key.clone()) {
        return Ok(Arc::new(
            SoftHsm::from_key_str(&k).map_err(|e| e.to_string())?,
        ));
    }
    if !dev {
        return Err("no HSM configured: set KMS_HSM_KEY (generate one with `kms new-hsm-key`), or use --dev".into());
    }
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

/// Runs the server until SIGINT or SIGTERM. Returns an error message for a
/// failed start.
pub async fn run(cfg: ServerConfig, dev: bool) -> Result<(), String> {
    let hsm = hsm(&cfg, dev)?;
    let opened = Store::open(&cfg.data_dir, hsm.as_ref()).map_err(|e| e.to_string())?;
    let created = opened.created;
    let node_id = opened.meta.node_id;
    let listener = tokio::net::TcpListener::bind(cfg.address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.address))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let host = if local.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    let addr = std::net::SocketAddr::new(host, local.port()).to_string();
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
    let tls = crate::tls::server_config(certs, key)?;
    let node = Node::start(opened, hsm.clone(), addr.clone(), cfg.max_request_bytes)?;

    let root = ApiKey::from_seed(
        &*hsm
            .derive(hsm_backends::labels::ROOT_API_KEY)
            .map_err(|e| e.to_string())?,
    );
    println!(
        "kms {} listening on https://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  node id      {node_id}");
    println!("  data dir     {}", cfg.data_dir.display());
    println!("  HSM          {}", hsm.name());
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
        if env("HSM_KEY").is_none() && cfg.hsm_key.is_none() {
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
    tracing::info!(%addr, node_id, created, "serving");
    crate::server::run(listener, tls, node, shutdown_signal()).await;
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
    tracing::info!("shutting down");
}
