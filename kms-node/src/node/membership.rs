//! Membership, the cluster's side of it: adding a node (`kms add`: join it
//! as a learner, wait until it caught up, then make it a member through the
//! log), removing one through the log (`kms rm`), force-removing members
//! outside the log (`kms edit`), and becoming a learner of another cluster
//! on its leader's `Join` call.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::change::Change;
use crate::replication::core::{NodeId, Role};
use crate::replication::net::{self, Call, Reply};

use super::{Event, Node, ProposeError};

impl Node {
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
        let caught_up = self
            .wait_view(Duration::from_secs(60), |v| {
                if v.progress.get(&id).is_some_and(|(m, _)| *m >= target) {
                    Some(true)
                } else {
                    (v.role != Role::Leader).then_some(false)
                }
            })
            .await;
        if caught_up != Some(true) {
            let _ = self.send(Event::RemoveLearner(id)).await;
            return Err(ProposeError::Unavailable(format!(
                "node {addr} did not catch up within 60 s; it was not added"
            )));
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
