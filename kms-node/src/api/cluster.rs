//! CLUSTER:* commands. A node is a single-node cluster until the cluster
//! issue lands: CLUSTER:STATUS answers for it; membership and HSM changes
//! answer 501 with the reason.

use kms_client::{proto, Command};
use prost::Message;

use super::{decode, ApiError, Ctx};

pub fn server_status(ctx: &Ctx<'_>) -> proto::ServerStatusResponse {
    let node = ctx.node;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    proto::ServerStatusResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
        host: node.addr.clone(),
        up_time: Some(prost_types::Duration::try_from(node.started.elapsed()).unwrap_or_default()),
        role: "Leader".into(),
        commit: ctx.st.applied,
        nodes: [(node.meta.node_id, node.addr.clone())]
            .into_iter()
            .collect(),
        id: node.meta.node_id,
        leader_id: node.meta.node_id as i64,
        last_heartbeat: Some(prost_types::Duration::default()),
        heartbeat_interval: None,
        election_timeout: None,
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

fn store_error(e: crate::store::StoreError) -> ApiError {
    use crate::store::StoreError;
    match e {
        StoreError::Exists(m) | StoreError::Refused(m) => ApiError::new(409, m),
        StoreError::NotFound(m) => ApiError::new(404, m),
        StoreError::Sealed(m) => ApiError::new(503, m),
        e => ApiError::new(500, e.to_string()),
    }
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    ctx.authorize(cmd, "")?;
    match cmd {
        Command::ClusterStatus => {
            let _: proto::ClusterStatusRequest = decode(cmd, payload)?;
            let me = server_status(ctx);
            Ok(proto::ClusterStatusResponse {
                nodes_up: [(me.id, me)].into_iter().collect(),
                nodes_down: Default::default(),
            }
            .encode_to_vec())
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
            crate::audit::change(
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
            crate::audit::change(
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
            format!("{cmd} is not supported yet: this node runs as a single-node cluster"),
        )),
    }
}
