//! Process hardening of the server: no core dumps.
//!
//! A node holds its root key, every enclave's key material and, in its
//! environment, the software HSM's key (`KMS_HSM_KEY`). A core dump would
//! write all of that to disk in plaintext, and a dumpable process lets any
//! other process of the same user read its memory and environment
//! (`/proc/PID/mem`, `/proc/PID/environ`). So the server, at start:
//! - sets its core-file size limit to 0 (soft and hard), and
//! - marks itself not dumpable (`PR_SET_DUMPABLE` 0): no core dump even
//!   where the limit is raised again, and `/proc/PID/*` owned by root, so
//!   that other processes of its user cannot read its memory or environment.
//!
//! `KMS_ALLOW_CORE_DUMPS=1` leaves both alone, for debugging a crash on a
//! machine whose core files are kept safe.

/// Applies the hardening (Linux); returns what it did, for the log.
pub fn no_core_dumps() -> Result<&'static str, String> {
    if std::env::var("KMS_ALLOW_CORE_DUMPS").is_ok_and(|v| v.trim() == "1") {
        return Ok("core dumps allowed (KMS_ALLOW_CORE_DUMPS=1)");
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{
            set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit,
        };
        setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .map_err(|e| format!("cannot set the core-file size limit to 0: {e}"))?;
        set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(|e| format!("cannot mark the process not dumpable: {e}"))?;
        Ok("no core dumps; process not dumpable")
    }
    #[cfg(not(target_os = "linux"))]
    Ok("no process hardening on this platform")
}
