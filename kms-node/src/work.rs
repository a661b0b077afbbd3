//! Where a node's slow cryptography runs, so that it cannot starve the
//! requests around it.
//!
//! - **Signing and decrypting with slow keys** (RSA, ML-DSA, P-384: from
//!   about 0.2 ms to 15 ms per operation) runs on the request's own task but
//!   outside the async scheduler ([`tokio::task::block_in_place`]: the
//!   runtime hands the worker's other tasks to a fresh thread), and at most
//!   two such operations per core at a time (one per core leaves a core idle
//!   while a permit passes from one request to the next: RSA-2048 signed 23%
//!   slower that way); the others wait without holding a thread. Before, a flood of RSA-4096 signatures held every runtime
//!   worker for 33 ms at a time, and every other request on the node queued
//!   behind it. Fast keys (Ed25519, P-256: about 20 µs) sign inline, where a
//!   hand-off would cost more than the signature.
//! - **RSA key-pair generation** (RSA-3072 takes about a second, RSA-4096
//!   several) runs on a pool of one thread per core under Linux's
//!   `SCHED_IDLE` policy, which runs a thread only when no other wants the
//!   core: on an idle node key creation uses the cores in full, on a busy node
//!   the requests come first and key creation slows down, not the reads
//!   (BENCHMARKS.md, "Key-pair creation"). Nice 19 was not enough: reads
//!   fell by a quarter while 16 clients created RSA-3072 keys.

use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// The node's places for slow work. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Work {
    slow: Arc<Semaphore>,
    background: mpsc::Sender<Job>,
}

impl Work {
    /// `2 * cores` bounds the slow operations running at once; the background
    /// pool has `cores` threads, which live as long as the process.
    pub fn new(cores: usize) -> Self {
        let cores = cores.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..cores {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("kms-keygen-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while taking a job.
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start background thread {i}: {e}");
            }
        }
        Self {
            slow: Arc::new(Semaphore::new(2 * cores)),
            background: tx,
        }
    }

    /// One per available core.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `f`, a signature or decryption: inline when it is fast, otherwise
    /// outside the scheduler with at most two slow operations per core.
    pub async fn crypto<T>(&self, slow: bool, f: impl FnOnce() -> T) -> T {
        if !slow {
            return f();
        }
        // The semaphore is never closed; if it were, run anyway.
        let _permit = self.slow.acquire().await.ok();
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
            _ => f(),
        }
    }

    /// Runs `f` on the low-priority background pool and waits for it.
    /// `None` if the pool is gone (no thread could be started).
    pub async fn background<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.background.send(job).ok()?;
        rx.await.ok()
    }
}

/// Moves the calling thread to `SCHED_IDLE` (Linux schedules threads, so
/// this affects this thread only).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let r = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        );
        if let Err(e) = r {
            tracing::warn!("cannot move the key-generation threads to SCHED_IDLE: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_runs_and_answers() {
        let w = Work::new(2);
        let r = w.background(|| 6 * 7).await;
        assert_eq!(r, Some(42));
        let many: Vec<_> = (0..8u64).map(|i| w.background(move || i * 2)).collect();
        let mut got = Vec::new();
        for f in many {
            got.push(f.await.unwrap());
        }
        assert_eq!(got, vec![0, 2, 4, 6, 8, 10, 12, 14]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_threads_run_under_sched_idle() {
        use thread_priority::unix::{
            thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        let w = Work::new(1);
        let policy = w.background(thread_schedule_policy).await.unwrap().unwrap();
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_eq!(policy, idle);
        // The caller's own thread is untouched.
        assert_ne!(thread_schedule_policy().unwrap(), idle);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_crypto_is_bounded_per_core() {
        let w = Work::new(1);
        // Two per core.
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let max = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (w, running, max) = (w.clone(), running.clone(), max.clone());
                tokio::spawn(async move {
                    w.crypto(true, || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        max.fetch_max(now, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
