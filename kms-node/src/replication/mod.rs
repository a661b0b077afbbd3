//! Replication: the protocol core (a pure state machine) and, in tests, a
//! seeded deterministic simulator that drives several cores through message
//! loss, reordering, duplication, delays, crashes and partitions.
//!
//! Not yet wired into the node: see docs/cluster-design.md.

pub mod core;
pub mod tls;

#[cfg(test)]
mod sim;
