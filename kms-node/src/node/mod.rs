//! A KMS node: the published state, the replication driver that makes state
//! changes durable on every member (group commit), and what the API needs to
//! serve requests.
//!
//! This file holds the `Node` itself: starting it (`Node::start`), its
//! accessors, the `View` the driver publishes after every round, the events
//! the node sends the driver, and the helpers the other files share (asking
//! the driver, waiting on the published view). The rest is split by
//! concern, each file with its own `impl Node` block:
//!
//! - `app`: the client-facing API (propose, restore, the read fence);
//! - `membership`: adding, removing and force-removing members, joining;
//! - `protocol`: messages and snapshots from peers;
//! - `driver`: the replication driver thread and its loop;
//! - `error`: `ProposeError`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hsm_backends::Hsm;
use kms_client::Identity;
use tokio::sync::{mpsc, oneshot, watch};

use crate::change::Change;
use crate::config::Timing;
use crate::metrics::Metrics;
use crate::model::State;
use crate::replication::core::{Msg, NodeId, Role};
use crate::replication::net::{Peers, Records};
use crate::store::{NodeMeta, Store};

mod app;
mod driver;
mod error;
mod membership;
mod protocol;

pub use error::ProposeError;

use driver::{Driver, Published, GROUP_MAX};

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

impl View {
    /// Whether a waiter on the view (`Node::wait_view`) could not tell
    /// `self` from `other`: every field but `leader_contact`, which moves
    /// with every heartbeat, is the same.
    fn same_for_waiters(&self, other: &View) -> bool {
        let View {
            role,
            term,
            leader,
            commit,
            applied,
            last_index,
            members,
            epoch,
            progress,
            down,
            removed,
            leader_contact: _,
            pending,
            published,
        } = self;
        *role == other.role
            && *term == other.term
            && *leader == other.leader
            && *commit == other.commit
            && *applied == other.applied
            && *last_index == other.last_index
            && *members == other.members
            && *epoch == other.epoch
            && *progress == other.progress
            && *down == other.down
            && *removed == other.removed
            && *pending == other.pending
            && *published == other.published
    }
}

/// Where the driver answers a proposal.
type Waiter = oneshot::Sender<Result<u64, ProposeError>>;

/// What the node hands the driver: one round takes a batch of these.
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

/// A running node: the published state and view, the channel to its
/// replication driver, and what the API needs to serve requests.
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
    /// Where slow signing and key generation run (`crate::work`).
    pub work: crate::work::Work,
    /// Signalled after every round whose view differs from the one before
    /// (`View::same_for_waiters`): what `wait_view` waits on.
    changed: Arc<watch::Sender<()>>,
    /// The audit log and this node's ring of its latest events (CLUSTER:AUDIT).
    pub audit: crate::audit::Audit,
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
        let rt = tokio::runtime::Handle::current();
        let peers = Arc::new(Peers::new(me, peer_tls, rt));
        peers.update(&st.cluster.members);
        let (d, published) =
            Driver::new(me, addr.clone(), timing, store, durable, st, peers.clone());
        let Published {
            state,
            view,
            changed,
        } = published;
        let (tx, rx) = mpsc::channel(GROUP_MAX * 4);
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
            work: crate::work::Work::for_this_machine(),
            changed,
            audit: Default::default(),
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

    /// Sends the driver `ev`.
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

    /// Waits, for at most `within`, until `check` returns `Some` for the
    /// published view, and returns that; `None` if the time ran out first.
    /// `check` sees the current view, then each view a round publishes that
    /// differs from the one before (the driver signals `changed`): nothing
    /// polls.
    async fn wait_view<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&View) -> Option<T>,
    ) -> Option<T> {
        // Subscribed before the first check: a view published after it
        // wakes the loop below.
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(within, async {
            loop {
                if let Some(t) = check(&self.view()) {
                    return Some(t);
                }
                // Cannot fail while `self` lives: it holds the sender.
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View {
            role: Role::Leader,
            term: 3,
            leader: Some(1),
            commit: 10,
            applied: 10,
            last_index: 10,
            members: [(1, "a:1".to_string()), (2, "b:1".to_string())].into(),
            epoch: 2,
            progress: [(2, (10, 9))].into(),
            down: Vec::new(),
            removed: None,
            leader_contact: Some(Instant::now()),
            pending: HashMap::new(),
            published: 9,
        }
    }

    /// A round that only moved `leader_contact` wakes no waiter; any other
    /// change does.
    #[test]
    fn waiters_see_every_change_but_leader_contact() {
        let a = view();
        let mut b = a.clone();
        b.leader_contact = Some(Instant::now() + Duration::from_secs(1));
        assert!(b.same_for_waiters(&a));
        let changes: [fn(&mut View); 6] = [
            |v| v.role = Role::Follower,
            |v| v.leader = None,
            |v| v.published = 10,
            |v| v.progress = [(2, (10, 10))].into(),
            |v| v.removed = Some("removed".into()),
            |v| {
                v.pending.insert("e".into(), 11);
            },
        ];
        for change in changes {
            let mut c = a.clone();
            change(&mut c);
            assert!(!c.same_for_waiters(&a));
        }
    }
}
