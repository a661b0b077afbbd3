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
        hsms: node.hsms.clone(),
        configured_hsms: vec![node.hsm.name()],
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
        _ => Err(ApiError::new(
            501,
            format!("{cmd} is not supported yet: this node runs as a single-node cluster"),
        )),
    }
}
