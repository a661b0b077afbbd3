//! Enclave commands: `add-enclave`, `rm-enclave`, `stat-enclave`, `ls-enclave`.

use serde_json::json;

use super::output::{ts, Human};
use super::{with, Ctx};

/// `kms add-enclave NAME`.
pub async fn add(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    with(
        &format!("add-enclave {name}"),
        cx.c.create_enclave(name).await,
    )
}

/// `kms rm-enclave NAME`.
pub async fn rm(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    with(
        &format!("rm-enclave {name}"),
        cx.c.delete_enclave(name).await,
    )
}

/// `kms stat-enclave NAME`.
pub async fn stat(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    let r = with(
        &format!("stat-enclave {name}"),
        cx.c.enclave_status(name).await,
    )?;
    let json = json!({"name": r.name, "created_at": ts(&r.created_at), "created_by": r.created_by});
    cx.out.show(
        json,
        Human::Table(vec![
            vec!["Name".into(), r.name],
            vec!["Created".into(), ts(&r.created_at)],
            vec!["Created by".into(), r.created_by],
        ]),
    );
    Ok(())
}

/// `kms ls-enclave [PREFIX]`.
pub async fn ls(cx: &Ctx<'_>, prefix: &str) -> Result<(), String> {
    let all = with("ls-enclave", cx.c.list_enclaves(prefix).await)?;
    let json: Vec<_> = all
        .iter()
        .map(|e| json!({"name": e.name, "created_at": ts(&e.created_at), "created_by": e.created_by}))
        .collect();
    let mut rows = vec![vec!["NAME".into(), "CREATED".into(), "CREATED BY".into()]];
    rows.extend(
        all.into_iter()
            .map(|e| vec![e.name.clone(), ts(&e.created_at), e.created_by]),
    );
    cx.out.show(json!(json), Human::Table(rows));
    Ok(())
}
