//! CLUSTER:AUDIT and IDENTITY:SELF on a real 3-node cluster on loopback:
//! each node's ring of the audit events it recorded (denied, ok, failed,
//! with exact identity, command, enclave and name), filters, limits and
//! paging, who may read it (SysAdmins only), `whoami` for root, a User and
//! an Admin (and 403 for an unknown key), the `kms audit` and `kms whoami`
//! CLI output, and no API key anywhere in what the audit shows.

use std::process::{Command as Process, Output};

use kms_client::{proto, ApiKey, AuditQuery, Client, Command};
use kms_tests::{cluster, fails, kms_bin, ok, rt, Server, SEED_HSM_KEY};
use serde_json::Value;

const DENIED: &str = "access denied: insufficient permissions";

/// Asserts that `r` is the API error `status` with exactly `message`.
#[track_caller]
fn api_err<T: std::fmt::Debug>(r: Result<T, kms_client::Error>, status: u16, message: &str) {
    match r {
        Err(kms_client::Error::Api {
            status: s,
            message: m,
        }) => assert_eq!((s, m.as_str()), (status, message)),
        other => panic!("expected HTTP {status} `{message}`, got {other:?}"),
    }
}

/// `kms ARGS` against every node (KMS_SERVER lists them all) as `key`.
fn cli_all(urls: &[String], key: &ApiKey, args: &[&str]) -> Output {
    Process::new(kms_bin())
        .args(args)
        .env("KMS_SERVER", urls.join(","))
        .env("KMS_API_KEY", &*key.to_secret_string())
        .env("KMS_INSECURE", "1")
        .env_remove("KMS_ENCLAVE")
        .output()
        .expect("run kms")
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// (command, outcome, enclave, name) of each event, in the order given.
fn summary(events: &[proto::AuditEvent]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.command.clone(),
                e.outcome.clone(),
                e.enclave.clone(),
                e.name.clone(),
            )
        })
        .collect()
}

fn q() -> AuditQuery {
    AuditQuery::default()
}

#[test]
fn audit_ring_and_whoami_on_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let root_key = nodes[0].root_key.clone();
    let root_id = root_key.identity().to_string();
    let (user, admin, stranger) = (ApiKey::generate(), ApiKey::generate(), ApiKey::generate());
    let (user_id, admin_id) = (user.identity().to_string(), admin.identity().to_string());

    // Everything created through node 0.
    let policy = tmp.path().join("p-gen.json");
    std::fs::write(&policy, r#"{"allow": {"KEY:GENERATE": ["k1"]}}"#).unwrap();
    let cli0 = |args: &[&str]| ok(&nodes[0].cli(None, args));
    cli0(&["add-enclave", "A"]);
    cli0(&["add-key", "-e", "A", "k1"]);
    cli0(&["add-policy", "-e", "A", "p-gen", policy.to_str().unwrap()]);
    cli0(&["add-identity", "-e", "A", &user_id, "--policy", "p-gen"]);
    cli0(&["add-identity", "-e", "A", "--admin", &admin_id]);

    // Every JSON and Debug text the audit shows, to look for API keys in.
    let mut shown = String::new();

    let ids = rt().block_on(async {
        let root = |i: usize| nodes[i].root();
        let ids: Vec<u32> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(root(i).audit(&q()).await.unwrap().node_id);
            }
            v
        };
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");

        // A failed change: KEY:CREATE of a key that exists.
        api_err(
            root(0).create_key("A", "k1", "", false).await,
            409,
            "key already exists",
        );

        // The User may generate with k1 (a read: not audited) but not ask
        // for its status: refused on node 1, which records it.
        let u1 = nodes[1].client(&user);
        u1.generate("A", "k1", b"", 32).await.unwrap();
        api_err(u1.key_status("A", "k1").await, 403, DENIED);

        let r = root(1)
            .audit(&AuditQuery {
                identity: user_id.clone(),
                ..q()
            })
            .await
            .unwrap();
        shown += &format!("{r:?}");
        assert_eq!(r.node_id, ids[1]);
        assert_eq!(r.events.len(), 1, "{r:?}");
        let e = &r.events[0];
        assert_eq!(
            (
                e.identity.as_str(),
                e.command.as_str(),
                e.outcome.as_str(),
                e.enclave.as_str(),
                e.name.as_str(),
                e.error.as_str(),
                e.node_id
            ),
            (user_id.as_str(), "KEY:STATUS", "denied", "A", "k1", "", ids[1])
        );
        assert!(e.time.unwrap().seconds > 1_700_000_000);
        // Each node keeps its own: node 0 and node 2 saw nothing of the User.
        for i in [0, 2] {
            let r = root(i)
                .audit(&AuditQuery {
                    identity: user_id.clone(),
                    ..q()
                })
                .await
                .unwrap();
            assert!(r.events.is_empty(), "node {i}: {r:?}");
        }

        // Node 0: two joins of `kms add`, the creations, the failed create.
        let all0 = root(0).audit(&q()).await.unwrap();
        shown += &format!("{all0:?}");
        let s = |c: &str, o: &str, e: &str, n: &str| {
            (c.to_string(), o.to_string(), e.to_string(), n.to_string())
        };
        assert_eq!(
            summary(&all0.events),
            [
                s("KEY:CREATE", "failed", "A", "k1"),
                s("IDENTITY:CREATE", "ok", "A", &admin_id),
                s("POLICY:ASSIGN", "ok", "A", &user_id),
                s("IDENTITY:CREATE", "ok", "A", &user_id),
                s("POLICY:CREATE", "ok", "A", "p-gen"),
                s("KEY:CREATE", "ok", "A", "k1"),
                s("ENCLAVE:CREATE", "ok", "A", ""),
                s("CLUSTER:ADDNODE", "ok", "", &urls[2]),
                s("CLUSTER:ADDNODE", "ok", "", &urls[1]),
            ]
        );
        assert_eq!(all0.events[0].error, "key already exists");
        assert!(all0.events.iter().all(|e| e.identity == root_id && e.node_id == ids[0]));
        let seqs: Vec<u64> = all0.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=9).rev().collect::<Vec<u64>>());
        assert_eq!(all0.oldest_seq, 1);
        let times: Vec<_> = all0.events.iter().map(|e| e.time.unwrap()).collect();
        assert!(times.windows(2).all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)));

        // Filters (command case-insensitive, enclave exact) and limit, exact counts.
        let count = |q: AuditQuery| async move { root(0).audit(&q).await.unwrap().events.len() };
        let by_cmd = |c: &str| AuditQuery {
            command: c.into(),
            ..q()
        };
        assert_eq!(count(by_cmd("IDENTITY:CREATE")).await, 2);
        assert_eq!(count(by_cmd("identity:create")).await, 2);
        assert_eq!(count(by_cmd("KEY:CREATE")).await, 2);
        assert_eq!(count(by_cmd("CLUSTER:ADDNODE")).await, 2);
        assert_eq!(count(by_cmd("KEY:STATUS")).await, 0);
        let in_a = AuditQuery {
            enclave: "A".into(),
            ..q()
        };
        assert_eq!(count(in_a.clone()).await, 7);
        assert_eq!(
            count(AuditQuery {
                enclave: "B".into(),
                ..q()
            })
            .await,
            0
        );
        assert_eq!(
            count(AuditQuery {
                identity: root_id.clone(),
                command: "KEY:CREATE".into(),
                enclave: "A".into(),
                ..q()
            })
            .await,
            2
        );
        assert_eq!(count(AuditQuery { limit: 3, ..q() }).await, 3);
        assert_eq!(count(AuditQuery { limit: 5000, ..q() }).await, 9);
        // Paging backwards from the oldest event of a page.
        let mut before = 0;
        let mut pages = Vec::new();
        for _ in 0..5 {
            let p = root(0)
                .audit(&AuditQuery {
                    limit: 4,
                    before_seq: before,
                    ..q()
                })
                .await
                .unwrap();
            let Some(last) = p.events.last() else { break };
            before = last.seq;
            pages.push(p.events.iter().map(|e| e.seq).collect::<Vec<_>>());
        }
        assert_eq!(pages, [vec![9, 8, 7, 6], vec![5, 4, 3, 2], vec![1]]);
        // Bad input: a clear 400.
        api_err(
            root(0).audit(&by_cmd("KEY:NOPE")).await,
            400,
            "unknown command 'KEY:NOPE': use a command name such as KEY:CREATE, or BACKUP or RESTORE",
        );
        api_err(
            root(0)
                .audit(&AuditQuery {
                    identity: user.to_secret_string().to_string(),
                    ..q()
                })
                .await,
            400,
            "the identity filter is an API key, not an identity: `kms identity KEY` prints its identity",
        );

        // Only SysAdmins read the audit: the Admin and the User get 403 on
        // /v1/kms and on their enclave's path, and node 2 records both.
        let a2 = nodes[2].client(&admin);
        let u2 = nodes[2].client(&user);
        api_err(a2.audit(&q()).await, 403, DENIED);
        api_err(u2.audit(&q()).await, 403, DENIED);
        api_err(
            a2.call::<_, proto::AuditResponse>(Some("A"), Command::ClusterAudit, &q())
                .await,
            403,
            DENIED,
        );
        let r2 = root(2).audit(&q()).await.unwrap();
        shown += &format!("{r2:?}");
        assert_eq!(
            r2.events
                .iter()
                .map(|e| (e.identity.as_str(), e.command.as_str(), e.outcome.as_str(), e.enclave.as_str()))
                .collect::<Vec<_>>(),
            [
                (admin_id.as_str(), "CLUSTER:AUDIT", "denied", "A"),
                (user_id.as_str(), "CLUSTER:AUDIT", "denied", ""),
                (admin_id.as_str(), "CLUSTER:AUDIT", "denied", ""),
            ]
        );

        // IDENTITY:SELF: root, the User (on /v1/kms and on its enclave),
        // the Admin; 403 for a key the cluster does not know and for
        // another enclave's path.
        let me = root(1).whoami().await.unwrap();
        assert_eq!(
            me,
            proto::IdentitySelfResponse {
                identity: root_id.clone(),
                privilege: "SysAdmin".into(),
                is_root: true,
                ..Default::default()
            }
        );
        let u = u2.whoami().await.unwrap();
        assert_eq!(
            (
                u.identity.as_str(),
                u.privilege.as_str(),
                u.enclave.as_str(),
                u.policy.as_str(),
                u.is_root,
                u.created_by.as_str()
            ),
            (user_id.as_str(), "User", "A", "p-gen", false, root_id.as_str())
        );
        assert!(u.created_at.unwrap().seconds > 1_700_000_000);
        let in_enclave: proto::IdentitySelfResponse = u2
            .call(Some("A"), Command::IdentitySelf, &proto::IdentitySelfRequest {})
            .await
            .unwrap();
        assert_eq!(in_enclave, u);
        // Whatever the request names, the answer is the caller's.
        let named: proto::IdentitySelfResponse = u2
            .call(
                None,
                Command::IdentitySelf,
                &proto::IdentityRequest {
                    identity: admin_id.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(named, u);
        for enclave in ["B", "nonexistent"] {
            api_err(
                u2.call::<_, proto::IdentitySelfResponse>(
                    Some(enclave),
                    Command::IdentitySelf,
                    &proto::IdentitySelfRequest {},
                )
                .await,
                403,
                DENIED,
            );
        }
        let a = a2.whoami().await.unwrap();
        assert_eq!(
            (a.identity.as_str(), a.privilege.as_str(), a.enclave.as_str(), a.policy.as_str()),
            (admin_id.as_str(), "Admin", "A", "")
        );
        let s: Client = nodes[0].client(&stranger);
        api_err(s.whoami().await, 403, DENIED);
        // IDENTITY:SELF with another command in one request: the batch is
        // refused as a whole (isolation), nothing answered.
        let mut body = bytes::BytesMut::new();
        kms_client::frame::encode(&mut body, Command::IdentitySelf as u16, &proto::IdentitySelfRequest {});
        kms_client::frame::encode(&mut body, Command::KeyList as u16, &proto::ListRequest::default());
        api_err(u2.send(None, body.freeze()).await, 403, DENIED);
        ids
    });

    // The CLI: every node merged, newest first, filters, one node, limits.
    let run = |args: &[&str]| ok(&cli_all(&urls, &root_key, args));
    let all = json(&run(&["audit", "--json"]));
    shown += &all.to_string();
    let events = all["events"].as_array().unwrap();
    let answered: Vec<u64> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(answered.len(), 3, "{all}");
    for (i, u) in urls.iter().enumerate() {
        let r = json(&run(&["audit", "--json", "--node", u, "--limit", "1"]));
        assert_eq!(r["nodes"].as_array().unwrap().len(), 1, "node {i}: {r}");
        assert_eq!(r["nodes"][0]["node_id"], ids[i], "node {i}: {r}");
        assert_eq!(r["events"].as_array().unwrap().len(), 1, "node {i}: {r}");
    }
    // Node 0: the 9 above and the stranger's IDENTITY:SELF; node 1: the
    // User's KEY:STATUS; node 2: the 3 refused CLUSTER:AUDITs, the User's
    // IDENTITY:SELF into B and into a nonexistent enclave, and the batch.
    let per_node = |id: u32| events.iter().filter(|e| e["node_id"] == id).count();
    assert_eq!(
        (per_node(ids[0]), per_node(ids[1]), per_node(ids[2])),
        (10, 1, 6),
        "{all}"
    );
    let t: Vec<f64> = events
        .iter()
        .map(|e| e["unix_time"].as_f64().unwrap())
        .collect();
    assert!(
        t.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {t:?}"
    );
    let newest = &events[0];
    assert_eq!(
        (&newest["identity"], &newest["command"], &newest["outcome"]),
        (
            &Value::from(user_id.clone()),
            &Value::from("IDENTITY:SELF"),
            &Value::from("denied")
        ),
        "{all}"
    );
    let mine = json(&run(&["audit", "--json", "--identity", &user_id]));
    let mine = mine["events"].as_array().unwrap();
    let cmds: Vec<&str> = mine
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        cmds,
        [
            "IDENTITY:SELF",
            "IDENTITY:SELF",
            "IDENTITY:SELF",
            "CLUSTER:AUDIT",
            "KEY:STATUS"
        ]
    );
    let enclaves: Vec<&str> = mine
        .iter()
        .map(|e| e["enclave"].as_str().unwrap())
        .collect();
    assert_eq!(enclaves, ["", "nonexistent", "B", "", "A"]);
    let one = json(&run(&[
        "audit",
        "--json",
        "--node",
        &urls[1],
        "--command",
        "key:status",
        "-e",
        "A",
    ]));
    assert_eq!(one["events"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["events"][0]["name"], "k1");
    assert_eq!(one["events"][0]["node_id"], ids[1]);
    let two = json(&run(&["audit", "--json", "--limit", "2"]));
    assert_eq!(two["events"].as_array().unwrap().len(), 2);
    assert_eq!(two["events"][0], events[0]);
    let table = run(&["audit", "--command", "KEY:CREATE"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].ends_with("OUTCOME"),
        "{table}"
    );
    assert!(lines[1].ends_with("failed: key already exists"), "{table}");
    assert!(
        lines[2].ends_with("  ok") && lines[2].contains(&root_id),
        "{table}"
    );
    shown += &table;
    let e = fails(&cli_all(
        &urls,
        &root_key,
        &["audit", "--command", "KEY:NOPE"],
    ));
    assert!(e.contains("unknown command 'KEY:NOPE'"), "{e}");
    let e = fails(&cli_all(&urls, &root_key, &["audit", "--limit", "5000"]));
    assert!(e.contains("5000"), "{e}");
    let e = fails(&cli_all(&urls, &admin, &["audit"]));
    assert!(e.contains(DENIED), "{e}");

    let w = json(&ok(&nodes[1].cli(Some(&user), &["whoami", "--json"])));
    assert_eq!(
        w,
        serde_json::json!({
            "identity": user_id, "privilege": "User", "enclave": "A", "policy": "p-gen",
            "root": false, "created_at": w["created_at"], "created_by": root_id,
        })
    );
    assert!(w["created_at"].as_str().unwrap().ends_with(" UTC"), "{w}");
    let w = json(&run(&["whoami", "--json"]));
    assert_eq!(
        w,
        serde_json::json!({
            "identity": root_id, "privilege": "SysAdmin", "enclave": "", "policy": "",
            "root": true, "created_at": "-", "created_by": "",
        })
    );
    let human = ok(&nodes[2].cli(Some(&admin), &["whoami"]));
    assert!(human.contains("privilege         Admin\n"), "{human}");
    assert!(human.contains("enclave           A\n"), "{human}");
    let e = fails(&nodes[0].cli(Some(&stranger), &["whoami"]));
    assert!(e.contains(DENIED), "{e}");

    // No API key anywhere in what the audit showed.
    for k in [&root_key, &user, &admin, &stranger] {
        let secret = k.to_secret_string();
        assert!(!shown.contains(&*secret));
        assert!(!shown.contains(secret.trim_start_matches("k1:")));
    }
    assert!(
        !shown.contains("k1:"),
        "an API key prefix in the audit output"
    );
}
