//! Audit records: one per state change and one per denied request. Each is
//! emitted as a `tracing` event with target `audit` (so it can be routed or
//! filtered on its own: that log is the durable record) and kept in this
//! node's ring of the latest [`RING_CAPACITY`] events, which CLUSTER:AUDIT
//! reads (per node, in memory, lost on restart). They name the identity,
//! command, enclave, subject and outcome, never key material.

use std::collections::VecDeque;

use kms_client::{Command, Identity};
use parking_lot::Mutex;

/// Events each node keeps for CLUSTER:AUDIT (docs/api.md); older ones are
/// only in the `audit` log.
pub const RING_CAPACITY: usize = 4096;
/// Events a CLUSTER:AUDIT answer holds when the request sets no limit.
pub const LIMIT_DEFAULT: usize = 100;
/// Most events in one CLUSTER:AUDIT answer (a larger limit is clamped).
pub const LIMIT_MAX: usize = 1000;
/// Audited operations that are not commands of the KMS API.
pub const OPERATIONS: [&str; 2] = ["BACKUP", "RESTORE"];
/// Longest name or error message kept in the ring (bytes; longer ones are cut).
const FIELD_MAX: usize = 1024;

/// How an audited request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Denied => "denied",
        }
    }
}

/// One event of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// From 1, one more per event recorded by this node.
    pub seq: u64,
    /// When it was recorded (Unix time).
    pub time: prost_types::Timestamp,
    pub identity: String,
    /// A command name or one of [`OPERATIONS`].
    pub command: &'static str,
    /// Empty outside any enclave.
    pub enclave: String,
    pub name: String,
    pub outcome: Outcome,
    /// Why a change failed; empty otherwise.
    pub error: String,
}

/// What CLUSTER:AUDIT asks for; empty strings match anything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub identity: String,
    /// A canonical name (see [`parse_command`]).
    pub command: &'static str,
    pub enclave: String,
    /// At most this many events (the caller clamps it to [`LIMIT_MAX`]).
    pub limit: usize,
    /// Only events with a smaller sequence number; 0: no bound.
    pub before_seq: u64,
}

/// The canonical name of a command filter: a command name
/// (case-insensitive) or one of [`OPERATIONS`]; empty matches any.
pub fn parse_command(s: &str) -> Result<&'static str, String> {
    if s.is_empty() {
        return Ok("");
    }
    if let Some(c) = Command::from_name(s) {
        return Ok(c.name());
    }
    OPERATIONS
        .iter()
        .find(|o| o.eq_ignore_ascii_case(s))
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown command '{}': use a command name such as KEY:CREATE, or BACKUP or RESTORE",
                s.chars().take(64).collect::<String>()
            )
        })
}

struct Ring {
    /// The sequence number of the next event.
    next: u64,
    events: VecDeque<Event>,
    capacity: usize,
}

/// The audit records of this node: the `audit` log, and the ring.
pub struct Audit {
    ring: Mutex<Ring>,
}

impl Default for Audit {
    fn default() -> Self {
        Self::with_capacity(RING_CAPACITY)
    }
}

/// The current time since 1970 (0 if the clock is before 1970).
fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `s`, cut to at most [`FIELD_MAX`] bytes at a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

impl Audit {
    fn with_capacity(capacity: usize) -> Self {
        Audit {
            ring: Mutex::new(Ring {
                next: 1,
                events: VecDeque::with_capacity(capacity),
                capacity,
            }),
        }
    }

    /// A state change (or an attempt at one) and how it ended.
    pub fn change(
        &self,
        identity: &Identity,
        cmd: Command,
        enclave: Option<&str>,
        name: &str,
        outcome: Result<(), String>,
    ) {
        match &outcome {
            Ok(()) => {
                tracing::info!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "ok", "state change")
            }
            Err(e) => {
                tracing::info!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "failed", error = %e, "state change")
            }
        }
        let (o, e) = match &outcome {
            Ok(()) => (Outcome::Ok, ""),
            Err(e) => (Outcome::Failed, e.as_str()),
        };
        self.record(identity, cmd.name(), enclave, name, o, e);
    }

    /// A request refused for lack of permission.
    pub fn denied(&self, identity: &Identity, cmd: Command, enclave: Option<&str>, name: &str) {
        tracing::warn!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "denied", "request denied");
        self.record(identity, cmd.name(), enclave, name, Outcome::Denied, "");
    }

    /// An operation outside the KMS API (one of [`OPERATIONS`]) refused.
    pub fn denied_op(&self, identity: &Identity, op: &'static str) {
        tracing::warn!(target: "audit", identity = %identity, command = op, outcome = "denied", "request denied");
        self.record(identity, op, None, "", Outcome::Denied, "");
    }

    /// An operation outside the KMS API (one of [`OPERATIONS`]) and whether it succeeded.
    pub fn op(&self, identity: &Identity, op: &'static str, ok: bool) {
        let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        tracing::info!(target: "audit", identity = %identity, command = op, outcome = outcome.as_str(), "operation");
        self.record(identity, op, None, "", outcome, "");
    }

    fn record(
        &self,
        identity: &Identity,
        command: &'static str,
        enclave: Option<&str>,
        name: &str,
        outcome: Outcome,
        error: &str,
    ) {
        let mut e = Event {
            seq: 0,
            time: now(),
            identity: identity.to_string(),
            command,
            enclave: bounded(enclave.unwrap_or("")),
            name: bounded(name),
            outcome,
            error: bounded(error),
        };
        let mut r = self.ring.lock();
        e.seq = r.next;
        r.next += 1;
        if r.events.len() >= r.capacity {
            r.events.pop_front();
        }
        if r.capacity > 0 {
            r.events.push_back(e);
        }
    }

    /// The events that match `f`, newest first, and the oldest sequence
    /// number held (0 when the ring is empty).
    pub fn query(&self, f: &Filter) -> (Vec<Event>, u64) {
        let r = self.ring.lock();
        let oldest = r.events.front().map_or(0, |e| e.seq);
        let events = r
            .events
            .iter()
            .rev()
            .filter(|e| f.before_seq == 0 || e.seq < f.before_seq)
            .filter(|e| f.identity.is_empty() || e.identity == f.identity)
            .filter(|e| f.command.is_empty() || e.command == f.command)
            .filter(|e| f.enclave.is_empty() || e.enclave == f.enclave)
            .take(f.limit)
            .cloned()
            .collect();
        (events, oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_client::ApiKey;

    fn all(limit: usize) -> Filter {
        Filter {
            limit,
            ..Default::default()
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn the_ring_is_bounded_and_numbers_every_event() {
        let a = Audit::with_capacity(5);
        let id = ApiKey::generate().identity();
        assert_eq!(a.query(&all(100)), (vec![], 0));
        for i in 0..12 {
            a.change(&id, Command::KeyCreate, Some("e"), &format!("k{i}"), Ok(()));
        }
        let (events, oldest) = a.query(&all(100));
        assert_eq!(seqs(&events), [12, 11, 10, 9, 8]);
        assert_eq!(oldest, 8);
        assert_eq!(events[0].name, "k11");
        assert_eq!(events[4].name, "k7");
        assert_eq!(a.ring.lock().events.len(), 5);
        // The default ring holds RING_CAPACITY events, no more.
        let d = Audit::default();
        for _ in 0..RING_CAPACITY + 10 {
            d.denied(&id, Command::KeyList, Some("e"), "");
        }
        let (events, oldest) = d.query(&all(usize::MAX));
        assert_eq!(events.len(), RING_CAPACITY);
        assert_eq!(oldest, 11);
        assert_eq!(events[0].seq, RING_CAPACITY as u64 + 10);
    }

    #[test]
    fn paging_backwards_with_before_seq() {
        let a = Audit::with_capacity(100);
        let id = ApiKey::generate().identity();
        for i in 0..10 {
            a.change(&id, Command::KeyCreate, Some("e"), &format!("k{i}"), Ok(()));
        }
        let mut f = all(4);
        let mut pages = Vec::new();
        loop {
            let (page, oldest) = a.query(&f);
            assert_eq!(oldest, 1);
            let Some(last) = page.last() else { break };
            f.before_seq = last.seq;
            pages.push(seqs(&page));
            assert!(pages.len() <= 3, "{pages:?}");
        }
        assert_eq!(pages, [vec![10, 9, 8, 7], vec![6, 5, 4, 3], vec![2, 1]]);
        f.before_seq = 1;
        assert!(a.query(&f).0.is_empty());
        // A bound past the newest event is no bound.
        f.before_seq = 1000;
        assert_eq!(seqs(&a.query(&f).0), [10, 9, 8, 7]);
    }

    #[test]
    fn filters_match_exactly() {
        let a = Audit::with_capacity(100);
        let (x, y) = (ApiKey::generate().identity(), ApiKey::generate().identity());
        a.change(&x, Command::KeyCreate, Some("A"), "k1", Ok(()));
        a.change(
            &y,
            Command::KeyCreate,
            Some("B"),
            "k1",
            Err("key already exists".into()),
        );
        a.denied(&y, Command::KeyGenerate, Some("A"), "k1");
        a.denied_op(&y, "BACKUP");
        a.op(&x, "BACKUP", true);
        a.op(&x, "RESTORE", false);
        let q = |identity: &str, command: &str, enclave: &str| {
            let f = Filter {
                identity: identity.into(),
                command: parse_command(command).unwrap(),
                enclave: enclave.into(),
                limit: 100,
                before_seq: 0,
            };
            seqs(&a.query(&f).0)
        };
        assert_eq!(q("", "", ""), [6, 5, 4, 3, 2, 1]);
        assert_eq!(q(&x.to_string(), "", ""), [6, 5, 1]);
        assert_eq!(q(&y.to_string(), "", ""), [4, 3, 2]);
        assert_eq!(q(&y.to_string()[..10], "", ""), Vec::<u64>::new());
        assert_eq!(q("", "key:create", ""), [2, 1]);
        assert_eq!(q("", "KEY:CREATE", "A"), [1]);
        assert_eq!(q("", "", "A"), [3, 1]);
        assert_eq!(q("", "backup", ""), [5, 4]);
        assert_eq!(q(&x.to_string(), "BACKUP", ""), [5]);
        assert_eq!(q("", "", "a"), Vec::<u64>::new());
        let (events, _) = a.query(&all(100));
        let failed = &events[4];
        assert_eq!(
            (
                failed.outcome,
                failed.error.as_str(),
                failed.enclave.as_str()
            ),
            (Outcome::Failed, "key already exists", "B")
        );
        assert_eq!(events[3].outcome, Outcome::Denied);
        assert_eq!(events[3].command, "KEY:GENERATE");
        assert_eq!(events[1].outcome, Outcome::Ok);
        assert_eq!(events[0].outcome, Outcome::Failed);
        assert_eq!(events[0].error, "");
        assert_eq!(seqs(&a.query(&all(2)).0), [6, 5]);
        assert!(a.query(&all(0)).0.is_empty());
    }

    #[test]
    fn command_filters_are_names() {
        assert_eq!(parse_command(""), Ok(""));
        assert_eq!(parse_command("identity:self"), Ok("IDENTITY:SELF"));
        assert_eq!(parse_command("Restore"), Ok("RESTORE"));
        let e = parse_command("KEY:NOPE").unwrap_err();
        assert!(e.starts_with("unknown command 'KEY:NOPE'"), "{e}");
        // A huge name is not echoed in full.
        let e = parse_command(&"x".repeat(100_000)).unwrap_err();
        assert!(e.len() < 200, "{}", e.len());
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let a = Audit::with_capacity(2);
        let id = ApiKey::generate().identity();
        let long = "é".repeat(FIELD_MAX);
        a.change(&id, Command::ClusterAddNode, None, &long, Err(long.clone()));
        let (events, _) = a.query(&all(1));
        assert_eq!(events[0].name.len(), FIELD_MAX);
        assert_eq!(events[0].error.len(), FIELD_MAX);
        assert!(events[0].name.chars().all(|c| c == 'é'));
    }
}
