//! `kms bench`: a load generator for a running cluster.
//!
//! C workers each send batches of N commands back to back for the duration;
//! a progress line is refreshed every second on stderr, and a summary line
//! gives ops/s (command frames per second) and request latency p50/p99/max.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kms_client::{frame, proto, Client, Command};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Op {
    Generate,
    Encrypt,
    Decrypt,
    Mac,
    Status,
    /// KEY:CREATE of new, unique key names (a write: replicated to every member).
    Create,
    /// KEY:SIGN of a 32-byte message with an asymmetric key (`--key-type`).
    Sign,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "generate")]
    op: Op,
    /// Commands per request
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Concurrent requests
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to run, e.g. 10s, 500ms, 1m
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// The key to use (created if missing)
    #[arg(long, default_value = "bench-key")]
    key: String,
    /// The type of the key `--op sign` creates when it is missing (default
    /// ec-p256), or of the keys `--op create` creates (default AES256)
    #[arg(long)]
    key_type: Option<String>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in '{s}': use ms, s or m")),
    };
    if !(0.01..=86_400.0).contains(&secs) {
        return Err(format!("duration '{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Stats {
    ops: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(client: Client, enclave: String, a: BenchArgs, json: bool) -> Result<(), String> {
    if a.batch == 0 || a.batch > 100_000 || a.concurrency == 0 || a.concurrency > 4096 {
        return Err("bench: --batch must be 1..=100000 and --concurrency 1..=4096".into());
    }
    // Set-up: the enclave and key (ignore "already exists"; a User may lack the rights).
    let _ = client.create_enclave(&enclave).await;
    let key_type = match (a.op, a.key_type.as_deref()) {
        (Op::Sign, t) => t.unwrap_or("ec-p256"),
        _ => "AES256",
    };
    let _ = client.create_key(&enclave, &a.key, key_type, false).await;
    let (cmd, one): (Command, Vec<u8>) = match a.op {
        Op::Generate => (
            Command::KeyGenerate,
            prost::Message::encode_to_vec(&proto::GenerateKeyRequest {
                name: a.key.clone(),
                version: 0,
                associated_data: b"bench".to_vec(),
                length: 32,
            }),
        ),
        Op::Encrypt => (
            Command::KeyEncrypt,
            prost::Message::encode_to_vec(&proto::EncryptRequest {
                name: a.key.clone(),
                version: 0,
                plaintext: vec![0x55; 32],
                associated_data: b"bench".to_vec(),
            }),
        ),
        Op::Decrypt => {
            let ct = client
                .generate(&enclave, &a.key, b"bench", 32)
                .await
                .map_err(|e| format!("bench: set-up: {e}"))?
                .ciphertext;
            (
                Command::KeyDecrypt,
                prost::Message::encode_to_vec(&proto::DecryptRequest {
                    name: a.key.clone(),
                    version: 0,
                    ciphertext: ct,
                    associated_data: b"bench".to_vec(),
                }),
            )
        }
        Op::Mac => (
            Command::KeyMac,
            prost::Message::encode_to_vec(&proto::MacRequest {
                name: a.key.clone(),
                version: 0,
                message: vec![0x55; 32],
            }),
        ),
        Op::Status => (
            Command::KeyStatus,
            prost::Message::encode_to_vec(&proto::KeyStatusRequest {
                name: a.key.clone(),
                version: 0,
            }),
        ),
        Op::Create => (Command::KeyCreate, Vec::new()),
        Op::Sign => (
            Command::KeySign,
            prost::Message::encode_to_vec(&proto::SignRequest {
                name: a.key.clone(),
                version: 0,
                message: vec![0x55; 32],
                params: None,
            }),
        ),
    };
    // Key names unique to this run, worker and request, for `--op create`.
    let run_id: u32 = rand::random();
    let create_type = a.key_type.clone().unwrap_or_default();
    let creates = move |worker: usize, seq: u64, batch: usize| -> Bytes {
        let mut body = bytes::BytesMut::new();
        for k in 0..batch {
            let m = prost::Message::encode_to_vec(&proto::CreateKeyRequest {
                name: format!("bench-{run_id:08x}-{worker}-{seq}-{k}"),
                r#type: create_type.clone(),
                add_version: false,
            });
            body.extend_from_slice(&(Command::KeyCreate as u16).to_be_bytes());
            body.extend_from_slice(&(m.len() as u32).to_be_bytes());
            body.extend_from_slice(&m);
        }
        body.freeze()
    };
    // Probe once so that a misconfiguration fails loudly instead of as errors/s.
    let mut body = bytes::BytesMut::new();
    for _ in 0..a.batch {
        body.extend_from_slice(&(cmd as u16).to_be_bytes());
        body.extend_from_slice(&(one.len() as u32).to_be_bytes());
        body.extend_from_slice(&one);
    }
    let body: Bytes = if a.op == Op::Create {
        creates(usize::MAX, 0, a.batch)
    } else {
        body.freeze()
    };
    client
        .send(Some(&enclave), body.clone())
        .await
        .map_err(|e| format!("bench: {cmd}: {e}"))?;

    let stats = Arc::new(Stats {
        ops: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut workers = Vec::new();
    for worker in 0..a.concurrency {
        let (client, enclave, body, stats) =
            (client.clone(), enclave.clone(), body.clone(), stats.clone());
        let batch = a.batch as u64;
        let create = (a.op == Op::Create).then_some(creates.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut seq = 0;
            while Instant::now() < deadline {
                let body = match &create {
                    Some(make) => {
                        seq += 1;
                        make(worker, seq, batch as usize)
                    }
                    None => body.clone(),
                };
                let t = Instant::now();
                match client.send(Some(&enclave), body).await {
                    Ok(resp) => {
                        let frames = frame::frames(&resp).count() as u64;
                        stats.ops.fetch_add(frames.min(batch), Relaxed);
                        stats.requests.fetch_add(1, Relaxed);
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    Err(_) => {
                        stats.errors.fetch_add(1, Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let ops = stats.ops.load(Relaxed);
                eprint!(
                    "\r{:>5.1}s  {:>10} ops/s  {:>10} ops  {} errors   ",
                    start.elapsed().as_secs_f64(),
                    ops - last,
                    ops,
                    stats.errors.load(Relaxed)
                );
                last = ops;
            }
        })
    };
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.map_err(|e| format!("bench: worker failed: {e}"))?);
    }
    progress.abort();
    eprintln!();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1] as f64 / 1000.0
    };
    let ops = stats.ops.load(Relaxed);
    let reqs = stats.requests.load(Relaxed);
    let errors = stats.errors.load(Relaxed);
    let rate = ops as f64 / elapsed;
    let (p50, p99, max) = (pct(0.50), pct(0.99), pct(1.0));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "op": format!("{:?}", a.op).to_lowercase(), "batch": a.batch, "concurrency": a.concurrency,
                "seconds": elapsed, "ops": ops, "requests": reqs, "errors": errors,
                "ops_per_sec": rate, "requests_per_sec": reqs as f64 / elapsed,
                "latency_ms": {"p50": p50, "p99": p99, "max": max}
            })
        );
    } else {
        println!(
            "{:?} batch={} concurrency={}: {:.0} ops/s ({:.0} requests/s, {} errors), latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            a.op, a.batch, a.concurrency, rate, reqs as f64 / elapsed, errors, p50, p99, max
        );
    }
    if errors > 0 && ops == 0 {
        return Err("bench: every request failed".into());
    }
    Ok(())
}
