//! `audit` (CLUSTER:AUDIT on every node, merged) and `whoami` (IDENTITY:SELF).

use kms_client::{merge_audit, proto, AuditQuery};
use serde_json::json;

use super::output::{self, ts, Human};
use super::{client, with, Ctx};

/// Seconds since 1970 with the nanoseconds, for JSON.
fn unix(t: &Option<proto::Timestamp>) -> f64 {
    t.map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// `kms audit [--identity I] [--command C] [-e E] [--limit N] [--node URL]`:
/// the latest audit events of every server of KMS_SERVER (or of `node`
/// alone), merged by time, newest first. A server that does not answer is
/// reported on stderr; the others' events are still shown.
pub async fn audit(
    cx: &Ctx<'_>,
    identity: Option<String>,
    command: Option<String>,
    limit: u32,
    node: Option<String>,
) -> Result<(), String> {
    let q = AuditQuery {
        identity: identity.unwrap_or_default(),
        command: command.unwrap_or_default(),
        // The flag only: a KMS_ENCLAVE set for enclave work does not narrow
        // the audit view.
        enclave: cx.g.enclave.clone().unwrap_or_default(),
        limit,
        before_seq: 0,
    };
    let answers = match node {
        Some(url) => {
            let mut at = cx.g.clone();
            at.server = Some(url.clone());
            let c = client(&at)?;
            vec![with(&format!("audit {url}"), c.audit_at(0, &q).await)?]
        }
        None => {
            let results = cx.c.audit_all(&q).await;
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for (url, r) in cx.c.endpoints().iter().zip(results) {
                match r {
                    Ok(a) => ok.push(a),
                    Err(e) => failed.push(format!("audit {url}: {e}")),
                }
            }
            if ok.is_empty() {
                return Err(failed.join("; "));
            }
            for f in &failed {
                output::error(&format!("{f} (its events are not shown)"));
            }
            ok
        }
    };
    let nodes: Vec<_> = answers
        .iter()
        .map(|a| json!({"node_id": a.node_id, "oldest_seq": a.oldest_seq}))
        .collect();
    let events = merge_audit(answers, limit as usize);
    let json_events: Vec<_> = events
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq, "time": ts(&e.time), "unix_time": unix(&e.time),
                "node_id": e.node_id, "identity": e.identity, "command": e.command,
                "enclave": e.enclave, "name": e.name, "outcome": e.outcome, "error": e.error,
            })
        })
        .collect();
    let mut rows = vec![[
        "TIME", "NODE", "SEQ", "IDENTITY", "COMMAND", "ENCLAVE", "NAME", "OUTCOME",
    ]
    .map(String::from)
    .to_vec()];
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    rows.extend(events.iter().map(|e| {
        vec![
            ts(&e.time),
            e.node_id.to_string(),
            e.seq.to_string(),
            e.identity.clone(),
            e.command.clone(),
            dash(&e.enclave),
            dash(&e.name),
            if e.error.is_empty() {
                e.outcome.clone()
            } else {
                format!("{}: {}", e.outcome, e.error)
            },
        ]
    }));
    cx.out.show(
        json!({"events": json_events, "nodes": nodes}),
        Human::Table(rows),
    );
    Ok(())
}

/// `kms whoami`: the caller's own identity record.
pub async fn whoami(cx: &Ctx<'_>) -> Result<(), String> {
    let r = with("whoami", cx.c.whoami().await)?;
    let json = json!({
        "identity": r.identity, "privilege": r.privilege, "enclave": r.enclave,
        "policy": r.policy, "root": r.is_root, "created_at": ts(&r.created_at),
        "created_by": r.created_by,
    });
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows = vec![
        ("identity", r.identity.clone()),
        ("privilege", r.privilege.clone()),
        ("enclave", dash(&r.enclave)),
        ("policy", dash(&r.policy)),
        (
            "root",
            if r.is_root {
                "yes (derived from the HSM)".into()
            } else {
                "no".into()
            },
        ),
        ("created", ts(&r.created_at)),
        ("created by", dash(&r.created_by)),
    ];
    cx.out.show(json, Human::Fields(rows));
    Ok(())
}
