//! Network partitions with Linux network namespaces made by the test
//! (`kms_tests::netns`): three nodes, each in its own namespace, joined by a
//! bridge in a fourth. Cutting
//! a node's link on the bridge partitions it from the others (the CLI runs
//! inside the node's namespace, so reads on a cut-off node can be checked).
//!
//! Needs root (`ip netns`). If namespaces cannot be created the test fails
//! with the reason, unless `KMS_TEST_SKIP_NETNS=1` is set, in which case it
//! prints SKIPPED and returns: never silently green.

use std::time::{Duration, Instant};

use kms_tests::netns::{setup, Net};
use kms_tests::*;

fn start(net: &Net, tmp: &tempfile::TempDir, subnet: u8) -> Vec<Server> {
    let env = fast_timing(SEED_HSM_KEY);
    let nodes: Vec<Server> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            Server::start_in_netns(
                ns,
                &tmp.path().join(format!("n{i}")),
                &env,
                &format!("10.77.{subnet}.{}:7373", i + 1),
            )
            .unwrap_or_else(|e| panic!("node {i}: {e}"))
        })
        .collect();
    for s in &nodes[1..] {
        ok(&nodes[0].cli(None, &["add", &s.url()]));
    }
    nodes
}

fn leaders(nodes: &[Server]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|s| {
            let o = s.cli(None, &["--json", "ls"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let me = v["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["address"] == s.addr.as_str())?
                .clone();
            (me["role"] == "Leader").then(|| s.addr.clone())
        })
        .collect()
}

/// The leader cut off from the others: it cannot acknowledge writes (nor
/// can the others, since a write needs every member), reads keep working
/// on every node, there is never more than one leader per side, and after
/// healing the cluster converges and writes succeed everywhere.
#[test]
fn leader_cut_off_then_healed() {
    let Some(net) = setup(3, 1) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start(&net, &tmp, 1);
    ok(&nodes[0].cli(None, &["add-enclave", "e"]));
    ok(&nodes[0].cli(None, &["add-key", "-e", "e", "before"]));
    assert_eq!(leaders(&nodes), vec![nodes[0].addr.clone()]);

    net.cut(0);
    // The old leader: writes refused within about an election timeout, reads work.
    let t = Instant::now();
    let err = fails(&nodes[0].cli(None, &["add-key", "-e", "e", "on-old-leader"]));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        err.contains(&nodes[1].addr) || err.contains(&nodes[2].addr),
        "names the unreachable nodes: {err}"
    );
    ok(&nodes[0].cli(None, &["stat-key", "-e", "e", "before"]));
    ok(&nodes[0].cli(None, &["keygen", "-e", "e", "before"]));
    // The majority side elects a leader of its own, but cannot acknowledge
    // writes either: the old leader is still a member.
    let other = eventually(Duration::from_secs(10), || {
        let l = leaders(&nodes[1..]);
        (l.len() == 1).then(|| l[0].clone())
    })
    .expect("the majority elects a leader");
    assert_ne!(other, nodes[0].addr);
    let err = fails(&nodes[1].cli(None, &["add-key", "-e", "e", "on-majority"]));
    assert!(err.contains(&nodes[0].addr), "{err}");
    for s in &nodes {
        ok(&s.cli(None, &["stat-key", "-e", "e", "before"]));
        // Absent (404), not merely unanswered.
        for k in ["on-old-leader", "on-majority"] {
            let e = fails(&s.cli(None, &["stat-key", "-e", "e", k]));
            assert!(
                e.contains("key does not exist (HTTP 404)"),
                "{}: {e}",
                s.addr
            );
        }
    }

    net.heal(0);
    // Converges: one leader, writes succeed and are visible on every node.
    let done = eventually(Duration::from_secs(15), || {
        nodes[2]
            .cli(None, &["add-key", "-e", "e", "after"])
            .status
            .success()
            .then_some(())
    });
    assert!(done.is_some(), "writes after healing: {}", nodes[2].log());
    for s in &nodes {
        ok(&s.cli(None, &["stat-key", "-e", "e", "after"]));
        let e = fails(&s.cli(None, &["stat-key", "-e", "e", "on-old-leader"]));
        assert!(
            e.contains("key does not exist (HTTP 404)"),
            "{}: {e}",
            s.addr
        );
    }
    let one = eventually(Duration::from_secs(5), || {
        (leaders(&nodes).len() == 1).then_some(())
    });
    assert!(one.is_some(), "one leader after healing");
}

/// `edit` while a node is cut off: the others drop it and write again; the
/// cut-off node serves its (now possibly stale) state while it hears from
/// no one, and stops serving as soon as it reaches a member again.
#[test]
fn node_force_removed_while_cut_off_stops_serving_on_contact() {
    let Some(net) = setup(3, 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start(&net, &tmp, 2);
    ok(&nodes[0].cli(None, &["add-enclave", "e"]));
    let ls: serde_json::Value =
        serde_json::from_slice(&nodes[0].cli(None, &["--json", "ls"]).stdout).unwrap();
    let id2 = ls["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == nodes[2].addr.as_str())
        .and_then(|n| n["id"].as_u64())
        .unwrap()
        .to_string();
    net.cut(2);
    for s in &nodes[..2] {
        ok(&s.cli(None, &["edit", &s.url(), "--rm", &id2]));
    }
    let done = eventually(Duration::from_secs(10), || {
        nodes[0]
            .cli(None, &["add-key", "-e", "e", "k"])
            .status
            .success()
            .then_some(())
    });
    assert!(done.is_some(), "writes after edit: {}", nodes[0].log());
    // Cut off, the removed node still answers reads from its state (the
    // documented cost of `edit`): it cannot know yet.
    ok(&nodes[2].cli(None, &["stat-enclave", "e"]));
    net.heal(2);
    let refused = eventually(Duration::from_secs(10), || {
        let o = nodes[2].cli(None, &["stat-enclave", "e"]);
        (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
    })
    .expect("the removed node stops serving once it reaches a member");
    assert!(refused.contains("removed"), "{refused}");
}
