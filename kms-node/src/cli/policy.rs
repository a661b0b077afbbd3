//! Policy commands: `add-policy`, `set-policy`, `rm-policy`, `stat-policy`,
//! `ls-policy`.

use std::collections::HashMap;
use std::path::Path;

use kms_client::proto;
use serde_json::json;

use super::output::{ts, Human};
use super::{with, Ctx};
use crate::policy::Policy;

/// `kms add-policy NAME FILE`: the policy's JSON form, validated here first.
pub async fn add(cx: &Ctx<'_>, name: &str, file: &Path) -> Result<(), String> {
    let e = cx.enclave()?;
    let what = format!("add-policy {name}");
    let text = std::fs::read(file)
        .map_err(|err| format!("{what}: cannot read {}: {err}", file.display()))?;
    let p = Policy::from_json(&text).map_err(|err| format!("{what}: {err}"))?;
    with(&what, cx.c.create_policy(&e, name, &p.allow, &p.deny).await)
}

/// `kms set-policy NAME IDENTITY`.
pub async fn set(cx: &Ctx<'_>, name: &str, identity: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    with(
        &format!("set-policy {name}"),
        cx.c.assign_policy(&e, name, identity).await,
    )
}

/// `kms rm-policy NAME`.
pub async fn rm(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    with(
        &format!("rm-policy {name}"),
        cx.c.delete_policy(&e, name).await,
    )
}

/// Rules as JSON: command names to sorted patterns.
fn rules(m: &HashMap<String, proto::RuleSet>) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    let mut keys: Vec<_> = m.keys().collect();
    keys.sort();
    for k in keys {
        let mut pats: Vec<_> = m[k].rules.keys().cloned().collect();
        pats.sort();
        o.insert(k.clone(), json!(pats));
    }
    serde_json::Value::Object(o)
}

/// `kms stat-policy NAME`: the policy as JSON (indented without `--json`).
pub async fn stat(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    let r = with(&format!("stat-policy {name}"), cx.c.policy(&e, name).await)?;
    let v = json!({"name": r.name, "allow": rules(&r.allow), "deny": rules(&r.deny), "created_at": ts(&r.created_at), "created_by": r.created_by});
    cx.out.show(v, Human::PrettyJson);
    Ok(())
}

/// `kms ls-policy [PREFIX]`.
pub async fn ls(cx: &Ctx<'_>, prefix: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    let all = with("ls-policy", cx.c.list_policies(&e, prefix).await)?;
    let json: Vec<_> = all
        .iter()
        .map(|p| json!({"name": p.name, "created_at": ts(&p.created_at), "created_by": p.created_by}))
        .collect();
    let mut rows = vec![vec!["NAME".into(), "CREATED".into(), "CREATED BY".into()]];
    rows.extend(
        all.into_iter()
            .map(|p| vec![p.name.clone(), ts(&p.created_at), p.created_by]),
    );
    cx.out.show(json!(json), Human::Table(rows));
    Ok(())
}
