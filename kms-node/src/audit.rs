//! Audit records: one per state change and one per denied request, emitted as
//! `tracing` events with target `audit` (so they can be routed or filtered on
//! their own). They name the identity, command, enclave, subject and outcome,
//! never key material.

use kms_client::{Command, Identity};

pub fn change(
    identity: &Identity,
    cmd: Command,
    enclave: Option<&str>,
    name: &str,
    outcome: Result<(), String>,
) {
    match outcome {
        Ok(()) => {
            tracing::info!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "ok", "state change")
        }
        Err(e) => {
            tracing::info!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "failed", error = %e, "state change")
        }
    }
}

pub fn denied(identity: &Identity, cmd: Command, enclave: Option<&str>, name: &str) {
    tracing::warn!(target: "audit", identity = %identity, command = %cmd, enclave = enclave.unwrap_or(""), name, outcome = "denied", "request denied");
}

pub fn denied_op(identity: &Identity, op: &str) {
    tracing::warn!(target: "audit", identity = %identity, command = op, outcome = "denied", "request denied");
}

pub fn op(identity: &Identity, op: &str, outcome: &str) {
    tracing::info!(target: "audit", identity = %identity, command = op, outcome, "operation");
}
