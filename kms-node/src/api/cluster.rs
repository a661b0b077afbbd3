//! CLUSTER:* commands: status of every member, membership changes (add,
//! remove, the operator's `edit`) and the HSMs that seal this node's state.

use std::time::Duration;

use kms_client::{proto, Command};
use prost::Message;

use super::{decode, ApiError, Ctx};
use crate::node::Node;
use crate::replication::core::Role;
use crate::replication::net::{Call, Reply};

/// This node's status, as CLUSTER:STATUS and `kms stat` report it.
pub fn server_status(node: &Node) -> proto::ServerStatusResponse {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let v = node.view();
    let role = match v.role {
        Role::Leader => "Leader",
        Role::Follower if !v.members.contains_key(&node.id()) => "Learner",
        Role::Follower => "Follower",
        Role::PreCandidate | Role::Candidate => "Candidate",
    };
    proto::ServerStatusResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
        host: node.addr.clone(),
        up_time: Some(prost_types::Duration::try_from(node.started.elapsed()).unwrap_or_default()),
        role: role.into(),
        commit: v.applied,
        nodes: if v.members.is_empty() {
            [(node.id(), node.addr.clone())].into_iter().collect()
        } else {
            v.members.iter().map(|(k, a)| (*k, a.clone())).collect()
        },
        id: node.id(),
        leader_id: v.leader.map_or(-1, i64::from),
        last_heartbeat: v
            .leader_contact
            .and_then(|t| prost_types::Duration::try_from(t.elapsed()).ok()),
        heartbeat_interval: prost_types::Duration::try_from(node.timing.heartbeat).ok(),
        election_timeout: prost_types::Duration::try_from(node.timing.election).ok(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cpus,
        usable_cpus: cpus,
        heap_mem_in_use: 0,
        stack_mem_in_use: 0,
        hsms: node.hsm_entries(),
        configured_hsms: node.configured_names(),
    }
}

/// Every member's status: this node's, and the others' asked over the
/// inter-node connections (a member that does not answer within a second is down).
pub async fn cluster_status(node: &Node) -> proto::ClusterStatusResponse {
    let me = server_status(node);
    let members = node.view().members.clone();
    let mut asks = Vec::new();
    for (id, addr) in members {
        if id == node.id() {
            continue;
        }
        let peers = node.peers.clone();
        asks.push((
            id,
            addr,
            tokio::spawn(async move { peers.call(id, Call::Status, Duration::from_secs(1)).await }),
        ));
    }
    let mut out = proto::ClusterStatusResponse::default();
    out.nodes_up.insert(me.id, me);
    for (id, addr, task) in asks {
        match task.await {
            Ok(Ok(Reply::Status(b))) => match proto::ServerStatusResponse::decode(b.as_slice()) {
                Ok(s) => {
                    out.nodes_up.insert(id, s);
                }
                Err(_) => {
                    out.nodes_down.insert(id, addr);
                }
            },
            _ => {
                out.nodes_down.insert(id, addr);
            }
        }
    }
    out
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    use crate::store::StoreError;
    match e {
        StoreError::Exists(m) | StoreError::Refused(m) => ApiError::new(409, m),
        StoreError::NotFound(m) => ApiError::new(404, m),
        StoreError::Sealed(m) => ApiError::new(503, m),
        e => ApiError::new(500, e.to_string()),
    }
}

/// CLUSTER:AUDIT: the events of this node's ring that match the request.
/// Bad filters are a 400; a limit above [`crate::audit::LIMIT_MAX`] is clamped.
pub fn audit_answer(
    audit: &crate::audit::Audit,
    node_id: u32,
    req: &proto::AuditRequest,
) -> Result<proto::AuditResponse, ApiError> {
    use crate::audit::{parse_command, Filter, LIMIT_DEFAULT, LIMIT_MAX};
    let command = parse_command(&req.command).map_err(ApiError::bad)?;
    if !req.identity.is_empty() {
        // The filter is not echoed: a pasted API key must not land in an
        // error message or a log.
        if req.identity.trim_start().starts_with("k1:") {
            return Err(ApiError::bad(
                "the identity filter is an API key, not an identity: `kms identity KEY` prints its identity",
            ));
        }
        kms_client::Identity::parse(&req.identity).map_err(|_| {
            ApiError::bad(
                "invalid identity filter: an identity is 'h1:' and 43 base64url characters",
            )
        })?;
    }
    if !req.enclave.is_empty() {
        super::validate_name("enclave", &req.enclave)?;
    }
    let limit = match req.limit {
        0 => LIMIT_DEFAULT,
        n => (n as usize).min(LIMIT_MAX),
    };
    let (events, oldest_seq) = audit.query(&Filter {
        identity: req.identity.clone(),
        command,
        enclave: req.enclave.clone(),
        limit,
        before_seq: req.before_seq,
    });
    Ok(proto::AuditResponse {
        events: events
            .into_iter()
            .map(|e| proto::AuditEvent {
                seq: e.seq,
                time: Some(e.time),
                node_id,
                identity: e.identity,
                command: e.command.to_string(),
                enclave: e.enclave,
                name: e.name,
                outcome: e.outcome.as_str().to_string(),
                error: e.error,
            })
            .collect(),
        node_id,
        oldest_seq,
    })
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    ctx.authorize(cmd, "")?;
    match cmd {
        Command::ClusterAudit => {
            let req: proto::AuditRequest = decode(cmd, payload)?;
            Ok(audit_answer(&ctx.node.audit, ctx.node.id(), &req)?.encode_to_vec())
        }
        Command::ClusterStatus => {
            let _: proto::ClusterStatusRequest = decode(cmd, payload)?;
            Ok(cluster_status(ctx.node).await.encode_to_vec())
        }
        Command::ClusterAddNode => {
            let req: proto::AddClusterNodeRequest = decode(cmd, payload)?;
            if req.host.trim().is_empty() {
                return Err(ApiError::bad("the node address must not be empty"));
            }
            let r = ctx.node.add_node(&req.host).await.map_err(ApiError::from);
            audit(ctx, cmd, &req.host, &r);
            r.map(|()| Vec::new())
        }
        Command::ClusterRemoveNode => {
            let req: proto::RemoveClusterNodeRequest = decode(cmd, payload)?;
            let r = ctx
                .node
                .remove_node(&req.host)
                .await
                .map_err(ApiError::from);
            audit(ctx, cmd, &req.host, &r);
            r.map(|()| Vec::new())
        }
        Command::ClusterEdit => {
            let req: proto::EditClusterRequest = decode(cmd, payload)?;
            if req.remove_ids.is_empty() {
                return Err(ApiError::bad("no node ids to remove"));
            }
            let ids = req
                .remove_ids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let r = ctx.node.edit(req.remove_ids).await.map_err(ApiError::from);
            audit(ctx, cmd, &ids, &r);
            r.map(|()| Vec::new())
        }
        Command::ClusterAddHsm => {
            let req: proto::AddHsmRequest = decode(cmd, payload)?;
            let hsm = ctx.node.configured_hsm(&req.name).ok_or_else(|| {
                ApiError::new(
                    404,
                    format!(
                        "HSM '{}' is not configured on this node (configured: {})",
                        req.name,
                        ctx.node.configured_names().join(", ")
                    ),
                )
            })?;
            let r = ctx
                .node
                .store
                .add_hsm(hsm.as_ref(), req.overwrite)
                .map_err(store_error);
            ctx.node.audit.change(
                &ctx.caller.identity,
                cmd,
                None,
                &hsm.name(),
                r.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
            );
            r.map(|()| Vec::new())
        }
        Command::ClusterRemoveHsm => {
            let req: proto::RemoveHsmRequest = decode(cmd, payload)?;
            let name = ctx
                .node
                .configured_hsm(&req.name)
                .map(|h| h.name())
                .unwrap_or(req.name);
            let r = ctx
                .node
                .store
                .remove_hsm(&name, &ctx.node.configured_names())
                .map_err(store_error);
            ctx.node.audit.change(
                &ctx.caller.identity,
                cmd,
                None,
                &name,
                r.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
            );
            r.map(|()| Vec::new())
        }
        _ => Err(ApiError::new(
            501,
            format!("{cmd} is not a cluster command"),
        )),
    }
}

fn audit(ctx: &Ctx<'_>, cmd: Command, subject: &str, r: &Result<(), ApiError>) {
    ctx.node.audit.change(
        &ctx.caller.identity,
        cmd,
        None,
        subject,
        r.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
    );
}
