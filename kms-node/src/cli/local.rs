//! The commands that need no server: `server` (runs one), `new-hsm-key`,
//! `new-api-key`, `identity`.

use std::path::PathBuf;

use kms_client::ApiKey;
use serde_json::json;

use super::output::{Human, Out};
use super::Failure;
use crate::config::{env, Overrides, ServerConfig};

/// `kms server`: runs a node until SIGINT/SIGTERM.
pub async fn server(overrides: Overrides, config: Option<PathBuf>) -> Result<(), Failure> {
    let dev = overrides.dev;
    let cfg = ServerConfig::load(config.as_deref(), overrides)
        .map_err(|e| format!("invalid configuration: {e}"))?;
    crate::serve::init_logging(cfg.log_format, &cfg.log_level);
    match crate::harden::no_core_dumps() {
        Ok(what) => tracing::info!("{what}"),
        Err(e) => tracing::warn!("{e}"),
    }
    match crate::harden::lock_memory() {
        Ok((tracing::Level::INFO, what)) => tracing::info!("{what}"),
        Ok((_, what)) => tracing::warn!("{what}"),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return Err(Failure::from(format!("cannot start: {e}")));
        }
    }
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

/// `kms new-hsm-key`: a new software HSM key.
pub fn new_hsm_key(out: &Out) {
    out.line(&*hsm_backends::SoftHsm::generate_key_str());
}

/// `kms new-api-key`: a new API key and its identity.
pub fn new_api_key(out: &Out) {
    let k = ApiKey::generate();
    let secret = k.to_secret_string();
    out.show(
        json!({"api_key": &*secret, "identity": k.identity().to_string()}),
        Human::Lines(vec![
            format!("API key:  {}", &*secret),
            format!("Identity: {}", k.identity()),
        ]),
    );
}

/// `kms identity [API_KEY | --hsm]`: the identity of an API key, or the
/// root API key derived from the configured HSM and its identity.
pub fn identity(out: &Out, api_key: Option<String>, hsm: bool) -> Result<(), String> {
    let k = if hsm {
        // The same HSM settings as `kms server` (environment only).
        let cfg = ServerConfig::load(
            None,
            Overrides {
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
    let secret = k.to_secret_string();
    let mut lines = Vec::new();
    if hsm {
        lines.push(format!("API key:  {}", &*secret));
    }
    lines.push(format!("Identity: {}", k.identity()));
    out.show(
        json!({"api_key": if hsm { Some(secret.to_string()) } else { None }, "identity": k.identity().to_string()}),
        Human::Lines(lines),
    );
    Ok(())
}
