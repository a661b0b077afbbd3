//! The cluster with real `kms server` processes on loopback: walkthrough 1,
//! membership changes, HSM-key mismatch, cold start, removed nodes.

use std::time::{Duration, Instant};

use kms_tests::*;

const OTHER_HSM_KEY: &str = "hsm:aes256:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn ls_json(s: &Server) -> serde_json::Value {
    let out = ok(&s.cli(None, &["--json", "ls"]));
    serde_json::from_str(&out).expect("ls --json")
}

fn up_count(v: &serde_json::Value) -> usize {
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["up"] == true)
        .count()
}

/// Walkthrough 1 of PRODUCT.md, as written: one server, an enclave and a
/// key; two more servers joined with `kms add`; `stat-key` on another node;
/// two nodes stopped: reads on the survivor, the write refused with a clear
/// message; restarted: the write succeeds.
#[test]
fn walkthrough_1_three_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_timing(SEED_HSM_KEY);
    let s1 = Server::try_start_env(&tmp.path().join("n1"), &env, &[]).unwrap();
    let ls = ls_json(&s1);
    assert_eq!(ls["nodes"].as_array().unwrap().len(), 1, "{ls}");
    ok(&s1.cli(None, &["add-enclave", "enclave-1"]));
    ok(&s1.cli(None, &["add-key", "--enclave", "enclave-1", "key-1"]));
    ok(&s1.cli(None, &["stat-key", "--enclave", "enclave-1", "key-1"]));

    let mut s2 = Server::try_start_env(&tmp.path().join("n2"), &env, &[]).unwrap();
    let mut s3 = Server::try_start_env(&tmp.path().join("n3"), &env, &[]).unwrap();
    ok(&s1.cli(None, &["add", &s2.url()]));
    ok(&s1.cli(None, &["add", &s3.url()]));
    let ls = ls_json(&s1);
    assert_eq!(ls["nodes"].as_array().unwrap().len(), 3, "{ls}");
    assert_eq!(up_count(&ls), 3, "{ls}");
    let table = ok(&s1.cli(None, &["ls"]));
    assert_eq!(
        table.matches(" up ").count() + table.matches(" up\n").count(),
        3,
        "{table}"
    );

    // `kms stat` describes the node it talks to.
    let stat = ok(&s2.cli(None, &["stat"]));
    assert!(
        stat.contains("Follower") && stat.contains(&s1.addr),
        "{stat}"
    );
    assert!(stat.contains("3 (3 up, 0 down)"), "{stat}");
    // Another node answers for the key created before it joined.
    let stat = ok(&s2.cli(None, &["stat-key", "--enclave", "enclave-1", "key-1"]));
    assert!(stat.contains("key-1"), "{stat}");
    // A write through a follower is forwarded to the leader and visible everywhere.
    ok(&s3.cli(None, &["add-key", "--enclave", "enclave-1", "key-2"]));
    for s in [&s1, &s2, &s3] {
        ok(&s.cli(None, &["stat-key", "--enclave", "enclave-1", "key-2"]));
    }

    // Stop two nodes.
    s2.stop();
    s3.stop();
    let ls = eventually(Duration::from_secs(5), || {
        let v = ls_json(&s1);
        (up_count(&v) == 1).then_some(v)
    })
    .expect("two nodes shown down");
    assert_eq!(ls["nodes"].as_array().unwrap().len(), 3, "{ls}");
    let table = ok(&s1.cli(None, &["ls"]));
    assert_eq!(table.matches("down").count(), 2, "{table}");
    // Reads on the survivor.
    ok(&s1.cli(None, &["stat-key", "--enclave", "enclave-1", "key-1"]));
    ok(&s1.cli(None, &["keygen", "--enclave", "enclave-1", "key-1"]));
    // The write fails quickly, naming the unreachable nodes.
    let t = Instant::now();
    let err = fails(&s1.cli(None, &["add-key", "--enclave", "enclave-1", "key-3"]));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "write failed after {took:?}");
    assert!(
        err.contains(&s2.addr) && err.contains(&s3.addr),
        "the error names the unreachable nodes: {err}"
    );
    // Nothing half-applied: the key does not exist.
    let e = fails(&s1.cli(None, &["stat-key", "--enclave", "enclave-1", "key-3"]));
    assert!(e.contains("key does not exist (HTTP 404)"), "{e}");
    // The stopped nodes' connections are refused: the leader knows they are
    // down at once and refuses the write before it enters the log.
    assert!(err.contains("nothing was applied"), "{err}\n{}", s1.log());

    // Restart them: the write succeeds.
    s2.restart();
    s3.restart();
    let done = eventually(Duration::from_secs(15), || {
        s1.cli(None, &["add-key", "--enclave", "enclave-1", "key-3"])
            .status
            .success()
            .then_some(())
    });
    assert!(done.is_some(), "add-key after the restart: {}", s1.log());
    for s in [&s1, &s2, &s3] {
        ok(&s.cli(None, &["stat-key", "--enclave", "enclave-1", "key-3"]));
    }
}

/// A node with another HSM key cannot join, and both sides say why.
#[test]
fn join_with_another_hsm_key_fails_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let s1 =
        Server::try_start_env(&tmp.path().join("n1"), &fast_timing(SEED_HSM_KEY), &[]).unwrap();
    let s2 =
        Server::try_start_env(&tmp.path().join("n2"), &fast_timing(OTHER_HSM_KEY), &[]).unwrap();
    let err = fails(&s1.cli(None, &["add", &s2.url()]));
    assert!(err.contains("HSM key differs"), "{err}");
    let log = eventually(Duration::from_secs(5), || {
        let l = s2.log();
        l.contains("another HSM key").then_some(l)
    });
    assert!(
        log.is_some(),
        "the joining node logs the refusal: {}",
        s2.log()
    );
    assert_eq!(ls_json(&s1)["nodes"].as_array().unwrap().len(), 1);
    // The would-be node is untouched: still its own single-node cluster.
    let ls = ok(&s2.cli(None, &["--json", "ls"]));
    assert!(ls.contains(&s2.addr), "{ls}");
}

/// A node that holds state cannot join another cluster.
#[test]
fn only_fresh_nodes_join() {
    let tmp = tempfile::tempdir().unwrap();
    let s1 =
        Server::try_start_env(&tmp.path().join("n1"), &fast_timing(SEED_HSM_KEY), &[]).unwrap();
    let s2 =
        Server::try_start_env(&tmp.path().join("n2"), &fast_timing(SEED_HSM_KEY), &[]).unwrap();
    ok(&s2.cli(None, &["add-enclave", "mine"]));
    let err = fails(&s1.cli(None, &["add", &s2.url()]));
    assert!(err.contains("not empty"), "{err}");
    ok(&s2.cli(None, &["stat-enclave", "mine"]));
}

/// Membership under faults: remove a dead node with `edit`, add it back
/// after wiping it; remove a node with `rm`: it refuses to serve after a
/// restart; restart every node at once: every acknowledged write is there.
#[test]
fn membership_edit_rm_and_cold_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    ok(&nodes[0].cli(None, &["add-enclave", "e"]));
    let mut acked = Vec::new();
    for i in 0..5 {
        let name = format!("k{i}");
        ok(&nodes[1].cli(None, &["add-key", "-e", "e", &name]));
        acked.push(name);
    }
    // Node 3 dies for good; the survivors drop it from their views.
    let dead_id = node_id(&nodes[2]);
    nodes[2].kill9();
    for s in &nodes[..2] {
        ok(&s.cli(None, &["edit", &s.url(), "--rm", &dead_id.to_string()]));
    }
    let done = eventually(Duration::from_secs(10), || {
        nodes[0]
            .cli(None, &["add-key", "-e", "e", "after-edit"])
            .status
            .success()
            .then_some(())
    });
    assert!(
        done.is_some(),
        "writes work again after edit: {}",
        nodes[0].log()
    );
    acked.push("after-edit".into());
    let ls = ls_json(&nodes[0]);
    assert_eq!(ls["nodes"].as_array().unwrap().len(), 2, "{ls}");

    // The dead node, wiped, joins again (a new id, the whole state).
    let dir = nodes[2].dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    nodes[2].restart();
    ok(&nodes[0].cli(None, &["add", &nodes[2].url()]));
    for k in &acked {
        ok(&nodes[2].cli(None, &["stat-key", "-e", "e", k]));
    }

    // `rm` a node: it stops serving, and refuses to start as a member.
    let url1 = nodes[1].url();
    ok(&nodes[0].cli(None, &["rm", &url1]));
    let ls = ls_json(&nodes[0]);
    assert_eq!(ls["nodes"].as_array().unwrap().len(), 2, "{ls}");
    let refused = eventually(Duration::from_secs(5), || {
        let o = nodes[1].cli(None, &["stat-key", "-e", "e", "k0"]);
        (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
    })
    .expect("the removed node stops serving");
    assert!(refused.contains("removed"), "{refused}");
    nodes[1].stop();
    let err = Server::try_start_env(&nodes[1].dir, &nodes[1].env, &["--addr", "127.0.0.1:0"])
        .err()
        .expect("a removed node does not start");
    assert!(err.contains("removed from the cluster"), "{err}");

    // Cold start of the remaining two: every acknowledged write is there.
    nodes[0].stop();
    nodes[2].stop();
    nodes[0].restart();
    nodes[2].restart();
    for k in &acked {
        for i in [0, 2] {
            ok(&nodes[i].cli(None, &["stat-key", "-e", "e", k]));
        }
    }
    let done = eventually(Duration::from_secs(10), || {
        nodes[2]
            .cli(None, &["add-key", "-e", "e", "after-cold-start"])
            .status
            .success()
            .then_some(())
    });
    assert!(done.is_some(), "writes after a cold start");
}

fn node_id(s: &Server) -> u32 {
    let v = ls_json(s);
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == s.addr.as_str())
        .and_then(|n| n["id"].as_u64())
        .expect("node in ls") as u32
}

/// `ready?write` says whether a write could succeed, and why not.
#[test]
fn ready_write_reports_unreachable_members() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    let rt = rt();
    let ready = |s: &Server| -> (u16, String) {
        let c = s.root();
        rt.block_on(async {
            match c
                .request(http::Method::GET, "/v1/health/ready?write", None)
                .await
            {
                Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
                Err(e) => (0, e.to_string()),
            }
        })
    };
    for s in &nodes {
        assert_eq!(ready(s).0, 200);
    }
    let gone = nodes[2].addr.clone();
    nodes[2].kill9();
    let r = eventually(Duration::from_secs(5), || {
        let r = ready(&nodes[0]);
        (r.0 == 503).then_some(r)
    })
    .expect("503 once a member is gone");
    assert!(r.1.contains(&gone), "{r:?}");
}

/// A node added while writes are running ends with every acknowledged
/// write, and so does every other node.
#[test]
fn add_node_while_writes_run() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(&tmp, 2, SEED_HSM_KEY);
    let joining =
        Server::try_start_env(&tmp.path().join("n3"), &fast_timing(SEED_HSM_KEY), &[]).unwrap();
    let rt = rt();
    let c = nodes[1].root();
    rt.block_on(c.create_enclave("w")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (c, stop, count) = (c.clone(), stop.clone(), count.clone());
        rt.spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..5_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("k{i}");
                match c.create_key("w", &name, "", false).await {
                    Ok(_) => {
                        acked.push(name);
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        })
    };
    let acked_now = || count.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(
        Duration::from_secs(30),
        "30 writes acknowledged before the add",
        || acked_now() >= 30,
    );
    ok(&nodes[0].cli(None, &["add", &joining.url()]));
    let after_add = acked_now();
    wait_until(
        Duration::from_secs(30),
        "30 more writes acknowledged after the add",
        || acked_now() >= after_add + 30,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = rt.block_on(writer).unwrap();
    eprintln!("{} writes acknowledged, {failed} failed", acked.len());
    assert!(acked.len() > 50, "too few writes: {}", acked.len());
    for s in [&nodes[0], &nodes[1], &joining] {
        let c = s.root();
        let listed: std::collections::BTreeSet<String> = rt
            .block_on(c.list_keys("w", ""))
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        for k in &acked {
            assert!(listed.contains(k), "{} lacks acknowledged key {k}", s.addr);
        }
    }
    assert_eq!(up_count(&ls_json(&joining)), 3);
}

/// A write in doubt names only the members that did not confirm it: with
/// one follower paused (SIGSTOP, so the leader does not yet count it down),
/// a write answers within about an election timeout and names the paused
/// node, never the healthy one.
#[test]
fn a_write_in_doubt_names_only_the_members_that_did_not_confirm() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = kms_tests::cluster(&tmp, 3, SEED_HSM_KEY);
    ok(&nodes[0].cli(None, &["add-enclave", "e"]));
    nodes[2].signal("STOP");
    let t = Instant::now();
    let err = fails(&nodes[0].cli(None, &["add-key", "-e", "e", "k"]));
    nodes[2].signal("CONT");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(err.contains(&nodes[2].addr), "names the paused node: {err}");
    assert!(
        !err.contains(&nodes[1].addr),
        "names a healthy node that confirmed: {err}"
    );
    assert!(
        err.contains("nothing was applied") || err.contains("outcome is unknown"),
        "{err}"
    );
}
