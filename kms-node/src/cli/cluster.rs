//! Cluster commands: `stat`, `ls`, `add`, `rm`, `edit`, `backup`, `restore`.

use std::path::Path;

use serde_json::json;

use super::output::{duration, secs, Human};
use super::{client, with, Ctx};

/// `kms stat`: the status of the node that answers.
pub async fn stat(cx: &Ctx<'_>) -> Result<(), String> {
    let v = with("version", cx.c.version().await)?;
    let r = with("cluster status", cx.c.cluster_status().await)?;
    let Some(s) = r.nodes_up.values().find(|s| s.host == v.host) else {
        return Err(format!("stat: no status for node {}", v.host));
    };
    let json = json!({
        "id": s.id, "address": s.host, "role": s.role, "leader_id": s.leader_id,
        "commit": s.commit, "version": s.version, "uptime_s": secs(&s.up_time),
        "last_heartbeat_s": secs(&s.last_heartbeat),
        "heartbeat_interval_s": secs(&s.heartbeat_interval),
        "election_timeout_s": secs(&s.election_timeout),
        "members": s.nodes, "hsms": s.hsms, "configured_hsms": s.configured_hsms,
        "nodes_up": r.nodes_up.len(), "nodes_down": r.nodes_down.len(),
    });
    let leader = if s.leader_id < 0 {
        "none known".to_string()
    } else {
        let id = s.leader_id as u32;
        format!("{id} ({})", s.nodes.get(&id).cloned().unwrap_or_default())
    };
    let rows = vec![
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
        ("last heartbeat", duration(secs(&s.last_heartbeat))),
        ("heartbeat", duration(secs(&s.heartbeat_interval))),
        ("election timeout", duration(secs(&s.election_timeout))),
        ("uptime", duration(secs(&s.up_time))),
        ("version", s.version.clone()),
        ("HSMs", s.configured_hsms.join(", ")),
    ];
    cx.out.show(json, Human::Fields(rows));
    Ok(())
}

/// `kms ls`: every node, up or down, by id.
pub async fn ls(cx: &Ctx<'_>) -> Result<(), String> {
    let r = with("cluster status", cx.c.cluster_status().await)?;
    let mut ids: Vec<u32> = r
        .nodes_up
        .keys()
        .chain(r.nodes_down.keys())
        .copied()
        .collect();
    ids.sort();
    let nodes: Vec<_> = ids
        .iter()
        .map(|id| match r.nodes_up.get(id) {
            Some(s) => {
                json!({"id": id, "address": s.host, "role": s.role, "up": true, "commit": s.commit})
            }
            None => json!({"id": id, "address": r.nodes_down[id], "role": "", "up": false}),
        })
        .collect();
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
    cx.out.show(json!({ "nodes": nodes }), Human::Table(rows));
    Ok(())
}

/// `kms add URL`.
pub async fn add(cx: &Ctx<'_>, url: &str) -> Result<(), String> {
    with(&format!("add {url}"), cx.c.add_node(url).await)
}

/// `kms rm URL`.
pub async fn rm(cx: &Ctx<'_>, url: &str) -> Result<(), String> {
    with(&format!("rm {url}"), cx.c.remove_node(url).await)
}

/// `kms edit NODE --rm ID...`.
pub async fn edit(cx: &Ctx<'_>, node: &str, remove_ids: &[u32]) -> Result<(), String> {
    // The override applies to NODE's own view: send it there, nowhere else.
    let mut at = cx.g.clone();
    at.server = Some(node.to_string());
    let c = client(&at)?;
    with(
        &format!("edit {node}"),
        c.edit_cluster(node, remove_ids).await,
    )
}

/// `kms backup FILE`.
pub async fn backup(cx: &Ctx<'_>, file: &Path) -> Result<(), String> {
    let body = with("backup", cx.c.backup().await)?;
    std::fs::write(file, &body)
        .map_err(|e| format!("backup: cannot write {}: {e}", file.display()))?;
    cx.out.line(format_args!(
        "Wrote a sealed backup of {} bytes to {}",
        body.len(),
        file.display()
    ));
    Ok(())
}

/// `kms restore FILE`.
pub async fn restore(cx: &Ctx<'_>, file: &Path) -> Result<(), String> {
    let body =
        std::fs::read(file).map_err(|e| format!("restore: cannot read {}: {e}", file.display()))?;
    with("restore", cx.c.restore(body.into()).await)?;
    cx.out
        .line(format_args!("Restored the state from {}", file.display()));
    Ok(())
}
