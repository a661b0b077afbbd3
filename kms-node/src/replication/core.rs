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
//! `Append`, `Apply`) before sending the messages that follow them, and
//! publishing (`Publish`) before answering proposals.
//!
//! # Publication: what reads see
//!
//! The core decides which applied index a node's reads see (`published`),
//! so that acknowledgement and publication are one model, checked by the
//! simulator on every step:
//! - a follower publishes what it applied up to the commit index its current
//!   leader sent; it reports its *published* index as `applied`;
//! - the leader publishes an applied entry once some member reported it (so
//!   the knowledge that it committed survives the leader), and answers a
//!   proposal once every member reported it: an acknowledged write is then
//!   published on every member, the leader included;
//! - `fence_to` bounds the entries a node holds unpublished that another
//!   node may already serve: reads touching them wait (the shell bounds it).
//!
//! # Holds: not waiting for writes in doubt
//!
//! When the commit index stalls (a member is down or slow), a leader whose
//! no-op committed sends a *hold*: "nothing after index h commits before you
//! answer a message lifting this". A follower holding it does not fence reads
//! on entries after h: they are in doubt and no node serves them. To commit
//! past h the leader first lifts the hold and waits until every member
//! answered the lift (one more round trip, on recovery only). A hold is valid
//! for its term; a node that sees a newer term drops it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub type NodeId = u32;
pub type Term = u64;
pub type Index = u64;

/// A log entry; `payload` `None` is the no-op a new leader appends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<P> {
    pub term: Term,
    pub payload: Option<P>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The hold in force: nothing after it commits before the receiver
        /// answers a message with a later `seq` (see the module doc).
        hold: Option<Index>,
        /// Version of `hold` in this term (0: none was ever sent).
        seq: u64,
    },
    AppendResp {
        term: Term,
        success: bool,
        matched: Index,
        /// The sender's published index (applied, and visible to its reads).
        applied: Index,
        /// The latest hold version the sender has seen in this term.
        seq: u64,
    },
    /// The leader's whole applied state up to `index` follows (carried by
    /// the shell next to this message): a joining node starts from it.
    Snapshot {
        term: Term,
        index: Index,
        last_term: Term,
    },
    /// Answer to a node that is not a member of the sender's configuration
    /// `epoch`: if that is newer than the receiver's, the receiver was removed.
    Removed {
        term: Term,
        epoch: u64,
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
            | Msg::AppendResp { term, .. }
            | Msg::Snapshot { term, .. }
            | Msg::Removed { term, .. } => *term,
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
    /// Members were not heard from within an election timeout: the proposal
    /// was refused before it entered the log (it will never apply).
    Down { missing: Vec<NodeId> },
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
    /// Make the applied state at index `to` visible to reads (after the
    /// batch that applied it is durable, before any `Reply`).
    Publish {
        to: Index,
    },
    /// Drop the log entries up to `to`: they are applied on every member
    /// (a commit needs every member), so no one will ask for them again.
    Compact {
        to: Index,
        term: Term,
    },
    /// Answer proposal `id`.
    Reply {
        id: u64,
        result: Result<Index, Reject>,
    },
    /// Send `to` the applied state (at index `index`, whose entry has term
    /// `last_term`) with `Msg::Snapshot`.
    SendSnapshot {
        to: NodeId,
        term: Term,
        index: Index,
        last_term: Term,
    },
    /// Replace the whole state by the received snapshot, applied up to
    /// `index`; the log is empty after it.
    InstallSnapshot {
        index: Index,
        last_term: Term,
    },
    /// A member with a newer configuration (`epoch`) says this node is not
    /// a member any more.
    Removed {
        by: NodeId,
        epoch: u64,
    },
    /// A message from `from` broke the protocol (a bug or a corrupt peer):
    /// it was refused whole and changed nothing. The driver logs `why`.
    Refused {
        from: NodeId,
        why: String,
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
    /// Broken variant: the leader publishes only once every member applied
    /// everything it applied (the rule before issue 9), so under group
    /// commit an acknowledged write can be unpublished on the leader.
    #[cfg(test)]
    pub broken_publish_latest: bool,
    /// Broken variant: followers ignore holds' lifts (a lifted hold stays),
    /// so they skip fencing entries that then commit.
    #[cfg(test)]
    pub broken_hold: bool,
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
            #[cfg(test)]
            broken_publish_latest: false,
            #[cfg(test)]
            broken_hold: false,
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

/// Election timeouts between two snapshots sent to one follower.
pub(crate) const SNAPSHOT_PACE: u64 = 20;

#[derive(Debug, Clone, Default)]
struct Progress {
    next: Index,
    matched: Index,
    applied: Index,
    /// A learner that must receive the whole state first.
    needs_snapshot: bool,
    /// When the last snapshot was sent (ticks), to pace resends.
    snapshot_at: Option<u64>,
    /// When this node last answered (ticks).
    last_heard: u64,
    /// The transport reported it unreachable since it last answered.
    unreachable: bool,
    /// The latest hold version it echoed.
    seq: u64,
}

/// A leader's hold (module doc): nothing after `index` commits until every
/// member echoed `lifted`.
#[derive(Debug, Clone, Copy)]
struct Hold {
    index: Index,
    /// The version of the message that lifted it, once sent.
    lifted: Option<u64>,
}

#[derive(Debug)]
pub struct Core<P> {
    pub id: NodeId,
    members: Vec<NodeId>,
    /// Nodes that receive the log but neither vote nor count for commits
    /// (joining nodes, until their membership entry is applied).
    learners: BTreeSet<NodeId>,
    /// Version of the membership configuration.
    epoch: u64,
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
    /// The applied index this node's reads see.
    published: Index,
    /// Leader: the index of this term's first entry (its no-op). Until it
    /// commits, entries of earlier terms past `commit` may be committed.
    term_start: Index,
    /// Leader: the hold in force, and the version counter of holds.
    hold: Option<Hold>,
    hold_seq: u64,
    /// Leader: since when (ticks) the oldest uncommitted entry waits.
    stalled_since: Option<u64>,
    /// Follower: the hold of this term's leader, and its version.
    held: Option<Index>,
    held_seq: u64,
}

impl<P: Clone> Core<P> {
    /// A core restarting from `durable` (a new node: `Durable::default()`).
    pub fn new(id: NodeId, members: Vec<NodeId>, cfg: Config, durable: Durable<P>) -> Self {
        let mut c = Core {
            id,
            members,
            learners: BTreeSet::new(),
            epoch: 0,
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
            published: 0,
            term_start: 0,
            hold: None,
            hold_seq: 0,
            stalled_since: None,
            held: None,
            held_seq: 0,
        };
        // A restarted node serves what it applied (its durable state).
        c.published = c.d.applied;
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
    pub fn commit(&self) -> Index {
        self.commit
    }
    /// The applied index reads on this node see.
    pub fn published(&self) -> Index {
        self.published
    }
    /// The entries after `published` up to the returned index (inclusive)
    /// that this node holds unpublished while another node may serve them:
    /// a read touching one of them must wait until it is published here (or
    /// resolved otherwise). Empty when it is `published`.
    pub fn fence_to(&self) -> Index {
        let hi = match self.role {
            Role::Leader if self.commit >= self.term_start => self.d.applied,
            // Entries of earlier terms may have committed under another leader.
            Role::Leader => self.d.applied.max(self.term_start.saturating_sub(1)),
            _ => self
                .held
                .map_or(self.last_index(), |h| h.min(self.last_index())),
        };
        hi.max(self.published)
    }
    /// The highest index every member has applied (the leader knows; a
    /// follower answers its own applied index).
    pub fn applied_everywhere(&self) -> Index {
        if self.role != Role::Leader {
            return self.d.applied;
        }
        self.member_progress()
            .map(|p| p.applied)
            .chain([self.d.applied])
            .min()
            .unwrap_or(self.d.applied)
    }
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn is_member(&self) -> bool {
        self.members.contains(&self.id)
    }
    /// (member or learner, next, matched, applied) as the leader sees them.
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
    pub fn term_at(&self, i: Index) -> Term {
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

    /// A new term: holds of the old one are void.
    fn enter_term(&mut self, term: Term) {
        self.d.term = term;
        self.held = None;
        self.held_seq = 0;
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.d.term {
            self.enter_term(term);
            self.d.voted_for = None;
            self.save_hard_state();
        }
        if self.role == Role::Leader {
            self.hold = None;
            self.stalled_since = None;
            // Proposals in flight are in doubt: their entries may still commit.
            // No member is to blame: this node stopped leading.
            for (_, (id, _)) in std::mem::take(&mut self.pending) {
                self.out.push(Action::Reply {
                    id,
                    result: Err(Reject::Unavailable {
                        missing: Vec::new(),
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
        self.enter_term(self.d.term + 1);
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
                        last_heard: self.now,
                        ..Progress::default()
                    },
                )
            })
            .collect();
        // Learners are added again by the shell (`add_learner`) if still joining.
        self.learners.clear();
        self.hold = None;
        self.hold_seq = 0;
        self.held = None;
        self.stalled_since = None;
        // A no-op of the new term commits the entries of earlier terms.
        self.term_start = self.append_local(Entry {
            term: self.d.term,
            payload: None,
        });
        self.broadcast();
        self.advance_commit();
    }

    fn append_local(&mut self, e: Entry<P>) -> Index {
        let from = self.last_index() + 1;
        if self.last_index() == self.commit {
            self.stalled_since = Some(self.now);
        }
        self.d.log.push(e.clone());
        self.out.push(Action::Append {
            from,
            entries: vec![e],
        });
        from
    }

    fn send_append(&mut self, to: NodeId) {
        let now = self.now;
        let pace = self.cfg.election_ticks.0;
        let (applied, term) = (self.d.applied, self.d.term);
        let last_term = self.term_at(applied);
        let snap_index = self.d.snap_index;
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        // A follower that needs compacted entries gets the whole state: a
        // node that joined lacks the entries committed while it was a learner.
        if p.needs_snapshot || (snap_index > 0 && p.next <= snap_index) {
            // A snapshot of a large state takes seconds to send, decode and
            // install, while the follower still answers the heartbeats sent
            // before it with "no state": resending at every election timeout
            // would queue copy after copy (a million keys: 150 MB each) and
            // the follower would never catch up. One copy per
            // SNAPSHOT_PACE election timeouts.
            if p.snapshot_at
                .is_some_and(|t| now < t + pace * SNAPSHOT_PACE)
            {
                return;
            }
            p.needs_snapshot = false;
            p.snapshot_at = Some(now);
            p.next = applied + 1;
            self.out.push(Action::SendSnapshot {
                to,
                term,
                index: applied,
                last_term,
            });
            return;
        }
        let p = &self.progress[&to];
        // Past the snapshot branch above, `next` is after the compaction point.
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
            hold: self.hold.filter(|h| h.lifted.is_none()).map(|h| h.index),
            seq: self.hold_seq,
        };
        self.out.push(Action::Send(to, msg));
    }

    fn broadcast(&mut self) {
        let to: Vec<NodeId> = self.progress.keys().copied().collect();
        for m in to {
            self.send_append(m);
        }
    }

    /// Progress of the voting members only (learners do not count).
    fn member_progress(&self) -> impl Iterator<Item = &Progress> {
        self.progress
            .iter()
            .filter(|(m, _)| !self.learners.contains(m))
            .map(|(_, p)| p)
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
            self.out.push(Action::Compact {
                to,
                term: self.d.snap_term,
            });
        }
    }

    /// Commits what every member (or, broken on purpose, a majority) persisted,
    /// and what any member already applied (an earlier leader committed it);
    /// then publishes and answers what that allows.
    fn advance_commit(&mut self) {
        let mut matched: Vec<Index> = self.member_progress().map(|p| p.matched).collect();
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
        let mut to = self.commit;
        if n > to && self.term_at(n) == self.d.term {
            to = n;
        }
        // Applied (published) by a member means committed by some leader.
        let seen = self.applied_anywhere().unwrap_or(0).min(self.last_index());
        to = to.max(seen);
        if let Some(h) = self.hold {
            if to > h.index {
                match h.lifted {
                    None => {
                        // Lift it; commit once every member has seen the lift.
                        self.hold_seq += 1;
                        self.hold = Some(Hold {
                            index: h.index,
                            lifted: Some(self.hold_seq),
                        });
                        self.broadcast();
                        to = h.index.max(self.commit);
                    }
                    Some(s) if self.member_progress().all(|p| p.seq >= s) => self.hold = None,
                    Some(_) => to = h.index.max(self.commit),
                }
            }
        }
        if to > self.commit {
            self.commit = to;
            self.stalled_since = (self.last_index() > to).then_some(self.now);
            self.apply_to(to);
            self.broadcast();
        }
        self.publish_leader();
        self.answer_pending();
    }

    /// The leader publishes an applied entry once a member reported it (a
    /// member published it, so survivors know it committed even if this
    /// leader dies now). A single member publishes what it applies.
    fn publish_leader(&mut self) {
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut to = self
            .applied_anywhere()
            .map_or(self.d.applied, |a| a.min(self.d.applied));
        #[cfg(test)]
        if self.cfg.broken_publish_latest {
            to = if self.applied_everywhere() >= self.d.applied {
                self.d.applied
            } else {
                self.published
            };
        }
        self.publish(to);
    }

    /// The highest index some voting member reported publishing (`None`
    /// without other members).
    fn applied_anywhere(&self) -> Option<Index> {
        self.member_progress().map(|p| p.applied).max()
    }

    fn publish(&mut self, to: Index) {
        if to > self.published {
            self.published = to;
            self.out.push(Action::Publish { to });
        }
    }

    /// Acknowledges proposals that every member has applied and published
    /// (this node included).
    fn answer_pending(&mut self) {
        let mut applied: Vec<Index> = self.member_progress().map(|p| p.applied).collect();
        applied.push(self.d.applied);
        applied.sort_unstable();
        #[cfg(test)]
        let done = if self.cfg.broken_majority_commit {
            applied[applied.len() - self.quorum()]
        } else if self.cfg.broken_publish_latest {
            applied[0]
        } else {
            applied[0].min(self.published)
        };
        #[cfg(not(test))]
        let done = applied[0].min(self.published);
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
                self.maybe_hold();
                let expired: Vec<Index> = self
                    .pending
                    .iter()
                    .filter(|(_, (_, d))| *d <= self.now)
                    .map(|(i, _)| *i)
                    .collect();
                for i in expired {
                    let (id, _) = self.pending.remove(&i).expect("listed above");
                    // Name only the members holding it up: those that did not
                    // persist it while it is uncommitted, else those that did
                    // not apply it.
                    let committed = self.commit >= i;
                    let missing = self
                        .progress
                        .iter()
                        .filter(|(m, p)| {
                            !self.learners.contains(m)
                                && if committed {
                                    p.applied < i
                                } else {
                                    p.matched < i
                                }
                        })
                        .map(|(m, _)| *m)
                        .collect();
                    self.out.push(Action::Reply {
                        id,
                        result: Err(Reject::Unavailable { missing }),
                    });
                }
            }
            _ => {
                if self.elapsed >= self.timeout && self.is_member() {
                    self.start_pre_vote();
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Sends a hold when the commit index stalls: a member is down, or the
    /// oldest uncommitted entry has waited a heartbeat. Only once this term's
    /// no-op committed: before that, earlier terms' entries may be committed.
    fn maybe_hold(&mut self) {
        if self.role != Role::Leader
            || self.hold.is_some()
            || self.commit < self.term_start
            || self.last_index() <= self.commit
        {
            return;
        }
        let waited = self
            .stalled_since
            .is_some_and(|t| self.now.saturating_sub(t) >= self.cfg.heartbeat_ticks);
        if waited || !self.down().is_empty() {
            self.hold_seq += 1;
            self.hold = Some(Hold {
                index: self.commit,
                lifted: None,
            });
            self.broadcast();
        }
    }

    /// The transport reports that member `id` cannot be reached (its
    /// connection is refused or lost): count it as down now instead of
    /// after an election timeout. Hearing from it again clears this.
    pub fn mark_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(p) = self.progress.get_mut(&id) {
            p.unreachable = true;
        }
        self.maybe_hold();
    }

    /// Members the leader has not heard from within the shortest election
    /// timeout (empty on a follower).
    pub fn down(&self) -> Vec<NodeId> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        self.progress
            .iter()
            .filter(|(m, p)| {
                !self.learners.contains(m)
                    && (p.unreachable
                        || self.now.saturating_sub(p.last_heard) > self.cfg.election_ticks.0)
            })
            .map(|(m, _)| *m)
            .collect()
    }

    /// Proposes a state change; answered later by `Action::Reply { id, .. }`.
    pub fn propose(&mut self, id: u64, payload: P) -> Vec<Action<P>> {
        self.propose_many(vec![(id, payload)])
    }

    /// Proposes several state changes as one replication round (group commit).
    pub fn propose_many(&mut self, batch: Vec<(u64, P)>) -> Vec<Action<P>> {
        let down = self.down();
        if !down.is_empty() {
            for (id, _) in batch {
                self.out.push(Action::Reply {
                    id,
                    result: Err(Reject::Down {
                        missing: down.clone(),
                    }),
                });
            }
            return std::mem::take(&mut self.out);
        }
        if self.role != Role::Leader {
            for (id, _) in batch {
                self.out.push(Action::Reply {
                    id,
                    result: Err(Reject::NotLeader(self.leader)),
                });
            }
            return std::mem::take(&mut self.out);
        }
        let from = self.last_index() + 1;
        let deadline = self.now + self.cfg.write_timeout_ticks;
        let mut entries = Vec::with_capacity(batch.len());
        for (k, (id, payload)) in batch.into_iter().enumerate() {
            let e = Entry {
                term: self.d.term,
                payload: Some(payload),
            };
            self.d.log.push(e.clone());
            entries.push(e);
            self.pending.insert(from + k as Index, (id, deadline));
        }
        if !entries.is_empty() {
            self.out.push(Action::Append { from, entries });
            self.broadcast();
            self.advance_commit();
        }
        std::mem::take(&mut self.out)
    }

    /// Starts an election now (a member that is not the leader): a node that
    /// is the only member of its cluster need not wait for a timeout.
    pub fn campaign(&mut self) -> Vec<Action<P>> {
        if self.is_member() && self.role != Role::Leader {
            self.start_pre_vote();
        }
        std::mem::take(&mut self.out)
    }

    /// Adds `id` as a learner (leader only): it receives a snapshot, then the
    /// log, but neither votes nor counts for commits until a membership entry
    /// that names it is applied.
    pub fn add_learner(&mut self, id: NodeId) -> Vec<Action<P>> {
        if self.role == Role::Leader && !self.members.contains(&id) && id != self.id {
            self.learners.insert(id);
            self.progress.insert(
                id,
                Progress {
                    needs_snapshot: true,
                    last_heard: self.now,
                    ..Progress::default()
                },
            );
            self.send_append(id);
        }
        std::mem::take(&mut self.out)
    }

    /// Drops learner `id` (a join that was abandoned).
    pub fn remove_learner(&mut self, id: NodeId) {
        if self.learners.remove(&id) {
            self.progress.remove(&id);
        }
    }

    /// (matched, applied) of a member or learner, as the leader sees it.
    pub fn progress_of(&self, id: NodeId) -> Option<(Index, Index)> {
        self.progress.get(&id).map(|p| (p.matched, p.applied))
    }

    /// Sets the membership configuration `epoch` (applied from the log, or
    /// an operator's `edit`). A leader that is no longer a member steps down.
    pub fn set_members(&mut self, members: Vec<NodeId>, epoch: u64) -> Vec<Action<P>> {
        let mut members = members;
        members.sort_unstable();
        members.dedup();
        self.members = members;
        self.epoch = self.epoch.max(epoch);
        self.learners.retain(|l| !self.members.contains(l));
        if self.role == Role::Leader {
            if !self.is_member() {
                self.become_follower(self.d.term, None);
                return std::mem::take(&mut self.out);
            }
            let next = self.last_index() + 1;
            let now = self.now;
            for m in self.others() {
                self.progress.entry(m).or_insert(Progress {
                    next,
                    last_heard: now,
                    ..Progress::default()
                });
            }
            let keep: BTreeSet<NodeId> = self
                .members
                .iter()
                .chain(self.learners.iter())
                .copied()
                .collect();
            self.progress.retain(|m, _| keep.contains(m));
            self.advance_commit();
        } else if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.votes.retain(|v| self.members.contains(v));
        }
        std::mem::take(&mut self.out)
    }

    /// Handles a message from `from`.
    pub fn step(&mut self, from: NodeId, msg: Msg<P>) -> Vec<Action<P>> {
        if from == self.id {
            return Vec::new();
        }
        if let Msg::Removed { epoch, .. } = msg {
            if epoch > self.epoch && self.members.contains(&from) {
                self.out.push(Action::Removed { by: from, epoch });
            }
            return std::mem::take(&mut self.out);
        }
        let known = self.members.contains(&from)
            || (self.role == Role::Leader && self.learners.contains(&from));
        if !known {
            // A node outside this configuration: tell it, if this node's
            // configuration is the newer one (it then knows it was removed).
            if self.is_member() && !matches!(msg, Msg::Removed { .. }) {
                self.out.push(Action::Send(
                    from,
                    Msg::Removed {
                        term: self.d.term,
                        epoch: self.epoch,
                    },
                ));
            }
            return std::mem::take(&mut self.out);
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
                hold,
                seq,
            } => self.on_append(
                from, term, prev_index, prev_term, entries, commit, hold, seq,
            ),
            Msg::Snapshot {
                term,
                index,
                last_term,
            } => self.on_snapshot(from, term, index, last_term),
            Msg::Removed { .. } => {}
            Msg::AppendResp {
                term,
                success,
                matched,
                applied,
                seq,
            } => {
                if self.role == Role::Leader && term == self.d.term {
                    if let Some(p) = self.progress.get_mut(&from) {
                        p.last_heard = self.now;
                        p.unreachable = false;
                        p.applied = p.applied.max(applied);
                        p.seq = p.seq.max(seq);
                        if success {
                            p.matched = p.matched.max(matched);
                            p.next = p.matched + 1;
                            // It has the state: a refusal it sent before
                            // the snapshot arrived (frames sent while the
                            // snapshot was being exported can overtake it)
                            // must not hold its appends back.
                            p.needs_snapshot = false;
                        } else if matched == 0 && p.matched == 0 && self.learners.contains(&from) {
                            // A learner without the state: (re)send the snapshot.
                            p.needs_snapshot = true;
                            self.send_append(from);
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

    /// Answers an `Append` or `Snapshot` from `to`: what this node matched,
    /// its published index, and the hold version it has seen.
    fn respond(&mut self, to: NodeId, term: Term, success: bool, matched: Index) {
        self.out.push(Action::Send(
            to,
            Msg::AppendResp {
                term,
                success,
                matched,
                applied: self.published,
                seq: self.held_seq,
            },
        ));
    }

    fn on_snapshot(&mut self, from: NodeId, term: Term, index: Index, last_term: Term) {
        if term < self.d.term {
            self.respond(from, self.d.term, false, 0);
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.elapsed = 0;
        if index > self.d.applied
            && index > self.d.snap_index
            && index <= self.last_index()
            && self.term_at(index) == last_term
        {
            // This node's log already holds the snapshot's entries (log
            // matching): apply them from it instead, keeping the entries
            // after `index`, which may be committed (a commit counted them).
            self.commit = self.commit.max(index);
            let to = self.commit.min(self.last_index());
            self.apply_to(to);
            self.publish(self.d.applied.min(index));
        } else if index > self.d.applied {
            self.d.log.clear();
            self.d.snap_index = index;
            self.d.snap_term = last_term;
            self.d.applied = index;
            self.commit = self.commit.max(index);
            self.out.push(Action::InstallSnapshot { index, last_term });
            // The snapshot is the leader's applied state: committed.
            self.publish(index);
        }
        self.respond(from, term, true, self.d.applied);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        from: NodeId,
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry<P>>,
        commit: Index,
        hold: Option<Index>,
        seq: u64,
    ) {
        if term < self.d.term {
            self.respond(from, self.d.term, false, 0);
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.elapsed = 0;
        // The leader's hold, newest version only (messages may be reordered).
        if seq > self.held_seq {
            #[cfg(test)]
            let keep = self.cfg.broken_hold && hold.is_none() && self.held.is_some();
            #[cfg(not(test))]
            let keep = false;
            if !keep {
                self.held = hold;
            }
            self.held_seq = seq;
        }
        // Before the compaction point, entries are committed and match.
        if prev_index > self.last_index()
            || (prev_index >= self.d.snap_index && self.term_at(prev_index) != prev_term)
        {
            let hint = self.last_index().min(prev_index.saturating_sub(1));
            self.respond(from, term, false, hint);
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
                // A conflicting suffix must be uncommitted: a leader that
                // contradicts a committed entry is broken; its whole
                // message is refused (nothing was changed yet: a
                // truncation comes first, and only once).
                if idx <= self.commit.max(self.d.applied) {
                    self.out.push(Action::Refused {
                        from,
                        why: format!(
                            "its append contradicts committed entry {idx} (term {} here, {} in \
                             the message)",
                            self.term_at(idx),
                            e.term
                        ),
                    });
                    return;
                }
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
        // Publish what this leader says is committed (a node that led before
        // may hold applied entries no one else knows committed yet).
        self.publish(self.d.applied.min(c));
        self.respond(from, term, true, matched);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(term: Term, entries: Vec<Entry<u32>>, commit: Index) -> Msg<u32> {
        Msg::Append {
            term,
            prev_index: 0,
            prev_term: 0,
            entries,
            commit,
            hold: None,
            seq: 0,
        }
    }

    /// Found by the `replication` fuzz target: a broken peer's append that
    /// rewrote a committed entry truncated it (a `debug_assert` only).
    #[test]
    fn an_append_contradicting_a_committed_entry_is_refused_whole() {
        let mut c: Core<u32> = Core::new(2, vec![1, 2, 3], Config::default(), Durable::default());
        let e = |term, p: u32| Entry {
            term,
            payload: Some(p),
        };
        c.step(1, append(1, vec![e(1, 10), e(1, 11)], 2));
        assert_eq!(c.commit(), 2);
        let out = c.step(1, append(2, vec![e(2, 99), e(2, 98), e(2, 97)], 2));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Refused { from: 1, .. })),
            "{out:?}"
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::Append { .. })),
            "nothing is written: {out:?}"
        );
        assert_eq!(c.durable().log.len(), 2);
        assert_eq!((c.term_at(1), c.term_at(2)), (1, 1));
    }
}
