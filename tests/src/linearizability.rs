//! A linearizability checker for histories of key creation, deletion and
//! reads (the Wing–Gong search with memoization, as Knossos and Porcupine
//! do), used by the cluster tests that record real histories under faults.
//!
//! Keys are independent objects, so a history is checked key by key
//! (P-compositionality). Each key's model is one bit, "the key exists":
//!
//! | op | key absent | key present |
//! | --- | --- | --- |
//! | create | `Ok`, now present | `Exists` |
//! | delete | `NotFound` | `Ok`, now absent |
//! | read | `Absent` | `Present` |
//!
//! An operation whose outcome is unknown (timeout, connection lost) may take
//! effect at any point after its call, or never.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Delete,
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Exists,
    NotFound,
    Present,
    Absent,
    /// The client does not know whether the operation took effect.
    Unknown,
}

/// One operation of a history: invoked at `call`, answered at `ret`
/// (any clock, as long as it is the same for every client).
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    pub call: u64,
    pub ret: u64,
}

/// The model: applies `op` to `exists`; `None` if `outcome` is impossible.
fn step(exists: bool, op: Op, outcome: Outcome) -> Option<bool> {
    match (op, exists, outcome) {
        (Op::Create, false, Outcome::Ok | Outcome::Unknown) => Some(true),
        (Op::Create, true, Outcome::Exists | Outcome::Unknown) => Some(true),
        (Op::Delete, true, Outcome::Ok | Outcome::Unknown) => Some(false),
        (Op::Delete, false, Outcome::NotFound | Outcome::Unknown) => Some(false),
        (Op::Read, true, Outcome::Present | Outcome::Unknown) => Some(true),
        (Op::Read, false, Outcome::Absent | Outcome::Unknown) => Some(false),
        _ => None,
    }
}

/// Checks a whole history; the error names the first key whose history has
/// no linearization, with its operations.
pub fn check(history: &[Event], initially_present: &[String]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    for (key, ops) in by_key {
        let present = initially_present.iter().any(|k| k == key);
        if !check_key(&ops, present) {
            let mut ops = ops.clone();
            ops.sort_by_key(|e| e.call);
            let lines: Vec<String> = ops
                .iter()
                .map(|e| format!("  [{}, {}] {:?} -> {:?}", e.call, e.ret, e.op, e.outcome))
                .collect();
            return Err(format!(
                "key '{key}' has no linearization:\n{}",
                lines.join("\n")
            ));
        }
    }
    Ok(())
}

fn check_key(ops: &[&Event], initially: bool) -> bool {
    let n = ops.len();
    let ret = |i: usize| {
        if ops[i].outcome == Outcome::Unknown {
            u64::MAX
        } else {
            ops[i].ret
        }
    };
    let mut seen: HashSet<(Vec<u64>, bool)> = HashSet::new();
    let words = n.div_ceil(64);
    // Depth-first search over (linearized set, state), iteratively.
    let mut stack = vec![(vec![0u64; words], initially)];
    while let Some((done, state)) = stack.pop() {
        let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        // Finished when every operation with a known outcome is linearized:
        // the unknown ones may never have taken effect.
        if (0..n).all(|i| is_done(i) || ops[i].outcome == Outcome::Unknown) {
            return true;
        }
        if !seen.insert((done.clone(), state)) {
            continue;
        }
        // An operation can go next only if no pending operation returned
        // before it was called.
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .map(ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if is_done(i) || ops[i].call > horizon {
                continue;
            }
            if let Some(next) = step(state, ops[i].op, ops[i].outcome) {
                let mut d = done.clone();
                d[i / 64] |= 1 << (i % 64);
                stack.push((d, next));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, op: Op, outcome: Outcome, call: u64, ret: u64) -> Event {
        Event {
            key: key.into(),
            op,
            outcome,
            call,
            ret,
        }
    }

    #[test]
    fn sequential_histories() {
        let h = vec![
            ev("a", Op::Create, Outcome::Ok, 0, 1),
            ev("a", Op::Read, Outcome::Present, 2, 3),
            ev("a", Op::Create, Outcome::Exists, 4, 5),
            ev("a", Op::Delete, Outcome::Ok, 6, 7),
            ev("a", Op::Read, Outcome::Absent, 8, 9),
            ev("a", Op::Delete, Outcome::NotFound, 10, 11),
        ];
        check(&h, &[]).unwrap();
    }

    #[test]
    fn stale_read_is_caught() {
        // The create was acknowledged before the read started: the read must see it.
        let h = vec![
            ev("a", Op::Create, Outcome::Ok, 0, 1),
            ev("a", Op::Read, Outcome::Absent, 2, 3),
        ];
        assert!(check(&h, &[]).is_err());
        // Concurrent, either order is fine.
        let h = vec![
            ev("a", Op::Create, Outcome::Ok, 0, 5),
            ev("a", Op::Read, Outcome::Absent, 1, 3),
        ];
        check(&h, &[]).unwrap();
    }

    #[test]
    fn lost_write_is_caught() {
        let h = vec![
            ev("a", Op::Create, Outcome::Ok, 0, 1),
            ev("a", Op::Read, Outcome::Present, 2, 3),
            ev("a", Op::Read, Outcome::Absent, 4, 5),
        ];
        assert!(check(&h, &[]).is_err());
    }

    #[test]
    fn two_successful_creates_are_caught() {
        let h = vec![
            ev("a", Op::Create, Outcome::Ok, 0, 10),
            ev("a", Op::Create, Outcome::Ok, 1, 11),
        ];
        assert!(check(&h, &[]).is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        // A timed-out create that took effect later...
        let h = vec![
            ev("a", Op::Create, Outcome::Unknown, 0, 1),
            ev("a", Op::Read, Outcome::Absent, 2, 3),
            ev("a", Op::Read, Outcome::Present, 4, 5),
        ];
        check(&h, &[]).unwrap();
        // ...or never.
        let h = vec![
            ev("a", Op::Create, Outcome::Unknown, 0, 1),
            ev("a", Op::Read, Outcome::Absent, 2, 3),
        ];
        check(&h, &[]).unwrap();
        // But it cannot be undone once observed.
        let h = vec![
            ev("a", Op::Create, Outcome::Unknown, 0, 1),
            ev("a", Op::Read, Outcome::Present, 2, 3),
            ev("a", Op::Read, Outcome::Absent, 4, 5),
        ];
        assert!(check(&h, &[]).is_err());
    }

    #[test]
    fn keys_are_independent_and_large_histories_finish() {
        let mut h = Vec::new();
        for k in 0..50 {
            let key = format!("k{k}");
            for i in 0..40u64 {
                let t = i * 10;
                let (op, out) = match i % 4 {
                    0 => (Op::Create, Outcome::Ok),
                    1 => (Op::Read, Outcome::Present),
                    2 => (Op::Delete, Outcome::Ok),
                    _ => (Op::Read, Outcome::Absent),
                };
                h.push(ev(&key, op, out, t, t + 15)); // overlapping neighbours
            }
        }
        check(&h, &[]).unwrap();
        assert!(
            check(&h, &["k3".into()]).is_err(),
            "k3 present at the start cannot be created first"
        );
    }
}
