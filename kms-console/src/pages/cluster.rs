//! The cluster page: every node with role, state (up, or down since when),
//! address, version, commit index and HSMs (CLUSTER:STATUS); a banner when a
//! member is down; live charts per node of requests/s, errors/s and p99
//! latency from the nodes' metrics.
//!
//! The page is whole without JavaScript (and refreshes itself every 5 s with
//! a `<meta>` refresh inside `<noscript>`); with it, `console.js` replaces the
//! `#live` part with `GET /live/cluster` every 2 s.

use std::time::SystemTime;

use http::StatusCode;
use maud::{html, Markup};

use super::{layout, ts_secs};
use crate::charts::{chart, View};
use crate::web::{html as respond, App, Resp, Sess};

pub(super) async fn page(app: &App, s: &Sess) -> Resp {
    let (status, live) = fragment(app, s).await;
    let body = html! {
        noscript { meta http-equiv="refresh" content="5"; }
        div #live data-src="/live/cluster" aria-live="polite" { (live) }
        p.hint #live-state { "Refreshes every few seconds." }
        script src="/console.js" defer {}
    };
    respond(status, layout(s, "Cluster", body))
}

/// `GET /live/cluster`: the live part alone, for the script.
pub(super) async fn live(app: &App, s: &Sess) -> Resp {
    let (status, m) = fragment(app, s).await;
    respond(status, m)
}

async fn fragment(app: &App, s: &Sess) -> (StatusCode, Markup) {
    let (st, view) = tokio::join!(s.client.cluster_status(), app.charts.sample(&s.client));
    let st = match st {
        Ok(st) => st,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                html! {
                    p.error role="alert" { "cluster status failed: " (e) }
                    (charts(&view, &[]))
                },
            )
        }
    };
    let mut up: Vec<_> = st.nodes_up.values().collect();
    up.sort_by_key(|n| n.id);
    let mut down: Vec<_> = st.nodes_down.iter().map(|(id, a)| (*id, a)).collect();
    down.sort_by_key(|(id, _)| *id);
    let now = SystemTime::now();
    let since: Vec<SystemTime> = {
        let mut d = app.down_since.lock();
        d.retain(|id, _| st.nodes_down.contains_key(id));
        down.iter()
            .map(|(id, _)| *d.entry(*id).or_insert(now))
            .collect()
    };
    let live = up
        .first()
        .map(|n| {
            if n.host.contains("://") {
                n.host.clone()
            } else {
                format!("https://{}", n.host)
            }
        })
        .unwrap_or_else(|| "https://LIVE-NODE:7373".into());
    let names: Vec<(String, String)> = up
        .iter()
        .map(|n| (n.host.clone(), format!("node {}", n.id)))
        .chain(
            down.iter()
                .map(|(id, a)| ((*a).clone(), format!("node {id}"))),
        )
        .collect();
    let m = html! {
        @if !down.is_empty() {
            div.banner #down-banner role="alert" {
                strong { "A member of the cluster is down. " }
                "Writes are refused until it is back or removed from the cluster; "
                "generate, encrypt, decrypt and MAC go on on every live node. "
                "If it will not come back, remove it on every live node, for example:"
                @for (id, _) in &down {
                    pre { code { "kms edit " (live) " --rm " (id) } }
                }
            }
        }
        table.nodes {
            caption { (up.len()) " up, " (down.len()) " down" }
            thead { tr { th scope="col" { "ID" } th scope="col" { "Address" } th scope="col" { "State" }
                         th scope="col" { "Role" } th scope="col" { "Commit index" } th scope="col" { "Version" }
                         th scope="col" { "HSMs" } th scope="col" { "Up for" } } }
            tbody {
                @for n in &up {
                    tr data-node=(n.id) {
                        td { (n.id) } td { (n.host) } td.state.up { "up" }
                        td { (n.role) }
                        td { (n.commit) } td { (n.version) }
                        td { (hsms(&n.hsms, &n.configured_hsms)) }
                        td { (n.up_time.as_ref().map(|d| duration(d.seconds.max(0) as u64)).unwrap_or_else(|| "-".into())) }
                    }
                }
                @for ((id, addr), t) in down.iter().zip(&since) {
                    tr data-node=(id) {
                        td { (id) } td { (addr) }
                        td.state.down title={ "unreachable since " (ts_secs(secs(*t))) } { "down" }
                        td colspan="5" { "unreachable since " (ts_secs(secs(*t)))
                            " (" (duration(now.duration_since(*t).unwrap_or_default().as_secs())) ")" }
                    }
                }
            }
        }
        (charts(&view, &names))
    };
    (StatusCode::OK, m)
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The HSMs of a node: those that seal its state, marked if not configured,
/// and configured ones that do not seal yet.
fn hsms(seal: &[String], conf: &[String]) -> Markup {
    html! {
        @for h in seal {
            (h) @if !conf.contains(h) { " (not configured)" } " "
        }
        @for h in conf.iter().filter(|h| !seal.contains(h)) {
            (h) " (does not seal: kms add-hsm) "
        }
    }
}

/// `1 d 2 h`, `3 h 4 min`, `5 min 6 s`, `7 s`.
fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {} s", s % 60)
    } else {
        format!("{s} s")
    }
}

/// The three charts; a series is named by its node where the endpoint is a
/// node's address.
fn charts(view: &View, names: &[(String, String)]) -> Markup {
    let name = |endpoint: &str| {
        let bare = endpoint.trim_start_matches("https://");
        names
            .iter()
            .find(|(host, _)| host.trim_start_matches("https://") == bare)
            .map(|(_, n)| format!("{n} ({bare})"))
            .unwrap_or_else(|| bare.to_string())
    };
    let pick = |f: &dyn Fn(&crate::charts::Point) -> Option<f64>| {
        view.series
            .iter()
            .map(|(e, pts, _)| {
                (
                    name(e),
                    pts.iter()
                        .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.t, v)))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    html! {
        section.charts aria-label="Live charts" {
            h2 { "Requests" }
            div.chart-row {
                (chart("Requests per second", "1/s", &pick(&|p| Some(p.rps))))
                (chart("Errors per second", "1/s", &pick(&|p| Some(p.eps))))
                (chart("p99 latency", "ms", &pick(&|p| p.p99_ms)))
            }
            @for (e, _, err) in &view.series {
                @if let Some(err) = err { p.hint { "Metrics of " (name(e)) ": " (err) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(7), "7 s");
        assert_eq!(duration(366), "6 min 6 s");
        assert_eq!(duration(3 * 3600 + 240), "3 h 4 min");
        assert_eq!(duration(86_400 + 7200), "1 d 2 h");
    }
}
