//! The replication protocol core: events in, actions out. No I/O, no clock,
//! no randomness except a seeded generator for election timeouts, so a
//! simulator can drive it deterministically.
//!
//! Raft's elections (terms, votes, log up-to-dateness, pre-vote) with one
//! difference in commitment: an entry is committed only when **every**
//! member has persisted it, and a proposal is acknowledged only when every
//! member has *applied* it. Any single member then holds, and serves, every
//! acknowledged write.
//!
//! The shell must carry out the actions in order: persisting (`SaveHardState`,
//! `Append`, `Apply`) before sending the messages that follow them.

use std::collections::{BTreeMap, BTreeSet};

pub type NodeId = u32;
pub type Term = u64;
pub type Index = u64;

/// A log entry; `payload` `None` is the no-op a new leader appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<P> {
    pub term: Term,
    pub payload: Option<P>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<P> {
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        term: Term,
        granted: bool,
    },
    Vote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    VoteResp {
        term: Term,
        granted: bool,
    },
    Append {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry<P>>,
        commit: Index,
    },
    AppendResp {
        term: Term,
        success: bool,
        matched: Index,
        applied: Index,
    },
}

impl<P> Msg<P> {
    pub fn term(&self) -> Term {
        match self {
            Msg::PreVote { term, .. }
            | Msg::PreVoteResp { term, .. }
            | Msg::Vote { term, .. }
            | Msg::VoteResp { term, .. }
            | Msg::Append { term, .. }
            | Msg::AppendResp { term, .. } => *term,
        }
    }
}

/// Why a proposal was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Not the leader; the leader if known.
    NotLeader(Option<NodeId>),
    /// Not every member applied the entry in time. It stays in the log and
    /// may still commit: the outcome is unknown to the client.
    Unavailable { missing: Vec<NodeId> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    Send(NodeId, Msg<P>),
    /// Persist the term and vote.
    SaveHardState {
        term: Term,
        voted_for: Option<NodeId>,
    },
    /// Persist `entries` at `from`, truncating the log there first.
    Append {
        from: Index,
        entries: Vec<Entry<P>>,
    },
    /// Apply the committed entries up to `to` (durably).
    Apply {
        to: Index,
    },
    /// Drop the log entries up to `to`: they are applied on every member
    /// (a commit needs every member), so no one will ask for them again.
    Compact {
        to: Index,
    },
    /// Answer proposal `id`.
    Reply {
        id: u64,
        result: Result<Index, Reject>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u64,
    /// Election timeout range in ticks (randomized per election).
    pub election_ticks: (u64, u64),
    /// Ticks a proposal may wait for every member to apply it.
    pub write_timeout_ticks: u64,
    /// Most entries per Append message.
    pub max_batch: usize,
    /// Seed of the election-timeout generator.
    pub seed: u64,
    /// Applied entries kept in the log; it is compacted when twice as many pile up.
    pub retain: u64,
    /// Deliberately broken variant for the simulator's self-test: commit and
    /// acknowledge once a majority has an entry (plain Raft), which breaks the
    /// "every member has every acknowledged write" guarantee.
    #[cfg(test)]
    pub broken_majority_commit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_ticks: 2,
            election_ticks: (10, 20),
            write_timeout_ticks: 15,
            max_batch: 64,
            seed: 1,
            retain: 1024,
            #[cfg(test)]
            broken_majority_commit: false,
        }
    }
}

/// The durable part of a core: what survives a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable<P> {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// The entries after `snap_index`.
    pub log: Vec<Entry<P>>,
    pub applied: Index,
    /// Index and term of the last entry dropped by compaction.
    pub snap_index: Index,
    pub snap_term: Term,
}

impl<P> Default for Durable<P> {
    fn default() -> Self {
        Self {
            term: 0,
            voted_for: None,
            log: Vec::new(),
            applied: 0,
            snap_index: 0,
            snap_term: 0,
        }
    }
}

impl<P> Durable<P> {
    /// Position in `log` of index `i` (which must be after `snap_index`).
    pub fn pos(&self, i: Index) -> usize {
        (i - self.snap_index - 1) as usize
    }
    pub fn last_index(&self) -> Index {
        self.snap_index + self.log.len() as Index
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    next: Index,
    matched: Index,
    applied: Index,
}

#[derive(Debug)]
pub struct Core<P> {
    pub id: NodeId,
    members: Vec<NodeId>,
    cfg: Config,
    d: Durable<P>,
    role: Role,
    leader: Option<NodeId>,
    commit: Index,
    now: u64,
    elapsed: u64,
    timeout: u64,
    rng: u64,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    pending: BTreeMap<Index, (u64, u64)>,
    out: Vec<Action<P>>,
}

impl<P: Clone> Core<P> {
    /// A core restarting from `durable` (a new node: `Durable::default()`).
    pub fn new(id: NodeId, members: Vec<NodeId>, cfg: Config, durable: Durable<P>) -> Self {
        let mut c = Core {
            id,
            members,
            rng: cfg.seed ^ (u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            cfg,
            commit: durable.applied,
            d: durable,
            role: Role::Follower,
            leader: None,
            now: 0,
            elapsed: 0,
            timeout: 0,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            pending: BTreeMap::new(),
            out: Vec::new(),
        };
        c.members.sort_unstable();
        c.members.dedup();
        c.reset_timeout();
        c
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.d.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn durable(&self) -> &Durable<P> {
        &self.d
    }
    pub fn applied(&self) -> Index {
        self.d.applied
    }
    /// (member, next, matched, applied) as the leader sees them.
    pub fn progress(&self) -> Vec<(NodeId, Index, Index, Index)> {
        self.progress
            .iter()
            .map(|(m, p)| (*m, p.next, p.matched, p.applied))
            .collect()
    }

    fn last_index(&self) -> Index {
        self.d.last_index()
    }
    /// The term of entry `i`; entries before the compaction point are
    /// committed and report 0 (callers treat them as matching).
    fn term_at(&self, i: Index) -> Term {
        if i == 0 || i < self.d.snap_index {
            0
        } else if i == self.d.snap_index {
            self.d.snap_term
        } else {
            self.d.log.get(self.d.pos(i)).map_or(0, |e| e.term)
        }
    }
    fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
    fn others(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .copied()
            .filter(|m| *m != self.id)
            .collect()
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn reset_timeout(&mut self) {
        let (lo, hi) = self.cfg.election_ticks;
        self.timeout = lo + self.next_rand() % (hi - lo + 1);
        self.elapsed = 0;
    }

    fn save_hard_state(&mut self) {
        self.out.push(Action::SaveHardState {
            term: self.d.term,
            voted_for: self.d.voted_for,
        });
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.d.term {
            self.d.term = term;
            self.d.voted_for = None;
            self.save_hard_state();
        }
        if self.role == Role::Leader {
            // Proposals in flight are in doubt: their entries may still commit.
            let missing = self.others();
            for (_, (id, _)) in std::mem::take(&mut self.pending) {
                self.out.push(Action::Reply {
                    id,
                    result: Err(Reject::Unavailable {
                        missing: missing.clone(),
                    }),
                });
            }
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_timeout();
    }

    fn log_ok(&self, last_index: Index, last_term: Term) -> bool {
        let (mi, mt) = (self.last_index(), self.term_at(self.last_index()));
        last_term > mt || (last_term == mt && last_index >= mi)
    }

    fn start_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.id]);
        self.reset_timeout();
        let (li, lt) = (self.last_index(), self.term_at(self.last_index()));
        for m in self.others() {
            self.out.push(Action::Send(
                m,
                Msg::PreVote {
                    term: self.d.term + 1,
                    last_index: li,
                    last_term: lt,
                },
            ));
        }
        self.check_pre_votes();
    }

    fn check_pre_votes(&mut self) {
        if self.role == Role::PreCandidate && self.votes.len() >= self.quorum() {
            self.start_election();
        }
    }

    fn start_election(&mut self) {
        self.role = Role::Candidate;
        self.d.term += 1;
        self.d.voted_for = Some(self.id);
        self.save_hard_state();
        self.votes = BTreeSet::from([self.id]);
        self.reset_timeout();
        let (li, lt) = (self.last_index(), self.term_at(self.last_index()));
        for m in self.others() {
            self.out.push(Action::Send(
                m,
                Msg::Vote {
                    term: self.d.term,
                    last_index: li,
                    last_term: lt,
                },
            ));
        }
        self.check_votes();
    }

    fn check_votes(&mut self) {
        if self.role == Role::Candidate && self.votes.len() >= self.quorum() {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next = self.last_index() + 1;
        self.progress = self
            .others()
            .into_iter()
            .map(|m| {
                (
                    m,
                    Progress {
                        next,
                        matched: 0,
                        applied: 0,
                    },
                )
            })
            .collect();
        // A no-op of the new term commits the entries of earlier terms.
        self.append_local(Entry {
            term: self.d.term,
            payload: None,
        });
        self.broadcast();
        self.advance_commit();
    }

    fn append_local(&mut self, e: Entry<P>) -> Index {
        let from = self.last_index() + 1;
        self.d.log.push(e.clone());
        self.out.push(Action::Append {
            from,
            entries: vec![e],
        });
        from
    }

    fn send_append(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        // Entries up to the compaction point are on every member already.
        let prev_index = p
            .next
            .saturating_sub(1)
            .min(self.last_index())
            .max(self.d.snap_index);
        let start = (prev_index - self.d.snap_index) as usize;
        let end = (start + self.cfg.max_batch).min(self.d.log.len());
        let entries = self.d.log[start..end].to_vec();
        let msg = Msg::Append {
            term: self.d.term,
            prev_index,
            prev_term: self.term_at(prev_index),
            entries,
            commit: self.commit,
        };
        self.out.push(Action::Send(to, msg));
    }

    fn broadcast(&mut self) {
        for m in self.others() {
            self.send_append(m);
        }
    }

    fn apply_to(&mut self, to: Index) {
        if to > self.d.applied {
            self.d.applied = to;
            self.out.push(Action::Apply { to });
        }
        // Applied here means committed, and committed means on every member:
        // nobody needs these entries again.
        if self.d.applied - self.d.snap_index >= 2 * self.cfg.retain {
            let to = self.d.applied - self.cfg.retain;
            self.d.snap_term = self.term_at(to);
            self.d.log.drain(..(to - self.d.snap_index) as usize);
            self.d.snap_index = to;
            self.out.push(Action::Compact { to });
        }
    }

    /// Commits what every member (or, broken on purpose, a majority) persisted.
    fn advance_commit(&mut self) {
        let mut matched: Vec<Index> = self.progress.values().map(|p| p.matched).collect();
        matched.push(self.last_index());
        matched.sort_unstable();
        #[cfg(test)]
        let n = if self.cfg.broken_majority_commit {
            matched[matched.len() - self.quorum()]
        } else {
            matched[0]
        };
        #[cfg(not(test))]
        let n = matched[0];
        if n > self.commit && self.term_at(n) == self.d.term {
            self.commit = n;
            self.apply_to(n);
            self.broadcast();
        }
        self.answer_pending();
    }

    /// Acknowledges proposals that every member has applied.
    fn answer_pending(&mut self) {
        let mut applied: Vec<Index> = self.progress.values().map(|p| p.applied).collect();
        applied.push(self.d.applied);
        applied.sort_unstable();
        #[cfg(test)]
        let done = if self.cfg.broken_majority_commit {
            applied[applied.len() - self.quorum()]
        } else {
            applied[0]
        };
        #[cfg(not(test))]
        let done = applied[0];
        while let Some((&i, &(id, _))) = self.pending.first_key_value() {
            if i > done {
                break;
            }
            self.pending.remove(&i);
            self.out.push(Action::Reply { id, result: Ok(i) });
        }
    }

    /// Advances the clock by one tick.
    pub fn tick(&mut self) -> Vec<Action<P>> {
        self.now += 1;
        self.elapsed += 1;
        match self.role {
            Role::Leader => {
                if self.elapsed >= self.cfg.heartbeat_ticks {
                    self.elapsed = 0;
                    self.broadcast();
                }
                let expired: Vec<Index> = self
                    .pending
                    .iter()
                    .filter(|(_, (_, d))| *d <= self.now)
                    .map(|(i, _)| *i)
                    .collect();
                for i in expired {
                    let (id, _) = self.pending.remove(&i).expect("listed above");
                    let missing = self
                        .progress
                        .iter()
                        .filter(|(_, p)| p.applied < i)
                        .map(|(m, _)| *m)
                        .collect();
                    self.out.push(Action::Reply {
                        id,
                        result: Err(Reject::Unavailable { missing }),
                    });
                }
            }
            _ => {
                if self.elapsed >= self.timeout {
                    self.start_pre_vote();
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Proposes a state change; answered later by `Action::Reply { id, .. }`.
    pub fn propose(&mut self, id: u64, payload: P) -> Vec<Action<P>> {
        if self.role != Role::Leader {
            self.out.push(Action::Reply {
                id,
                result: Err(Reject::NotLeader(self.leader)),
            });
            return std::mem::take(&mut self.out);
        }
        let i = self.append_local(Entry {
            term: self.d.term,
            payload: Some(payload),
        });
        self.pending
            .insert(i, (id, self.now + self.cfg.write_timeout_ticks));
        self.broadcast();
        self.advance_commit();
        std::mem::take(&mut self.out)
    }

    /// Handles a message from `from`.
    pub fn step(&mut self, from: NodeId, msg: Msg<P>) -> Vec<Action<P>> {
        if !self.members.contains(&from) || from == self.id {
            return Vec::new();
        }
        // Pre-votes carry a prospective term and never change ours.
        if !matches!(msg, Msg::PreVote { .. } | Msg::PreVoteResp { .. }) && msg.term() > self.d.term
        {
            let leader = matches!(msg, Msg::Append { .. }).then_some(from);
            self.become_follower(msg.term(), leader);
        }
        match msg {
            Msg::PreVote {
                term,
                last_index,
                last_term,
            } => {
                // Refuse while a leader is heard from: a restarted or cut-off
                // node cannot disturb a healthy cluster.
                let leader_alive =
                    self.leader.is_some() && self.elapsed < self.cfg.election_ticks.0;
                let granted =
                    term > self.d.term && !leader_alive && self.log_ok(last_index, last_term);
                self.out
                    .push(Action::Send(from, Msg::PreVoteResp { term, granted }));
            }
            Msg::PreVoteResp { term, granted } => {
                if self.role == Role::PreCandidate && term == self.d.term + 1 && granted {
                    self.votes.insert(from);
                    self.check_pre_votes();
                }
            }
            Msg::Vote {
                term,
                last_index,
                last_term,
            } => {
                let granted = term == self.d.term
                    && self.d.voted_for.is_none_or(|v| v == from)
                    && self.log_ok(last_index, last_term);
                if granted {
                    self.d.voted_for = Some(from);
                    self.save_hard_state();
                    self.reset_timeout();
                }
                self.out.push(Action::Send(
                    from,
                    Msg::VoteResp {
                        term: self.d.term,
                        granted,
                    },
                ));
            }
            Msg::VoteResp { term, granted } => {
                if self.role == Role::Candidate && term == self.d.term && granted {
                    self.votes.insert(from);
                    self.check_votes();
                }
            }
            Msg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_append(from, term, prev_index, prev_term, entries, commit),
            Msg::AppendResp {
                term,
                success,
                matched,
                applied,
            } => {
                if self.role == Role::Leader && term == self.d.term {
                    if let Some(p) = self.progress.get_mut(&from) {
                        p.applied = p.applied.max(applied);
                        if success {
                            p.matched = p.matched.max(matched);
                            p.next = p.matched + 1;
                        } else {
                            p.next = (matched + 1).min(p.next.saturating_sub(1)).max(1);
                            self.send_append(from);
                        }
                    }
                    self.advance_commit();
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    fn on_append(
        &mut self,
        from: NodeId,
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry<P>>,
        commit: Index,
    ) {
        if term < self.d.term {
            self.out.push(Action::Send(
                from,
                Msg::AppendResp {
                    term: self.d.term,
                    success: false,
                    matched: 0,
                    applied: self.d.applied,
                },
            ));
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.elapsed = 0;
        // Before the compaction point, entries are committed and match.
        if prev_index > self.last_index()
            || (prev_index >= self.d.snap_index && self.term_at(prev_index) != prev_term)
        {
            let hint = self.last_index().min(prev_index.saturating_sub(1));
            self.out.push(Action::Send(
                from,
                Msg::AppendResp {
                    term,
                    success: false,
                    matched: hint,
                    applied: self.d.applied,
                },
            ));
            return;
        }
        let mut idx = prev_index;
        let mut write_from = None;
        for e in entries {
            idx += 1;
            if idx <= self.d.snap_index {
                continue;
            }
            if idx <= self.last_index() {
                if self.term_at(idx) == e.term {
                    continue;
                }
                // A conflicting, uncommitted suffix: never below what was applied.
                debug_assert!(idx > self.d.applied, "truncating applied entries");
                let p = self.d.pos(idx);
                self.d.log.truncate(p);
            }
            write_from.get_or_insert(idx);
            self.d.log.push(e);
        }
        if let Some(from_i) = write_from {
            self.out.push(Action::Append {
                from: from_i,
                entries: self.d.log[self.d.pos(from_i)..].to_vec(),
            });
        }
        // Only what is known to match the leader can be applied.
        let matched = idx;
        let c = commit.min(matched);
        if c > self.commit {
            self.commit = c;
        }
        let to = self.commit;
        self.apply_to(to);
        self.out.push(Action::Send(
            from,
            Msg::AppendResp {
                term,
                success: true,
                matched,
                applied: self.d.applied,
            },
        ));
    }
}
