//! Replication: the protocol core (a pure state machine) and, in tests, a
//! seeded deterministic simulator that drives several cores through message
//! loss, reordering, duplication, delays, crashes and partitions.
//!
//! The I/O shell around the core is `node/driver.rs` (the driver) and
//! `net.rs` (the transport); docs/cluster-design.md describes the whole.

pub mod core;
pub mod net;
pub mod tls;

#[cfg(test)]
mod sim;
