//! `ProposeError`: why a proposed change (or a membership call) was not
//! committed, and how it travels as a peer call's answer.

use crate::change::ApplyError;
use crate::replication::core::NodeId;
use crate::replication::net::Fail;

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
