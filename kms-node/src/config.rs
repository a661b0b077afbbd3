//! Server configuration: a TOML file (`--config`), environment variables and
//! flags, parsed once into a validated [`ServerConfig`]. Errors name the field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The file format. Every field is optional; unknown fields are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub address: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub hsm: HsmFile,
    #[serde(default)]
    pub cluster: ClusterFile,
    /// Serve `/v1/health/metrics` to clients without a certificate
    /// (`KMS_METRICS_PUBLIC=1`, `kms server --metrics-public`); default false.
    pub metrics_public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The address other nodes and clients use for this node (`host:port`),
    /// when it differs from the listen address (e.g. `0.0.0.0:7373`).
    pub advertise: Option<String>,
    /// Leader heartbeat interval in milliseconds (`KMS_HEARTBEAT_MS`); default 100.
    pub heartbeat_ms: Option<u64>,
    /// Election timeout in milliseconds (`KMS_ELECTION_MS`); default 1000.
    /// A write while a member is unreachable fails after about this long.
    pub election_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` or `json`.
    pub format: Option<String>,
    /// A `tracing` filter, e.g. `info` or `info,audit=warn`.
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_request_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub max_streams: Option<u64>,
}

/// What one node gives its clients at most (`[limits]`, `KMS_MAX_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Client connections served at once; past it, new client connections
    /// are closed right after the TLS handshake (node connections are not
    /// counted). Established clients keep being served.
    pub max_connections: usize,
    /// TLS handshakes in progress at once; past it, new connections are
    /// closed at once (clients and nodes retry).
    pub max_handshakes: usize,
    /// Time a client has to send a request's head, and the most a kept-alive
    /// connection may stay idle (slow or idle clients are closed).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// Requests in flight on one HTTP/2 connection (HTTP/1.1 serves one at
    /// a time per connection).
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_handshakes: 512,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_streams: 64,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmFile {
    /// The software HSM key; `KMS_HSM_KEY` takes precedence.
    pub key: Option<String>,
    /// Which configured HSM roots the root API key and inter-node trust:
    /// `soft` or `pkcs11` (`KMS_HSM_PRIMARY`). Required when both are configured.
    pub primary: Option<String>,
    /// A PKCS#11 HSM; each `KMS_HSM_PKCS11_*` variable takes precedence over its field.
    pub pkcs11: Option<Pkcs11File>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11File {
    pub module: Option<String>,
    pub token: Option<String>,
    pub pin: Option<String>,
    pub pin_file: Option<String>,
    pub key: Option<String>,
    pub generate_key: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration of `kms server`.
#[derive(Debug)]
pub struct ServerConfig {
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_request_bytes: usize,
    pub limits: Limits,
    pub hsm_key: Option<String>,
    pub hsm_primary: Option<String>,
    pub hsm_pkcs11: Option<Pkcs11File>,
    pub advertise: Option<String>,
    pub timing: Timing,
    /// `/v1/health/metrics` without a client certificate.
    pub metrics_public: bool,
}

pub const DEFAULT_MAX_REQUEST: u64 = 4 << 20;

/// Flags of `kms server` that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub address: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub dev: bool,
    pub metrics_public: bool,
    /// `--advertise HOST:PORT`.
    pub advertise: Option<String>,
}

impl ServerConfig {
    pub fn load(path: Option<&std::path::Path>, o: Overrides) -> Result<Self, String> {
        match path {
            None => Self::build(File::default(), o),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
                Self::from_toml(&text, &p.display().to_string(), o)
            }
        }
    }

    /// The configuration a config file's text gives (`origin` names the
    /// file in errors), with `o` taking precedence. Reads no files.
    pub fn from_toml(text: &str, origin: &str, o: Overrides) -> Result<Self, String> {
        let file: File = toml::from_str(text)
            .map_err(|e| format!("config file {origin}: {}", e.to_string().trim()))?;
        Self::build(file, o)
    }

    fn build(file: File, o: Overrides) -> Result<Self, String> {
        let default_addr = if o.dev {
            "127.0.0.1:7373"
        } else {
            "0.0.0.0:7373"
        };
        let address = o
            .address
            .or(file.address)
            .unwrap_or_else(|| default_addr.into());
        let address = parse_addr(&address).map_err(|e| format!("address: {e}"))?;
        let data_dir = match o.data_dir.or(file.data_dir) {
            Some(d) => d,
            None if o.dev => std::env::temp_dir().join("kms-dev"),
            None => return Err("data_dir: no data directory given (kms server DIR, or data_dir in the config file)".into()),
        };
        let tls = match (o.tls_cert.or(file.tls.cert), o.tls_key.or(file.tls.key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err("tls.key: a TLS certificate needs its private key (--tls-key)".into())
            }
            (None, Some(_)) => {
                return Err("tls.cert: a TLS key needs its certificate (--tls-cert)".into())
            }
        };
        let log_format = match file.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(format!("log.format: '{other}' is not 'text' or 'json'")),
        };
        let log_level = file.log.level.unwrap_or_else(|| "info".into());
        // Levels and `target=level` directives only: span and field filters
        // hold regular expressions, and a pathological one (found by the
        // `config` fuzz target) takes minutes to compile. RUST_LOG has them.
        if log_level.len() > 1024
            || !log_level
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:,=.- ".contains(c))
        {
            return Err(format!(
                "log.level: use a level or comma-separated target=level directives \
                 (span and field filters: RUST_LOG), not '{}'",
                log_level.chars().take(64).collect::<String>()
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| format!("log.level: {e}"))?;
        let max = file.limits.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST);
        if !(1024..=1 << 30).contains(&max) {
            return Err(format!(
                "limits.max_request_bytes: {max} is outside 1024..=1073741824"
            ));
        }
        let num = |name: &str, file: Option<u64>, default: u64| -> Result<u64, String> {
            match env(name) {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("KMS_{name}: '{v}' is not a number of milliseconds")),
                None => Ok(file.unwrap_or(default)),
            }
        };
        let d = Limits::default();
        // `limits.NAME` (or `KMS_VAR` when given) within lo..=hi.
        let limit = |name: &str,
                     var: Option<&str>,
                     file: Option<u64>,
                     default: u64,
                     range: (u64, u64)|
         -> Result<u64, String> {
            let v = match var {
                Some(var) => num(var, file, default)?,
                None => file.unwrap_or(default),
            };
            if (range.0..=range.1).contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "limits.{name}: {v} is outside {}..={}",
                    range.0, range.1
                ))
            }
        };
        let ms = |d: Duration| d.as_millis() as u64;
        let l = &file.limits;
        let limits = Limits {
            max_connections: limit(
                "max_connections",
                Some("MAX_CONNECTIONS"),
                l.max_connections,
                d.max_connections as u64,
                (16, 1_000_000),
            )? as usize,
            max_handshakes: d.max_handshakes,
            header_timeout: Duration::from_millis(limit(
                "header_timeout_ms",
                Some("HEADER_TIMEOUT_MS"),
                l.header_timeout_ms,
                ms(d.header_timeout),
                (100, 3_600_000),
            )?),
            body_timeout: Duration::from_millis(limit(
                "body_timeout_ms",
                Some("BODY_TIMEOUT_MS"),
                l.body_timeout_ms,
                ms(d.body_timeout),
                (100, 3_600_000),
            )?),
            max_streams: limit(
                "max_streams",
                None,
                l.max_streams,
                u64::from(d.max_streams),
                (1, 1024),
            )? as u32,
        };
        let heartbeat = num("HEARTBEAT_MS", file.cluster.heartbeat_ms, 100)?;
        let election = num("ELECTION_MS", file.cluster.election_ms, 1000)?;
        let timing = Timing::new(heartbeat, election)
            .map_err(|e| format!("cluster.heartbeat_ms/election_ms: {e}"))?;
        // --advertise, then KMS_ADVERTISE, then [cluster] advertise.
        let advertise = match (
            o.advertise.clone(),
            env("ADVERTISE"),
            file.cluster.advertise,
        ) {
            (Some(a), _, _) => Some(("--advertise", a)),
            (None, Some(a), _) => Some(("KMS_ADVERTISE", a)),
            (None, None, Some(a)) => Some(("cluster.advertise", a)),
            (None, None, None) => None,
        };
        let advertise = match advertise {
            Some((from, a)) => {
                parse_addr(&a).map_err(|e| format!("{from}: {e}"))?;
                Some(a)
            }
            None => None,
        };
        let metrics_public = o.metrics_public
            || match env("METRICS_PUBLIC") {
                Some(v) => match v.trim() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" | "" => false,
                    other => return Err(format!("KMS_METRICS_PUBLIC: '{other}' is not 1 or 0")),
                },
                None => file.metrics_public.unwrap_or(false),
            };
        Ok(ServerConfig {
            advertise,
            timing,
            metrics_public,
            address,
            data_dir,
            tls,
            log_format,
            log_level,
            max_request_bytes: max as usize,
            limits,
            hsm_key: file.hsm.key,
            hsm_primary: file.hsm.primary,
            hsm_pkcs11: file.hsm.pkcs11,
        })
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// Reads a variable under its `KMS_*` name or its `MINIO_KMS_*` name.
pub fn env(name: &str) -> Option<String> {
    std::env::var(format!("KMS_{name}"))
        .or_else(|_| std::env::var(format!("MINIO_KMS_{name}")))
        .ok()
        .filter(|v| !v.is_empty())
}

/// Replication timing, validated at start.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub tick: Duration,
    pub heartbeat: Duration,
    pub election: Duration,
}

impl Timing {
    /// Heartbeat and election timeout in milliseconds: the election timeout
    /// must be at least five heartbeats, so a slow heartbeat or two does not
    /// start an election.
    pub fn new(heartbeat_ms: u64, election_ms: u64) -> Result<Self, String> {
        if !(10..=10_000).contains(&heartbeat_ms) {
            return Err(format!(
                "heartbeat interval {heartbeat_ms} ms is out of range (10 to 10000 ms)"
            ));
        }
        if election_ms < 5 * heartbeat_ms || election_ms > 120_000 {
            return Err(format!(
                "election timeout {election_ms} ms must be at least 5 heartbeats ({} ms) and at most 120000 ms",
                5 * heartbeat_ms
            ));
        }
        Ok(Timing {
            tick: Duration::from_millis((heartbeat_ms / 5).max(2)),
            heartbeat: Duration::from_millis(heartbeat_ms),
            election: Duration::from_millis(election_ms),
        })
    }

    /// `d` in ticks (at least one).
    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_millis() / self.tick.as_millis().max(1)).max(1) as u64
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new(100, 1000).expect("valid defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServerConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        ServerConfig::load(Some(&p), Overrides::default())
    }

    #[test]
    fn valid_file() {
        let c = load("address = \"127.0.0.1:8000\"\ndata_dir = \"/tmp/x\"\n[log]\nformat = \"json\"\n[limits]\nmax_request_bytes = 2048\n").unwrap();
        assert_eq!(c.address.port(), 8000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_request_bytes, 2048);
    }

    #[test]
    fn advertise_flag_wins_over_the_file() {
        let file = "data_dir = \"/x\"\n[cluster]\nadvertise = \"localhost:7373\"\n";
        let flag = |a: &str| Overrides {
            advertise: Some(a.to_string()),
            ..Default::default()
        };
        let c = ServerConfig::from_toml(file, "t", flag("127.0.0.1:9")).unwrap();
        assert_eq!(c.advertise.as_deref(), Some("127.0.0.1:9"));
        let c = ServerConfig::from_toml(file, "t", Overrides::default()).unwrap();
        assert_eq!(c.advertise.as_deref(), Some("localhost:7373"));
        let e = ServerConfig::from_toml(file, "t", flag("no port")).unwrap_err();
        assert!(e.starts_with("--advertise: "), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(load("data_dir = \"/x\"\naddress = \"nope\"")
            .unwrap_err()
            .contains("address"));
        assert!(load("data_dir = \"/x\"\n[log]\nformat = \"xml\"")
            .unwrap_err()
            .contains("log.format"));
        assert!(load("data_dir = \"/x\"\n[limits]\nmax_request_bytes = 1")
            .unwrap_err()
            .contains("limits.max_request_bytes"));
        assert!(load("data_dir = \"/x\"\n[tls]\ncert = \"/c\"")
            .unwrap_err()
            .contains("tls.key"));
        assert!(load("data_dir = \"/x\"\nfoo = 1")
            .unwrap_err()
            .contains("foo"));
        assert!(load("address = \":7373\"")
            .unwrap_err()
            .contains("data_dir"));
        assert!(
            load("data_dir = \"/x\"\n[cluster]\nheartbeat_ms = 100\nelection_ms = 200")
                .unwrap_err()
                .contains("election")
        );
        assert!(load("data_dir = \"/x\"\n[cluster]\nheartbeat_ms = 1")
            .unwrap_err()
            .contains("heartbeat"));
        // Found by the `config` fuzz target: a field filter's regular
        // expression that took minutes to compile.
        let t = std::time::Instant::now();
        assert!(load(
            "data_dir = \"/x\"\n[log]\nlevel = \"0[{[Y[[e=-209w-0....&....0...pppppppppppp*GGGG[[[[r={r}{(nms\""
        )
        .unwrap_err()
        .contains("log.level"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            load("data_dir = \"/x\"\n[log]\nlevel = \"info,audit=warn,kms_node::api=debug\"")
                .is_ok()
        );
    }
}
