//! The peer RPC server: what a node answers on an inbound inter-node
//! connection (protocol messages for the driver, and calls: forwarded
//! writes, joins, status, readiness, adding a node). Above `node` and `api`
//! (a status answer is the API's protobuf), below `server`.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::node::{Node, ProposeError};
use crate::replication::core::{Msg, Role};
use crate::replication::net::{self, Call, Fail, Reply, Wire};

/// Answers a call from a peer.
pub async fn handle_call(node: &Arc<Node>, call: Call) -> Result<Reply, Fail> {
    if let Some(r) = &node.view().removed {
        return Err(Fail::new(503, r.clone()));
    }
    match call {
        Call::Forward(changes) => {
            let mut out = Vec::with_capacity(changes.len());
            for c in changes {
                out.push(node.propose_local(c).await.map_err(|e| match e {
                    ProposeError::NotLeader(_) => Fail::new(
                        503,
                        "this node is not the leader any more; nothing was applied",
                    ),
                    e => e.to_fail(),
                }));
            }
            Ok(Reply::Forwarded(out))
        }
        Call::Join {
            term,
            members,
            epoch,
            ..
        } => {
            let joined = node
                .join(term, members, epoch)
                .await
                .map_err(|e| e.to_fail())?;
            match joined {
                Ok(()) => Ok(Reply::Joined { id: node.id() }),
                Err(m) => Err(Fail::new(409, m)),
            }
        }
        Call::Status => {
            use prost::Message;
            Ok(Reply::Status(
                crate::api::server_status(node).encode_to_vec(),
            ))
        }
        Call::ReadyWrite => match node.view().role {
            Role::Leader => match Box::pin(node.write_blocker()).await {
                None => Ok(Reply::Done),
                Some(m) => Err(Fail::new(503, m)),
            },
            _ => Err(Fail::new(503, "not the leader")),
        },
        Call::AddNode(addr) => {
            if node.view().role != Role::Leader {
                return Err(Fail::new(503, "not the leader"));
            }
            Box::pin(node.add_node(&addr))
                .await
                .map(|()| Reply::Done)
                .map_err(|e| e.to_fail())
        }
    }
}

/// Serves an inbound peer connection (already authenticated by mutual TLS).
pub async fn serve_peer<S>(stream: S, node: Arc<Node>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    let (mut r, w) = tokio::io::split(stream);
    let from = match net::read_frame(&mut r).await {
        Ok(Wire::Hello { from }) => from,
        _ => return,
    };
    let (atx, mut arx) = mpsc::channel::<Wire>(256);
    let writer = tokio::spawn(async move {
        let mut w = tokio::io::BufWriter::new(w);
        while let Some(f) = arx.recv().await {
            if net::write_frame(&mut w, &f).await.is_err() {
                return;
            }
            if arx.is_empty() && w.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
        match net::read_frame(&mut r).await {
            Ok(Wire::Raft(msg)) => {
                // A node outside this cluster campaigning: tell it, on this
                // connection (this node has no connection of its own to it).
                let v = node.view();
                if matches!(msg, Msg::PreVote { .. } | Msg::Vote { .. })
                    && v.members.contains_key(&node.id())
                    && !v.members.contains_key(&from)
                {
                    let notice = Msg::Removed {
                        term: v.term,
                        epoch: v.epoch,
                    };
                    let _ = atx.try_send(Wire::Raft(notice));
                    continue;
                }
                drop(v);
                node.deliver(from, msg, None)
            }
            Ok(Wire::Snapshot(msg, records)) => node.deliver_snapshot(from, msg, records).await,
            Ok(Wire::Call { id, call }) => {
                let node = node.clone();
                let atx = atx.clone();
                tokio::spawn(async move {
                    let reply = handle_call(&node, call).await;
                    let _ = atx.send(Wire::Answer { id, reply }).await;
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = from, error = %e, "peer connection ended");
                break;
            }
        }
    }
    drop(atx);
    let _ = writer.await;
}
