//! `kms console`: runs the web console (the `kms-console` crate) with the
//! CLI's server and API-key settings, and prints its one-time login URL.

use std::path::PathBuf;

use super::{client, Global};

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
    let c = client(g)?;
    let console = kms_console::Console::bind(mode, c)
        .await
        .map_err(|e| format!("console: {e}"))?;
    let url = console.login_url().map_err(|e| format!("console: {e}"))?;
    println!("kms console: open {url}");
    println!("(the link signs in once; stop the console with Ctrl-C)");
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
