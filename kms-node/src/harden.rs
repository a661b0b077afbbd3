//! Process hardening of the server: no core dumps, and memory that is never
//! swapped.
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
//!
//! It also locks its memory ([`lock_memory`]): `mlockall` of current and
//! future pages, each locked when first touched (`MCL_ONFAULT`), so that no
//! page holding key material is ever written to swap. The cost: the node's
//! resident memory cannot be swapped out (about 1 GiB for a million keys,
//! BENCHMARKS.md). `KMS_MLOCK` chooses:
//! - `try` (default): lock if the process may lock without a limit (root or
//!   `CAP_IPC_LOCK`, or `RLIMIT_MEMLOCK` unlimited, as the packaged systemd
//!   unit sets with `LimitMEMLOCK=infinity`); otherwise start unlocked, warn,
//!   and report `kms_memory_locked 0`;
//! - `required`: refuse to start unless memory is locked;
//! - `off`: do not lock.
//!
//! A finite limit is never used: with `MCL_FUTURE`, an allocation past it
//! would fail and abort the node long after start.

/// Whether the node locked its memory (`kms_memory_locked`).
pub static MEMORY_LOCKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Locks the process's memory as `KMS_MLOCK` says. `Ok`: what it did (for
/// the log; a warning when it could not lock in `try` mode); `Err`: the node
/// must not start (`required` and locking is not possible).
pub fn lock_memory() -> Result<(tracing::Level, String), String> {
    let mode = std::env::var("KMS_MLOCK").unwrap_or_default();
    let required = match mode.trim() {
        "" | "try" => false,
        "required" => true,
        "off" => {
            return Ok((
                tracing::Level::INFO,
                "memory not locked (KMS_MLOCK=off): key material may be swapped".into(),
            ))
        }
        other => return Err(format!("KMS_MLOCK={other}: expected try, required or off")),
    };
    match try_lock() {
        Ok(()) => {
            MEMORY_LOCKED.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok((
                tracing::Level::INFO,
                "memory locked (mlockall): key material is never swapped".into(),
            ))
        }
        Err(why) if required => Err(format!("cannot lock memory (KMS_MLOCK=required): {why}")),
        Err(why) => Ok((
            tracing::Level::WARN,
            format!("memory NOT locked, key material may be swapped: {why}"),
        )),
    }
}

#[cfg(target_os = "linux")]
fn try_lock() -> Result<(), String> {
    use rustix::mm::{mlockall, MlockAllFlags};
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Memlock);
    if lim.current.is_some() && !has_cap_ipc_lock() {
        // Raise the soft limit to the hard one; only "unlimited" will do.
        let _ = setrlimit(
            Resource::Memlock,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
        if let Some(max) = lim.maximum {
            return Err(format!(
                "the locked-memory limit is {} KiB; run with LimitMEMLOCK=infinity (systemd), \
                 `ulimit -l unlimited` or CAP_IPC_LOCK, or set KMS_MLOCK=off",
                max / 1024
            ));
        }
    }
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| format!("mlockall: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn try_lock() -> Result<(), String> {
    Err("not supported on this platform".into())
}

/// Whether the process has `CAP_IPC_LOCK` (bit 14 of `CapEff`): then the
/// locked-memory limit does not apply.
#[cfg(target_os = "linux")]
fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

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
