//! The cluster's core promise under faults: a read on any node that starts
//! after a write was acknowledged sees the write, and a write refused with
//! "nothing was applied" never appears (docs/consistency.md, guarantees 1, 6
//! and 7, and the "Outcome of a write" table).
//!
//! A real three-node cluster; four writers create keys through clients that
//! know every node (followers forward writes to the leader). Right after each
//! acknowledgement, the key is read on each of the three nodes at once, each
//! through a client bound to that node only. Meanwhile a seeded nemesis kills
//! (-9) and restarts nodes, and pauses (SIGSTOP) and resumes them, one or two
//! at a time; in the second test the nodes run in network namespaces
//! (`kms_tests::netns`) and the nemesis also partitions one or two nodes
//! from the others (the test's clients still reach every node, so a
//! cut-off node's reads are checked too). Checked:
//!
//! - no read after an acknowledgement answers 404 (on any node, whatever its
//!   state: a node that answers at all must answer with the write);
//! - at the end every acknowledged key exists on every node, and no refused
//!   key exists on any node (writes with an unknown outcome may be either);
//! - reads on nodes that were up for the whole read are available (99.9%)
//!   and answer within two election timeouts plus slack;
//! - the run is not vacuous: enough acknowledged writes, enough faults, most
//!   writes with a definite outcome.
//!
//! Bounded in time and count. The default is one 60 s run with seed 1; the
//! long version (20 seeds):
//!
//! ```text
//! KMS_CHAOS_RUNS=20 KMS_CHAOS_SECS=60 cargo nextest run -p kms-tests --test ack_reads --no-capture
//! ```
//!
//! `KMS_CHAOS_SEED=n` starts at seed n (a failing run prints its seed).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_client::tls::Trust;
use kms_client::{ApiKey, Client, ClientConfig, Error};
use kms_tests::netns::{setup, Net};
use kms_tests::{cluster, eventually, fast_timing, ok, rt, Server, SEED_HSM_KEY};

const ENCLAVE: &str = "acks";
const NODES: usize = 3;
const WRITERS: usize = 4;
/// Upper bound per writer; the writers run until the faults are over.
const MAX_WRITES_PER_WRITER: u64 = 200_000;
/// Upper bound of nemesis rounds; the nemesis runs for the test's duration.
const MAX_NEMESIS_ROUNDS: u64 = 10_000;
/// Timeout of the per-node read clients.
const READ_TIMEOUT: Duration = Duration::from_secs(6);
/// Timeout of the writers' clients: long enough for the server's own verdict
/// (refused, or in doubt) to arrive in most cases.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most time a read on a node that stays up may take: a read waits at most
/// two election timeouts (guarantee 7; the cluster helper uses 500 ms),
/// doubled, plus 1 s of scheduling slack on a 2-core machine.
const READ_BOUND_MS: f64 = 2.0 * 500.0 * 2.0 + 1000.0;
/// Least share of reads on nodes that stayed up that must get an answer.
const MIN_AVAILABILITY: f64 = 0.999;
/// Unavailable reads kept verbatim for the report.
const EXAMPLES: usize = 10;

/// The figures of one run.
#[derive(Debug)]
struct Summary {
    acked: usize,
    refused: usize,
    unknown: usize,
    reads_ok: u64,
    /// Reads that failed on a node killed or paused during the read.
    reads_excused: u64,
    /// Reads that failed on a node that was up for the whole read.
    reads_unavailable: u64,
    /// Reads after an acknowledgement that did not see the write.
    anomalies: Vec<String>,
    /// Acknowledged writes missing on a node at the end.
    lost: Vec<String>,
    /// Refused writes present on a node at the end.
    refused_present: Vec<String>,
    /// Latency of every successful read, per node.
    latencies_ms_per_node: [Vec<f64>; NODES],
    /// Slowest answered read on a node that was up for the whole read.
    max_read_ms: f64,
    /// Node faults injected (a fault of two nodes counts two).
    faults: u64,
    /// Unknown writes found applied at the end (informative).
    unknown_applied: usize,
    /// A few unavailable reads, verbatim (diagnostics).
    unavailable_examples: Vec<String>,
}

impl Summary {
    fn line(&self, seed: u64) -> String {
        let mut s = format!(
            "seed {seed}: {} faults; writes {} acked, {} refused, {} unknown ({} of those applied); \
             reads {} ok, {} unavailable, {} excused; max {:.0} ms;",
            self.faults,
            self.acked,
            self.refused,
            self.unknown,
            self.unknown_applied,
            self.reads_ok,
            self.reads_unavailable,
            self.reads_excused,
            self.max_read_ms,
        );
        for (i, l) in self.latencies_ms_per_node.iter().enumerate() {
            let mut l = l.clone();
            l.sort_by(f64::total_cmp);
            s.push_str(&format!(
                " node{i} p50 {:.1} ms p99 {:.1} ms;",
                percentile(&l, 0.50),
                percentile(&l, 0.99)
            ));
        }
        s.push_str(&format!(
            " {} anomalies, {} lost, {} refused present",
            self.anomalies.len(),
            self.lost.len(),
            self.refused_present.len()
        ));
        s
    }
}

/// The `p` quantile of sorted values (NaN if there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Each node's fault state, as the nemesis publishes it. A node going down
/// is marked not up, then its generation bumped; a node back is marked up,
/// then its generation bumped. A read that loads the generation, then `up`,
/// and at its end the generation again, and finds `up` and the same
/// generation, ran entirely while the node was up.
struct NodeFaults {
    generation: [AtomicU64; NODES],
    up: [AtomicBool; NODES],
}

impl NodeFaults {
    fn new() -> Self {
        Self {
            generation: std::array::from_fn(|_| AtomicU64::new(0)),
            up: std::array::from_fn(|_| AtomicBool::new(true)),
        }
    }

    fn mark_down(&self, i: usize) {
        self.up[i].store(false, Ordering::SeqCst);
        self.generation[i].fetch_add(1, Ordering::SeqCst);
    }

    fn mark_up(&self, i: usize) {
        self.up[i].store(true, Ordering::SeqCst);
        self.generation[i].fetch_add(1, Ordering::SeqCst);
    }

    /// Taken before a read: (generation, up).
    fn snapshot(&self, i: usize) -> (u64, bool) {
        let generation = self.generation[i].load(Ordering::SeqCst);
        (generation, self.up[i].load(Ordering::SeqCst))
    }

    /// After a read: whether node `i` was up from `before` until now.
    fn stayed_up(&self, i: usize, before: (u64, bool)) -> bool {
        before.1 && self.generation[i].load(Ordering::SeqCst) == before.0
    }
}

#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<String>,
    refused: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

#[derive(Default)]
struct Reads {
    ok: u64,
    excused: u64,
    unavailable: u64,
    anomalies: Vec<String>,
    latencies_ms: [Vec<f64>; NODES],
    max_ms: f64,
    unavailable_examples: Vec<String>,
}

struct Shared {
    outcomes: Mutex<Outcomes>,
    reads: Mutex<Reads>,
    faults: NodeFaults,
    stop: AtomicBool,
    start: Instant,
}

/// A write refused before it entered the log: never applied.
fn refused(e: &Error) -> bool {
    e.status() == Some(503) && e.to_string().contains("nothing was applied")
}

fn client(
    runtime: &tokio::runtime::Runtime,
    endpoints: Vec<String>,
    key: &ApiKey,
    timeout: Duration,
) -> Client {
    let _in_runtime = runtime.enter();
    Client::new(ClientConfig {
        endpoints,
        api_key: key.clone(),
        trust: Trust::Insecure,
        timeout,
    })
    .expect("client")
}

/// Creates keys `w{w}-{n}` until told to stop; after each acknowledgement,
/// starts a task reading the key on every node. Returns those tasks.
async fn writer(
    w: usize,
    client: Client,
    readers: Arc<Vec<Client>>,
    shared: Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut reads = Vec::new();
    for n in 0..MAX_WRITES_PER_WRITER {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let name = format!("w{w}-{n}");
        match client.create_key(ENCLAVE, &name, "", false).await {
            Ok(()) => {
                let acked_at = shared.start.elapsed();
                shared.outcomes.lock().unwrap().acked.insert(name.clone());
                reads.push(tokio::spawn(read_everywhere(
                    readers.clone(),
                    name,
                    acked_at,
                    shared.clone(),
                )));
            }
            Err(e) if refused(&e) => {
                shared.outcomes.lock().unwrap().refused.insert(name);
                // Pacing, not synchronization: do not spin while a node is down.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                shared.outcomes.lock().unwrap().unknown.insert(name);
                // Pacing, not synchronization, as above.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    reads
}

/// Reads `name` on every node at once.
async fn read_everywhere(
    readers: Arc<Vec<Client>>,
    name: String,
    acked_at: Duration,
    shared: Arc<Shared>,
) {
    tokio::join!(
        read_on(0, &readers[0], &name, acked_at, &shared),
        read_on(1, &readers[1], &name, acked_at, &shared),
        read_on(2, &readers[2], &name, acked_at, &shared),
    );
}

/// Reads `name`, acknowledged at `acked_at`, on node `node` and records the result.
async fn read_on(node: usize, client: &Client, name: &str, acked_at: Duration, shared: &Shared) {
    let before = shared.faults.snapshot(node);
    let started = Instant::now();
    let at = shared.start.elapsed();
    let r = client.key_status(ENCLAVE, name).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let stayed_up = shared.faults.stayed_up(node, before);
    let state = if stayed_up {
        "up for the whole read"
    } else {
        "faulted during the read"
    };
    let mut reads = shared.reads.lock().unwrap();
    match r {
        Ok(status) => {
            reads.ok += 1;
            reads.latencies_ms[node].push(ms);
            if stayed_up {
                reads.max_ms = reads.max_ms.max(ms);
            }
            if status.name != name {
                reads.anomalies.push(format!(
                    "node {node}: KEY:STATUS of {name} (acknowledged at {} ms, read at {} ms, \
                     node {state}) answered key {:?}",
                    acked_at.as_millis(),
                    at.as_millis(),
                    status.name
                ));
            }
        }
        Err(e) if e.status() == Some(404) => {
            if stayed_up {
                reads.max_ms = reads.max_ms.max(ms);
            }
            reads.anomalies.push(format!(
                "node {node}: {name} acknowledged at {} ms, read started at {} ms took {ms:.0} ms \
                 (node {state}) and did not see it: {e}",
                acked_at.as_millis(),
                at.as_millis()
            ));
        }
        Err(e) => {
            if stayed_up {
                reads.unavailable += 1;
                if reads.unavailable_examples.len() < EXAMPLES {
                    reads.unavailable_examples.push(format!(
                        "node {node}: {name} at {} ms after {ms:.0} ms: {e}",
                        at.as_millis()
                    ));
                }
            } else {
                reads.excused += 1;
            }
        }
    }
}

/// xorshift64: the nemesis' schedule is a function of the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 11) % n
    }

    /// Milliseconds, uniform in `lo..=hi`.
    fn ms(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Kill,
    Pause,
    /// Cut off from the other nodes, not from the clients: it stays up and
    /// must keep answering reads with every acknowledged write.
    Partition,
}

/// Brings node `i` back if the nemesis took it down.
fn heal(
    nodes: &mut [Server],
    net: Option<&Net>,
    down: &mut [Option<Fault>; NODES],
    faults: &NodeFaults,
    i: usize,
) {
    match down[i].take() {
        Some(Fault::Kill) => nodes[i].restart(),
        Some(Fault::Pause) => nodes[i].signal("CONT"),
        Some(Fault::Partition) => {
            net.expect("partitions need namespaces").rejoin(i);
            return;
        }
        None => return,
    }
    faults.mark_up(i);
}

/// Kills and pauses nodes, one or two at a time, for `duration`; leaves
/// every node running. Returns the nodes and the number of node faults.
fn nemesis(
    mut nodes: Vec<Server>,
    net: Option<&Net>,
    duration: Duration,
    seed: u64,
    faults: &NodeFaults,
) -> (Vec<Server>, u64) {
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut down: [Option<Fault>; NODES] = [None; NODES];
    let mut count = 0;
    for _ in 0..MAX_NEMESIS_ROUNDS {
        let gap = Duration::from_millis(rng.ms(300, 1200));
        if start.elapsed() + gap >= duration {
            break;
        }
        // The nemesis's schedule: the sleeps are the point (how long the
        // cluster runs healthy, then how long each fault holds).
        std::thread::sleep(gap);
        let kinds: &[Fault] = if net.is_some() {
            &[Fault::Kill, Fault::Pause, Fault::Partition]
        } else {
            &[Fault::Kill, Fault::Pause]
        };
        let fault = kinds[rng.below(kinds.len() as u64) as usize];
        let first = rng.below(NODES as u64) as usize;
        let mut victims = vec![first];
        if rng.below(4) == 0 {
            victims.push((first + 1 + rng.below(NODES as u64 - 1) as usize) % NODES);
        }
        let hold = match fault {
            Fault::Kill => rng.ms(200, 1500),
            Fault::Pause | Fault::Partition => rng.ms(200, 2500),
        };
        eprintln!(
            "{:>6} ms: {fault:?} node(s) {victims:?} for {hold} ms",
            start.elapsed().as_millis()
        );
        for &i in &victims {
            down[i] = Some(fault);
            match fault {
                Fault::Kill => {
                    faults.mark_down(i);
                    nodes[i].kill9()
                }
                Fault::Pause => {
                    faults.mark_down(i);
                    nodes[i].signal("STOP")
                }
                Fault::Partition => net.expect("namespaces").isolate(i),
            }
            count += 1;
        }
        std::thread::sleep(Duration::from_millis(hold));
        for &i in &victims {
            heal(&mut nodes, net, &mut down, faults, i);
        }
    }
    for i in 0..NODES {
        heal(&mut nodes, net, &mut down, faults, i);
    }
    (nodes, count)
}

/// A three-node cluster in the namespaces of `net` (reachable from here).
fn cluster_in(net: &Net, tmp: &tempfile::TempDir) -> Vec<Server> {
    let env = fast_timing(SEED_HSM_KEY);
    let nodes: Vec<Server> = (0..NODES)
        .map(|i| {
            Server::start_in_netns(
                &net.nodes[i],
                &tmp.path().join(format!("n{i}")),
                &env,
                &format!("{}:7373", net.addr(i)),
            )
            .unwrap_or_else(|e| panic!("node {i}: {e}"))
        })
        .collect();
    for s in &nodes[1..] {
        ok(&nodes[0].cli(None, &["add", &s.url()]));
    }
    nodes
}

/// One run: a three-node cluster (in the namespaces of `net`, if given),
/// writers, readers and the nemesis for `duration`, then the final check
/// on every node.
fn run(duration: Duration, seed: u64, net: Option<Arc<Net>>) -> Summary {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = match &net {
        Some(net) => cluster_in(net, &tmp),
        None => cluster(&tmp, NODES, SEED_HSM_KEY),
    };
    let runtime = rt();
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let key = nodes[0].root_key.clone();

    let admin = client(&runtime, vec![urls[0].clone()], &key, WRITE_TIMEOUT);
    eventually(Duration::from_secs(30), || {
        match runtime.block_on(admin.create_enclave(ENCLAVE)) {
            // 409: an earlier attempt with an unknown outcome applied.
            Ok(()) => Some(()),
            Err(e) if e.status() == Some(409) => Some(()),
            Err(_) => None,
        }
    })
    .unwrap_or_else(|| panic!("seed {seed}: enclave {ENCLAVE} not created within 30 s"));

    let shared = Arc::new(Shared {
        outcomes: Mutex::default(),
        reads: Mutex::default(),
        faults: NodeFaults::new(),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    });
    // Built once: one client per node, bound to that node only.
    let readers: Arc<Vec<Client>> = Arc::new(
        urls.iter()
            .map(|u| client(&runtime, vec![u.clone()], &key, READ_TIMEOUT))
            .collect(),
    );
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = client(&runtime, urls.clone(), &key, WRITE_TIMEOUT);
            runtime.spawn(writer(w, c, readers.clone(), shared.clone()))
        })
        .collect();

    let chaos = {
        let shared = shared.clone();
        let net = net.clone();
        std::thread::spawn(move || nemesis(nodes, net.as_deref(), duration, seed, &shared.faults))
    };
    let (nodes, faults) = chaos.join().expect("nemesis thread");

    shared.stop.store(true, Ordering::SeqCst);
    // The timer must be made inside the runtime.
    let finished = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut reads = Vec::new();
            for w in writers {
                reads.extend(w.await.expect("writer task"));
            }
            for r in reads {
                r.await.expect("reader task");
            }
        })
        .await
    });
    assert!(
        finished.is_ok(),
        "seed {seed}: writers and readers did not finish within 60 s"
    );

    // Every node is running again: the cluster must write again. A write
    // acknowledged now also settles every write in doubt before it.
    let probe = client(&runtime, urls.clone(), &key, WRITE_TIMEOUT);
    let mut attempt = 0;
    eventually(Duration::from_secs(30), || {
        attempt += 1;
        runtime
            .block_on(probe.create_key(ENCLAVE, &format!("probe-{attempt}"), "", false))
            .ok()
    })
    .unwrap_or_else(|| panic!("seed {seed}: no write succeeded within 30 s after the faults"));

    let outcomes = std::mem::take(&mut *shared.outcomes.lock().unwrap());
    let mut lost = Vec::new();
    let mut refused_present = Vec::new();
    let mut unknown_applied = BTreeSet::new();
    for (i, url) in urls.iter().enumerate() {
        let c = client(&runtime, vec![url.clone()], &key, Duration::from_secs(10));
        let present: BTreeSet<String> = eventually(Duration::from_secs(30), || {
            runtime.block_on(c.list_keys(ENCLAVE, "")).ok()
        })
        .unwrap_or_else(|| panic!("seed {seed}: node {i} did not list keys within 30 s"))
        .into_iter()
        .map(|k| k.name)
        .collect();
        for name in &outcomes.acked {
            if !present.contains(name) {
                lost.push(format!("node {i}: acknowledged write {name} lost"));
            }
        }
        for name in &outcomes.refused {
            if present.contains(name) {
                refused_present.push(format!("node {i}: refused write {name} applied"));
            }
        }
        unknown_applied.extend(outcomes.unknown.intersection(&present).cloned());
    }
    drop(nodes);

    let reads = std::mem::take(&mut *shared.reads.lock().unwrap());
    let summary = Summary {
        acked: outcomes.acked.len(),
        refused: outcomes.refused.len(),
        unknown: outcomes.unknown.len(),
        reads_ok: reads.ok,
        reads_excused: reads.excused,
        reads_unavailable: reads.unavailable,
        anomalies: reads.anomalies,
        lost,
        refused_present,
        latencies_ms_per_node: reads.latencies_ms,
        max_read_ms: reads.max_ms,
        faults,
        unknown_applied: unknown_applied.len(),
        unavailable_examples: reads.unavailable_examples,
    };
    eprintln!("{}", summary.line(seed));
    summary
}

/// The first 20 of `v`, one per line.
fn first_few(v: &[String]) -> String {
    v.iter().take(20).cloned().collect::<Vec<_>>().join("\n  ")
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

#[test]
fn reads_after_acks_see_them_under_kills_and_pauses() {
    check_runs(None);
}

/// The same, with the nodes in network namespaces and partitions among the
/// faults (root only; `KMS_TEST_SKIP_NETNS=1` skips it explicitly).
#[test]
fn reads_after_acks_see_them_under_partitions_kills_and_pauses() {
    let Some(mut net) = setup(NODES, 9) else {
        return;
    };
    net.connect_host()
        .unwrap_or_else(|e| panic!("cannot connect the test to the namespaces: {e}"));
    check_runs(Some(Arc::new(net)));
}

fn check_runs(net: Option<Arc<Net>>) {
    let secs = env_u64("KMS_CHAOS_SECS", 60);
    let first = env_u64("KMS_CHAOS_SEED", 1);
    let runs = env_u64("KMS_CHAOS_RUNS", 1);
    for seed in first..first + runs {
        let s = run(Duration::from_secs(secs), seed, net.clone());
        let line = s.line(seed);
        assert!(
            s.anomalies.is_empty(),
            "{line}\nreads after an acknowledgement missed the write ({}):\n  {}",
            s.anomalies.len(),
            first_few(&s.anomalies)
        );
        assert!(
            s.lost.is_empty(),
            "{line}\nacknowledged writes lost ({}):\n  {}",
            s.lost.len(),
            first_few(&s.lost)
        );
        assert!(
            s.refused_present.is_empty(),
            "{line}\nrefused writes applied ({}):\n  {}",
            s.refused_present.len(),
            first_few(&s.refused_present)
        );
        assert!(
            s.acked > 100,
            "{line}\ntoo few acknowledged writes: the run proved nothing"
        );
        assert!(
            s.faults >= 10,
            "{line}\ntoo few faults: the run proved nothing"
        );
        let writes = s.acked + s.refused + s.unknown;
        let definite = (s.acked + s.refused) as f64 / writes as f64;
        assert!(
            definite >= 0.5,
            "{line}\nonly {:.1}% of writes had a definite outcome",
            definite * 100.0
        );
        let availability = s.reads_ok as f64 / (s.reads_ok + s.reads_unavailable) as f64;
        assert!(
            availability >= MIN_AVAILABILITY,
            "{line}\nreads on nodes that stayed up: {:.3}% answered; e.g.:\n  {}",
            availability * 100.0,
            first_few(&s.unavailable_examples)
        );
        assert!(
            s.max_read_ms < READ_BOUND_MS,
            "{line}\na read on a node that stayed up took {:.0} ms (bound {READ_BOUND_MS} ms)",
            s.max_read_ms
        );
    }
}
