//! HSM commands: `ls-hsm`, `add-hsm`, `rm-hsm`.

use serde_json::json;

use super::output::Human;
use super::{with, Ctx};

/// `kms ls-hsm`: per node, the HSMs that seal its state or are configured.
pub async fn ls(cx: &Ctx<'_>) -> Result<(), String> {
    let r = with("ls-hsm", cx.c.cluster_status().await)?;
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
            json_rows.push(
                json!({"node": s.id, "hsm": h, "seals": seals, "configured": conf, "primary": primary}),
            );
        }
    }
    cx.out.show(json!(json_rows), Human::Table(rows));
    Ok(())
}

/// `kms add-hsm NAME [--overwrite]`.
pub async fn add(cx: &Ctx<'_>, name: &str, overwrite: bool) -> Result<(), String> {
    with(
        &format!("add-hsm {name}"),
        cx.c.add_hsm(name, overwrite).await,
    )
}

/// `kms rm-hsm NAME`.
pub async fn rm(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    with(&format!("rm-hsm {name}"), cx.c.remove_hsm(name).await)
}
