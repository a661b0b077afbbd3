//! Coalescing: the concurrent calls of many application threads to one
//! slot, under one login, travel as one batched request.
//!
//! The API takes several commands in one request (frames, docs/api.md) and
//! answers them in order; a node serves a batch of 64 for little more than
//! the cost of one. An application that calls the module from 8 threads
//! would otherwise make 8 round trips where one would do.
//!
//! How (a "flat combining" queue, one per slot and login):
//! - If fewer than [`MAX_IN_FLIGHT`] batches are in flight, a calling
//!   thread becomes a leader: it takes its own frame and every queued one
//!   (at most [`MAX_FRAMES`], about [`MAX_BYTES`]), sends them as one
//!   request on its own connection, and hands each waiting thread its
//!   response frame. Otherwise it queues its frame and waits.
//! - A leader that is done, if frames are still queued, makes the oldest
//!   waiting thread the next leader, which sends the next batch.
//! - One thread alone never waits: its call is a batch of one, sent at once.
//! - The API answers a batch all or nothing: if any frame fails (a wrong
//!   ciphertext, a refused key), the request fails as a whole. Then every
//!   caller of that batch sends its own frame again, alone, and gets its
//!   own answer: one application's bad input never becomes another's error.
//!
//! Invariants:
//! - Each frame is sent in exactly one batch, or, after a failed batch of
//!   more than one, once more alone. Only reads are coalesced (a write is
//!   sent at most once, `io.rs`).
//! - The queue's lock is never held during I/O, and a waiter is always woken:
//!   by its result, or by being made leader. A leader's own call is never in
//!   the queue, so no other leader can take it. Lock order: the queue, then
//!   a call's state.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

/// Batches in flight at once per slot and login. Two keep the node busy
/// while the next batch gathers; more would only shrink the batches.
pub(super) const MAX_IN_FLIGHT: usize = 2;
/// Frames per batch.
pub(super) const MAX_FRAMES: usize = 128;
/// Payload bytes per batch, well under the node's request limit.
pub(super) const MAX_BYTES: usize = 256 * 1024;

/// What a caller gets back.
pub(super) enum Outcome<E> {
    /// The response frame's payload.
    Done(Bytes),
    /// The error of a batch of one (the caller's own).
    Failed(E),
    /// The batch failed as a whole: send this frame alone.
    Alone,
}

enum State<E> {
    Queued,
    Lead,
    Finished(Outcome<E>),
}

struct Call<E> {
    cmd: u16,
    payload: Vec<u8>,
    state: Mutex<State<E>>,
    woken: Condvar,
}

struct Queue<E> {
    waiting: VecDeque<Arc<Call<E>>>,
    in_flight: usize,
}

/// A slot's (and login's) queue of calls waiting to be sent.
pub(super) struct Combiner<E> {
    q: Mutex<Queue<E>>,
}

impl<E> Default for Combiner<E> {
    fn default() -> Self {
        Self {
            q: Mutex::new(Queue {
                waiting: VecDeque::new(),
                in_flight: 0,
            }),
        }
    }
}

/// One frame of a batch, as the sender sees it.
pub(super) struct Frame<'a> {
    pub(super) cmd: u16,
    pub(super) payload: &'a [u8],
}

impl<E> Combiner<E> {
    /// Sends the frame `(cmd, payload)` with whatever other frames are
    /// waiting. `send` sends one batch and returns its response frames'
    /// payloads, in order, or the request's error.
    pub(super) fn call(
        &self,
        cmd: u16,
        payload: Vec<u8>,
        send: impl Fn(&[Frame<'_>]) -> Result<Vec<(u16, Bytes)>, E>,
    ) -> Outcome<E> {
        let me = Arc::new(Call {
            cmd,
            payload,
            state: Mutex::new(State::Queued),
            woken: Condvar::new(),
        });
        let lead = {
            let mut q = self.q.lock();
            if q.in_flight < MAX_IN_FLIGHT {
                q.in_flight += 1;
                true
            } else {
                q.waiting.push_back(me.clone());
                false
            }
        };
        if !lead {
            let mut st = me.state.lock();
            loop {
                match std::mem::replace(&mut *st, State::Queued) {
                    State::Queued => me.woken.wait(&mut st),
                    State::Finished(o) => return o,
                    State::Lead => break,
                }
            }
        }
        self.lead(&me, &send);
        let mut st = me.state.lock();
        match std::mem::replace(&mut *st, State::Queued) {
            State::Finished(o) => o,
            // A leader's batch always holds its own call.
            _ => Outcome::Alone,
        }
    }

    /// Sends the batch this thread leads: its own call (which is in no
    /// queue, so no other leader can take it) and the oldest waiting calls;
    /// then hands the lead to the oldest call still waiting, if any.
    fn lead(
        &self,
        me: &Arc<Call<E>>,
        send: &impl Fn(&[Frame<'_>]) -> Result<Vec<(u16, Bytes)>, E>,
    ) {
        let batch = {
            let mut q = self.q.lock();
            let mut batch = vec![me.clone()];
            let mut bytes = me.payload.len();
            while batch.len() < MAX_FRAMES {
                let Some(next) = q.waiting.front() else { break };
                if bytes + next.payload.len() > MAX_BYTES {
                    break;
                }
                bytes += next.payload.len();
                batch.extend(q.waiting.pop_front());
            }
            batch
        };
        let frames: Vec<Frame<'_>> = batch
            .iter()
            .map(|c| Frame {
                cmd: c.cmd,
                payload: &c.payload,
            })
            .collect();
        // A panic while sending must not leave the batch's waiters asleep
        // (or the batch's place in flight taken) for ever: they retry alone.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send(&frames))).ok();
        drop(frames);
        let n = batch.len();
        match result {
            Some(Ok(out))
                if out.len() == n && out.iter().zip(&batch).all(|(o, c)| o.0 == c.cmd) =>
            {
                for (c, (_, payload)) in batch.iter().zip(out) {
                    finish(c, Outcome::Done(payload));
                }
            }
            Some(Err(e)) if n == 1 => finish(me, Outcome::Failed(e)),
            // A failed batch of several, a wrong number or kind of response
            // frames (the client's own checks report it then), or a panic:
            // each call is sent again alone.
            _ => batch.iter().for_each(|c| finish(c, Outcome::Alone)),
        }
        // Hand over this batch's place in flight to the oldest waiting call,
        // taken out of the queue so that it leads its own batch.
        let mut q = self.q.lock();
        match q.waiting.pop_front() {
            Some(next) => {
                *next.state.lock() = State::Lead;
                next.woken.notify_one();
            }
            None => q.in_flight -= 1,
        }
    }
}

fn finish<E>(c: &Call<E>, o: Outcome<E>) {
    *c.state.lock() = State::Finished(o);
    c.woken.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    /// Echoes each frame's payload; fails a batch holding a payload "bad".
    fn echo<'a>(
        batches: &'a AtomicUsize,
        sizes: &'a Mutex<Vec<usize>>,
    ) -> impl Fn(&[Frame<'_>]) -> Result<Vec<(u16, Bytes)>, String> + 'a {
        move |frames| {
            batches.fetch_add(1, SeqCst);
            sizes.lock().push(frames.len());
            std::thread::sleep(Duration::from_millis(2));
            if frames.iter().any(|f| f.payload == b"bad") {
                return Err("the batch failed".into());
            }
            Ok(frames
                .iter()
                .map(|f| (f.cmd, Bytes::copy_from_slice(f.payload)))
                .collect())
        }
    }

    #[test]
    fn one_caller_is_a_batch_of_one() {
        let c = Combiner::default();
        let (n, sizes) = (AtomicUsize::new(0), Mutex::new(vec![]));
        for i in 0..5u8 {
            match c.call(7, vec![i], echo(&n, &sizes)) {
                Outcome::Done(b) => assert_eq!(&b[..], &[i]),
                _ => panic!("call {i} was not answered"),
            }
        }
        assert_eq!(*sizes.lock(), vec![1; 5]);
        match c.call(7, b"bad".to_vec(), echo(&n, &sizes)) {
            Outcome::Failed(e) => assert_eq!(e, "the batch failed"),
            _ => panic!("a batch of one reports its own error"),
        }
    }

    #[test]
    fn a_panicking_sender_wakes_every_waiter() {
        let c = Combiner::<String>::default();
        let outcomes = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|t| {
                    let c = &c;
                    s.spawn(move || {
                        let o = c.call(1, vec![t], |_| -> Result<Vec<(u16, Bytes)>, String> {
                            std::thread::sleep(Duration::from_millis(5));
                            panic!("sender failed")
                        });
                        matches!(o, Outcome::Alone)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(outcomes, vec![true; 8]);
        assert_eq!(c.q.lock().in_flight, 0);
    }

    #[test]
    fn concurrent_callers_share_batches_and_each_gets_its_own_answer() {
        let c = Combiner::default();
        let (n, sizes) = (AtomicUsize::new(0), Mutex::new(vec![]));
        let alone = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16u8 {
                let (c, n, sizes, alone) = (&c, &n, &sizes, &alone);
                s.spawn(move || {
                    for i in 0..50u8 {
                        // Thread 3 sends a bad frame now and then.
                        let bad = t == 3 && i % 10 == 0;
                        let payload = if bad { b"bad".to_vec() } else { vec![t, i] };
                        match c.call(u16::from(t), payload.clone(), echo(n, sizes)) {
                            Outcome::Done(b) => {
                                assert!(!bad);
                                assert_eq!(&b[..], &payload[..]);
                            }
                            Outcome::Alone => {
                                alone.fetch_add(1, SeqCst);
                                // What io.rs does: send it alone.
                                let r = echo(n, sizes)(&[Frame {
                                    cmd: u16::from(t),
                                    payload: &payload,
                                }]);
                                assert_eq!(r.is_err(), bad);
                            }
                            Outcome::Failed(_) => assert!(bad),
                        }
                    }
                });
            }
        });
        let sizes = sizes.lock();
        let frames: usize = sizes.iter().sum();
        // 800 calls; each bad one failed at most one batch, whose members
        // were sent again alone.
        assert!(frames >= 800, "{frames}");
        assert!(
            n.load(SeqCst) < 800 / 2,
            "16 threads should share batches: {} requests",
            n.load(SeqCst)
        );
        assert!(sizes.iter().all(|&s| s <= MAX_FRAMES));
        assert_eq!(c.q.lock().in_flight, 0);
        assert!(c.q.lock().waiting.is_empty());
    }
}
