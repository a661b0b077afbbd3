//! The admin CLI. Errors print one line, `kms: <what failed>: <why>`, and exit 1.

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use kms_client::tls::Trust;
use kms_client::{proto, ApiKey, Client, ClientConfig, Command, Identity};
use serde_json::json;

use crate::config::env;

#[derive(Parser)]
#[command(
    name = "kms",
    version,
    about = "A clustered key management server, wire-compatible with MinIO's KMS"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Servers, comma-separated (KMS_SERVER; default https://127.0.0.1:7373)
    #[arg(short = 's', long = "server", global = true)]
    server: Option<String>,
    /// API key (KMS_API_KEY)
    #[arg(short = 'a', long = "api-key", global = true)]
    api_key: Option<String>,
    /// Enclave for key, policy and identity commands (KMS_ENCLAVE)
    #[arg(short = 'e', long = "enclave", global = true)]
    enclave: Option<String>,
    /// Skip server certificate checks (KMS_INSECURE=1)
    #[arg(short = 'k', long = "insecure", global = true)]
    insecure: bool,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a KMS server
    Server {
        /// Listen address (default 0.0.0.0:7373; 127.0.0.1:7373 with --dev)
        #[arg(long)]
        addr: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Development mode: make a data dir and an (insecure) HSM key if none are given
        #[arg(long)]
        dev: bool,
        /// Data directory
        dir: Option<PathBuf>,
    },
    /// List the cluster's nodes
    Ls,
    /// Show this node's status
    Stat,
    /// Add a node to the cluster
    Add { url: String },
    /// Remove a node from the cluster
    Rm { url: String },
    /// Force-remove dead nodes from one node's view (NODE: that node's URL)
    Edit {
        node: String,
        #[arg(long = "rm")]
        rm: Vec<u32>,
    },
    /// Write a sealed backup of the whole state to FILE
    Backup { file: PathBuf },
    /// Restore the state from a backup FILE
    Restore { file: PathBuf },
    /// Create an enclave
    AddEnclave { name: String },
    /// Delete an enclave and everything in it
    RmEnclave { name: String },
    /// List enclaves
    LsEnclave { prefix: Option<String> },
    /// Show an enclave
    StatEnclave { name: String },
    /// Create a key, add a version, or import key bytes
    AddKey {
        name: String,
        #[arg(long = "type", default_value = "aes256")]
        key_type: String,
        /// Add a new version to an existing key
        #[arg(long)]
        version: bool,
        /// Import the raw 32 key bytes from FILE (- for stdin)
        #[arg(long)]
        import: Option<PathBuf>,
    },
    /// Delete the latest version of a key, one version, or all
    RmKey {
        name: String,
        #[arg(long, conflicts_with = "all")]
        version: Option<u32>,
        #[arg(long)]
        all: bool,
    },
    /// List keys
    LsKey { prefix: Option<String> },
    /// Show a key
    StatKey { name: String },
    /// Generate a data key
    Keygen {
        name: String,
        #[arg(long, default_value_t = 32)]
        length: u32,
        /// Associated data bound to the ciphertext
        #[arg(long)]
        context: Option<String>,
    },
    /// Encrypt a message (argument or stdin); prints base64
    Encrypt {
        name: String,
        message: Option<String>,
        #[arg(long)]
        context: Option<String>,
    },
    /// Decrypt a base64 ciphertext
    Decrypt {
        name: String,
        ciphertext: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// Compute a MAC of a message
    Mac { name: String, message: String },
    /// Create an identity
    AddIdentity {
        identity: String,
        #[arg(long)]
        admin: bool,
        /// Create a SysAdmin identity (no enclave)
        #[arg(long)]
        sysadmin: bool,
        #[arg(long)]
        policy: Option<String>,
    },
    /// Delete an identity
    RmIdentity { identity: String },
    /// List identities
    LsIdentity { prefix: Option<String> },
    /// Create or replace a policy from a JSON FILE
    AddPolicy { name: String, file: PathBuf },
    /// Assign a policy to a User identity
    SetPolicy { name: String, identity: String },
    /// Delete a policy
    RmPolicy { name: String },
    /// List policies
    LsPolicy { prefix: Option<String> },
    /// Show a policy
    StatPolicy { name: String },
    /// Print the identity of an API key, or the root key derived from the HSM
    Identity {
        api_key: Option<String>,
        #[arg(long)]
        hsm: bool,
    },
    /// List the HSMs that seal the node's state
    LsHsm,
    /// Seal the node's state with another configured HSM (soft, pkcs11 or its name)
    AddHsm {
        name: String,
        /// Replace the HSM's existing entry
        #[arg(long)]
        overwrite: bool,
    },
    /// Remove an HSM's sealed root key
    RmHsm { name: String },
    /// Print a new software HSM key
    NewHsmKey,
    /// Print a new API key and its identity
    NewApiKey,
    /// Load generator
    Bench(crate::bench::BenchArgs),
}

/// The CLI entry point; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            // Usage errors follow the CLI's error convention: one line.
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            eprintln!("kms: {first} (see kms --help)");
            return 2;
        }
        Err(e) => {
            let _ = e.print();
            return 0;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kms: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kms: {}", e.msg);
            e.code
        }
    }
}

/// Builds a client from flags and environment.
pub fn client(g: &Global) -> Result<Client, String> {
    let servers = g
        .server
        .clone()
        .or_else(|| env("SERVER"))
        .unwrap_or_else(|| "https://127.0.0.1:7373".into());
    let endpoints =
        ClientConfig::parse_endpoints(&servers).map_err(|e| format!("KMS_SERVER: {e}"))?;
    let key = g
        .api_key
        .clone()
        .or_else(|| env("API_KEY"))
        .ok_or("no API key: set KMS_API_KEY or pass --api-key")?;
    let api_key = ApiKey::parse(&key).map_err(|e| format!("KMS_API_KEY: {e}"))?;
    let trust = if g.insecure || env("INSECURE").is_some_and(|v| v == "1" || v == "true") {
        Trust::Insecure
    } else if let Some(ca) = env("CA") {
        Trust::from_ca_file(std::path::Path::new(&ca)).map_err(|e| format!("KMS_CA: {e}"))?
    } else {
        Trust::System
    };
    Client::new(ClientConfig {
        endpoints,
        api_key,
        trust,
        timeout: Duration::from_secs(30),
    })
    .map_err(|e| e.to_string())
}

fn enclave(g: &Global) -> Result<String, String> {
    g.enclave
        .clone()
        .or_else(|| env("ENCLAVE"))
        .ok_or_else(|| "no enclave: pass --enclave or set KMS_ENCLAVE".into())
}

fn ts(t: &Option<proto::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds > 0 => {
            let secs = t.seconds;
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        }
        _ => "-".into(),
    }
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn table(rows: Vec<Vec<String>>) {
    let Some(first) = rows.first() else { return };
    let mut widths = vec![0; first.len()];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn with<T>(what: &str, r: Result<T, kms_client::Error>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// A failed command: its message and exit code.
struct Failure {
    msg: String,
    code: i32,
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure { msg, code: 1 }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    match cli.cmd {
        Cmd::Server {
            addr,
            config,
            tls_cert,
            tls_key,
            dev,
            dir,
        } => {
            let cfg = crate::config::ServerConfig::load(
                config.as_deref(),
                crate::config::Overrides {
                    address: addr,
                    data_dir: dir,
                    tls_cert,
                    tls_key,
                    dev,
                },
            )
            .map_err(|e| format!("invalid configuration: {e}"))?;
            crate::serve::init_logging(cfg.log_format, &cfg.log_level);
            crate::serve::run(cfg, dev).await.map_err(|e| match e {
                crate::serve::StartError::Hsm(m) => {
                    tracing::error!(error = %m, "cannot start: HSM");
                    Failure {
                        msg: format!("cannot start: {m}"),
                        code: crate::serve::HSM_EXIT_CODE,
                    }
                }
                crate::serve::StartError::Other(m) => Failure::from(format!("cannot start: {m}")),
            })
        }
        Cmd::NewHsmKey => {
            println!("{}", &*hsm_backends::SoftHsm::generate_key_str());
            Ok(())
        }
        Cmd::NewApiKey => {
            let k = ApiKey::generate();
            if g.json {
                println!(
                    "{}",
                    json!({"api_key": &*k.to_secret_string(), "identity": k.identity().to_string()})
                );
            } else {
                println!("API key:  {}", &*k.to_secret_string());
                println!("Identity: {}", k.identity());
            }
            Ok(())
        }
        Cmd::Identity { api_key, hsm } => {
            let k = if hsm {
                // The same HSM settings as `kms server` (environment only).
                let cfg = crate::config::ServerConfig::load(
                    None,
                    crate::config::Overrides {
                        data_dir: Some(".".into()),
                        ..Default::default()
                    },
                )?;
                let h = crate::serve::hsms_with(&cfg, false, false)?.primary;
                ApiKey::from_seed(
                    &*h.derive(hsm_backends::labels::ROOT_API_KEY)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                let s = api_key
                    .or_else(|| env("API_KEY"))
                    .ok_or_else(|| "give an API key or --hsm".to_string())?;
                ApiKey::parse(&s).map_err(|e| e.to_string())?
            };
            if g.json {
                println!(
                    "{}",
                    json!({"api_key": if hsm { Some(k.to_secret_string().to_string()) } else { None }, "identity": k.identity().to_string()})
                );
            } else {
                if hsm {
                    println!("API key:  {}", &*k.to_secret_string());
                }
                println!("Identity: {}", k.identity());
            }
            Ok(())
        }
        Cmd::Bench(args) => Ok(crate::bench::run(
            client(g)?,
            enclave(g).unwrap_or_else(|_| "bench".into()),
            args,
            g.json,
        )
        .await?),
        other => Ok(admin(g, other).await?),
    }
}

/// CLUSTER:STATUS, for `ls`, `stat` and `ls-hsm`.
async fn cluster_status(c: &Client, what: &str) -> Result<proto::ClusterStatusResponse, String> {
    with(
        what,
        c.call(
            None,
            Command::ClusterStatus,
            &proto::ClusterStatusRequest {},
        )
        .await,
    )
}

async fn admin(g: &Global, cmd: Cmd) -> Result<(), String> {
    let c = client(g)?;
    match cmd {
        Cmd::Stat => {
            let v = with("version", c.version().await)?;
            let r = cluster_status(&c, "cluster status").await?;
            let Some(s) = r.nodes_up.values().find(|s| s.host == v.host) else {
                return Err(format!("stat: no status for node {}", v.host));
            };
            let secs = |d: &Option<prost_types::Duration>| {
                d.as_ref()
                    .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
            };
            if g.json {
                println!(
                    "{}",
                    json!({
                        "id": s.id, "address": s.host, "role": s.role, "leader_id": s.leader_id,
                        "commit": s.commit, "version": s.version, "uptime_s": secs(&s.up_time),
                        "last_heartbeat_s": secs(&s.last_heartbeat),
                        "heartbeat_interval_s": secs(&s.heartbeat_interval),
                        "election_timeout_s": secs(&s.election_timeout),
                        "members": s.nodes, "hsms": s.hsms, "configured_hsms": s.configured_hsms,
                        "nodes_up": r.nodes_up.len(), "nodes_down": r.nodes_down.len(),
                    })
                );
                return Ok(());
            }
            let leader = if s.leader_id < 0 {
                "none known".to_string()
            } else {
                let id = s.leader_id as u32;
                format!("{id} ({})", s.nodes.get(&id).cloned().unwrap_or_default())
            };
            let fmt = |d: Option<f64>| d.map_or("-".into(), |d| format!("{d:.3} s"));
            let rows = [
                ("node", format!("{} ({})", s.id, s.host)),
                ("role", s.role.clone()),
                ("leader", leader),
                ("commit", s.commit.to_string()),
                (
                    "members",
                    format!(
                        "{} ({} up, {} down)",
                        s.nodes.len(),
                        r.nodes_up.len(),
                        r.nodes_down.len()
                    ),
                ),
                ("last heartbeat", fmt(secs(&s.last_heartbeat))),
                ("heartbeat", fmt(secs(&s.heartbeat_interval))),
                ("election timeout", fmt(secs(&s.election_timeout))),
                ("uptime", fmt(secs(&s.up_time))),
                ("version", s.version.clone()),
                ("HSMs", s.configured_hsms.join(", ")),
            ];
            for (k, v) in rows {
                println!("{k:<17} {v}");
            }
            Ok(())
        }
        Cmd::Ls => {
            let r = cluster_status(&c, "cluster status").await?;
            let mut ids: Vec<u32> = r
                .nodes_up
                .keys()
                .chain(r.nodes_down.keys())
                .copied()
                .collect();
            ids.sort();
            if g.json {
                let nodes: Vec<_> = ids
                    .iter()
                    .map(|id| match r.nodes_up.get(id) {
                        Some(s) => json!({"id": id, "address": s.host, "role": s.role, "up": true, "commit": s.commit}),
                        None => json!({"id": id, "address": r.nodes_down[id], "role": "", "up": false}),
                    })
                    .collect();
                println!("{}", json!({ "nodes": nodes }));
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".into(),
                "ADDRESS".into(),
                "ROLE".into(),
                "STATE".into(),
                "COMMIT".into(),
            ]];
            for id in ids {
                match r.nodes_up.get(&id) {
                    Some(s) => rows.push(vec![
                        id.to_string(),
                        s.host.clone(),
                        s.role.clone(),
                        "up".into(),
                        s.commit.to_string(),
                    ]),
                    None => rows.push(vec![
                        id.to_string(),
                        r.nodes_down[&id].clone(),
                        "-".into(),
                        "down".into(),
                        "-".into(),
                    ]),
                }
            }
            table(rows);
            Ok(())
        }
        Cmd::Add { url } => {
            let req = proto::AddClusterNodeRequest { host: url.clone() };
            with(
                &format!("add {url}"),
                c.exec(None, Command::ClusterAddNode, &req).await,
            )
        }
        Cmd::Rm { url } => {
            let req = proto::RemoveClusterNodeRequest {
                host: url.clone(),
                delete_cluster_on_host: false,
            };
            with(
                &format!("rm {url}"),
                c.exec(None, Command::ClusterRemoveNode, &req).await,
            )
        }
        Cmd::Edit { node, rm } => {
            // The override applies to NODE's own view: send it there, nowhere else.
            let mut at = g.clone();
            at.server = Some(node.clone());
            let c = client(&at)?;
            let req = proto::EditClusterRequest {
                host: node.clone(),
                remove_ids: rm,
            };
            with(
                &format!("edit {node}"),
                c.exec(None, Command::ClusterEdit, &req).await,
            )
        }
        Cmd::LsHsm => {
            let r = cluster_status(&c, "ls-hsm").await?;
            let mut rows = vec![vec!["NODE".into(), "HSM".into(), "STATE".into()]];
            let mut json_rows = Vec::new();
            for s in r.nodes_up.values() {
                let mut names: Vec<&String> = s.hsms.iter().chain(&s.configured_hsms).collect();
                names.sort();
                names.dedup();
                for h in names {
                    let (seals, conf) = (s.hsms.contains(h), s.configured_hsms.contains(h));
                    let state = match (seals, conf) {
                        (true, true) => "seals, configured",
                        (true, false) => "seals, not configured",
                        _ => "configured, does not seal (kms add-hsm)",
                    };
                    let primary = s.configured_hsms.first() == Some(h);
                    rows.push(vec![
                        s.id.to_string(),
                        h.clone(),
                        format!("{state}{}", if primary { ", primary" } else { "" }),
                    ]);
                    json_rows.push(json!({"node": s.id, "hsm": h, "seals": seals, "configured": conf, "primary": primary}));
                }
            }
            if g.json {
                println!("{}", json!(json_rows));
            } else {
                table(rows);
            }
            Ok(())
        }
        Cmd::AddHsm { name, overwrite } => {
            let req = proto::AddHsmRequest {
                name: name.clone(),
                overwrite,
            };
            with(
                &format!("add-hsm {name}"),
                c.exec(None, Command::ClusterAddHsm, &req).await,
            )
        }
        Cmd::RmHsm { name } => {
            let req = proto::RemoveHsmRequest { name: name.clone() };
            with(
                &format!("rm-hsm {name}"),
                c.exec(None, Command::ClusterRemoveHsm, &req).await,
            )
        }
        Cmd::Backup { file } => {
            let r = with("backup", c.request(http::Method::GET, "/v1/db", None).await)?;
            let body = with("backup", kms_client::client::check(r))?;
            std::fs::write(&file, &body)
                .map_err(|e| format!("backup: cannot write {}: {e}", file.display()))?;
            println!(
                "Wrote a sealed backup of {} bytes to {}",
                body.len(),
                file.display()
            );
            Ok(())
        }
        Cmd::Restore { file } => {
            let body = std::fs::read(&file)
                .map_err(|e| format!("restore: cannot read {}: {e}", file.display()))?;
            let r = with(
                "restore",
                c.request(http::Method::PUT, "/v1/db", Some(body.into()))
                    .await,
            )?;
            with("restore", kms_client::client::check(r))?;
            println!("Restored the state from {}", file.display());
            Ok(())
        }
        Cmd::AddEnclave { name } => with(
            &format!("add-enclave {name}"),
            c.create_enclave(&name).await,
        ),
        Cmd::RmEnclave { name } => with(
            &format!("rm-enclave {name}"),
            c.exec(
                None,
                Command::EnclaveDelete,
                &proto::EnclaveRequest { name: name.clone() },
            )
            .await,
        ),
        Cmd::StatEnclave { name } => {
            let r: proto::EnclaveStatusResponse = with(
                &format!("stat-enclave {name}"),
                c.call(
                    None,
                    Command::EnclaveStatus,
                    &proto::EnclaveRequest { name: name.clone() },
                )
                .await,
            )?;
            if g.json {
                println!(
                    "{}",
                    json!({"name": r.name, "created_at": ts(&r.created_at), "created_by": r.created_by})
                );
            } else {
                table(vec![
                    vec!["Name".into(), r.name],
                    vec!["Created".into(), ts(&r.created_at)],
                    vec!["Created by".into(), r.created_by],
                ]);
            }
            Ok(())
        }
        Cmd::LsEnclave { prefix } => {
            let mut all = Vec::new();
            let mut continue_at = String::new();
            loop {
                let req = proto::ListRequest {
                    prefix: prefix.clone().unwrap_or_default(),
                    continue_at,
                    limit: 0,
                };
                let page: proto::ListEnclavesResponse =
                    with("ls-enclave", c.call(None, Command::EnclaveList, &req).await)?;
                all.extend(page.enclaves);
                if page.continue_at.is_empty() {
                    break;
                }
                continue_at = page.continue_at;
            }
            if g.json {
                let v: Vec<_> = all.iter().map(|e| json!({"name": e.name, "created_at": ts(&e.created_at), "created_by": e.created_by})).collect();
                println!("{}", json!(v));
            } else {
                let mut rows = vec![vec!["NAME".into(), "CREATED".into(), "CREATED BY".into()]];
                rows.extend(
                    all.into_iter()
                        .map(|e| vec![e.name.clone(), ts(&e.created_at), e.created_by]),
                );
                table(rows);
            }
            Ok(())
        }
        Cmd::AddKey {
            name,
            key_type,
            version,
            import,
        } => {
            let e = enclave(g)?;
            let what = format!("add-key {name}");
            if let Some(path) = import {
                let bytes = zeroize::Zeroizing::new(if path.as_os_str() == "-" {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                        .map_err(|e| format!("{what}: reading stdin: {e}"))?;
                    b
                } else {
                    std::fs::read(&path)
                        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?
                });
                let req = proto::ImportKeyRequest {
                    name: name.clone(),
                    r#type: key_type,
                    key: bytes.to_vec(),
                };
                return with(&what, c.exec(Some(&e), Command::KeyImport, &req).await);
            }
            with(&what, c.create_key(&e, &name, &key_type, version).await)
        }
        Cmd::RmKey { name, version, all } => {
            let e = enclave(g)?;
            let req = proto::DeleteKeyRequest {
                name: name.clone(),
                version: version.unwrap_or(0),
                all_versions: all,
            };
            with(
                &format!("rm-key {name}"),
                c.exec(Some(&e), Command::KeyDelete, &req).await,
            )
        }
        Cmd::StatKey { name } => {
            let e = enclave(g)?;
            let r = with(&format!("stat-key {name}"), c.key_status(&e, &name).await)?;
            if g.json {
                println!(
                    "{}",
                    json!({"name": r.name, "version": r.version, "type": r.r#type, "created_at": ts(&r.created_at), "created_by": r.created_by})
                );
            } else {
                table(vec![
                    vec!["Name".into(), r.name],
                    vec!["Version".into(), r.version.to_string()],
                    vec!["Type".into(), r.r#type],
                    vec!["Created".into(), ts(&r.created_at)],
                    vec!["Created by".into(), r.created_by],
                ]);
            }
            Ok(())
        }
        Cmd::LsKey { prefix } => {
            let e = enclave(g)?;
            let keys = with(
                "ls-key",
                c.list_keys(&e, prefix.as_deref().unwrap_or("")).await,
            )?;
            if g.json {
                let v: Vec<_> = keys.iter().map(|k| json!({"name": k.name, "version": k.version, "type": k.r#type, "created_at": ts(&k.created_at), "created_by": k.created_by})).collect();
                println!("{}", json!(v));
            } else {
                let mut rows = vec![vec![
                    "NAME".into(),
                    "VERSION".into(),
                    "TYPE".into(),
                    "CREATED".into(),
                ]];
                rows.extend(keys.into_iter().map(|k| {
                    vec![
                        k.name.clone(),
                        k.version.to_string(),
                        k.r#type.clone(),
                        ts(&k.created_at),
                    ]
                }));
                table(rows);
            }
            Ok(())
        }
        Cmd::Keygen {
            name,
            length,
            context,
        } => {
            let e = enclave(g)?;
            let r = with(
                &format!("keygen {name}"),
                c.generate(&e, &name, context.unwrap_or_default().as_bytes(), length)
                    .await,
            )?;
            let pt = zeroize::Zeroizing::new(r.plaintext);
            if g.json {
                println!(
                    "{}",
                    json!({"version": r.version, "plaintext": B64.encode(&*pt), "ciphertext": B64.encode(&r.ciphertext)})
                );
            } else {
                println!("Version:    {}", r.version);
                println!("Plaintext:  {}", B64.encode(&*pt));
                println!("Ciphertext: {}", B64.encode(&r.ciphertext));
            }
            Ok(())
        }
        Cmd::Encrypt {
            name,
            message,
            context,
        } => {
            let e = enclave(g)?;
            let msg = match message {
                Some(m) => m.into_bytes(),
                None => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                        .map_err(|e| format!("encrypt: reading stdin: {e}"))?;
                    b
                }
            };
            let r = with(
                &format!("encrypt {name}"),
                c.encrypt(&e, &name, &msg, context.unwrap_or_default().as_bytes())
                    .await,
            )?;
            if g.json {
                println!(
                    "{}",
                    json!({"version": r.version, "ciphertext": B64.encode(&r.ciphertext)})
                );
            } else {
                println!("{}", B64.encode(&r.ciphertext));
            }
            Ok(())
        }
        Cmd::Decrypt {
            name,
            ciphertext,
            context,
        } => {
            let e = enclave(g)?;
            let ct = B64
                .decode(ciphertext.trim())
                .map_err(|_| "decrypt: the ciphertext is not valid base64".to_string())?;
            let r = with(
                &format!("decrypt {name}"),
                c.decrypt(&e, &name, &ct, context.unwrap_or_default().as_bytes())
                    .await,
            )?;
            let pt = zeroize::Zeroizing::new(r.plaintext);
            if g.json {
                println!("{}", json!({"plaintext": B64.encode(&*pt)}));
            } else {
                match std::str::from_utf8(&pt) {
                    Ok(s) => println!("{s}"),
                    Err(_) => println!("{}", B64.encode(&*pt)),
                }
            }
            Ok(())
        }
        Cmd::Mac { name, message } => {
            let e = enclave(g)?;
            let req = proto::MacRequest {
                name: name.clone(),
                version: 0,
                message: message.into_bytes(),
            };
            let r: proto::MacResponse = with(
                &format!("mac {name}"),
                c.call(Some(&e), Command::KeyMac, &req).await,
            )?;
            if g.json {
                println!(
                    "{}",
                    json!({"version": r.version, "mac": B64.encode(&r.mac)})
                );
            } else {
                println!("{}", B64.encode(&r.mac));
            }
            Ok(())
        }
        Cmd::AddIdentity {
            identity,
            admin,
            sysadmin,
            policy,
        } => {
            let what = format!("add-identity {identity}");
            Identity::parse(&identity).map_err(|e| format!("{what}: {e}"))?;
            let (privilege, enc) = if sysadmin {
                ("SysAdmin", None)
            } else {
                (if admin { "Admin" } else { "User" }, Some(enclave(g)?))
            };
            let req = proto::CreateIdentityRequest {
                identity: identity.clone(),
                privilege: privilege.into(),
                ..Default::default()
            };
            with(
                &what,
                c.exec(enc.as_deref(), Command::IdentityCreate, &req).await,
            )?;
            if let (Some(p), Some(e)) = (policy, enc) {
                let req = proto::AssignPolicyRequest {
                    identity,
                    policy: p,
                };
                with(&what, c.exec(Some(&e), Command::PolicyAssign, &req).await)?;
            }
            Ok(())
        }
        Cmd::RmIdentity { identity } => {
            let e = g.enclave.clone().or_else(|| env("ENCLAVE"));
            let req = proto::IdentityRequest {
                identity: identity.clone(),
            };
            with(
                &format!("rm-identity {identity}"),
                c.exec(e.as_deref(), Command::IdentityDelete, &req).await,
            )
        }
        Cmd::LsIdentity { prefix } => {
            let e = g.enclave.clone().or_else(|| env("ENCLAVE"));
            let mut r = proto::ListIdentitiesResponse::default();
            loop {
                let req = proto::ListRequest {
                    prefix: prefix.clone().unwrap_or_default(),
                    continue_at: r.continue_at.clone(),
                    limit: 0,
                };
                let page: proto::ListIdentitiesResponse = with(
                    "ls-identity",
                    c.call(e.as_deref(), Command::IdentityList, &req).await,
                )?;
                r.identities.extend(page.identities);
                r.continue_at = page.continue_at;
                if r.continue_at.is_empty() {
                    break;
                }
            }
            let priv_name = |p: u32| match p {
                1 => "SysAdmin",
                2 => "Admin",
                _ => "User",
            };
            if g.json {
                let v: Vec<_> = r.identities.iter().map(|i| json!({"identity": i.identity, "privilege": priv_name(i.privilege), "policy": i.policy, "created_at": ts(&i.created_at)})).collect();
                println!("{}", json!(v));
            } else {
                let mut rows = vec![vec![
                    "IDENTITY".into(),
                    "PRIVILEGE".into(),
                    "POLICY".into(),
                    "CREATED".into(),
                ]];
                rows.extend(r.identities.into_iter().map(|i| {
                    vec![
                        i.identity.clone(),
                        priv_name(i.privilege).into(),
                        i.policy.clone(),
                        ts(&i.created_at),
                    ]
                }));
                table(rows);
            }
            Ok(())
        }
        Cmd::AddPolicy { name, file } => {
            let e = enclave(g)?;
            let what = format!("add-policy {name}");
            let text = std::fs::read(&file)
                .map_err(|err| format!("{what}: cannot read {}: {err}", file.display()))?;
            let p =
                crate::policy::Policy::from_json(&text).map_err(|err| format!("{what}: {err}"))?;
            let req = proto::CreatePolicyRequest {
                name: name.clone(),
                allow: crate::policy::Policy::to_proto_rules(&p.allow),
                deny: crate::policy::Policy::to_proto_rules(&p.deny),
            };
            with(&what, c.exec(Some(&e), Command::PolicyCreate, &req).await)
        }
        Cmd::SetPolicy { name, identity } => {
            let e = enclave(g)?;
            let req = proto::AssignPolicyRequest {
                identity: identity.clone(),
                policy: name.clone(),
            };
            with(
                &format!("set-policy {name}"),
                c.exec(Some(&e), Command::PolicyAssign, &req).await,
            )
        }
        Cmd::RmPolicy { name } => {
            let e = enclave(g)?;
            with(
                &format!("rm-policy {name}"),
                c.exec(
                    Some(&e),
                    Command::PolicyDelete,
                    &proto::PolicyRequest { name: name.clone() },
                )
                .await,
            )
        }
        Cmd::StatPolicy { name } => {
            let e = enclave(g)?;
            let r: proto::PolicyResponse = with(
                &format!("stat-policy {name}"),
                c.call(
                    Some(&e),
                    Command::PolicyGet,
                    &proto::PolicyRequest { name: name.clone() },
                )
                .await,
            )?;
            let rules = |m: &std::collections::HashMap<String, proto::RuleSet>| {
                let mut o = serde_json::Map::new();
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let mut pats: Vec<_> = m[k].rules.keys().cloned().collect();
                    pats.sort();
                    o.insert(k.clone(), json!(pats));
                }
                serde_json::Value::Object(o)
            };
            let v = json!({"name": r.name, "allow": rules(&r.allow), "deny": rules(&r.deny), "created_at": ts(&r.created_at), "created_by": r.created_by});
            println!(
                "{}",
                if g.json {
                    v.to_string()
                } else {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                }
            );
            Ok(())
        }
        Cmd::LsPolicy { prefix } => {
            let e = enclave(g)?;
            let mut r = proto::ListPoliciesResponse::default();
            loop {
                let req = proto::ListRequest {
                    prefix: prefix.clone().unwrap_or_default(),
                    continue_at: r.continue_at.clone(),
                    limit: 0,
                };
                let page: proto::ListPoliciesResponse = with(
                    "ls-policy",
                    c.call(Some(&e), Command::PolicyList, &req).await,
                )?;
                r.policies.extend(page.policies);
                r.continue_at = page.continue_at;
                if r.continue_at.is_empty() {
                    break;
                }
            }
            if g.json {
                let v: Vec<_> = r.policies.iter().map(|p| json!({"name": p.name, "created_at": ts(&p.created_at), "created_by": p.created_by})).collect();
                println!("{}", json!(v));
            } else {
                let mut rows = vec![vec!["NAME".into(), "CREATED".into(), "CREATED BY".into()]];
                rows.extend(
                    r.policies
                        .into_iter()
                        .map(|p| vec![p.name.clone(), ts(&p.created_at), p.created_by]),
                );
                table(rows);
            }
            Ok(())
        }
        Cmd::Server { .. }
        | Cmd::NewHsmKey
        | Cmd::NewApiKey
        | Cmd::Identity { .. }
        | Cmd::Bench(_) => unreachable!("handled in run"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_000), (2024, 10, 4));
    }
}
