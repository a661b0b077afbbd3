//! Request metrics in the Prometheus text format (`/v1/health/metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kms_client::Command;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
/// Upper bounds of the batch size histogram buckets.
const BATCH_BUCKETS: [u64; 8] = [1, 2, 8, 32, 128, 256, 1024, 4096];
const STATUSES: [u16; 11] = [200, 400, 403, 404, 405, 408, 409, 413, 500, 501, 503];
/// Where a status not listed is counted (as 500).
const OTHER: usize = status_index(500);

const fn status_index(status: u16) -> usize {
    let mut i = 0;
    while i < STATUSES.len() {
        if STATUSES[i] == status {
            return i;
        }
        i += 1;
    }
    panic!("status not listed")
}

struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

#[derive(Default)]
struct PerCommand {
    by_status: [AtomicU64; STATUSES.len()],
    latency: Histogram<12>,
    batch: Histogram<8>,
    frames: AtomicU64,
}

/// Counters of a node. All updates are relaxed atomics: no lock on the hot path.
pub struct Metrics {
    commands: Vec<PerCommand>,
    /// Requests rejected before a command was known (bad frames, 413, ...).
    rejected: AtomicU64,
    /// Write proposals committed.
    pub commits: AtomicU64,
    /// Reads that waited for a write another node may serve (`Node::fence`).
    fence_waits: AtomicU64,
    /// Of those, the ones that gave up at the bound.
    fence_expired: AtomicU64,
    /// Total time spent waiting, in microseconds.
    fence_micros: AtomicU64,
    /// Per configured HSM, by name: operations that failed, and whether the
    /// last check succeeded (`serve::check_hsms`).
    hsms: parking_lot::Mutex<Vec<HsmHealth>>,
    /// Per TLS certificate (`api`, `cluster`): the Unix time of its notAfter.
    certificates: parking_lot::Mutex<Vec<(&'static str, i64)>>,
    /// Certificate reloads that took effect, and reloads refused (bad files).
    tls_reloads: AtomicU64,
    tls_reload_errors: AtomicU64,
}

struct HsmHealth {
    name: String,
    errors: u64,
    up: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commands: Command::ALL.iter().map(|_| PerCommand::default()).collect(),
            rejected: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            fence_waits: AtomicU64::new(0),
            fence_expired: AtomicU64::new(0),
            fence_micros: AtomicU64::new(0),
            hsms: parking_lot::Mutex::new(Vec::new()),
            certificates: parking_lot::Mutex::new(Vec::new()),
            tls_reloads: AtomicU64::new(0),
            tls_reload_errors: AtomicU64::new(0),
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn cmd_index(c: Command) -> usize {
    Command::ALL
        .iter()
        .position(|x| *x == c)
        .expect("every command is in ALL")
}

impl Metrics {
    /// Records one request of `batch` frames of `cmd`, of which `frames` were
    /// processed, that ended with `status` (statuses not listed count as 500).
    pub fn record(
        &self,
        cmd: Command,
        batch: usize,
        frames: usize,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let m = &self.commands[cmd_index(cmd)];
        let si = STATUSES.iter().position(|s| *s == status).unwrap_or(OTHER);
        m.by_status[si].fetch_add(1, Relaxed);
        m.frames.fetch_add(frames as u64, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            m.latency.buckets[i].fetch_add(1, Relaxed);
        }
        m.latency.count.fetch_add(1, Relaxed);
        m.latency
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        if let Some(i) = BATCH_BUCKETS.iter().position(|b| batch as u64 <= *b) {
            m.batch.buckets[i].fetch_add(1, Relaxed);
        }
        m.batch.count.fetch_add(1, Relaxed);
        m.batch.sum_micros.fetch_add(batch as u64, Relaxed);
    }

    /// A read that waited `waited` for an unpublished write (`expired`: it
    /// gave up at the bound).
    pub fn record_fence(&self, waited: std::time::Duration, expired: bool) {
        self.fence_waits.fetch_add(1, Relaxed);
        self.fence_expired.fetch_add(u64::from(expired), Relaxed);
        self.fence_micros
            .fetch_add(waited.as_micros() as u64, Relaxed);
    }

    /// The result of one operation (or check) of the HSM named `hsm`.
    pub fn record_hsm(&self, hsm: &str, ok: bool) {
        let mut all = self.hsms.lock();
        let i = match all.iter().position(|h| h.name == hsm) {
            Some(i) => i,
            None => {
                all.push(HsmHealth {
                    name: hsm.to_string(),
                    errors: 0,
                    up: true,
                });
                all.len() - 1
            }
        };
        all[i].errors += u64::from(!ok);
        all[i].up = ok;
    }

    /// Sets the expiry (Unix seconds of notAfter) of the certificate `which`.
    pub fn set_certificate_expiry(&self, which: &'static str, not_after: i64) {
        let mut all = self.certificates.lock();
        match all.iter_mut().find(|(w, _)| *w == which) {
            Some(c) => c.1 = not_after,
            None => all.push((which, not_after)),
        }
    }

    /// A certificate reload: taken (`ok`) or refused.
    pub fn record_tls_reload(&self, ok: bool) {
        if ok {
            self.tls_reloads.fetch_add(1, Relaxed);
        } else {
            self.tls_reload_errors.fetch_add(1, Relaxed);
        }
    }

    pub fn reject(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Renders the Prometheus text format. `extra` are gauges of the node.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut s = String::with_capacity(16 * 1024);
        s.push_str("# HELP kms_requests_total Requests by command and HTTP status.\n# TYPE kms_requests_total counter\n");
        for (c, m) in Command::ALL.iter().zip(&self.commands) {
            for (st, n) in STATUSES.iter().zip(&m.by_status) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "kms_requests_total{{command=\"{c}\",status=\"{st}\"}} {n}"
                    );
                }
            }
        }
        s.push_str("# HELP kms_commands_total Command frames processed (a batch counts each frame it got to).\n# TYPE kms_commands_total counter\n");
        for (c, m) in Command::ALL.iter().zip(&self.commands) {
            let n = m.frames.load(Relaxed);
            if n > 0 {
                let _ = writeln!(s, "kms_commands_total{{command=\"{c}\"}} {n}");
            }
        }
        s.push_str("# HELP kms_request_duration_seconds Request latency by command.\n# TYPE kms_request_duration_seconds histogram\n");
        for (c, m) in Command::ALL.iter().zip(&self.commands) {
            let count = m.latency.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut cum = 0;
            for (b, n) in LATENCY_BUCKETS.iter().zip(&m.latency.buckets) {
                cum += n.load(Relaxed);
                let _ = writeln!(
                    s,
                    "kms_request_duration_seconds_bucket{{command=\"{c}\",le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                s,
                "kms_request_duration_seconds_bucket{{command=\"{c}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                s,
                "kms_request_duration_seconds_sum{{command=\"{c}\"}} {}",
                m.latency.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                s,
                "kms_request_duration_seconds_count{{command=\"{c}\"}} {count}"
            );
        }
        s.push_str("# HELP kms_batch_size Frames per request by command.\n# TYPE kms_batch_size histogram\n");
        for (c, m) in Command::ALL.iter().zip(&self.commands) {
            let count = m.batch.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut cum = 0;
            for (b, n) in BATCH_BUCKETS.iter().zip(&m.batch.buckets) {
                cum += n.load(Relaxed);
                let _ = writeln!(
                    s,
                    "kms_batch_size_bucket{{command=\"{c}\",le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                s,
                "kms_batch_size_bucket{{command=\"{c}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                s,
                "kms_batch_size_sum{{command=\"{c}\"}} {}",
                m.batch.sum_micros.load(Relaxed)
            );
            let _ = writeln!(s, "kms_batch_size_count{{command=\"{c}\"}} {count}");
        }
        let errors: u64 = self
            .commands
            .iter()
            .flat_map(|m| m.by_status.iter().skip(1))
            .map(|n| n.load(Relaxed))
            .sum::<u64>()
            + self.rejected.load(Relaxed);
        let _ = writeln!(s, "# HELP kms_errors_total Requests that failed.\n# TYPE kms_errors_total counter\nkms_errors_total {errors}");
        let _ = writeln!(
            s,
            "# HELP kms_rejected_total Requests answered with an error before any command ran: malformed or too large bodies, unknown endpoints, failed backups and restores.\n# TYPE kms_rejected_total counter\nkms_rejected_total {}",
            self.rejected.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP kms_read_fence_waits_total Reads that waited for a write another node may already serve.\n# TYPE kms_read_fence_waits_total counter\nkms_read_fence_waits_total {}\n# HELP kms_read_fence_expired_total Reads that stopped waiting at the bound and were served without such a write.\n# TYPE kms_read_fence_expired_total counter\nkms_read_fence_expired_total {}\n# HELP kms_read_fence_seconds_total Time reads spent waiting for such writes.\n# TYPE kms_read_fence_seconds_total counter\nkms_read_fence_seconds_total {}",
            self.fence_waits.load(Relaxed),
            self.fence_expired.load(Relaxed),
            self.fence_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "# HELP kms_commits_total State changes committed.\n# TYPE kms_commits_total counter\nkms_commits_total {}", self.commits.load(Relaxed));
        {
            let hsms = self.hsms.lock();
            s.push_str("# HELP kms_hsm_errors_total HSM operations and checks that failed, by HSM.\n# TYPE kms_hsm_errors_total counter\n");
            for h in hsms.iter() {
                let _ = writeln!(
                    s,
                    "kms_hsm_errors_total{{hsm=\"{}\"}} {}",
                    label(&h.name),
                    h.errors
                );
            }
            s.push_str("# HELP kms_hsm_up 1 if the HSM's last check (a seal and unseal) succeeded.\n# TYPE kms_hsm_up gauge\n");
            for h in hsms.iter() {
                let _ = writeln!(
                    s,
                    "kms_hsm_up{{hsm=\"{}\"}} {}",
                    label(&h.name),
                    u8::from(h.up)
                );
            }
        }
        s.push_str("# HELP kms_tls_certificate_expiry_timestamp_seconds When the certificate expires (notAfter, Unix time): api is the client-facing certificate, cluster the inter-node one.\n# TYPE kms_tls_certificate_expiry_timestamp_seconds gauge\n");
        for (which, t) in self.certificates.lock().iter() {
            let _ = writeln!(
                s,
                "kms_tls_certificate_expiry_timestamp_seconds{{certificate=\"{which}\"}} {t}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP kms_tls_certificate_reloads_total Reloads of the API certificate that took effect (ok) or were refused (error).\n# TYPE kms_tls_certificate_reloads_total counter\nkms_tls_certificate_reloads_total{{result=\"ok\"}} {}\nkms_tls_certificate_reloads_total{{result=\"error\"}} {}",
            self.tls_reloads.load(Relaxed),
            self.tls_reload_errors.load(Relaxed)
        );
        for (name, help, v) in extra {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::default();
        let us = std::time::Duration::from_micros;
        m.record(Command::KeyGenerate, 256, 256, 200, us(300));
        m.record(Command::KeyGenerate, 1, 1, 403, us(30));
        // A batch of 8 that failed at its third frame.
        m.record(Command::KeyDecrypt, 8, 3, 400, us(30));
        m.record(Command::ClusterAddNode, 1, 1, 501, us(30));
        let s = m.render(&[("kms_up", "Up.", 1.0)]);
        assert!(s.contains("kms_requests_total{command=\"KEY:GENERATE\",status=\"200\"} 1"));
        assert!(s.contains("kms_commands_total{command=\"KEY:GENERATE\"} 257"));
        assert!(s.contains("kms_batch_size_bucket{command=\"KEY:GENERATE\",le=\"256\"} 2"));
        assert!(s.contains("kms_errors_total 3"));
        assert!(s.contains("kms_commands_total{command=\"KEY:DECRYPT\"} 3"));
        assert!(s.contains("kms_batch_size_bucket{command=\"KEY:DECRYPT\",le=\"8\"} 1"));
        assert!(s.contains("kms_requests_total{command=\"CLUSTER:ADDNODE\",status=\"501\"} 1"));
        assert!(s.contains("kms_up 1"));
    }

    #[test]
    fn renders_hsms_and_certificates() {
        let m = Metrics::default();
        m.record_hsm("soft:ab", true);
        m.record_hsm("pkcs11:\"x\"\\y", false);
        m.record_hsm("pkcs11:\"x\"\\y", false);
        m.record_hsm("soft:ab", true);
        m.set_certificate_expiry("api", 1_900_000_000);
        m.set_certificate_expiry("api", 1_900_000_001);
        m.record_tls_reload(true);
        m.record_tls_reload(false);
        m.record_tls_reload(true);
        let s = m.render(&[]);
        assert!(
            s.contains("kms_hsm_errors_total{hsm=\"soft:ab\"} 0\n"),
            "{s}"
        );
        assert!(
            s.contains("kms_hsm_errors_total{hsm=\"pkcs11:\\\"x\\\"\\\\y\"} 2\n"),
            "{s}"
        );
        assert!(s.contains("kms_hsm_up{hsm=\"soft:ab\"} 1\n"));
        assert!(s.contains("kms_hsm_up{hsm=\"pkcs11:\\\"x\\\"\\\\y\"} 0\n"));
        assert!(s.contains(
            "kms_tls_certificate_expiry_timestamp_seconds{certificate=\"api\"} 1900000001\n"
        ));
        assert_eq!(
            s.matches("kms_tls_certificate_expiry_timestamp_seconds{")
                .count(),
            1
        );
        assert!(s.contains("kms_tls_certificate_reloads_total{result=\"ok\"} 2\n"));
        assert!(s.contains("kms_tls_certificate_reloads_total{result=\"error\"} 1\n"));
    }
}
