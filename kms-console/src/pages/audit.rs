//! The audit page: the latest audit events of every node the console talks
//! to (CLUSTER:AUDIT, SysAdmin only), merged newest first, filtered by
//! identity, command and enclave. Each node keeps its latest events in
//! memory (docs/api.md); the `audit` log target is the durable record.

use http::StatusCode;
use maud::html;

use super::{field, layout, ts};
use crate::web::{enc, html as respond, App, Form, Resp, Sess};

/// Events shown by default, and at most.
const LIMIT: u32 = 100;
const MAX: u32 = 1000;

pub(super) async fn page(_app: &App, s: &Sess, q: &Form) -> Resp {
    let limit = q.get("limit").parse::<u32>().unwrap_or(LIMIT).clamp(1, MAX);
    let query = kms_client::AuditQuery {
        identity: q.get("identity").trim().to_string(),
        command: q.get("command").trim().to_string(),
        enclave: q.get("enclave").trim().to_string(),
        limit,
        before_seq: 0,
    };
    let answers = s.client.audit_all(&query).await;
    let endpoints = s.client.endpoints();
    let mut errors = Vec::new();
    let mut ok = Vec::new();
    for (i, r) in answers.into_iter().enumerate() {
        match r {
            Ok(a) => ok.push(a),
            Err(e) => errors.push((endpoints.get(i).cloned().unwrap_or_default(), e)),
        }
    }
    let all_failed = ok.is_empty();
    let events = kms_client::merge_audit(ok, limit as usize);
    let more = format!(
        "/audit?identity={}&command={}&enclave={}&limit={}",
        enc(&query.identity),
        enc(&query.command),
        enc(&query.enclave),
        (limit * 2).min(MAX)
    );
    let body = html! {
        p { "The latest state changes and refusals recorded by each node, newest first. "
            "Nodes keep them in memory (the durable record is each node's log, target " code { "audit" } ")." }
        form method="get" action="/audit" class="search" {
            (field("au-identity", "identity", "Identity", &query.identity, false))
            (field("au-command", "command", "Command (e.g. KEY:CREATE)", &query.command, false))
            (field("au-enclave", "enclave", "Enclave", &query.enclave, false))
            button type="submit" { "Filter" }
        }
        @for (e, err) in &errors { p.error role="alert" { "audit of " (e) " failed: " (err) } }
        table.audit {
            caption { (events.len()) " events" }
            thead { tr { th scope="col" { "Time" } th scope="col" { "Node" } th scope="col" { "Identity" }
                         th scope="col" { "Command" } th scope="col" { "Enclave" } th scope="col" { "Name" }
                         th scope="col" { "Outcome" } } }
            tbody {
                @for ev in &events {
                    tr {
                        td { (ts(&ev.time)) } td { (ev.node_id) }
                        td.id { a href={ "/audit?identity=" (enc(&ev.identity)) } { (ev.identity) } }
                        td { a href={ "/audit?command=" (enc(&ev.command)) } { (ev.command) } }
                        td { (ev.enclave) } td { (ev.name) }
                        td class=(format!("outcome {}", ev.outcome)) {
                            (ev.outcome) @if !ev.error.is_empty() { ": " (ev.error) }
                        }
                    }
                }
            }
        }
        @if events.len() as u32 == limit && limit < MAX { p { a href=(more) { "Show more" } } }
    };
    let status = if all_failed {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    respond(status, layout(s, "Audit", body))
}
