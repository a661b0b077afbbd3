//! HSMs (as `kms ls-hsm`, `add-hsm`, `rm-hsm`): per node, the HSMs that seal
//! its state and those it is configured with; add one to a node or remove
//! one. Each node has its own root key and HSMs (docs/hsm.md): these act on
//! the node chosen in the form.

use maud::{html, Markup};

use super::{csrf, failed_page_after, field, layout, Flash};
use crate::web::{html as respond, redirect, App, Form, Resp, Sess};

pub(super) async fn page(_app: &App, s: &Sess, f: &Flash) -> Resp {
    let st = match s.client.cluster_status().await {
        Ok(st) => st,
        Err(e) => return failed_page_after(s, "HSMs", "cluster status failed", e, f),
    };
    let mut nodes: Vec<_> = st.nodes_up.values().collect();
    nodes.sort_by_key(|n| n.id);
    let body = html! {
        p { "Each node seals its state with a root key protected by every HSM listed as sealing. "
            "An HSM that is configured but does not seal yet is added with " code { "kms add-hsm" } " (below)." }
        table {
            thead { tr { th scope="col" { "Node" } th scope="col" { "HSM" } th scope="col" { "State" } } }
            tbody {
                @for n in &nodes {
                    @let names = hsm_names(n);
                    @for h in names {
                        @let seals = n.hsms.contains(h);
                        @let conf = n.configured_hsms.contains(h);
                        tr data-hsm=(h) {
                            td { (n.id) } td { (h) }
                            td {
                                @match (seals, conf) {
                                    (true, true) => { "seals, configured" }
                                    (true, false) => { "seals, not configured" }
                                    _ => { "configured, does not seal (add it below)" }
                                }
                                @if n.configured_hsms.first() == Some(h) { ", primary" }
                            }
                        }
                    }
                }
                @for (id, addr) in &st.nodes_down {
                    tr { td { (id) } td colspan="2" { "down (" (addr) "): not known" } }
                }
            }
        }
        section {
            h2 { "Add an HSM" }
            p.hint { "The node must be configured with it (its PKCS#11 module or software key) first." }
            form method="post" action="/hsms/add" {
                (csrf(s))
                (node_select(s, "hsm-add-node", f.v("add", "node")))
                (field("hsm-add", "name", "HSM name", f.v("add", "name"), true))
                label.check for="hsm-overwrite" {
                    input type="checkbox" id="hsm-overwrite" name="overwrite" value="1" checked[f.v("add", "overwrite") == "1"];
                    " Replace that HSM's existing entry"
                }
                button type="submit" { "Add" }
                (f.note("add"))
            }
        }
        section {
            h2 { "Remove an HSM" }
            p.hint { "Removes the root key sealed by that HSM; refused when no HSM configured on a node would still unseal it." }
            form method="post" action="/hsms/remove" {
                (csrf(s))
                (node_select(s, "hsm-rm-node", f.v("remove", "node")))
                (field("hsm-rm", "name", "HSM name", f.v("remove", "name"), true))
                (field("hsm-rm-confirm", "confirm", "Type it again to confirm", "", true))
                button.danger type="submit" { "Remove" }
                (f.note("remove"))
            }
        }
    };
    respond(f.status(), layout(s, "HSMs", body))
}

/// The HSMs a node seals with or is configured with, sorted, once each.
fn hsm_names(n: &kms_client::proto::ServerStatusResponse) -> Vec<&String> {
    let mut names: Vec<&String> = n.hsms.iter().chain(&n.configured_hsms).collect();
    names.sort();
    names.dedup();
    names
}

/// The servers the console talks to, to pick the node a change acts on.
fn node_select(s: &Sess, id: &str, chosen: &str) -> Markup {
    html! {
        label for=(id) { "Node" }
        select id=(id) name="node" {
            @for (i, e) in s.client.endpoints().iter().enumerate() {
                option value=(i) selected[chosen == i.to_string()] { (e) }
            }
        }
    }
}

pub(super) async fn post(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let name = f.get("name").trim();
    let form = if path == "/hsms/add" { "add" } else { "remove" };
    let node = f
        .get("node")
        .parse::<usize>()
        .ok()
        .and_then(|i| s.client.for_endpoint(i));
    let r = match node {
        None => Err("choose one of the console's nodes".to_string()),
        Some(c) if form == "add" => c
            .add_hsm(name, f.get("overwrite") == "1")
            .await
            .map_err(|e| e.to_string()),
        Some(_) if f.get("confirm").trim() != name => {
            Err("the confirmation does not match the name".into())
        }
        Some(c) => c.remove_hsm(name).await.map_err(|e| e.to_string()),
    };
    match r {
        Ok(()) => redirect("/hsms"),
        Err(e) => page(app, s, &Flash::failed(form, e, f)).await,
    }
}
