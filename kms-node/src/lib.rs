//! The KMS node: storage, state machine, API server and admin CLI.
//! See docs/architecture.md for how a request flows through these modules.
#![forbid(unsafe_code)]

pub mod api;
pub mod asym;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod change;
pub mod cli;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod harden;
pub mod metrics;
pub mod model;
pub mod node;
pub mod notify;
pub mod peer;
pub mod policy;
pub mod replication;
pub mod serve;
pub mod server;
pub mod store;
pub mod tls;
pub mod vectors;
pub mod work;
