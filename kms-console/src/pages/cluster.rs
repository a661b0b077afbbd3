//! The cluster page: every node with role, state, address, version and
//! commit index (CLUSTER:STATUS), and a banner when a member is down.

use http::StatusCode;
use maud::html;

use super::{failed_page, layout};
use crate::web::{html as respond, App, Resp, Sess};

pub(super) async fn page(app: &App, s: &Sess) -> Resp {
    let st = match app.client.cluster_status().await {
        Ok(st) => st,
        Err(e) => return failed_page(s, "Cluster", "cluster status failed", e),
    };
    let mut up: Vec<_> = st.nodes_up.iter().collect();
    up.sort_by_key(|(id, _)| **id);
    let mut down: Vec<_> = st.nodes_down.iter().collect();
    down.sort_by_key(|(id, _)| **id);
    let live = up
        .first()
        .map(|(_, n)| {
            if n.host.contains("://") {
                n.host.clone()
            } else {
                format!("https://{}", n.host)
            }
        })
        .unwrap_or_else(|| "https://LIVE-NODE:7373".into());
    let body = html! {
        @if !down.is_empty() {
            div.banner #down-banner role="alert" {
                strong { "A member of the cluster is down. " }
                "Writes are refused until it is back or removed from the cluster. "
                "If it will not come back, remove it on every live node, for example:"
                @for (id, _) in &down {
                    pre { code { "kms edit " (live) " --rm " (id) } }
                }
            }
        }
        table {
            caption { (up.len()) " up, " (down.len()) " down" }
            thead { tr { th scope="col" { "ID" } th scope="col" { "Address" } th scope="col" { "State" }
                         th scope="col" { "Role" } th scope="col" { "Commit index" } th scope="col" { "Version" }
                         th scope="col" { "Up for" } } }
            tbody {
                @for (id, n) in &up {
                    tr data-node=(id) {
                        td { (id) } td { (n.host) } td.state.up { "up" } td { (n.role) }
                        td { (n.commit) } td { (n.version) }
                        td { (n.up_time.as_ref().map(|d| format!("{} s", d.seconds)).unwrap_or_else(|| "-".into())) }
                    }
                }
                @for (id, addr) in &down {
                    tr data-node=(id) { td { (id) } td { (addr) } td.state.down { "down" } td { "-" } td { "-" } td { "-" } td { "-" } }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(s, "Cluster", body))
}
