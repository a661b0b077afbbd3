//! Live charts: the console samples each node's `/v1/health/metrics` (at
//! most every [`INTERVAL`], when a cluster page asks) and keeps a short
//! history per node of requests/s, errors/s and the p99 latency of the
//! interval, drawn as inline SVG (no script, no library).
//!
//! Rates are differences of the nodes' counters between two samples, so a
//! node that restarts (its counters fall) starts its series again.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kms_client::Client;
use maud::{html, Markup};
use parking_lot::Mutex;

/// Samples closer together than this reuse the last one.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);
/// Points kept per node (three minutes at [`INTERVAL`]).
const POINTS: usize = 90;
/// A node's metrics must answer within this, or the sample has a gap.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// The counters of one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Scrape {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative latency histogram over all commands: (upper bound in
    /// seconds, count), ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

/// Parses the counters the charts need from the Prometheus text format.
pub(crate) fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name.starts_with("kms_requests_total{") {
            s.requests += v;
        } else if name == "kms_errors_total" {
            s.errors += v;
        } else if let Some(rest) = name.strip_prefix("kms_request_duration_seconds_bucket{") {
            let Some(le) = rest
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|le| {
                    if le == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        le.parse::<f64>().ok()
                    }
                })
            else {
                continue;
            };
            match s.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += v,
                None => s.buckets.push((le, v)),
            }
        }
    }
    s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

/// One point of a node's series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Point {
    /// Seconds since the console started.
    pub t: f64,
    pub rps: f64,
    pub eps: f64,
    /// The upper bound of the bucket holding the 99th percentile, in ms;
    /// `None` when the interval had no request.
    pub p99_ms: Option<f64>,
}

/// The point between two scrapes `dt` seconds apart; `None` if the
/// counters fell (the node restarted).
pub(crate) fn point(prev: &Scrape, cur: &Scrape, t: f64, dt: f64) -> Option<Point> {
    if dt <= 0.0 || cur.requests < prev.requests || cur.errors < prev.errors {
        return None;
    }
    let count = |s: &Scrape, le: f64| {
        s.buckets
            .iter()
            .find(|(b, _)| *b == le)
            .map(|(_, n)| *n)
            .unwrap_or(0.0)
    };
    let total = count(cur, f64::INFINITY) - count(prev, f64::INFINITY);
    let p99_ms = (total > 0.0)
        .then(|| {
            cur.buckets
                .iter()
                .find(|(le, n)| n - count(prev, *le) >= 0.99 * total)
                .map(|(le, _)| le * 1e3)
        })
        .flatten();
    Some(Point {
        t,
        rps: (cur.requests - prev.requests) / dt,
        eps: (cur.errors - prev.errors) / dt,
        p99_ms,
    })
}

struct Series {
    endpoint: String,
    last: Option<(Instant, Scrape)>,
    points: VecDeque<Point>,
    /// Why the last sample failed, if it did.
    error: Option<String>,
}

struct State {
    started: Instant,
    sampled: Option<Instant>,
    series: Vec<Series>,
}

/// The sampled histories, shared by every session.
pub(crate) struct Charts {
    state: Mutex<State>,
    /// One sample at a time.
    sampling: tokio::sync::Mutex<()>,
}

impl Default for Charts {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                started: Instant::now(),
                sampled: None,
                series: Vec::new(),
            }),
            sampling: tokio::sync::Mutex::new(()),
        }
    }
}

/// What a page draws: per endpoint, its points and last error.
pub(crate) struct View {
    pub series: Vec<(String, Vec<Point>, Option<String>)>,
}

impl Charts {
    /// Scrapes every endpoint of `client` unless a sample is fresh, then
    /// returns the histories.
    pub async fn sample(&self, client: &Client) -> View {
        let fresh = |st: &State| st.sampled.is_some_and(|t| t.elapsed() < INTERVAL);
        if !fresh(&self.state.lock()) {
            let _one = self.sampling.lock().await;
            if !fresh(&self.state.lock()) {
                self.scrape(client).await;
            }
        }
        let st = self.state.lock();
        View {
            series: st
                .series
                .iter()
                .map(|s| {
                    (
                        s.endpoint.clone(),
                        s.points.iter().copied().collect(),
                        s.error.clone(),
                    )
                })
                .collect(),
        }
    }

    async fn scrape(&self, client: &Client) {
        let endpoints = client.endpoints().to_vec();
        let mut set = tokio::task::JoinSet::new();
        for (i, _) in endpoints.iter().enumerate() {
            let c = client.clone();
            set.spawn(async move {
                let r = tokio::time::timeout(
                    TIMEOUT,
                    c.request_at(i, http::Method::GET, "/v1/health/metrics", None),
                )
                .await;
                let r = match r {
                    Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(r)) if r.status != 200 => Err(format!("status {}", r.status)),
                    Ok(Ok(r)) => Ok(parse(&String::from_utf8_lossy(&r.body))),
                };
                (i, Instant::now(), r)
            });
        }
        let mut results = Vec::with_capacity(endpoints.len());
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        let mut st = self.state.lock();
        let started = st.started;
        if st.series.iter().map(|s| &s.endpoint).ne(endpoints.iter()) {
            st.series = endpoints
                .iter()
                .map(|e| Series {
                    endpoint: e.clone(),
                    last: None,
                    points: VecDeque::new(),
                    error: None,
                })
                .collect();
        }
        for (i, at, r) in results {
            let Some(s) = st.series.get_mut(i) else {
                continue;
            };
            match r {
                Err(e) => {
                    s.error = Some(e);
                    s.last = None;
                }
                Ok(cur) => {
                    s.error = None;
                    if let Some((t0, prev)) = &s.last {
                        let t = at.duration_since(started).as_secs_f64();
                        let dt = at.duration_since(*t0).as_secs_f64();
                        if let Some(p) = point(prev, &cur, t, dt) {
                            if s.points.len() == POINTS {
                                s.points.pop_front();
                            }
                            s.points.push_back(p);
                        }
                    }
                    s.last = Some((at, cur));
                }
            }
        }
        st.sampled = Some(Instant::now());
    }
}

/// Stroke colors of the series, in order (distinct also in grey scale).
const COLORS: [&str; 6] = [
    "#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#334155",
];
/// Dash patterns, so that the series differ without color too.
const DASHES: [&str; 6] = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4"];

/// A line chart of one quantity for every node, as inline SVG with a text
/// alternative (the latest value of each series).
pub(crate) fn chart(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)]) -> Markup {
    const W: f64 = 320.0;
    const H: f64 = 120.0;
    const PAD_L: f64 = 36.0;
    const PAD_B: f64 = 14.0;
    let (mut t0, mut t1, mut vmax) = (f64::MAX, f64::MIN, 0.0f64);
    for (_, pts) in series {
        for &(t, v) in pts {
            t0 = t0.min(t);
            t1 = t1.max(t);
            vmax = vmax.max(v);
        }
    }
    let have = t1 > t0;
    let vmax = nice(vmax);
    let span = (t1 - t0).max(1.0);
    let x = |t: f64| PAD_L + (t - t0) / span * (W - PAD_L - 4.0);
    let y = |v: f64| 4.0 + (1.0 - v / vmax) * (H - PAD_B - 8.0);
    let summary = series
        .iter()
        .map(|(name, pts)| match pts.last() {
            Some((_, v)) => format!("{name}: {} {unit}", fmt(*v)),
            None => format!("{name}: no data yet"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let base = H - PAD_B;
    html! {
        figure.chart {
            figcaption { (title) " (" (unit) ")" }
            svg.chart viewBox={ "0 0 " (W) " " (H) } width="100%" role="img" aria-label={ (title) ": " (summary) } {
                title { (title) }
                line x1=(PAD_L) y1=(base) x2=(W) y2=(base) stroke="#8a8f98" stroke-width="0.5" {}
                text x="2" y="10" font-size="9" fill="#555" { (fmt(vmax)) }
                text x="2" y=(base) font-size="9" fill="#555" { "0" }
                @if have {
                    text x=(PAD_L) y=(H) font-size="9" fill="#555" { "-" (format!("{:.0}", t1 - t0)) " s" }
                    text x=(W - 2.0) y=(H) font-size="9" fill="#555" text-anchor="end" { "now" }
                }
                @for (i, (_, pts)) in series.iter().enumerate() {
                    @if pts.len() >= 2 {
                        polyline points=(points(pts, &x, &y)) fill="none" stroke=(COLORS[i % COLORS.len()])
                            stroke-width="1.5" stroke-dasharray=(DASHES[i % DASHES.len()]) {}
                    }
                }
            }
            ul.legend {
                @for (i, (name, pts)) in series.iter().enumerate() {
                    li {
                        svg width="24" height="8" aria-hidden="true" {
                            line x1="0" y1="4" x2="24" y2="4" stroke=(COLORS[i % COLORS.len()]) stroke-width="2" stroke-dasharray=(DASHES[i % DASHES.len()]) {}
                        }
                        " " (name) ": "
                        @match pts.last() { Some((_, v)) => { (fmt(*v)) } None => { "-" } }
                    }
                }
            }
        }
    }
}

/// A polyline's points, `x,y x,y ...`.
fn points(pts: &[(f64, f64)], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    let mut p = String::with_capacity(pts.len() * 12);
    for &(t, v) in pts {
        let _ = write!(p, "{:.1},{:.1} ", x(t), y(v));
    }
    p
}

/// A round upper bound for an axis.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP x\nkms_requests_total{command=\"KEY:GENERATE\",status=\"200\"} 100\nkms_requests_total{command=\"KEY:DECRYPT\",status=\"403\"} 5\nkms_request_duration_seconds_bucket{command=\"KEY:GENERATE\",le=\"0.001\"} 90\nkms_request_duration_seconds_bucket{command=\"KEY:GENERATE\",le=\"0.01\"} 100\nkms_request_duration_seconds_bucket{command=\"KEY:GENERATE\",le=\"+Inf\"} 100\nkms_request_duration_seconds_bucket{command=\"KEY:DECRYPT\",le=\"0.001\"} 5\nkms_request_duration_seconds_bucket{command=\"KEY:DECRYPT\",le=\"0.01\"} 5\nkms_request_duration_seconds_bucket{command=\"KEY:DECRYPT\",le=\"+Inf\"} 5\nkms_errors_total 5\ngarbage line\nkms_errors_total x\n";

    #[test]
    fn parses_the_counters() {
        let s = parse(A);
        assert_eq!(s.requests, 105.0);
        assert_eq!(s.errors, 5.0);
        assert_eq!(
            s.buckets,
            vec![(0.001, 95.0), (0.01, 105.0), (f64::INFINITY, 105.0)]
        );
        assert_eq!(parse(""), Scrape::default());
    }

    #[test]
    fn rates_and_p99_of_an_interval() {
        let prev = parse(A);
        let mut cur = prev.clone();
        cur.requests += 200.0;
        cur.errors += 2.0;
        // 200 more requests: 150 under 1 ms, 48 under 10 ms, 2 slower.
        cur.buckets = vec![(0.001, 245.0), (0.01, 293.0), (f64::INFINITY, 305.0)];
        let p = point(&prev, &cur, 10.0, 2.0).unwrap();
        assert_eq!(p.rps, 100.0);
        assert_eq!(p.eps, 1.0);
        assert_eq!(p.p99_ms, Some(f64::INFINITY));
        cur.buckets = vec![(0.001, 245.0), (0.01, 305.0), (f64::INFINITY, 305.0)];
        assert_eq!(point(&prev, &cur, 10.0, 2.0).unwrap().p99_ms, Some(10.0));
        // No request in the interval: no latency; a restart: no point.
        assert_eq!(point(&prev, &prev, 1.0, 2.0).unwrap().p99_ms, None);
        assert!(point(&cur, &prev, 1.0, 2.0).is_none());
    }

    #[test]
    fn charts_render() {
        let m = chart(
            "Requests",
            "1/s",
            &[
                ("node 1".into(), vec![(0.0, 1.0), (2.0, 3.0)]),
                ("node <2>".into(), vec![]),
            ],
        )
        .into_string();
        assert!(m.contains("<polyline"));
        assert!(m.contains("node 1: 3.00 1/s; node &lt;2&gt;: no data yet"));
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(120.0), 200.0);
    }
}
