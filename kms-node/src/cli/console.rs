//! `kms console`: runs the web console (the `kms-console` crate) with the
//! CLI's server settings. Local mode acts with the CLI's API key and prints
//! a one-time login URL; shared mode (`--tls-cert`/`--tls-key`) prints its
//! sign-in URL and needs no API key of its own.

use std::path::PathBuf;
use std::time::Duration;

use super::{client, servers, Global};

/// `kms console [--addr A] [--tls-cert F --tls-key F]`.
pub async fn run(
    g: &Global,
    addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
) -> Result<(), String> {
    let settings = kms_console::Settings {
        addr: addr.unwrap_or_else(|| kms_console::DEFAULT_ADDR.into()),
        tls: tls_cert.zip(tls_key),
    };
    let mode = settings.validate().map_err(|e| format!("console: {e}"))?;
    let (endpoints, trust) = servers(g)?;
    let shared = matches!(mode, kms_console::Mode::Shared { .. });
    let cluster = kms_console::Cluster {
        endpoints,
        trust,
        timeout: Duration::from_secs(30),
        client: if shared { None } else { Some(client(g)?) },
    };
    let console = kms_console::Console::bind(mode, cluster)
        .await
        .map_err(|e| format!("console: {e}"))?;
    let url = console.login_url().map_err(|e| format!("console: {e}"))?;
    println!("kms console: open {url}");
    if shared {
        println!("(each person signs in with their own API key; stop the console with Ctrl-C)");
    } else {
        println!("(the link signs in once; stop the console with Ctrl-C)");
    }
    console.serve(shutdown()).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
