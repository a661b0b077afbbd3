//! Configuration, parsed once at `C_Initialize` into a validated [`Config`].
//!
//! Sources, first match wins: the file named by `KMS_PKCS11_CONFIG`, then the
//! plain `KMS_*` variables (each also as `MINIO_KMS_*`). The `pReserved`
//! field of the `C_Initialize` arguments is not a source: PKCS#11 says it
//! must be NULL, and the module refuses any other value with
//! `CKR_ARGUMENTS_BAD` without reading it. A file is TOML (docs/pkcs11.md):
//!
//! ```toml
//! servers = ["https://10.0.0.1:7373", "https://10.0.0.2:7373"]
//! api_key = "k1:..."            # or api_key_file = "/etc/kms/p11.key"
//! ca = "/etc/kms/ca.pem"        # or insecure = true (development only)
//! enclaves = ["enclave-1"]      # default: every enclave the identity may list
//! timeout_ms = 10000            # per request to one server
//! refresh_ms = 2000             # how long the list of cluster keys is cached
//! login = "any"                 # or "api-key": the user PIN is the API key;
//!                               # or "pin": the PIN below (user_pin or user_pin_file)
//! user_pin = "..."              # login = "pin" only; or user_pin_file = "/etc/kms/p11.pin"
//! hide_key_types = ["ED25519"]  # key types no slot shows (see [slot."NAME"])
//! log_level = "warn"            # off, error, warn, info, debug
//! log_file = "/var/log/kms-pkcs11.log"   # default: stderr
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_client::tls::Trust;
use kms_client::{ApiKey, ClientConfig};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::log::Level;

/// How `C_Login` treats the user PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMode {
    /// Login is optional and any PIN is accepted (as Google's kmsp11 does);
    /// the configured API key authenticates to the cluster.
    Any,
    /// The user PIN is the API key: nothing is visible before `C_Login`.
    ApiKey,
    /// A static PIN from the configuration (`user_pin` or `user_pin_file`):
    /// cluster keys are private objects, used only after a `C_Login` with
    /// that PIN; the configured API key authenticates to the cluster.
    Pin,
}

/// The cluster key types `hide_key_types` may name.
pub const KEY_TYPES: &[&str] = &[
    "AES256",
    "CHACHA20",
    "EC-P256",
    "EC-P384",
    "ED25519",
    "RSA-2048",
    "RSA-3072",
    "RSA-4096",
    "ML-DSA-44",
    "ML-DSA-65",
    "ML-DSA-87",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    /// `None` only with [`LoginMode::ApiKey`].
    pub api_key: Option<ApiKey>,
    pub trust: Trust,
    /// Enclaves to show; `None`: list them from the cluster.
    pub enclaves: Option<Vec<String>>,
    pub timeout: Duration,
    pub refresh: Duration,
    pub login: LoginMode,
    /// The PIN of [`LoginMode::Pin`] (never logged).
    pub user_pin: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Key types hidden in every slot (upper case, from [`KEY_TYPES`]).
    pub hide_key_types: Vec<String>,
    /// Per-enclave lists replacing `hide_key_types` for that slot.
    pub hide_by_enclave: BTreeMap<String, Vec<String>>,
    pub log_level: Level,
    pub log_file: Option<PathBuf>,
    /// `KMS_PKCS11_SHARED_IO` set: do network I/O on the shared runtime
    /// rather than on the calling thread (a diagnostic switch).
    pub shared_io: bool,
    /// Coalesce the concurrent reads of many threads into batched requests
    /// (`coalesce`, default true; `KMS_PKCS11_COALESCE=0` turns it off).
    pub coalesce: bool,
    /// Where the configuration came from, for logs.
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    servers: Option<Vec<String>>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    insecure: Option<bool>,
    enclaves: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    refresh_ms: Option<u64>,
    login: Option<String>,
    user_pin: Option<String>,
    user_pin_file: Option<PathBuf>,
    hide_key_types: Option<Vec<String>>,
    slot: Option<BTreeMap<String, SlotFile>>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    coalesce: Option<bool>,
}

/// `[slot."ENCLAVE"]`: settings of one slot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotFile {
    hide_key_types: Option<Vec<String>>,
}

/// Reads a variable under its `KMS_*` name or its `MINIO_KMS_*` name.
fn var(name: &str) -> Option<String> {
    std::env::var(format!("KMS_{name}"))
        .or_else(|_| std::env::var(format!("MINIO_KMS_{name}")))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Whether cluster keys are private objects (used only after `C_Login`).
    pub fn private_keys(&self) -> bool {
        self.login != LoginMode::Any
    }

    /// Whether the slot of `enclave` hides keys of the cluster type `ty`.
    pub fn hides(&self, enclave: &str, ty: &str) -> bool {
        let list = self
            .hide_by_enclave
            .get(enclave)
            .unwrap_or(&self.hide_key_types);
        list.iter().any(|t| t.eq_ignore_ascii_case(ty))
    }

    /// Loads the configuration: from the file named by `KMS_PKCS11_CONFIG`
    /// if that is set and not empty, else from the `KMS_*` variables. Any
    /// error is [`Error::Config`] (`CKR_GENERAL_ERROR` at `C_Initialize`).
    pub fn load() -> Result<Self> {
        if let Some(p) = std::env::var_os("KMS_PKCS11_CONFIG").filter(|p| !p.is_empty()) {
            return Self::from_file(Path::new(&p));
        }
        Self::from_env()
    }

    /// Reads a TOML file; unset fields fall back to the environment only for
    /// the log settings.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = kms_client::read_small_file(path, 1 << 20)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses a configuration file's text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let f: File = toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Self::build(f, format!("file {origin}"))
    }

    /// Reads `KMS_SERVER`, `KMS_API_KEY` (or `KMS_API_KEY_FILE`), `KMS_CA`,
    /// `KMS_INSECURE`, `KMS_ENCLAVE` (comma-separated), `KMS_PKCS11_TIMEOUT_MS`,
    /// `KMS_PKCS11_REFRESH_MS`, `KMS_PKCS11_LOGIN`, `KMS_PKCS11_LOG`,
    /// `KMS_PKCS11_LOG_FILE`.
    pub fn from_env() -> Result<Self> {
        let num = |name: &str| -> Result<Option<u64>> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| Error::Config(format!("KMS_{name}: '{v}' is not a number")))
                })
                .transpose()
        };
        let f = File {
            servers: Some(vec![
                var("SERVER").unwrap_or_else(|| "https://127.0.0.1:7373".into())
            ]),
            api_key: var("API_KEY"),
            api_key_file: var("API_KEY_FILE").map(PathBuf::from),
            ca: var("CA").map(PathBuf::from),
            insecure: var("INSECURE").map(|v| matches!(v.trim(), "1" | "true" | "yes")),
            enclaves: var("ENCLAVE").map(|v| vec![v]),
            timeout_ms: num("PKCS11_TIMEOUT_MS")?,
            refresh_ms: num("PKCS11_REFRESH_MS")?,
            login: var("PKCS11_LOGIN"),
            user_pin: None,
            user_pin_file: var("PKCS11_USER_PIN_FILE").map(PathBuf::from),
            hide_key_types: var("PKCS11_HIDE_KEY_TYPES")
                .map(|v| v.split(',').map(|t| t.trim().to_string()).collect()),
            slot: None,
            log_level: None,
            log_file: None,
            coalesce: None,
        };
        Self::build(f, "environment".into())
    }

    fn build(f: File, source: String) -> Result<Self> {
        let servers = f
            .servers
            .ok_or_else(|| Error::Config(format!("{source}: 'servers' is missing")))?;
        let endpoints = ClientConfig::parse_endpoints(&servers.join(","))
            .map_err(|e| Error::Config(format!("{source}: servers: {e}")))?;
        let user_pin = match (f.user_pin, f.user_pin_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{source}: give user_pin or user_pin_file, not both"
                )))
            }
            (Some(p), None) => Some(zeroize::Zeroizing::new(p.into_bytes())),
            (None, Some(path)) => {
                let b = zeroize::Zeroizing::new(kms_client::read_small_file(&path, 4096).map_err(
                    |e| Error::Config(format!("{source}: user_pin_file {}: {e}", path.display())),
                )?);
                // One trailing newline (as `echo` writes) is not part of the PIN.
                let end = b
                    .strip_suffix(b"\r\n")
                    .or_else(|| b.strip_suffix(b"\n"))
                    .unwrap_or(&b);
                Some(zeroize::Zeroizing::new(end.to_vec()))
            }
            (None, None) => None,
        };
        if user_pin.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(Error::Config(format!("{source}: the user PIN is empty")));
        }
        let login = match f.login.as_deref().map(str::trim) {
            None | Some("") if user_pin.is_some() => LoginMode::Pin,
            None | Some("any") | Some("") => LoginMode::Any,
            Some("api-key") | Some("api_key") => LoginMode::ApiKey,
            Some("pin") => LoginMode::Pin,
            Some(o) => {
                return Err(Error::Config(format!(
                    "{source}: login '{o}': use \"any\", \"api-key\" or \"pin\""
                )))
            }
        };
        match (login, user_pin.is_some()) {
            (LoginMode::Pin, false) => {
                return Err(Error::Config(format!(
                    "{source}: login = \"pin\" needs user_pin or user_pin_file"
                )))
            }
            (LoginMode::Any | LoginMode::ApiKey, true) => {
                return Err(Error::Config(format!(
                    "{source}: user_pin and user_pin_file go with login = \"pin\""
                )))
            }
            _ => {}
        }
        let key_types = |list: Vec<String>, what: &str| -> Result<Vec<String>> {
            list.into_iter()
                .map(|t| {
                    let u = t.trim().to_ascii_uppercase();
                    if KEY_TYPES.contains(&u.as_str()) {
                        Ok(u)
                    } else {
                        Err(Error::Config(format!(
                            "{source}: {what}: unknown key type '{t}' (one of {})",
                            KEY_TYPES.join(", ")
                        )))
                    }
                })
                .collect()
        };
        let hide_key_types = key_types(f.hide_key_types.unwrap_or_default(), "hide_key_types")?;
        let mut hide_by_enclave = BTreeMap::new();
        for (enclave, sf) in f.slot.unwrap_or_default() {
            if let Some(list) = sf.hide_key_types {
                let what = format!("slot.\"{enclave}\".hide_key_types");
                hide_by_enclave.insert(enclave, key_types(list, &what)?);
            }
        }
        let api_key = match (f.api_key, f.api_key_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{source}: give api_key or api_key_file, not both"
                )))
            }
            (Some(k), None) => Some(k),
            (None, Some(p)) => Some(
                kms_client::read_small_file(&p, 4096)
                    .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
                    .map_err(|e| {
                        Error::Config(format!("{source}: api_key_file {}: {e}", p.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let api_key = match api_key {
            Some(k) => Some(ApiKey::parse(k.trim()).map_err(|e| {
                // Never log the key itself.
                Error::Config(format!("{source}: the API key is not a valid k1: key: {e}"))
            })?),
            None if login == LoginMode::ApiKey => None,
            None => {
                return Err(Error::Config(format!(
                    "{source}: no API key (api_key, api_key_file, or KMS_API_KEY)"
                )))
            }
        };
        let trust = match (f.ca, f.insecure.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(Error::Config(format!(
                    "{source}: give ca or insecure, not both"
                )))
            }
            (Some(ca), false) => {
                Trust::from_ca_file(&ca).map_err(|e| Error::Config(format!("{source}: {e}")))?
            }
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        let enclaves = match f.enclaves {
            Some(list) => {
                let list: Vec<String> = list
                    .iter()
                    .flat_map(|e| e.split(','))
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                if list.is_empty() {
                    return Err(Error::Config(format!("{source}: 'enclaves' is empty")));
                }
                if let Some(bad) = list
                    .iter()
                    .find(|e| e.len() > 128 || e.contains(['/', '?', '#', '%']))
                {
                    return Err(Error::Config(format!(
                        "{source}: invalid enclave name '{bad}'"
                    )));
                }
                Some(list)
            }
            None if login == LoginMode::ApiKey => {
                return Err(Error::Config(format!(
                    "{source}: with login = \"api-key\" the enclaves must be listed"
                )))
            }
            None => None,
        };
        let ms = |v: Option<u64>, default: u64, name: &str, max: u64| -> Result<Duration> {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                return Err(Error::Config(format!(
                    "{source}: {name} must be 1..={max} milliseconds, not {v}"
                )));
            }
            Ok(Duration::from_millis(v))
        };
        let log_level = match f.log_level.or_else(|| std::env::var("KMS_PKCS11_LOG").ok()) {
            Some(l) => Level::parse(&l).ok_or_else(|| {
                Error::Config(format!(
                    "{source}: log level '{l}': use off, error, warn, info or debug"
                ))
            })?,
            None => Level::Warn,
        };
        Ok(Config {
            endpoints,
            api_key,
            trust,
            enclaves,
            timeout: ms(f.timeout_ms, 10_000, "timeout_ms", 600_000)?,
            refresh: ms(f.refresh_ms, 2_000, "refresh_ms", 3_600_000)?,
            login,
            user_pin,
            hide_key_types,
            hide_by_enclave,
            log_level,
            log_file: f
                .log_file
                .or_else(|| std::env::var_os("KMS_PKCS11_LOG_FILE").map(PathBuf::from)),
            shared_io: std::env::var_os("KMS_PKCS11_SHARED_IO").is_some_and(|v| !v.is_empty()),
            coalesce: f.coalesce.unwrap_or(true)
                && std::env::var("KMS_PKCS11_COALESCE").map_or(true, |v| v.trim() != "0"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::from_file(&p)
    }

    const KEY: &str = "k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E";

    #[test]
    fn a_full_file() {
        let c = parse(&format!(
            "servers = [\"127.0.0.1:1\", \"https://h:2\"]\napi_key = \"{KEY}\"\ninsecure = true\nenclaves = [\"a\", \"b\"]\ntimeout_ms = 5\nrefresh_ms = 7\nlog_level = \"debug\"\n"
        ))
        .unwrap();
        assert_eq!(c.endpoints, vec!["https://127.0.0.1:1", "https://h:2"]);
        assert_eq!(
            c.enclaves.as_deref(),
            Some(&["a".to_string(), "b".into()][..])
        );
        assert_eq!(c.timeout, Duration::from_millis(5));
        assert_eq!(c.refresh, Duration::from_millis(7));
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.login, LoginMode::Any);
        assert!(matches!(c.trust, Trust::Insecure));
    }

    #[test]
    fn bad_files_say_why() {
        for (text, why) in [
            ("servers = [\"h:1\"]\n", "no API key"),
            ("api_key = \"x\"\n", "'servers' is missing"),
            (
                "servers = [\"h:1\"]\napi_key = \"k1:nope\"\n",
                "not a valid k1",
            ),
            ("servers = [\"http://h:1\"]\n", "only https"),
            ("servers = []\n", "no server"),
            ("servers = [\"h:1\"]\nbogus = 1\n", "unknown field"),
            (
                "servers = [\"h:1\"]\nlogin = \"api-key\"\n",
                "enclaves must be listed",
            ),
            (
                &format!("servers = [\"h:1\"]\napi_key = \"{KEY}\"\ntimeout_ms = 0\n"),
                "timeout_ms",
            ),
            (
                &format!("servers = [\"h:1\"]\napi_key = \"{KEY}\"\nlog_level = \"loud\"\n"),
                "log level",
            ),
            (
                &format!("servers = [\"h:1\"]\napi_key = \"{KEY}\"\nenclaves = [\"a/b\"]\n"),
                "invalid enclave",
            ),
            ("servers = \n", "c.toml"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains("d7cY"), "the key leaked into: {e}");
        }
        let e = Config::from_file(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn static_pin_and_hidden_types() {
        let c = parse(&format!(
            "servers = [\"h:1\"]\napi_key = \"{KEY}\"\nuser_pin = \"1234\"\nhide_key_types = [\"ed25519\"]\n[slot.\"e2\"]\nhide_key_types = [\"ML-DSA-65\"]\n"
        ))
        .unwrap();
        assert_eq!(c.login, LoginMode::Pin);
        assert_eq!(
            c.user_pin.as_deref().map(|p| p.as_slice()),
            Some(&b"1234"[..])
        );
        assert!(c.private_keys());
        assert!(c.hides("e1", "ED25519"));
        assert!(!c.hides("e1", "ML-DSA-65"));
        assert!(c.hides("e2", "ML-DSA-65"));
        assert!(!c.hides("e2", "ED25519"));
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "s3cret\n").unwrap();
        let c = parse(&format!(
            "servers = [\"h:1\"]\napi_key = \"{KEY}\"\nlogin = \"pin\"\nuser_pin_file = \"{}\"\n",
            pin.display()
        ))
        .unwrap();
        assert_eq!(
            c.user_pin.as_deref().map(|p| p.as_slice()),
            Some(&b"s3cret"[..])
        );
        for (text, why) in [
            ("login = \"pin\"\n", "needs user_pin"),
            ("login = \"any\"\nuser_pin = \"1\"\n", "go with login"),
            ("user_pin = \"\"\n", "PIN is empty"),
            ("hide_key_types = [\"DSA\"]\n", "unknown key type 'DSA'"),
            ("[slot.e]\nbogus = 1\n", "unknown field"),
        ] {
            let e = parse(&format!("servers = [\"h:1\"]\napi_key = \"{KEY}\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn login_with_the_api_key_needs_no_key_in_the_file() {
        let c = parse("servers = [\"h:1\"]\nlogin = \"api-key\"\nenclaves = [\"e\"]\n").unwrap();
        assert_eq!(c.login, LoginMode::ApiKey);
        assert!(c.api_key.is_none());
    }
}
