//! The replication driver: the I/O shell around the protocol core
//! (`replication::core`). One thread owns the core, the store and the
//! published state. It takes a batch of events (proposals, peer messages,
//! ticks), feeds them to the core, and carries out the actions the core
//! returns: everything to persist goes into one synced RocksDB batch
//! (entries, applied records, term and vote), and only after that batch is
//! durable are the new state published, messages sent and proposals
//! answered. After every round it publishes a new `View`, and signals the
//! node's watch channel when that view changed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, watch};

use crate::change::{apply, ApplyError, Change, Touch};
use crate::config::Timing;
use crate::model::State;
use crate::replication::core::{self, Action, Core, Durable, Msg, NodeId, Reject, Role};
use crate::replication::net::{Peers, Records, Wire};
use crate::store::{Entry, Store};

use super::protocol::parse_snapshot;
use super::{describe, Event, ProposeError, View, Waiter};

/// Most events handled (and proposals committed) per round.
pub(super) const GROUP_MAX: usize = 1024;

/// The protocol core's settings for `t`.
// The update fills the simulator's test-only fields; outside tests every
// field is already given.
#[allow(clippy::needless_update)]
fn core_config(t: &Timing, seed: u64) -> core::Config {
    let e = t.ticks(t.election);
    core::Config {
        heartbeat_ticks: t.ticks(t.heartbeat),
        election_ticks: (e, 2 * e),
        write_timeout_ticks: e,
        max_batch: 256,
        seed,
        retain: crate::store::LOG_RETAIN / 2,
        ..core::Config::default()
    }
}

/// What the driver sends or answers once a round's batch is durable.
enum Out {
    Send(NodeId, Wire),
    Reply(u64, Result<u64, Reject>),
}

/// The driver: owns the core, the store and the published state (see the
/// module docs).
pub(super) struct Driver {
    me: NodeId,
    addr: String,
    timing: Timing,
    core: Core<Change>,
    store: Arc<Store>,
    state: Arc<ArcSwap<State>>,
    view: Arc<ArcSwap<View>>,
    peers: Arc<Peers>,
    /// Persisted entries not applied yet.
    unapplied: BTreeMap<u64, core::Entry<Change>>,
    /// The persisted log is `log_lo..=log_hi`.
    log_lo: u64,
    log_hi: u64,
    waiters: HashMap<u64, Waiter>,
    /// Outcomes of applied entries, until their proposals are answered.
    outcomes: BTreeMap<u64, Result<(), ApplyError>>,
    next_id: u64,
    /// The state a snapshot message carried, parsed and checked before the
    /// core saw the message.
    snapshot_in: Option<State>,
    restore: Option<Box<State>>,
    learners: BTreeMap<NodeId, String>,
    /// The applied state (published as `state` per `publish_state`).
    current: Arc<State>,
    removed: Option<String>,
    genesis_sent: bool,
    leader_contact: Option<Instant>,
    /// The states after each applied entry that is not published yet, with
    /// what the entry touches (`fence_key`): the core may publish any of them.
    unpublished: VecDeque<(u64, Arc<State>, Option<String>)>,
    changed: Arc<watch::Sender<()>>,
}

/// What the driver publishes, shared with the `Node`.
pub(super) struct Published {
    /// The state reads see.
    pub(super) state: Arc<ArcSwap<State>>,
    /// The replication view of the last round.
    pub(super) view: Arc<ArcSwap<View>>,
    /// Signalled after every round whose view differs from the one before
    /// (`View::same_for_waiters`).
    pub(super) changed: Arc<watch::Sender<()>>,
}

/// What a read must wait for when an entry is unpublished: its enclave,
/// "" for every enclave, `None` for entries no read depends on.
fn fence_key(c: &Change) -> Option<String> {
    match c {
        Change::Noop | Change::SetMember { .. } | Change::RemoveMember { .. } => None,
        Change::Restored { .. } => Some(String::new()),
        c => Some(c.subject().0.unwrap_or_default().to_string()),
    }
}

impl Driver {
    /// The driver of node `me` over `store`, whose durable log is `durable`
    /// and applied state `st`, sending through `peers`. Carries out the
    /// core's first actions (a lone member elects itself, the core may
    /// append and compact) and publishes the first view; `run` then drives
    /// it.
    pub(super) fn new(
        me: NodeId,
        addr: String,
        timing: Timing,
        store: Arc<Store>,
        durable: Durable<Change>,
        st: State,
        peers: Arc<Peers>,
    ) -> (Self, Published) {
        let members: Vec<NodeId> = if st.cluster.members.is_empty() {
            vec![me]
        } else {
            st.cluster.members.keys().copied().collect()
        };
        // What is on disk, before the core acts (it may elect itself,
        // append and compact in `first` below).
        let unapplied: BTreeMap<u64, core::Entry<Change>> = (durable.applied + 1
            ..=durable.last_index())
            .map(|i| (i, durable.log[durable.pos(i)].clone()))
            .collect();
        let (log_lo, log_hi) = (durable.snap_index + 1, durable.last_index());
        let mut c = Core::new(me, members, core_config(&timing, rand::random()), durable);
        let mut first = c.set_members(c.members().to_vec(), st.cluster.epoch);
        if c.members() == [me] {
            first.extend(c.campaign());
        }
        let current = Arc::new(st);
        let state = Arc::new(ArcSwap::new(current.clone()));
        let view = Arc::new(ArcSwap::from_pointee(View {
            role: c.role(),
            term: c.term(),
            leader: c.leader(),
            commit: c.commit(),
            applied: c.applied(),
            last_index: log_hi,
            members: state.load().cluster.members.clone(),
            epoch: c.epoch(),
            progress: BTreeMap::new(),
            down: Vec::new(),
            removed: None,
            leader_contact: None,
            pending: HashMap::new(),
            published: c.published(),
        }));
        let (changed, _) = watch::channel(());
        let changed = Arc::new(changed);
        let mut d = Driver {
            me,
            addr,
            timing,
            core: c,
            store,
            state: state.clone(),
            view: view.clone(),
            peers,
            unapplied,
            log_lo,
            log_hi,
            waiters: HashMap::new(),
            outcomes: BTreeMap::new(),
            next_id: 1,
            snapshot_in: None,
            restore: None,
            learners: BTreeMap::new(),
            current,
            removed: None,
            genesis_sent: false,
            leader_contact: None,
            unpublished: VecDeque::new(),
            changed: changed.clone(),
        };
        d.execute(first);
        d.publish();
        let published = Published {
            state,
            view,
            changed,
        };
        (d, published)
    }

    /// Handles the events of `rx` in rounds until a `Stop` (or until every
    /// sender is gone).
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            let mut acts = Vec::new();
            let mut proposals = Vec::new();
            for ev in batch {
                if stop {
                    // Events after Stop are dropped: their callers get "shutting down".
                    continue;
                }
                match ev {
                    Event::Stop => stop = true,
                    Event::Propose(change, reply) => {
                        if let Some(r) = &self.removed {
                            let _ = reply.send(Err(ProposeError::Unavailable(r.clone())));
                            continue;
                        }
                        let id = self.next_id;
                        self.next_id += 1;
                        self.waiters.insert(id, reply);
                        proposals.push((id, change));
                    }
                    Event::Restore(st, records, reply) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.waiters.insert(id, reply);
                        self.restore = Some(st);
                        proposals.push((id, Change::Restored { records }));
                    }
                    Event::Msg(from, msg, snap) => {
                        if self.removed.is_some() {
                            continue;
                        }
                        if self.core.leader() == Some(from) {
                            self.leader_contact = Some(Instant::now());
                        }
                        if let Some(records) = snap {
                            // Checked before the core acts on it: a snapshot
                            // this node cannot read is refused (the message
                            // is dropped, the leader sends it again), never a
                            // reason to stop (docs/cluster-design.md).
                            match parse_snapshot(&records) {
                                Ok(st) => self.snapshot_in = Some(st),
                                Err(e) => {
                                    tracing::error!(
                                        peer = from,
                                        error = %e,
                                        "refused a snapshot this node cannot read; it keeps \
                                         serving what it holds and waits for another"
                                    );
                                    continue;
                                }
                            }
                        } else if matches!(msg, Msg::Snapshot { .. }) {
                            tracing::warn!(peer = from, "refused a snapshot without its records");
                            continue;
                        }
                        acts.extend(self.core.step(from, msg));
                        if self.core.leader() == Some(from) {
                            self.leader_contact = Some(Instant::now());
                        }
                    }
                    Event::Tick => {
                        if self.removed.is_none() {
                            self.note_unreachable_peers();
                            acts.extend(self.core.tick());
                        }
                    }
                    Event::AddLearner(id, addr) => {
                        self.learners.insert(id, addr);
                        self.update_peers(&self.current.cluster.members.clone());
                        acts.extend(self.core.add_learner(id));
                    }
                    Event::RemoveLearner(id) => {
                        self.learners.remove(&id);
                        self.core.remove_learner(id);
                        self.update_peers(&self.current.cluster.members.clone());
                    }
                    Event::Edit(ids, reply) => {
                        let r = self.edit(&ids);
                        if let Ok(a) = r {
                            acts.extend(a);
                            let _ = reply.send(Ok(()));
                        } else if let Err(e) = r {
                            let _ = reply.send(Err(e));
                        }
                    }
                    Event::Join {
                        term,
                        members,
                        epoch,
                        reply,
                    } => {
                        let _ = reply.send(self.join(term, members, epoch));
                    }
                }
            }
            if !proposals.is_empty() {
                self.note_unreachable_peers();
                acts.extend(self.core.propose_many(proposals));
            }
            self.execute(acts);
            self.genesis();
            self.publish();
            if stop {
                break;
            }
        }
    }

    /// A new cluster records its first member (itself) once it leads.
    fn genesis(&mut self) {
        if self.genesis_sent
            || self.core.role() != Role::Leader
            || !self.current.cluster.members.is_empty()
        {
            return;
        }
        self.genesis_sent = true;
        let id = self.next_id;
        self.next_id += 1;
        let acts = self.core.propose_many(vec![(
            id,
            Change::SetMember {
                id: self.me,
                addr: self.addr.clone(),
            },
        )]);
        self.execute(acts);
    }

    fn update_peers(&self, members: &BTreeMap<NodeId, String>) {
        let mut all = members.clone();
        for (id, a) in &self.learners {
            all.entry(*id).or_insert_with(|| a.clone());
        }
        self.peers.update(&all);
    }

    /// Makes the applied state at index `to` (`Action::Publish`) the one
    /// reads see.
    fn publish_state(&mut self, to: u64) {
        while let Some((i, _, _)) = self.unpublished.front() {
            if *i >= to {
                break;
            }
            self.unpublished.pop_front();
        }
        match self.unpublished.front() {
            Some((i, st, _)) if *i == to => {
                self.state.store(st.clone());
                self.unpublished.pop_front();
            }
            _ if self.current.applied == to => self.state.store(self.current.clone()),
            _ => tracing::error!(to, "no applied state to publish at this index"),
        }
    }

    /// Publishes the view of this round, and signals the watch channel if a
    /// waiter could tell it from the one before.
    fn publish(&self) {
        let st = &self.current;
        let leader = self.core.role() == Role::Leader;
        let view = Arc::new(View {
            role: self.core.role(),
            term: self.core.term(),
            leader: self.core.leader(),
            commit: self.core.commit(),
            applied: self.core.applied(),
            last_index: self.core.durable().last_index(),
            members: st.cluster.members.clone(),
            epoch: self.core.epoch(),
            progress: if leader {
                self.core
                    .progress()
                    .into_iter()
                    .map(|(m, _, matched, applied)| (m, (matched, applied)))
                    .collect()
            } else {
                BTreeMap::new()
            },
            down: self.core.down(),
            removed: self.removed.clone(),
            leader_contact: if leader {
                Some(Instant::now())
            } else {
                self.leader_contact
            },
            pending: {
                // Unpublished entries another node may serve: applied ones
                // here, then persisted ones, up to the core's fence.
                let to = self.core.fence_to();
                let mut p: HashMap<String, u64> = HashMap::new();
                let applied = self
                    .unpublished
                    .iter()
                    .filter_map(|(i, _, k)| k.as_ref().map(|k| (*i, k.clone())));
                let persisted = self
                    .unapplied
                    .iter()
                    .filter_map(|(i, e)| e.payload.as_ref().and_then(fence_key).map(|k| (*i, k)));
                for (i, k) in applied.chain(persisted) {
                    if i > to {
                        break;
                    }
                    p.insert(k, i);
                }
                p
            },
            published: self.core.published(),
        });
        let before = self.view.swap(view.clone());
        if !view.same_for_waiters(&before) {
            self.changed.send_replace(());
        }
    }

    fn fatal(&self, what: String) -> ! {
        tracing::error!("{what}; stopping so that a restart recovers from the durable state");
        eprintln!("kms: {what}");
        std::process::exit(74);
    }

    fn members_of(st: &State) -> Vec<NodeId> {
        st.cluster.members.keys().copied().collect()
    }

    /// Carries out the core's actions: stages everything to persist in one
    /// batch, writes it durably, then publishes, sends and answers.
    fn execute(&mut self, acts: Vec<Action<Change>>) {
        if acts.is_empty() {
            return;
        }
        let mut queue: VecDeque<Action<Change>> = acts.into();
        let mut wb = WriteBatch::default();
        let mut staged = false;
        let mut next: Option<State> = None;
        let mut membership = false;
        let mut publish_to: Option<u64> = None;
        let mut out = Vec::new();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::SaveHardState { term, voted_for } => {
                    self.store.stage_hard_state(&mut wb, term, voted_for);
                    staged = true;
                }
                Action::Append { from, entries } => {
                    if from <= self.log_hi {
                        self.store.stage_delete_log(&mut wb, from, self.log_hi);
                        self.unapplied.split_off(&from);
                    }
                    for (k, e) in entries.into_iter().enumerate() {
                        let i = from + k as u64;
                        let stored = Entry {
                            term: e.term,
                            change: e.payload.clone().unwrap_or(Change::Noop),
                        };
                        self.store.stage_entry(&mut wb, i, &stored);
                        self.log_hi = i;
                        self.unapplied.insert(i, e);
                    }
                    staged = true;
                }
                Action::Apply { to } => {
                    let st = next.get_or_insert_with(|| (*self.current).clone());
                    for i in st.applied + 1..=to {
                        let Some(e) = self.unapplied.remove(&i) else {
                            self.fatal(format!("log entry {i} is missing"));
                        };
                        st.applied = i;
                        let change = e.payload.unwrap_or(Change::Noop);
                        let outcome = match (&change, self.restore.take()) {
                            (Change::Restored { .. }, Some(new)) => {
                                // A restore replaces the data, not the membership.
                                let cluster = std::mem::take(&mut st.cluster);
                                *st = *new;
                                st.cluster = cluster;
                                st.applied = i;
                                self.store.stage_replace_all(&mut wb, st);
                                Ok(vec![Touch::Cluster])
                            }
                            (_, r) => {
                                self.restore = r;
                                apply(st, &change)
                            }
                        };
                        if let Ok(touches) = &outcome {
                            self.store.stage_touches(&mut wb, st, touches);
                            if touches.contains(&Touch::Cluster) {
                                membership = true;
                                queue.extend(
                                    self.core
                                        .set_members(Self::members_of(st), st.cluster.epoch),
                                );
                                if matches!(change, Change::RemoveMember { id } if id == self.me) {
                                    self.removed = Some(format!(
                                        "this node was removed from the cluster (`kms rm`, log entry {i}); \
                                         it does not serve any more. To use it again, wipe its data \
                                         directory and `kms add` it"
                                    ));
                                }
                                if let Change::SetMember { id, .. } = change {
                                    self.learners.remove(&id);
                                }
                            }
                        }
                        if !self.waiters.is_empty() {
                            self.outcomes.insert(i, outcome.map(drop));
                        }
                        // The state after each entry: the core may publish
                        // any applied index (O(1): the state is persistent).
                        self.unpublished
                            .push_back((i, Arc::new(st.clone()), fence_key(&change)));
                    }
                    self.store.stage_applied(&mut wb, to);
                    staged = true;
                }
                Action::Publish { to } => publish_to = publish_to.max(Some(to)),
                Action::Compact { to, term } => {
                    if to >= self.log_lo {
                        self.store.stage_delete_log(&mut wb, self.log_lo, to);
                        self.log_lo = to + 1;
                    }
                    self.store.stage_snap(&mut wb, to, term);
                    staged = true;
                }
                Action::InstallSnapshot { index, last_term } => {
                    // The core installs only a snapshot it was handed with
                    // this message, which `run` parsed first.
                    let Some(mut st) = self.snapshot_in.take() else {
                        self.fatal("a snapshot was installed without its records".into());
                    };
                    st.applied = index;
                    self.store.stage_replace_all(&mut wb, &st);
                    if self.log_hi >= self.log_lo {
                        self.store
                            .stage_delete_log(&mut wb, self.log_lo, self.log_hi);
                    }
                    self.log_lo = index + 1;
                    self.log_hi = index;
                    self.unapplied.clear();
                    self.store.stage_snap(&mut wb, index, last_term);
                    self.store.stage_applied(&mut wb, index);
                    queue.extend(
                        self.core
                            .set_members(Self::members_of(&st), st.cluster.epoch),
                    );
                    self.unpublished.clear();
                    self.unpublished
                        .push_back((index, Arc::new(st.clone()), Some(String::new())));
                    next = Some(st);
                    membership = true;
                    staged = true;
                    tracing::info!(index, "installed a snapshot from the leader");
                }
                Action::Send(to, msg) => out.push(Out::Send(to, Wire::Raft(msg))),
                Action::SendSnapshot {
                    to,
                    term,
                    index,
                    last_term,
                } => {
                    let st = next.get_or_insert_with(|| (*self.current).clone());
                    if st.applied != index {
                        continue;
                    }
                    // Exported on a thread of its own from a copy (O(1):
                    // the state is persistent): a million keys take a
                    // second or more, which would stall this loop, its
                    // heartbeats and every write past an election timeout.
                    // Frames sent meanwhile may arrive first; the follower
                    // refuses them until the snapshot is in, and the leader
                    // paces resends (SNAPSHOT_PACE).
                    let st = st.clone();
                    let peers = self.peers.clone();
                    let spawned = std::thread::Builder::new()
                        .name("kms-snapshot".into())
                        .spawn(move || {
                            let records = Records(
                                crate::store::export_records(&st)
                                    .into_iter()
                                    .map(|(k, v)| (k, v.to_vec()))
                                    .collect(),
                            );
                            tracing::info!(
                                peer = to,
                                index,
                                records = records.0.len(),
                                "sending a snapshot"
                            );
                            peers.send(
                                to,
                                Wire::Snapshot(
                                    Msg::Snapshot {
                                        term,
                                        index,
                                        last_term,
                                    },
                                    records,
                                ),
                            );
                        });
                    if let Err(e) = spawned {
                        tracing::error!(error = %e, "cannot start a thread to send a snapshot");
                    }
                }
                Action::Reply { id, result } => out.push(Out::Reply(id, result)),
                Action::Removed { by, epoch } => {
                    self.removed = Some(format!(
                        "this node was removed from the cluster: member {by} has a newer \
                         membership (epoch {epoch}) without it; it does not serve any more. To \
                         use it again, wipe its data directory and `kms add` it"
                    ));
                }
                Action::Refused { from, why } => {
                    tracing::error!(peer = from, "refused a replication message: {why}");
                }
            }
        }
        if staged {
            if let Err(e) = self.store.write(wb) {
                self.fatal(format!("cannot write the replication log: {e}"));
            }
        }
        if let Some(st) = next {
            self.current = Arc::new(st);
        }
        // Durable now: publish, then (below) send and answer.
        if let Some(to) = publish_to {
            self.publish_state(to);
        }
        if membership {
            self.update_peers(&self.current.cluster.members.clone());
        }
        if let Some(r) = &self.removed {
            if self.store.removed().ok().flatten().is_none() {
                tracing::error!("{r}");
                let _ = self.store.set_removed(r);
                self.peers.stop();
                for (_, w) in self.waiters.drain() {
                    let _ = w.send(Err(ProposeError::Unavailable(r.clone())));
                }
            }
        }
        for o in out {
            match o {
                Out::Send(to, f) => self.peers.send(to, f),
                Out::Reply(id, result) => {
                    let Some(w) = self.waiters.remove(&id) else {
                        continue;
                    };
                    let r = match result {
                        Ok(i) => match self.outcomes.remove(&i) {
                            Some(Err(e)) => Err(ProposeError::Apply(e)),
                            _ => Ok(i),
                        },
                        Err(Reject::NotLeader(l)) => Err(ProposeError::NotLeader(l)),
                        Err(Reject::Down { missing }) => Err(ProposeError::Unavailable(format!(
                            "write refused: {} not reachable (a write needs every member of the \
                             cluster); nothing was applied",
                            self.describe(&missing)
                        ))),
                        Err(Reject::Unavailable { missing }) if missing.is_empty() => {
                            Err(ProposeError::Unavailable(
                                "this node stopped being the leader before every member \
                                 confirmed the write: its outcome is unknown, it may still \
                                 apply"
                                    .to_string(),
                            ))
                        }
                        Err(Reject::Unavailable { missing }) => {
                            Err(ProposeError::Unavailable(format!(
                                "write not confirmed by {} within {:?}: its outcome is unknown, \
                                 it may still apply once every member has it",
                                self.describe(&missing),
                                self.timing.election
                            )))
                        }
                    };
                    let _ = w.send(r);
                }
            }
        }
        if self.waiters.is_empty() {
            self.outcomes.clear();
        } else if self.outcomes.len() > 100_000 {
            let keep = self
                .outcomes
                .split_off(&(self.outcomes.keys().next_back().copied().unwrap_or(0) - 50_000));
            self.outcomes = keep;
        }
    }

    fn describe(&self, ids: &[NodeId]) -> String {
        describe(&self.current.cluster.members, ids)
    }

    /// Tells the core which peers the transport cannot reach right now, so
    /// that a proposal is refused at once rather than left in doubt.
    fn note_unreachable_peers(&mut self) {
        for id in self.peers.unreachable() {
            self.core.mark_unreachable(id);
        }
    }

    /// `kms edit`: drops `ids` from this node's membership, outside the log.
    fn edit(&mut self, ids: &[NodeId]) -> Result<Vec<Action<Change>>, String> {
        if ids.contains(&self.me) {
            return Err(
                "a node cannot force-remove itself; run `kms edit` on the nodes that stay".into(),
            );
        }
        let mut st = (*self.current).clone();
        let unknown: Vec<String> = ids
            .iter()
            .filter(|i| !st.cluster.members.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        if !unknown.is_empty() {
            return Err(format!("not members: {}", unknown.join(", ")));
        }
        for i in ids {
            st.cluster.members.remove(i);
        }
        st.cluster.epoch += 1;
        let mut wb = WriteBatch::default();
        self.store.stage_touches(&mut wb, &st, &[Touch::Cluster]);
        self.store.write(wb).map_err(|e| e.to_string())?;
        let members = Self::members_of(&st);
        let epoch = st.cluster.epoch;
        tracing::warn!(removed = ?ids, epoch, "membership edited by the operator");
        // The edit applies at once to what reads see and to the applied
        // states not published yet.
        let patch = |s: &State| {
            let mut s = s.clone();
            s.cluster = st.cluster.clone();
            Arc::new(s)
        };
        self.state.store(patch(&self.state.load()));
        for (_, s, _) in self.unpublished.iter_mut() {
            *s = patch(s);
        }
        self.current = Arc::new(st);
        self.update_peers(&self.current.cluster.members.clone());
        let mut acts = self.core.set_members(members, epoch);
        if self.core.members() == [self.me] {
            acts.extend(self.core.campaign());
        }
        Ok(acts)
    }

    /// Becomes a learner of another cluster (`kms add` on its leader):
    /// only a node that holds nothing yet may join; its store is reset and
    /// the leader's snapshot replaces it.
    fn join(
        &mut self,
        term: u64,
        members: BTreeMap<NodeId, String>,
        epoch: u64,
    ) -> Result<(), String> {
        let st = self.state.load();
        if members.contains_key(&self.me) {
            return Err(format!(
                "node {} is already a member of that cluster",
                self.me
            ));
        }
        // A learner of the same cluster whose join did not finish (the
        // leader gave up, or the answer was lost) may join again.
        let learner_of_it = !st.cluster.members.contains_key(&self.me)
            && st.cluster.members.keys().any(|m| members.contains_key(m));
        if !learner_of_it
            && (!st.enclaves.is_empty()
                || !st.identities.is_empty()
                || st.cluster.members.keys().any(|m| *m != self.me))
        {
            return Err(format!(
                "node {} ({}) is not empty: it holds {} enclave(s), {} identities and a cluster of {} node(s). \
                 Only a fresh node can join; wipe its data directory first",
                self.me,
                self.addr,
                st.enclaves.len(),
                st.identities.len(),
                st.cluster.members.len()
            ));
        }
        drop(st);
        let mut fresh = State::default();
        fresh.cluster.members = members.clone();
        fresh.cluster.epoch = epoch;
        let mut wb = WriteBatch::default();
        self.store.stage_replace_all(&mut wb, &fresh);
        if self.log_hi >= self.log_lo {
            self.store
                .stage_delete_log(&mut wb, self.log_lo, self.log_hi);
        }
        self.store.stage_snap(&mut wb, 0, 0);
        self.store.stage_applied(&mut wb, 0);
        self.store.stage_hard_state(&mut wb, term, None);
        self.store.write(wb).map_err(|e| e.to_string())?;
        self.log_lo = 1;
        self.log_hi = 0;
        self.unapplied.clear();
        let durable = Durable {
            term,
            ..Durable::default()
        };
        self.core = Core::new(
            self.me,
            members.keys().copied().collect(),
            core_config(&self.timing, rand::random()),
            durable,
        );
        let acts = self
            .core
            .set_members(members.keys().copied().collect(), epoch);
        self.current = Arc::new(fresh);
        self.unpublished.clear();
        self.state.store(self.current.clone());
        self.update_peers(&members);
        self.genesis_sent = true;
        self.execute(acts);
        tracing::info!(members = ?members, "joining a cluster as a learner");
        Ok(())
    }
}
