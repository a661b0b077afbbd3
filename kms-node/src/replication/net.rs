//! Inter-node transport: length-prefixed frames over mutual TLS (see
//! `tls.rs`), on the API port. A peer connection is told apart from an API
//! client by its ALPN protocol, `kms-peer/2`, in the TLS ClientHello.
//!
//! Every node dials every other member once and keeps the connection: it
//! sends its protocol messages and calls on it, and reads the answers to
//! its calls from it. Protocol messages are fire-and-forget (the protocol
//! tolerates loss); a message to an unreachable peer is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroize;

use super::core::{Msg, NodeId};
use crate::change::Change;
use crate::codec;

pub const ALPN: &[u8] = b"kms-peer/2";
const MAX_FRAME: usize = 512 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const QUEUE: usize = 4096;

/// State records in plaintext (inside TLS), wiped when dropped.
#[derive(Serialize, Deserialize, Default)]
pub struct Records(pub Vec<(Vec<u8>, Vec<u8>)>);

impl Drop for Records {
    fn drop(&mut self) {
        for (_, v) in &mut self.0 {
            v.zeroize();
        }
    }
}

/// An error answered by a call: an HTTP-like status and a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    pub status: u16,
    pub message: String,
    /// Set by this node's transport (never sent): the call never left this
    /// node, so the peer did not act on it.
    #[serde(skip)]
    pub unsent: bool,
}

impl Fail {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Fail {
            status,
            message: message.into(),
            unsent: false,
        }
    }

    /// A call that this node never sent.
    pub fn unsent(message: impl Into<String>) -> Self {
        Fail {
            unsent: true,
            ..Fail::new(503, message)
        }
    }
}

#[derive(Serialize, Deserialize)]
pub enum Call {
    /// Propose these changes (a follower forwards writes to the leader).
    Forward(Vec<Change>),
    /// Become a learner of the caller's cluster (`kms add`).
    Join {
        leader: NodeId,
        term: u64,
        members: BTreeMap<NodeId, String>,
        epoch: u64,
    },
    /// This node's status, as CLUSTER:STATUS reports it (protobuf).
    Status,
    /// Whether a write could succeed now (leader only).
    ReadyWrite,
    /// Add the node at this address (leader only).
    AddNode(String),
}

#[derive(Serialize, Deserialize)]
pub enum Reply {
    Forwarded(Vec<Result<u64, Fail>>),
    Joined { id: NodeId },
    Status(Vec<u8>),
    Done,
}

#[derive(Serialize, Deserialize)]
pub enum Wire {
    /// First frame of a connection: who dials.
    Hello {
        from: NodeId,
    },
    Raft(Msg<Change>),
    Snapshot(Msg<Change>, Records),
    Call {
        id: u64,
        call: Call,
    },
    Answer {
        id: u64,
        reply: Result<Reply, Fail>,
    },
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Wire, String> {
    let n = r.read_u32().await.map_err(|e| e.to_string())? as usize;
    if n > MAX_FRAME {
        return Err(format!("frame of {n} bytes exceeds {MAX_FRAME}"));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    let out = codec::decode_wire(&buf);
    buf.zeroize();
    out
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Wire) -> Result<(), String> {
    let mut buf = codec::encode_wire(f)?;
    let r = async {
        w.write_u32(buf.len() as u32).await?;
        w.write_all(&buf).await
    }
    .await
    .map_err(|e| e.to_string());
    buf.zeroize();
    r
}

/// `host:port` of a node URL or address.
pub fn host_port(url: &str) -> String {
    let s = url.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.trim_end_matches('/').to_string()
}

type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Dials `addr` with the cluster's TLS; fails unless the peer holds the same HSM key.
pub async fn dial(addr: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Stream, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("cannot connect to {addr}: timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("invalid node address {addr}"))?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    tokio::time::timeout(CONNECT_TIMEOUT * 3, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("TLS handshake with {addr} timed out"))?
        .map_err(|e| {
            format!(
                "TLS handshake with {addr} failed ({e}): it is not a node of this cluster, or \
                 its HSM key differs from this cluster's"
            )
        })
}

/// One call on a fresh connection to `addr` (a node that is not a member yet).
pub async fn call_addr(
    me: NodeId,
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    call: Call,
    timeout: Duration,
) -> Result<Reply, Fail> {
    let unavailable = |m: String| Fail::new(503, m);
    let mut s = dial(addr, tls).await.map_err(unavailable)?;
    let r = async {
        write_frame(&mut s, &Wire::Hello { from: me }).await?;
        write_frame(&mut s, &Wire::Call { id: 1, call }).await?;
        s.flush().await.map_err(|e| e.to_string())?;
        loop {
            if let Wire::Answer { reply, .. } = read_frame(&mut s).await? {
                return Ok::<_, String>(reply);
            }
        }
    };
    match tokio::time::timeout(timeout, r).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => Err(unavailable(format!("node {addr}: {e}"))),
        Err(_) => Err(unavailable(format!(
            "node {addr} did not answer within {timeout:?}"
        ))),
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, Fail>>>>>;
/// Where protocol messages that arrive on an outbound connection go.
pub type Inbox = Arc<std::sync::OnceLock<Box<dyn Fn(NodeId, Msg<Change>) + Send + Sync>>>;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Wire>,
    pending: Pending,
    task: tokio::task::JoinHandle<()>,
}

/// Outbound connections to the other members.
pub struct Peers {
    me: NodeId,
    tls: Arc<rustls::ClientConfig>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    next_call: AtomicU64,
    rt: tokio::runtime::Handle,
    inbox: Inbox,
    /// Peers whose connection is down (dial failing or lost).
    unreachable: Arc<Mutex<std::collections::HashSet<NodeId>>>,
}

impl Peers {
    pub fn new(me: NodeId, tls: Arc<rustls::ClientConfig>, rt: tokio::runtime::Handle) -> Self {
        Peers {
            me,
            tls,
            peers: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            rt,
            inbox: Default::default(),
            unreachable: Default::default(),
        }
    }

    /// Peers whose connection is down right now.
    pub fn unreachable(&self) -> Vec<NodeId> {
        self.unreachable.lock().iter().copied().collect()
    }

    /// Sets where protocol messages answered on outbound connections go
    /// (the notice that this node was removed travels that way).
    pub fn set_inbox(&self, f: Box<dyn Fn(NodeId, Msg<Change>) + Send + Sync>) {
        let _ = self.inbox.set(f);
    }

    pub fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    /// Makes the peer set `addrs` (self excluded): new peers are dialed,
    /// gone ones dropped, moved ones redialed.
    pub fn update(&self, addrs: &BTreeMap<NodeId, String>) {
        let mut peers = self.peers.lock();
        peers.retain(|id, p| {
            let keep = addrs.get(id).is_some_and(|a| *a == p.addr);
            if !keep {
                p.task.abort();
            }
            keep
        });
        for (id, addr) in addrs {
            if *id == self.me || peers.contains_key(id) {
                continue;
            }
            peers.insert(*id, self.spawn(*id, addr.clone()));
        }
    }

    pub fn stop(&self) {
        for (_, p) in self.peers.lock().drain() {
            p.task.abort();
        }
    }

    fn spawn(&self, id: NodeId, addr: String) -> Peer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending: Pending = Default::default();
        let task = self.rt.spawn(run_peer(
            Link {
                me: self.me,
                id,
                addr: addr.clone(),
                tls: self.tls.clone(),
                pending: pending.clone(),
                inbox: self.inbox.clone(),
                unreachable: self.unreachable.clone(),
            },
            rx,
        ));
        Peer {
            addr,
            tx,
            pending,
            task,
        }
    }

    /// Queues a frame for `to`; dropped if `to` is unknown or its queue is full.
    pub fn send(&self, to: NodeId, f: Wire) {
        if let Some(p) = self.peers.lock().get(&to) {
            let _ = p.tx.try_send(f);
        }
    }

    /// A call to member `to`, answered within `timeout`.
    pub async fn call(&self, to: NodeId, call: Call, timeout: Duration) -> Result<Reply, Fail> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (addr, sent) = {
            let peers = self.peers.lock();
            let Some(p) = peers.get(&to) else {
                return Err(Fail::unsent(format!("node {to} is not a known peer")));
            };
            p.pending.lock().insert(id, tx);
            (
                p.addr.clone(),
                p.tx.try_send(Wire::Call { id, call }).is_ok(),
            )
        };
        let fail = |m: String| Fail::new(503, m);
        if !sent {
            if let Some(p) = self.peers.lock().get(&to) {
                p.pending.lock().remove(&id);
            }
            return Err(Fail::unsent(format!(
                "node {to} ({addr}) is not reachable (its queue is full)"
            )));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(fail(format!("node {to} ({addr}) is not reachable"))),
            Err(_) => {
                if let Some(p) = self.peers.lock().get(&to) {
                    p.pending.lock().remove(&id);
                }
                Err(fail(format!(
                    "node {to} ({addr}) did not answer within {timeout:?}"
                )))
            }
        }
    }
}

fn fail_pending(pending: &Pending, why: &str) {
    for (_, tx) in pending.lock().drain() {
        let _ = tx.send(Err(Fail::new(503, why)));
    }
}

/// What a peer's connection task works with.
struct Link {
    me: NodeId,
    id: NodeId,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    pending: Pending,
    inbox: Inbox,
    unreachable: Arc<Mutex<std::collections::HashSet<NodeId>>>,
}

/// Keeps one connection to a peer: dials, sends queued frames, reads answers.
async fn run_peer(link: Link, mut rx: mpsc::Receiver<Wire>) {
    let Link {
        me,
        id,
        addr,
        tls,
        pending,
        inbox,
        unreachable,
    } = link;
    let mut backoff = Duration::from_millis(20);
    let mut logged = false;
    loop {
        match dial(&addr, &tls).await {
            Ok(s) => {
                unreachable.lock().remove(&id);
                backoff = Duration::from_millis(20);
                if logged {
                    tracing::info!(peer = id, %addr, "connected to peer");
                    logged = false;
                }
                let (r, w) = tokio::io::split(s);
                let mut w = BufWriter::new(w);
                let reader = {
                    let pending = pending.clone();
                    let inbox = inbox.clone();
                    tokio::spawn(async move {
                        let mut r = r;
                        loop {
                            match read_frame(&mut r).await {
                                Ok(Wire::Answer { id, reply }) => {
                                    if let Some(tx) = pending.lock().remove(&id) {
                                        let _ = tx.send(reply);
                                    }
                                }
                                Ok(Wire::Raft(m)) => {
                                    if let Some(f) = inbox.get() {
                                        f(id, m);
                                    }
                                }
                                Ok(_) => {}
                                Err(_) => return,
                            }
                        }
                    })
                };
                let mut ok = write_frame(&mut w, &Wire::Hello { from: me }).await.is_ok();
                while ok && !reader.is_finished() {
                    let f = tokio::select! {
                        f = rx.recv() => Some(f),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => None,
                    };
                    let Some(f) = f else {
                        continue;
                    };
                    let Some(f) = f else {
                        reader.abort();
                        return;
                    };
                    ok = write_frame(&mut w, &f).await.is_ok();
                    if ok && rx.is_empty() {
                        ok = w.flush().await.is_ok();
                    }
                }
                reader.abort();
                unreachable.lock().insert(id);
                fail_pending(&pending, &format!("connection to node {id} ({addr}) lost"));
            }
            Err(e) => {
                unreachable.lock().insert(id);
                if !logged {
                    tracing::warn!(peer = id, %addr, error = %e, "cannot reach peer");
                    logged = true;
                }
                // Nothing queued survives an outage: the protocol resends.
                // Calls still queued were never sent: say so, definitely.
                while let Ok(f) = rx.try_recv() {
                    if let Wire::Call { id: cid, .. } = f {
                        if let Some(tx) = pending.lock().remove(&cid) {
                            let _ = tx.send(Err(Fail::unsent(format!(
                                "node {id} ({addr}) is not reachable: {e}"
                            ))));
                        }
                    }
                }
                // Any other call may have gone out on a connection now lost.
                fail_pending(
                    &pending,
                    &format!("node {id} ({addr}) is not reachable: {e}"),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}
