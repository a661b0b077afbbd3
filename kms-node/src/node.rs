//! A KMS node: the published state, the writer that applies state changes
//! durably (group commit), and what the API needs to serve requests.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hsm_backends::Hsm;
use kms_client::Identity;
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use crate::change::{apply, ApplyError, Change};
use crate::metrics::Metrics;
use crate::model::State;
use crate::store::{Entry, NodeMeta, Store};

/// Most proposals committed with one fsync.
const GROUP_MAX: usize = 1024;
/// The term of every entry of a single-node cluster.
const TERM: u64 = 1;

/// Why a proposed change was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The change was committed to the log but did not apply (validation).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The change could not be made durable; nothing of it applied.
    #[error("{0}")]
    Unavailable(String),
}

enum Proposal {
    Change(Change, oneshot::Sender<Result<u64, ProposeError>>),
    Restore(Box<State>, u64, oneshot::Sender<Result<u64, ProposeError>>),
    /// Finish what is queued before, then stop.
    Stop,
}

pub struct Node {
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    state: Arc<ArcSwap<State>>,
    tx: mpsc::Sender<Proposal>,
    pub store: Arc<Store>,
    /// The primary HSM: derives the root API key and inter-node trust, seals backups.
    pub hsm: Arc<dyn Hsm>,
    /// Every configured HSM (the primary first).
    pub configured: Vec<Arc<dyn Hsm>>,
    pub root_identity: Identity,
    pub meta: NodeMeta,
    /// The address clients use to reach this node (`host:port`).
    pub addr: String,
    pub started: Instant,
    pub metrics: Metrics,
    pub max_request_bytes: usize,
}

impl Node {
    /// Starts the writer for an opened store.
    pub fn start(
        opened: crate::store::Opened,
        hsms: &crate::serve::Hsms,
        root_identity: Identity,
        addr: String,
        max_request_bytes: usize,
    ) -> Result<Arc<Self>, String> {
        let hsm = hsms.primary.clone();
        let state = Arc::new(ArcSwap::from_pointee(opened.state));
        let (tx, rx) = mpsc::channel(GROUP_MAX * 4);
        let store = opened.store.clone();
        let st = state.clone();
        let handle = std::thread::Builder::new()
            .name("kms-writer".into())
            .spawn(move || writer(store, st, rx))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Arc::new(Node {
            writer: parking_lot::Mutex::new(Some(handle)),
            state,
            tx,
            store: opened.store,
            hsm,
            configured: hsms.all.clone(),
            root_identity,
            meta: opened.meta,
            addr,
            started: Instant::now(),
            metrics: Metrics::default(),
            max_request_bytes,
        }))
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

    /// Stops the writer after the changes queued before, waits for it, and
    /// stops the store's background work, so that the process can exit with
    /// nothing half-written (RocksDB aborts if the process exits under it).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Proposal::Stop).await;
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.store.close();
    }

    /// Whether the writer still accepts state changes.
    pub fn writer_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The current, durable state. Cheap; never blocks.
    pub fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// Commits `change` and returns its log index once it is durable and applied.
    pub async fn propose(&self, change: Change) -> Result<u64, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal::Change(change, reply))
            .await
            .map_err(|_| ProposeError::Unavailable("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| ProposeError::Unavailable("the writer has stopped".into()))?
    }

    /// Replaces the whole state (restore from a backup).
    pub async fn replace_state(&self, st: State, records: u64) -> Result<u64, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal::Restore(Box::new(st), records, reply))
            .await
            .map_err(|_| ProposeError::Unavailable("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| ProposeError::Unavailable("the writer has stopped".into()))?
    }
}

/// The writer: drains proposals, applies a group of them to a copy of the
/// state, writes the log entries, records and applied index in one synced
/// batch, and only then publishes the new state and answers.
fn writer(store: Arc<Store>, state: Arc<ArcSwap<State>>, mut rx: mpsc::Receiver<Proposal>) {
    let mut stop = false;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        if let Some(i) = group.iter().position(|p| matches!(p, Proposal::Stop)) {
            // Proposals after Stop are dropped: their callers get "the writer has stopped".
            group.truncate(i);
            stop = true;
            if group.is_empty() {
                break;
            }
        }
        let mut next: State = (**state.load()).clone();
        let prev = next.applied;
        let mut wb = WriteBatch::default();
        let mut outcomes = Vec::with_capacity(group.len());
        for p in group {
            next.applied += 1;
            let index = next.applied;
            match p {
                Proposal::Change(change, reply) => {
                    let outcome = apply(&mut next, &change);
                    if let Ok(touches) = &outcome {
                        store.stage_touches(&mut wb, &next, touches);
                    }
                    store.stage_entry(&mut wb, index, &Entry { term: TERM, change });
                    outcomes.push((reply, outcome.map(|_| index).map_err(ProposeError::Apply)));
                }
                Proposal::Restore(st, records, reply) => {
                    let applied = next.applied;
                    next = *st;
                    next.applied = applied;
                    store.stage_replace_all(&mut wb, &next);
                    store.stage_entry(
                        &mut wb,
                        index,
                        &Entry {
                            term: TERM,
                            change: Change::Restored { records },
                        },
                    );
                    outcomes.push((reply, Ok(index)));
                }
                Proposal::Stop => unreachable!("removed from the group above"),
            }
        }
        store.stage_applied(&mut wb, prev, next.applied);
        match store.write(wb) {
            Ok(()) => {
                state.store(Arc::new(next));
                for (reply, o) in outcomes {
                    let _ = reply.send(o);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write state changes; none of them applied");
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(ProposeError::Unavailable(format!(
                        "storage failure: {e}"
                    ))));
                }
            }
        }
        if stop {
            break;
        }
    }
}
