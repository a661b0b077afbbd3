//! A linearizability check of a real history: concurrent clients create,
//! delete and read keys on a real node while a fault injector kills it
//! (-9), pauses it (SIGSTOP/SIGCONT) and restarts it. The recorded history
//! is checked with kms_tests::linearizability. Bounded in time and count.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_client::tls::Trust;
use kms_client::{proto, Client, ClientConfig, Command};
use kms_tests::linearizability::{check, Event, Op, Outcome};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};

const KEYS: u64 = 6;
const CLIENTS: usize = 4;
/// Upper bound per client; the clients run until the faults are over.
const OPS_PER_CLIENT: usize = 5_000;

#[test]
fn single_node_history_under_kill_and_pause_is_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let runtime = rt();
    let history = Arc::new(Mutex::new(Vec::<Event>::new()));
    let start = Instant::now();
    let client = Client::new(ClientConfig {
        endpoints: vec![srv.url()],
        api_key: srv.root_key.clone(),
        trust: Trust::Insecure,
        timeout: Duration::from_millis(1500),
    })
    .unwrap();
    runtime.block_on(client.create_enclave("lin")).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let (c, history, stop) = (client.clone(), history.clone(), stop.clone());
        tasks.push(runtime.spawn(async move {
            let mut rng = 0x1234_5678_9abc_def0u64 ^ (w as u64 + 1);
            for _ in 0..OPS_PER_CLIENT {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // Faults: pause, resume, kill -9 and restart, while the clients run.
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
    check(&history, &[]).unwrap();
}
