//! The client-facing API of a node: proposing changes (`propose`, which
//! forwards to the leader, and `propose_local`, the leader's side of a
//! forwarded write), restoring a backup (`replace_state`), the read fence
//! (`fence`, `fence_bound`), why a write cannot succeed now
//! (`write_blocker`), and naming members in messages (`describe`).

use std::time::{Duration, Instant};

use crate::change::Change;
use crate::model::State;
use crate::replication::core::{NodeId, Role};
use crate::replication::net::{Call, Reply};

use super::{Event, Node, ProposeError, View};

impl Node {
    /// How long a read waits at most for a write that another node may
    /// already serve (`fence`): two election timeouts, time for a new leader
    /// to be elected and resolve the entries of the one that died.
    pub fn fence_bound(&self) -> Duration {
        self.timing.election * 2
    }

    /// Waits until the entries touching `enclave` that this node holds
    /// unpublished while another node may serve them (`View::pending`) are
    /// published here or resolved, for at most `fence_bound`; then it serves
    /// what it has, and later reads of that enclave do not wait for those
    /// entries again. Entries in doubt behind a leader's hold are not
    /// fenced at all (`Core::fence_to`), so with a member down and nothing
    /// in doubt a read never waits (consistency.md, "Reads").
    pub async fn fence(&self, enclave: &str) {
        // A read outside any enclave ("") depends on every entry.
        let target = |v: &View| {
            if enclave.is_empty() {
                v.pending.values().copied().max()
            } else {
                v.pending
                    .get(enclave)
                    .copied()
                    .max(v.pending.get("").copied())
            }
            .filter(|t| *t > v.published)
        };
        let Some(first) = target(&self.view()) else {
            return;
        };
        if self
            .fence_expired
            .lock()
            .get(enclave)
            .is_some_and(|e| *e >= first)
        {
            return;
        }
        let started = Instant::now();
        // Resolved once `first` is published here, or nothing at or past it
        // is fenced any more (truncated, or behind a hold).
        let resolved = self
            .wait_view(self.fence_bound(), |v| match target(v) {
                Some(t) if t >= first && v.published < first => None,
                _ => Some(()),
            })
            .await;
        let expired = resolved.is_none();
        self.metrics.record_fence(started.elapsed(), expired);
        if expired {
            let mut e = self.fence_expired.lock();
            let t = e.entry(enclave.to_string()).or_default();
            *t = (*t).max(first);
            tracing::warn!(
                enclave,
                target = first,
                bound = ?self.fence_bound(),
                "read served without a write in doubt that another node may serve (no leader \
                 resolved it in time); later reads of this enclave do not wait for it again"
            );
        }
    }

    /// `id (addr)` for messages.
    pub fn describe(&self, ids: &[NodeId]) -> String {
        super::describe(&self.view().members, ids)
    }

    /// Proposes on this node only (no forwarding): the leader's answer to a
    /// forwarded write.
    pub async fn propose_local(&self, change: Change) -> Result<u64, ProposeError> {
        self.ask(|r| Event::Propose(change, r)).await?
    }

    /// Commits `change` through the leader (forwarding it there if this node
    /// is a follower) and returns its log index once every member has
    /// applied it, this node included.
    pub async fn propose(&self, change: Change) -> Result<u64, ProposeError> {
        let deadline = Instant::now() + self.timing.election * 2;
        loop {
            match self.propose_local(change.clone()).await {
                Err(ProposeError::NotLeader(Some(l))) if l != self.id() => {
                    return self.forward(l, change).await
                }
                Err(ProposeError::NotLeader(_)) if Instant::now() < deadline => {
                    // Proposing again helps only once this node leads, knows
                    // another leader, or was removed (which answers at once).
                    self.wait_view(deadline.saturating_duration_since(Instant::now()), |v| {
                        let led = v.role == Role::Leader || v.removed.is_some();
                        (led || v.leader.is_some_and(|l| l != self.id())).then_some(())
                    })
                    .await;
                }
                Err(ProposeError::NotLeader(_)) => {
                    let v = self.view();
                    let others: Vec<NodeId> = v
                        .members
                        .keys()
                        .copied()
                        .filter(|m| *m != self.id())
                        .collect();
                    return Err(ProposeError::Unavailable(format!(
                        "no leader: this node cannot reach a majority of the cluster (members {}); \
                         nothing was applied",
                        self.describe(&others)
                    )));
                }
                r => return r,
            }
        }
    }

    async fn forward(&self, leader: NodeId, change: Change) -> Result<u64, ProposeError> {
        let timeout = self.timing.election * 2 + Duration::from_secs(1);
        match self
            .peers
            .call(leader, Call::Forward(vec![change]), timeout)
            .await
        {
            Ok(Reply::Forwarded(mut v)) => match v.pop() {
                Some(Ok(i)) => {
                    // Every member published it before the leader answered
                    // (this one reported it), so this holds at once.
                    debug_assert!(self.state().applied >= i || self.view().removed.is_some());
                    Ok(i)
                }
                Some(Err(f)) => Err(f.into()),
                None => Err(ProposeError::Unavailable(
                    "empty answer from the leader".into(),
                )),
            },
            Ok(_) => Err(ProposeError::Unavailable(
                "unexpected answer from the leader".into(),
            )),
            Err(f) if f.unsent => Err(ProposeError::Unavailable(format!(
                "write refused: the leader, {}, cannot be reached from this node ({}); nothing \
                 was applied",
                self.describe(&[leader]),
                f.message
            ))),
            Err(f) => Err(ProposeError::Unavailable(format!(
                "the write was sent to the leader, {}, which did not answer ({}): its outcome is \
                 unknown, it may still apply",
                self.describe(&[leader]),
                f.message
            ))),
        }
    }

    /// Replaces the whole state (restore from a backup): single-node clusters only.
    pub async fn replace_state(&self, st: State, records: u64) -> Result<u64, ProposeError> {
        if self.view().members.len() > 1 {
            return Err(ProposeError::Failed {
                status: 409,
                message: "restore needs a single-node cluster: restore into a fresh node, then \
                          `kms add` the other nodes (after wiping them)"
                    .into(),
            });
        }
        self.ask(|r| Event::Restore(Box::new(st), records, r))
            .await?
    }

    /// Why a write cannot succeed now, if it cannot.
    pub async fn write_blocker(&self) -> Option<String> {
        let v = self.view().clone();
        if let Some(r) = &v.removed {
            return Some(r.clone());
        }
        match (v.role, v.leader) {
            (Role::Leader, _) if v.down.is_empty() => None,
            (Role::Leader, _) => Some(format!(
                "unreachable: {}; a write needs every member",
                self.describe(&v.down)
            )),
            (_, Some(l)) if l != self.id() => {
                match self
                    .peers
                    .call(l, Call::ReadyWrite, self.timing.election)
                    .await
                {
                    Ok(_) => None,
                    Err(f) => Some(format!("leader {}: {}", self.describe(&[l]), f.message)),
                }
            }
            _ => Some("no leader elected (an election is in progress, or a majority of the members is unreachable)".into()),
        }
    }
}
