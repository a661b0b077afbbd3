//! Peer-originated input: protocol messages and snapshots from other
//! members, handed to the driver (`deliver`, `deliver_snapshot`), and the
//! reading of a snapshot's records into a state (`parse_snapshot`), which
//! the driver does before the core sees the message.

use crate::change::Change;
use crate::model::State;
use crate::replication::core::{Msg, NodeId};
use crate::replication::net::Records;

use super::{Event, Node};

impl Node {
    /// Hands a message from a peer to the driver (dropped when it is busy:
    /// the protocol resends).
    pub fn deliver(&self, from: NodeId, msg: Msg<Change>, snapshot: Option<Records>) {
        let _ = self.tx.try_send(Event::Msg(from, msg, snapshot));
    }

    /// Hands a snapshot message with its records to the driver, waiting
    /// for room in its queue.
    pub async fn deliver_snapshot(&self, from: NodeId, msg: Msg<Change>, snapshot: Records) {
        let _ = self.tx.send(Event::Msg(from, msg, Some(snapshot))).await;
    }
}

/// Reads a snapshot's records into a state (in key order, as stored).
pub(super) fn parse_snapshot(records: &Records) -> Result<State, crate::store::StoreError> {
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = records.0.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    crate::store::import_records(sorted.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
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
