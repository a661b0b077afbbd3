//! 100,000 keys in one enclave: created through the API (batched KEY:CREATE
//! frames), listed with pagination, all present after a restart, which stays
//! under 10 s with memory proportional to the keys.

use std::time::Instant;

use kms_client::{proto, Command};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};

const KEYS: usize = 100_000;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hundred_thousand_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "kms0");

    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    let idle_rss = rss_kib(srv.pid());
    let c = srv.root();
    let runtime = rt();
    runtime.block_on(async {
        c.create_enclave("big").await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for chunk in (w * KEYS / 4..(w + 1) * KEYS / 4)
                    .collect::<Vec<_>>()
                    .chunks(500)
                {
                    let reqs: Vec<_> = chunk
                        .iter()
                        .map(|i| proto::CreateKeyRequest {
                            name: format!("key-{i:06}"),
                            ..Default::default()
                        })
                        .collect();
                    let _: Vec<proto::Empty> = c
                        .batch(Some("big"), Command::KeyCreate, &reqs)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let full_rss = rss_kib(srv.pid());
    srv.stop();

    let t = Instant::now();
    let srv = Server::start(&dir, SEED_HSM_KEY);
    let restart = t.elapsed();
    assert!(
        restart.as_secs_f64() < 10.0,
        "restart with {KEYS} keys took {restart:?}"
    );
    let c = srv.root();
    runtime.block_on(async {
        // Paginated listing: pages of at most 1000.
        let first: proto::ListKeysResponse = c
            .call(
                Some("big"),
                Command::KeyList,
                &proto::ListRequest::default(),
            )
            .await
            .unwrap();
        assert_eq!(first.keys.len(), 1000);
        assert_eq!(first.continue_at, "key-001000");
        let all = c.list_keys("big", "").await.unwrap();
        assert_eq!(all.len(), KEYS);
        for (i, k) in all.iter().enumerate() {
            assert_eq!(k.name, format!("key-{i:06}"));
        }
        let some = c.list_keys("big", "key-0999").await.unwrap();
        assert_eq!(some.len(), 100);
        let g = c.generate("big", "key-099999", b"", 32).await.unwrap();
        assert_eq!(
            c.decrypt("big", "key-099999", &g.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            g.plaintext
        );
    });
    let restarted_rss = rss_kib(srv.pid());
    eprintln!("restart {restart:?}; RSS idle {idle_rss} KiB, with {KEYS} keys {full_rss} KiB, after restart {restarted_rss} KiB");
    // Proportional memory: well under 4 KiB per key.
    assert!(
        restarted_rss < idle_rss + (KEYS as u64 * 4),
        "RSS {restarted_rss} KiB for {KEYS} keys"
    );
    let mut srv = srv;
    srv.stop();

    // Sealed by SoftHSM2 instead: the HSM unseals the root key once, the keys
    // are sealed under the root key, so start-up stays as fast.
    let hsm = kms_tests::softhsm_token(&tmp.path().join("hsm"), "scale", None);
    let mut both = hsm.clone();
    both.push(("KMS_HSM_KEY".into(), SEED_HSM_KEY.into()));
    both.push(("KMS_HSM_PRIMARY".into(), "soft".into()));
    let mut srv = Server::try_start_env(&dir, &both, &[]).unwrap();
    kms_tests::ok(&srv.cli(None, &["add-hsm", "pkcs11"]));
    srv.stop();
    let t = Instant::now();
    let srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    let restart_p11 = t.elapsed();
    eprintln!("restart sealed by SoftHSM2 with {KEYS} keys: {restart_p11:?}");
    assert!(
        restart_p11.as_secs_f64() < 5.0,
        "restart with SoftHSM2 took {restart_p11:?}"
    );
    let c = srv.root();
    runtime.block_on(async {
        let g = c.generate("big", "key-012345", b"", 32).await.unwrap();
        assert_eq!(
            c.decrypt("big", "key-012345", &g.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            g.plaintext
        );
    });
}
