//! The typed administration methods of `kms_client::Client` (kms-client's
//! `admin.rs`) against a real server: each command, and listings paged the
//! way a web console pages them (prefix, limit, continuation).

use std::collections::BTreeMap;

use kms_client::{ApiKey, KeyVersions, Privilege};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};

fn rules(cmd: &str, patterns: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    m.insert(
        cmd.to_string(),
        patterns.iter().map(|p| p.to_string()).collect(),
    );
    m
}

#[test]
fn every_admin_method_and_paging() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    rt().block_on(async {
        // Cluster.
        let st = c.cluster_status().await.unwrap();
        assert_eq!(st.nodes_up.len(), 1);
        assert!(st.nodes_down.is_empty());
        let e = c.add_node("https://127.0.0.1:1").await.unwrap_err();
        assert!(e.status().is_some(), "{e}");
        c.remove_node("https://127.0.0.1:1").await.unwrap_err();
        assert_eq!(
            c.remove_hsm("no-such-hsm").await.unwrap_err().status(),
            Some(404)
        );

        // Enclaves, paged.
        for i in 0..5 {
            c.create_enclave(&format!("e{i}")).await.unwrap();
        }
        c.create_enclave("other").await.unwrap();
        let p1 = c.list_enclaves_page("e", "", 2).await.unwrap();
        let names: Vec<_> = p1.enclaves.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["e0", "e1"]);
        assert_eq!(p1.continue_at, "e2");
        let p2 = c.list_enclaves_page("e", &p1.continue_at, 3).await.unwrap();
        assert_eq!(p2.enclaves.len(), 3);
        assert_eq!(p2.continue_at, "");
        assert_eq!(c.list_enclaves("e").await.unwrap().len(), 5);
        assert_eq!(c.list_enclaves("").await.unwrap().len(), 6);
        assert_eq!(c.enclave_status("e3").await.unwrap().name, "e3");
        c.delete_enclave("e4").await.unwrap();
        assert_eq!(
            c.enclave_status("e4").await.unwrap_err().status(),
            Some(404)
        );

        // Keys: import, MAC, versions, delete, paged listing.
        c.import_key("e0", "imp", "AES256", &[7; 32]).await.unwrap();
        let m1 = c.mac("e0", "imp", b"hello").await.unwrap();
        assert_eq!(m1.version, 1);
        assert_eq!(m1.mac.len(), 32);
        assert_eq!(c.mac("e0", "imp", b"hello").await.unwrap().mac, m1.mac);
        c.create_key("e0", "k", "AES256", false).await.unwrap();
        c.create_key("e0", "k", "AES256", true).await.unwrap();
        c.create_key("e0", "k", "AES256", true).await.unwrap();
        c.delete_key("e0", "k", KeyVersions::One(1)).await.unwrap();
        c.delete_key("e0", "k", KeyVersions::Latest).await.unwrap();
        assert_eq!(c.key_status("e0", "k").await.unwrap().version, 2);
        c.delete_key("e0", "k", KeyVersions::All).await.unwrap();
        assert_eq!(
            c.key_status("e0", "k").await.unwrap_err().status(),
            Some(404)
        );
        for i in 0..3 {
            c.create_key("e0", &format!("key-{i}"), "AES256", false)
                .await
                .unwrap();
        }
        let p = c.list_keys_page("e0", "key-", "", 2).await.unwrap();
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.continue_at, "key-2");
        let p = c
            .list_keys_page("e0", "key-", &p.continue_at, 2)
            .await
            .unwrap();
        assert_eq!(p.keys.len(), 1);
        assert!(p.continue_at.is_empty());
        assert_eq!(c.list_keys("e0", "").await.unwrap().len(), 4);

        // Policies.
        c.create_policy("e0", "p1", &rules("KEY:MAC", &["imp"]), &BTreeMap::new())
            .await
            .unwrap();
        c.create_policy(
            "e0",
            "p2",
            &rules("KEY:STATUS", &["*"]),
            &rules("KEY:STATUS", &["x"]),
        )
        .await
        .unwrap();
        let p = c.policy("e0", "p2").await.unwrap();
        assert!(p.allow["KEY:STATUS"].rules.contains_key("*"));
        assert!(p.deny["KEY:STATUS"].rules.contains_key("x"));
        let page = c.list_policies_page("e0", "p", "", 1).await.unwrap();
        assert_eq!(page.policies.len(), 1);
        assert_eq!(page.continue_at, "p2");
        assert_eq!(c.list_policies("e0", "").await.unwrap().len(), 2);
        c.delete_policy("e0", "p2").await.unwrap();
        assert_eq!(c.policy("e0", "p2").await.unwrap_err().status(), Some(404));

        // Identities: a User with a policy, used.
        let user = ApiKey::generate();
        let id = user.identity().to_string();
        c.create_identity(Some("e0"), &id, Privilege::User)
            .await
            .unwrap();
        c.assign_policy("e0", "p1", &id).await.unwrap();
        let admin = ApiKey::generate();
        c.create_identity(Some("e0"), &admin.identity().to_string(), Privilege::Admin)
            .await
            .unwrap();
        let u = srv.client(&user);
        assert_eq!(u.mac("e0", "imp", b"hello").await.unwrap().mac, m1.mac);
        assert_eq!(
            u.mac("e0", "key-0", b"hello").await.unwrap_err().status(),
            Some(403)
        );
        let ids = c.list_identities(Some("e0"), "").await.unwrap();
        assert_eq!(ids.len(), 2);
        let page = c.list_identities_page(Some("e0"), "", "", 1).await.unwrap();
        assert_eq!(page.identities.len(), 1);
        assert!(!page.continue_at.is_empty());
        let rest = c
            .list_identities_page(Some("e0"), "", &page.continue_at, 0)
            .await
            .unwrap();
        assert_eq!(rest.identities.len(), 1);
        assert_ne!(rest.identities[0].identity, page.identities[0].identity);
        c.delete_identity(Some("e0"), &id).await.unwrap();
        assert_eq!(
            u.mac("e0", "imp", b"hello").await.unwrap_err().status(),
            Some(403)
        );
        let sys = ApiKey::generate();
        c.create_identity(None, &sys.identity().to_string(), Privilege::SysAdmin)
            .await
            .unwrap();
        assert!(c
            .list_identities(None, "")
            .await
            .unwrap()
            .iter()
            .any(|i| i.identity == sys.identity().to_string()));
        c.delete_identity(None, &sys.identity().to_string())
            .await
            .unwrap();

        // Backup and restore: a key deleted after the backup comes back.
        let backup = c.backup().await.unwrap();
        assert!(!backup.is_empty());
        c.delete_key("e0", "key-0", KeyVersions::All).await.unwrap();
        c.restore(backup).await.unwrap();
        assert_eq!(c.key_status("e0", "key-0").await.unwrap().version, 1);
    });
}
