//! The admin CLI: clap definitions, `main`, and dispatch to one file per
//! command family. Every request is a typed method of [`kms_client::Client`];
//! every line of output goes through [`output`]. Errors print one line,
//! `kms: <what failed>: <why>`, and exit 1.
//!
//! - `cluster.rs`: `ls`, `stat`, `add`, `rm`, `edit`, `backup`, `restore`
//! - `hsm.rs`: `ls-hsm`, `add-hsm`, `rm-hsm`
//! - `enclave.rs`: `add-enclave`, `rm-enclave`, `ls-enclave`, `stat-enclave`
//! - `key.rs`: `add-key`, `rm-key`, `ls-key`, `stat-key`, `keygen`, `encrypt`,
//!   `decrypt`, `mac`
//! - `identity.rs`: `add-identity`, `rm-identity`, `ls-identity`
//! - `audit.rs`: `audit`, `whoami`
//! - `console.rs`: `console` (the web console of the `kms-console` crate)
//! - `policy.rs`: `add-policy`, `set-policy`, `rm-policy`, `ls-policy`, `stat-policy`
//! - `local.rs`: the commands that need no server: `server`, `new-hsm-key`,
//!   `new-api-key`, `identity`
//! - `docs.rs`: `completions` and `man`, generated from the clap definitions
//! - `output.rs`: tables, JSON, timestamps, error lines

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kms_client::tls::Trust;
use kms_client::{ApiKey, Client, ClientConfig};

use crate::config::env;

mod asym;
mod audit;
mod cluster;
mod console;
mod docs;
mod enclave;
mod hsm;
mod identity;
mod key;
mod local;
mod output;
mod policy;

use output::Out;

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
    /// Enclave for key, policy and identity commands (KMS_ENCLAVE); with `audit`,
    /// only events in this enclave (the flag only, not KMS_ENCLAVE)
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
        /// Serve /v1/health/metrics to clients without a certificate
        #[arg(long)]
        metrics_public: bool,
        /// This node's address for other nodes, HOST:PORT (KMS_ADVERTISE; default: the
        /// listen address, or HOSTNAME:PORT when listening on 0.0.0.0 or ::)
        #[arg(long)]
        advertise: Option<String>,
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
    /// Show the latest audit events of every node (kept in memory, per node), newest first;
    /// filter by enclave with --enclave
    Audit {
        /// Only events of this identity (h1:...)
        #[arg(long)]
        identity: Option<String>,
        /// Only events of this command (KEY:CREATE, IDENTITY:DELETE, BACKUP, ...)
        #[arg(long)]
        command: Option<String>,
        /// At most N events (1 to 1000)
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Ask only the node at URL (default: every server of KMS_SERVER, merged by time)
        #[arg(long)]
        node: Option<String>,
    },
    /// Show the identity of the API key in use: privilege, enclave, policy
    Whoami,
    /// Create an enclave
    AddEnclave { name: String },
    /// Delete an enclave and everything in it
    RmEnclave { name: String },
    /// List enclaves
    LsEnclave { prefix: Option<String> },
    /// Show an enclave
    StatEnclave { name: String },
    /// Create a key, add a version, or import a key
    AddKey {
        name: String,
        /// aes256 (default), chacha20, ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072,
        /// rsa-4096, ml-dsa-44, ml-dsa-65 or ml-dsa-87
        #[arg(long = "type")]
        key_type: Option<String>,
        /// Add a new version to an existing key
        #[arg(long)]
        version: bool,
        /// Import from FILE (- for stdin): the raw 32 bytes of a secret key, or a
        /// private key (PKCS#8, PEM or DER)
        #[arg(long)]
        import: Option<PathBuf>,
    },
    /// Sign a message (argument, --in FILE or stdin) with an asymmetric key; prints base64
    Sign {
        name: String,
        #[command(flatten)]
        opts: asym::SignOpts,
    },
    /// Verify a base64 signature of a message; exit status 0 when valid
    Verify {
        name: String,
        signature: String,
        #[command(flatten)]
        opts: asym::SignOpts,
    },
    /// Print the public key of an asymmetric key (PEM)
    Pubkey {
        name: String,
        #[arg(long = "key-version", default_value_t = 0)]
        key_version: u32,
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
    /// Run the web console (a client of the cluster) and print its one-time login URL
    Console {
        /// Listen address (default 127.0.0.1:7380); off loopback requires TLS
        #[arg(long)]
        addr: Option<String>,
        /// TLS certificate (PEM) of shared mode
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM) of shared mode
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Write the man pages (kms.1 and one per command, kms-server.1, ...) to DIR
    Man {
        /// Directory for the pages (created if missing)
        #[arg(long)]
        dir: PathBuf,
    },
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
            output::error(&format!("{first} (see kms --help)"));
            return 2;
        }
        Err(e) => {
            output::help(&e);
            return 0;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error(&format!("cannot start the runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            output::error(&e.msg);
            e.code
        }
    }
}

/// Builds a client from flags and environment (requests time out after 30 s).
pub fn client(g: &Global) -> Result<Client, String> {
    client_with(g, Duration::from_secs(30))
}

/// Builds a client whose requests time out after `timeout`.
pub fn client_with(g: &Global, timeout: Duration) -> Result<Client, String> {
    let (endpoints, trust) = servers(g)?;
    let key = g
        .api_key
        .clone()
        .or_else(|| env("API_KEY"))
        .ok_or("no API key: set KMS_API_KEY or pass --api-key")?;
    let api_key = ApiKey::parse(&key).map_err(|e| format!("KMS_API_KEY: {e}"))?;
    Client::new(ClientConfig {
        endpoints,
        api_key,
        trust,
        timeout,
    })
    .map_err(|e| e.to_string())
}

/// The servers (`--server`/`KMS_SERVER`) and how their certificates are
/// checked (`--insecure`/`KMS_INSECURE`, `KMS_CA`, else the system's).
pub fn servers(g: &Global) -> Result<(Vec<String>, Trust), String> {
    let servers = g
        .server
        .clone()
        .or_else(|| env("SERVER"))
        .unwrap_or_else(|| "https://127.0.0.1:7373".into());
    let endpoints =
        ClientConfig::parse_endpoints(&servers).map_err(|e| format!("KMS_SERVER: {e}"))?;
    let trust = if g.insecure || env("INSECURE").is_some_and(|v| v == "1" || v == "true") {
        Trust::Insecure
    } else if let Some(ca) = env("CA") {
        Trust::from_ca_file(std::path::Path::new(&ca)).map_err(|e| format!("KMS_CA: {e}"))?
    } else {
        Trust::System
    };
    Ok((endpoints, trust))
}

/// The enclave of `--enclave` or `KMS_ENCLAVE`, if any.
fn enclave_opt(g: &Global) -> Option<String> {
    g.enclave.clone().or_else(|| env("ENCLAVE"))
}

/// The enclave of `--enclave` or `KMS_ENCLAVE`, required.
fn enclave(g: &Global) -> Result<String, String> {
    enclave_opt(g).ok_or_else(|| "no enclave: pass --enclave or set KMS_ENCLAVE".into())
}

/// Prefixes a client error with what failed.
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

/// What a command that talks to a server has: the global flags, the client
/// built from them, and where its output goes.
struct Ctx<'a> {
    g: &'a Global,
    c: Client,
    out: Out,
}

impl Ctx<'_> {
    /// The enclave the command works in (required).
    fn enclave(&self) -> Result<String, String> {
        enclave(self.g)
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let out = Out::new(g.json);
    match cli.cmd {
        Cmd::Server {
            addr,
            config,
            tls_cert,
            tls_key,
            dev,
            metrics_public,
            advertise,
            dir,
        } => {
            local::server(
                crate::config::Overrides {
                    address: addr,
                    data_dir: dir,
                    tls_cert,
                    tls_key,
                    dev,
                    metrics_public,
                    advertise,
                },
                config,
            )
            .await
        }
        Cmd::NewHsmKey => {
            local::new_hsm_key(&out);
            Ok(())
        }
        Cmd::NewApiKey => {
            local::new_api_key(&out);
            Ok(())
        }
        Cmd::Identity { api_key, hsm } => Ok(local::identity(&out, api_key, hsm)?),
        Cmd::Completions { shell } => {
            docs::completions(&out, shell);
            Ok(())
        }
        Cmd::Man { dir } => Ok(docs::man(&out, &dir)?),
        Cmd::Bench(args) => Ok(crate::bench::run(
            client(g)?,
            enclave(g).unwrap_or_else(|_| "bench".into()),
            args,
            g.json,
        )
        .await?),
        Cmd::Console {
            addr,
            tls_cert,
            tls_key,
        } => Ok(console::run(g, addr, tls_cert, tls_key).await?),
        other => Ok(admin(g, out, other).await?),
    }
}

/// The commands that talk to a server.
async fn admin(g: &Global, out: Out, cmd: Cmd) -> Result<(), String> {
    // Adding a node waits until it has caught up (up to 60 s on the
    // leader, which may itself forward the request); a backup or restore
    // moves the whole state: give them longer than the usual 30 s.
    let timeout = match cmd {
        Cmd::Add { .. } | Cmd::Backup { .. } | Cmd::Restore { .. } => Duration::from_secs(180),
        _ => Duration::from_secs(30),
    };
    let cx = Ctx {
        g,
        c: client_with(g, timeout)?,
        out,
    };
    match cmd {
        Cmd::Stat => cluster::stat(&cx).await,
        Cmd::Ls => cluster::ls(&cx).await,
        Cmd::Add { url } => cluster::add(&cx, &url).await,
        Cmd::Rm { url } => cluster::rm(&cx, &url).await,
        Cmd::Edit { node, rm } => cluster::edit(&cx, &node, &rm).await,
        Cmd::Backup { file } => cluster::backup(&cx, &file).await,
        Cmd::Restore { file } => cluster::restore(&cx, &file).await,
        Cmd::Audit {
            identity,
            command,
            limit,
            node,
        } => audit::audit(&cx, identity, command, limit, node).await,
        Cmd::Whoami => audit::whoami(&cx).await,
        Cmd::LsHsm => hsm::ls(&cx).await,
        Cmd::AddHsm { name, overwrite } => hsm::add(&cx, &name, overwrite).await,
        Cmd::RmHsm { name } => hsm::rm(&cx, &name).await,
        Cmd::AddEnclave { name } => enclave::add(&cx, &name).await,
        Cmd::RmEnclave { name } => enclave::rm(&cx, &name).await,
        Cmd::StatEnclave { name } => enclave::stat(&cx, &name).await,
        Cmd::LsEnclave { prefix } => enclave::ls(&cx, prefix.as_deref().unwrap_or("")).await,
        Cmd::AddKey {
            name,
            key_type,
            version,
            import,
        } => key::add(&cx, &name, key_type.as_deref(), version, import.as_deref()).await,
        Cmd::Sign { name, opts } => asym::sign(&cx, &name, &opts).await,
        Cmd::Verify {
            name,
            signature,
            opts,
        } => asym::verify(&cx, &name, &signature, &opts).await,
        Cmd::Pubkey { name, key_version } => asym::pubkey(&cx, &name, key_version).await,
        Cmd::RmKey { name, version, all } => key::rm(&cx, &name, version, all).await,
        Cmd::StatKey { name } => key::stat(&cx, &name).await,
        Cmd::LsKey { prefix } => key::ls(&cx, prefix.as_deref().unwrap_or("")).await,
        Cmd::Keygen {
            name,
            length,
            context,
        } => key::keygen(&cx, &name, length, context.as_deref()).await,
        Cmd::Encrypt {
            name,
            message,
            context,
        } => key::encrypt(&cx, &name, message, context.as_deref()).await,
        Cmd::Decrypt {
            name,
            ciphertext,
            context,
        } => key::decrypt(&cx, &name, &ciphertext, context.as_deref()).await,
        Cmd::Mac { name, message } => key::mac(&cx, &name, &message).await,
        Cmd::AddIdentity {
            identity,
            admin,
            sysadmin,
            policy,
        } => identity::add(&cx, &identity, admin, sysadmin, policy.as_deref()).await,
        Cmd::RmIdentity { identity } => identity::rm(&cx, &identity).await,
        Cmd::LsIdentity { prefix } => identity::ls(&cx, prefix.as_deref().unwrap_or("")).await,
        Cmd::AddPolicy { name, file } => policy::add(&cx, &name, &file).await,
        Cmd::SetPolicy { name, identity } => policy::set(&cx, &name, &identity).await,
        Cmd::RmPolicy { name } => policy::rm(&cx, &name).await,
        Cmd::StatPolicy { name } => policy::stat(&cx, &name).await,
        Cmd::LsPolicy { prefix } => policy::ls(&cx, prefix.as_deref().unwrap_or("")).await,
        Cmd::Server { .. }
        | Cmd::NewHsmKey
        | Cmd::NewApiKey
        | Cmd::Identity { .. }
        | Cmd::Bench(_)
        | Cmd::Console { .. }
        | Cmd::Completions { .. }
        | Cmd::Man { .. } => unreachable!("handled in run"),
    }
}
