//! Linearizability checks of real histories: concurrent clients create,
//! delete and read keys on a real node, and on a real three-node cluster
//! (each client bound to one node), while a fault injector kills nodes
//! (-9), pauses them (SIGSTOP/SIGCONT) and restarts them. The recorded
//! histories are checked with kms_tests::linearizability. Bounded in time
//! and count.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_client::tls::Trust;
use kms_client::{proto, Client, ClientConfig, Command};
use kms_tests::linearizability::{check, Event, Op, Outcome};
use kms_tests::{cluster, data_dir, rt, Server, SEED_HSM_KEY};

const KEYS: u64 = 6;
const CLIENTS: usize = 4;
/// Upper bound per client; the clients run until the faults are over.
const OPS_PER_CLIENT: usize = 5_000;

type History = Arc<Mutex<Vec<Event>>>;

/// Starts one client task per entry of `clients`, each running random
/// creates, deletes and reads of a few keys until `stop`.
fn workload(
    runtime: &tokio::runtime::Runtime,
    clients: Vec<Client>,
    history: &History,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (w, c) in clients.into_iter().enumerate() {
        let (history, stop) = (history.clone(), stop.clone());
        tasks.push(runtime.spawn(async move {
            let mut rng = 0x1234_5678_9abc_def0u64 ^ (w as u64 + 1);
            for _ in 0..OPS_PER_CLIENT {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // Pacing, not synchronization: spreads the calls over the faults.
                tokio::time::sleep(Duration::from_millis(2)).await;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = format!("key-{}", rng % KEYS);
                let op = [Op::Create, Op::Delete, Op::Read][(rng >> 8) as usize % 3];
                let call = start.elapsed().as_nanos() as u64;
                let r = match op {
                    Op::Create => c
                        .create_key("lin", &key, "", false)
                        .await
                        .map(|_| Outcome::Ok),
                    Op::Delete => c
                        .exec(
                            Some("lin"),
                            Command::KeyDelete,
                            &proto::DeleteKeyRequest {
                                name: key.clone(),
                                version: 0,
                                all_versions: true,
                            },
                        )
                        .await
                        .map(|_| Outcome::Ok),
                    Op::Read => c.key_status("lin", &key).await.map(|_| Outcome::Present),
                };
                let outcome = match (op, r) {
                    (_, Ok(o)) => o,
                    (Op::Create, Err(e)) if e.status() == Some(409) => Outcome::Exists,
                    (Op::Delete, Err(e)) if e.status() == Some(404) => Outcome::NotFound,
                    (Op::Read, Err(e)) if e.status() == Some(404) => Outcome::Absent,
                    // Reads that fail observe nothing: they are not part of the history.
                    (Op::Read, Err(_)) => {
                        // Pacing: do not spin while the node is down.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    (_, Err(_)) => Outcome::Unknown,
                };
                let ret = start.elapsed().as_nanos() as u64;
                history.lock().unwrap().push(Event {
                    key,
                    op,
                    outcome,
                    call,
                    ret,
                });
                if outcome == Outcome::Unknown {
                    // Pacing: do not spin while the node is down.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tasks
}

fn finish(
    runtime: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    history: &History,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Event> {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("clients finish")
                .unwrap();
        }
    });
    let history = history.lock().unwrap().clone();
    let unknown = history
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    eprintln!(
        "{} operations, {unknown} with unknown outcome",
        history.len()
    );
    assert!(
        history.len() > 500,
        "too few operations recorded: {}",
        history.len()
    );
    assert!(
        unknown > 0,
        "no operation was hit by a fault: the test proved nothing"
    );
    // And most outcomes are definite: a history of unknowns is trivially
    // linearizable and proves nothing either.
    assert!(
        unknown * 10 <= history.len(),
        "{unknown} of {} outcomes unknown: too few definite ones to check",
        history.len()
    );
    history
}

fn client_for(endpoints: Vec<String>, s: &Server) -> Client {
    Client::new(ClientConfig {
        endpoints,
        api_key: s.root_key.clone(),
        trust: Trust::Insecure,
        timeout: Duration::from_millis(1500),
    })
    .unwrap()
}

#[test]
fn single_node_history_under_kill_and_pause_is_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let runtime = rt();
    let history = History::default();
    let start = Instant::now();
    let client = client_for(vec![srv.url()], &srv);
    runtime.block_on(client.create_enclave("lin")).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = workload(&runtime, vec![client; CLIENTS], &history, &stop, start);
    // Faults: pause, resume, kill -9 and restart, while the clients run.
    // The sleeps are the point: each phase (running, paused, dead, paused
    // past the client timeout) lasts long enough for calls to land in it.
    std::thread::sleep(Duration::from_millis(400));
    srv.signal("STOP");
    std::thread::sleep(Duration::from_millis(300));
    srv.signal("CONT");
    std::thread::sleep(Duration::from_millis(400));
    srv.kill9();
    std::thread::sleep(Duration::from_millis(200));
    srv.restart();
    std::thread::sleep(Duration::from_millis(400));
    srv.signal("STOP");
    std::thread::sleep(Duration::from_millis(2000));
    srv.signal("CONT");
    std::thread::sleep(Duration::from_millis(500));
    let history = finish(&runtime, tasks, &history, &stop);
    check(&history, &[]).unwrap();
}

/// Three nodes; two clients bound to each node (reads are served by that
/// node, writes forwarded to the leader). Faults: kill -9 and restart of
/// each node in turn, SIGSTOP of a node long enough for an election.
#[test]
fn three_node_history_under_kill_and_pause_is_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    let runtime = rt();
    let history = History::default();
    let start = Instant::now();
    runtime
        .block_on(client_for(vec![nodes[0].url()], &nodes[0]).create_enclave("lin"))
        .unwrap();
    let clients: Vec<Client> = (0..6)
        .map(|i| client_for(vec![nodes[i % 3].url()], &nodes[i % 3]))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = workload(&runtime, clients, &history, &stop, start);
    // The sleeps are the point: how long each fault phase lasts while the
    // clients run (the 1.5 s pause exceeds the 500 ms election timeout).
    let ms = |n| std::thread::sleep(Duration::from_millis(n));
    ms(500);
    for i in [2, 0, 1] {
        nodes[i].kill9();
        ms(300);
        nodes[i].restart();
        ms(800);
    }
    // A pause longer than the election timeout: the others elect a leader
    // if it led; it steps down when it resumes.
    nodes[0].signal("STOP");
    ms(1500);
    nodes[0].signal("CONT");
    ms(800);
    nodes[1].signal("STOP");
    ms(300);
    nodes[1].signal("CONT");
    ms(800);
    let history = finish(&runtime, tasks, &history, &stop);
    check(&history, &[]).unwrap();
}
