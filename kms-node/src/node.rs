//! A KMS node: the published state, the replication driver that makes state
//! changes durable on every member (group commit), and what the API needs to
//! serve requests.
//!
//! The driver is the I/O shell around the protocol core
//! (`replication::core`): one thread owns the core, the store and the
//! published state. It takes a batch of events (proposals, peer messages,
//! ticks), feeds them to the core, and carries out the actions the core
//! returns: everything to persist goes into one synced RocksDB batch
//! (entries, applied records, term and vote), and only after that batch is
//! durable are the new state published, messages sent and proposals
//! answered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hsm_backends::Hsm;
use kms_client::Identity;
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use crate::change::{apply, ApplyError, Change, Touch};
use crate::metrics::Metrics;
use crate::model::State;
use crate::replication::core::{self, Action, Core, Durable, Msg, NodeId, Reject, Role};
use crate::replication::net::{self, Call, Fail, Peers, Records, Reply, Wire};
use crate::store::{Entry, NodeMeta, Store};

/// Most events handled (and proposals committed) per round.
const GROUP_MAX: usize = 1024;

/// Why a proposed change was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The change was committed to the log but did not apply (validation).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The change could not be replicated now (the message says whether it
    /// may still apply).
    #[error("{0}")]
    Unavailable(String),
    /// This node is not the leader (the leader, if known).
    #[error("not the leader")]
    NotLeader(Option<NodeId>),
    /// Another node answered with this error.
    #[error("{message}")]
    Failed { status: u16, message: String },
}

impl From<Fail> for ProposeError {
    fn from(f: Fail) -> Self {
        ProposeError::Failed {
            status: f.status,
            message: f.message,
        }
    }
}

impl ProposeError {
    /// The error as a peer call's answer.
    pub fn to_fail(&self) -> Fail {
        let status = match self {
            ProposeError::Apply(e) => e.status(),
            ProposeError::Failed { status, .. } => *status,
            _ => 503,
        };
        Fail::new(status, self.to_string())
    }
}

use crate::config::Timing;

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

/// What the driver publishes about replication after every round.
#[derive(Debug, Clone)]
pub struct View {
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub members: BTreeMap<NodeId, String>,
    pub epoch: u64,
    /// (matched, applied) per member and learner, on the leader.
    pub progress: BTreeMap<NodeId, (u64, u64)>,
    /// Members the leader has not heard from within an election timeout.
    pub down: Vec<NodeId>,
    /// Why this node no longer serves, if it was removed from the cluster.
    pub removed: Option<String>,
    /// When the leader was last heard from (a follower) or now (the leader).
    pub leader_contact: Option<Instant>,
    /// Per enclave, the highest log index touching it that this node holds
    /// unpublished while another node may serve it (`Core::fence_to`); the
    /// key "" stands for entries that touch every enclave (identities
    /// outside enclaves, a restore).
    pub pending: HashMap<String, u64>,
    /// The index reads on this node see.
    pub published: u64,
}

type Waiter = oneshot::Sender<Result<u64, ProposeError>>;

enum Event {
    Propose(Change, Waiter),
    Restore(Box<State>, u64, Waiter),
    Msg(NodeId, Msg<Change>, Option<Records>),
    Tick,
    AddLearner(NodeId, String),
    RemoveLearner(NodeId),
    Edit(Vec<NodeId>, oneshot::Sender<Result<(), String>>),
    Join {
        term: u64,
        members: BTreeMap<NodeId, String>,
        epoch: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Finish what is queued before, then stop.
    Stop,
}

pub struct Node {
    driver: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    ticker: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    state: Arc<ArcSwap<State>>,
    view: Arc<ArcSwap<View>>,
    tx: mpsc::Sender<Event>,
    pub peers: Arc<Peers>,
    pub timing: Timing,
    pub store: Arc<Store>,
    /// The primary HSM: derives the root API key and inter-node trust, seals backups.
    pub hsm: Arc<dyn Hsm>,
    /// Every configured HSM (the primary first).
    pub configured: Vec<Arc<dyn Hsm>>,
    pub root_identity: Identity,
    pub meta: NodeMeta,
    /// The address clients and peers use to reach this node (`host:port`).
    pub addr: String,
    pub started: Instant,
    pub metrics: Metrics,
    pub max_request_bytes: usize,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// Per enclave, the highest fence target a read gave up waiting for:
    /// later reads of that enclave do not wait for it again (see `fence`).
    fence_expired: parking_lot::Mutex<HashMap<String, u64>>,
    /// Signalled after every round that published a new view.
    changed: Arc<tokio::sync::watch::Sender<()>>,
}

impl Node {
    /// Starts the replication driver for an opened store.
    pub fn start(
        opened: crate::store::Opened,
        hsms: &hsm_backends::Hsms,
        root_identity: Identity,
        addr: String,
        (max_request_bytes, body_timeout): (usize, Duration),
        timing: Timing,
        peer_tls: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Self>, String> {
        let hsm = hsms.primary.clone();
        let me = opened.meta.node_id;
        let store = opened.store.clone();
        let durable = store
            .durable(opened.state.applied)
            .map_err(|e| format!("cannot read the replication log: {e}"))?;
        let st = opened.state;
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
        let rt = tokio::runtime::Handle::current();
        let peers = Arc::new(Peers::new(me, peer_tls, rt));
        peers.update(&st.cluster.members);
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
        let (changed, _) = tokio::sync::watch::channel(());
        let changed = Arc::new(changed);
        let (tx, rx) = mpsc::channel(GROUP_MAX * 4);
        let mut d = Driver {
            me,
            addr: addr.clone(),
            timing,
            core: c,
            store: store.clone(),
            state: state.clone(),
            view: view.clone(),
            peers: peers.clone(),
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
        let handle = std::thread::Builder::new()
            .name("kms-replication".into())
            .spawn(move || d.run(rx))
            .map_err(|e| format!("cannot start the replication thread: {e}"))?;
        let ticker = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(timing.tick);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    iv.tick().await;
                    if tx.is_closed() {
                        return;
                    }
                    let _ = tx.try_send(Event::Tick);
                }
            })
        };
        let inbox_tx = tx.clone();
        peers.set_inbox(Box::new(move |from, msg| {
            let _ = inbox_tx.try_send(Event::Msg(from, msg, None));
        }));
        Ok(Arc::new(Node {
            driver: parking_lot::Mutex::new(Some(handle)),
            ticker: parking_lot::Mutex::new(Some(ticker)),
            state,
            view,
            tx,
            peers,
            timing,
            store: opened.store,
            hsm,
            configured: hsms.all.clone(),
            root_identity,
            meta: opened.meta,
            addr,
            started: Instant::now(),
            metrics: Metrics::default(),
            max_request_bytes,
            body_timeout,
            fence_expired: Default::default(),
            changed,
        }))
    }

    pub fn id(&self) -> NodeId {
        self.meta.node_id
    }

    /// Names of the HSMs that hold a sealed root key entry of this node.
    pub fn hsm_entries(&self) -> Vec<String> {
        self.store.hsm_entries().unwrap_or_default()
    }

    /// Names of the configured HSMs (the primary first).
    pub fn configured_names(&self) -> Vec<String> {
        self.configured.iter().map(|h| h.name()).collect()
    }

    /// The configured HSM named `name` (`soft` and `pkcs11` select by kind).
    pub fn configured_hsm(&self, name: &str) -> Option<&Arc<dyn Hsm>> {
        self.configured.iter().find(|h| {
            let n = h.name();
            n == name || n.split(':').next() == Some(name)
        })
    }

    /// Stops the driver after the events queued before, waits for it, and
    /// stops the store's background work, so that the process can exit with
    /// nothing half-written (RocksDB aborts if the process exits under it).
    pub async fn shutdown(&self) {
        if let Some(t) = self.ticker.lock().take() {
            t.abort();
        }
        let _ = self.tx.send(Event::Stop).await;
        let handle = self.driver.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.peers.stop();
        self.store.close();
    }

    /// Whether the driver still accepts state changes.
    pub fn writer_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The current, durable state. Cheap; never blocks.
    pub fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// The replication view of the last round.
    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

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
        let mut rx = self.changed.subscribe();
        let waited = tokio::time::timeout(self.fence_bound(), async {
            loop {
                // Resolved once `first` is published here, or nothing at or
                // past it is fenced any more (truncated, or behind a hold).
                let v = self.view();
                match target(&v) {
                    Some(t) if t >= first && v.published < first => {}
                    _ => return,
                }
                drop(v);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.metrics
            .record_fence(started.elapsed(), waited.is_err());
        if waited.is_err() {
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
        describe(&self.view().members, ids)
    }

    async fn send(&self, ev: Event) -> Result<(), ProposeError> {
        self.tx.send(ev).await.map_err(|_| shutting_down())
    }

    /// Sends the driver the event `make` builds around a reply channel and
    /// waits for the reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<T, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| shutting_down())
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
                    tokio::time::sleep(self.timing.heartbeat / 2).await;
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

    /// Hands a message from a peer to the driver (dropped when it is busy:
    /// the protocol resends).
    pub fn deliver(&self, from: NodeId, msg: Msg<Change>, snapshot: Option<Records>) {
        let _ = self.tx.try_send(Event::Msg(from, msg, snapshot));
    }

    pub async fn deliver_snapshot(&self, from: NodeId, msg: Msg<Change>, snapshot: Records) {
        let _ = self.tx.send(Event::Msg(from, msg, Some(snapshot))).await;
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

    /// Adds the node at `url` to the cluster (`kms add`).
    pub async fn add_node(&self, url: &str) -> Result<(), ProposeError> {
        let addr = net::host_port(url);
        let v = self.view().clone();
        if v.role != Role::Leader {
            let Some(l) = v.leader.filter(|l| *l != self.id()) else {
                return Err(ProposeError::Unavailable("no leader elected".into()));
            };
            return match self
                .peers
                .call(l, Call::AddNode(addr), Duration::from_secs(120))
                .await
            {
                Ok(_) => Ok(()),
                Err(f) => Err(f.into()),
            };
        }
        if v.members.values().any(|a| *a == addr) {
            return Err(ProposeError::Failed {
                status: 409,
                message: format!("node {addr} is already a member"),
            });
        }
        if !v.down.is_empty() {
            return Err(ProposeError::Unavailable(format!(
                "cannot add a node while {} unreachable",
                self.describe(&v.down)
            )));
        }
        let joined = net::call_addr(
            self.id(),
            &addr,
            self.peers.tls(),
            Call::Join {
                leader: self.id(),
                term: v.term,
                members: v.members.clone(),
                epoch: v.epoch,
            },
            Duration::from_secs(10),
        )
        .await
        .map_err(|f| ProposeError::Failed {
            status: f.status.max(400),
            message: format!("cannot add {addr}: {}", f.message),
        })?;
        let Reply::Joined { id } = joined else {
            return Err(ProposeError::Unavailable(format!(
                "unexpected answer from {addr}"
            )));
        };
        if v.members.contains_key(&id) {
            return Err(ProposeError::Failed {
                status: 409,
                message: format!("node {addr} has id {id}, which a member already has"),
            });
        }
        self.send(Event::AddLearner(id, addr.clone())).await?;
        // A member only once in sync: wait until it holds what was committed.
        let target = self.view().last_index;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.view();
            if v.progress.get(&id).is_some_and(|(m, _)| *m >= target) {
                break;
            }
            if Instant::now() > until || v.role != Role::Leader {
                drop(v);
                let _ = self.send(Event::RemoveLearner(id)).await;
                return Err(ProposeError::Unavailable(format!(
                    "node {addr} did not catch up within 60 s; it was not added"
                )));
            }
            drop(v);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.propose(Change::SetMember { id, addr }).await.map(drop)
    }

    /// Removes the member at `url` (`kms rm`), through the log.
    pub async fn remove_node(&self, url: &str) -> Result<(), ProposeError> {
        let addr = net::host_port(url);
        let v = self.view().clone();
        let Some((&id, _)) = v.members.iter().find(|(_, a)| **a == addr) else {
            return Err(ProposeError::Failed {
                status: 404,
                message: format!("node {addr} is not a member"),
            });
        };
        if v.members.len() == 1 {
            return Err(ProposeError::Failed {
                status: 409,
                message: "cannot remove the last member of a cluster".into(),
            });
        }
        match self.propose(Change::RemoveMember { id }).await {
            // Removing the leader itself: it steps down as it applies the
            // removal, before every member confirmed; the state says whether
            // the removal happened.
            Err(ProposeError::Unavailable(_))
                if !self.state().cluster.members.contains_key(&id) =>
            {
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// Force-removes `ids` from this node's view of the cluster (`kms edit`).
    pub async fn edit(&self, ids: Vec<NodeId>) -> Result<(), ProposeError> {
        self.ask(|r| Event::Edit(ids, r))
            .await?
            .map_err(|m| ProposeError::Failed {
                status: 400,
                message: m,
            })
    }

    /// Becomes a learner of another cluster on its leader's `Join` call.
    pub async fn join(
        &self,
        term: u64,
        members: BTreeMap<NodeId, String>,
        epoch: u64,
    ) -> Result<Result<(), String>, ProposeError> {
        self.ask(|reply| Event::Join {
            term,
            members,
            epoch,
            reply,
        })
        .await
    }
}

fn shutting_down() -> ProposeError {
    ProposeError::Unavailable("the node is shutting down".into())
}

/// `node ID (ADDR), ...` for messages.
fn describe(members: &BTreeMap<NodeId, String>, ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| match members.get(id) {
            Some(a) => format!("node {id} ({a})"),
            None => format!("node {id}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

enum Out {
    Send(NodeId, Wire),
    Reply(u64, Result<u64, Reject>),
}

struct Driver {
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
    changed: Arc<tokio::sync::watch::Sender<()>>,
}

/// Reads a snapshot's records into a state (in key order, as stored).
fn parse_snapshot(records: &Records) -> Result<State, crate::store::StoreError> {
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = records.0.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    crate::store::import_records(sorted.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
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
    fn run(mut self, mut rx: mpsc::Receiver<Event>) {
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

    fn publish(&self) {
        let st = &self.current;
        let leader = self.core.role() == Role::Leader;
        self.view.store(Arc::new(View {
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
        }));
        self.changed.send_replace(());
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
                    let records = Records(
                        crate::store::export_records(st)
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
                    out.push(Out::Send(
                        to,
                        Wire::Snapshot(
                            Msg::Snapshot {
                                term,
                                index,
                                last_term,
                            },
                            records,
                        ),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot this node cannot read is an error to log and refuse (the
    /// driver drops the message), never a reason to stop.
    #[test]
    fn unreadable_snapshots_are_errors() {
        for records in [
            vec![(b"garbage".to_vec(), b"x".to_vec())],
            vec![(b"E\0e".to_vec(), vec![0xff; 40])],
            vec![(Vec::new(), Vec::new())],
        ] {
            assert!(parse_snapshot(&Records(records)).is_err());
        }
        let empty = parse_snapshot(&Records(Vec::new())).expect("an empty state");
        assert!(empty.enclaves.is_empty());
    }
}
