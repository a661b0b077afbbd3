//! The authorization matrix: every command, sent by SysAdmins, the Admin of
//! the enclave, the Admin of another enclave, and Users with and without a
//! matching policy: allowed (any status but 403) or 403, as PRODUCT.md section 8
//! specifies. And enclave isolation.

use bytes::BytesMut;
use kms_client::{proto, ApiKey, Client, Command};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};
use prost::Message;

fn payload(cmd: Command, n: usize, fresh_identity: &str) -> Vec<u8> {
    let name = format!("k-new-{n}");
    match cmd {
        Command::ClusterStatus => proto::ClusterStatusRequest {}.encode_to_vec(),
        Command::ClusterAudit => proto::AuditRequest::default().encode_to_vec(),
        Command::IdentitySelf => proto::IdentitySelfRequest {}.encode_to_vec(),
        Command::ClusterAddNode => proto::AddClusterNodeRequest {
            host: "127.0.0.1:1".into(),
        }
        .encode_to_vec(),
        Command::ClusterRemoveNode => proto::RemoveClusterNodeRequest {
            host: "127.0.0.1:1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::ClusterEdit => proto::EditClusterRequest {
            host: "127.0.0.1:1".into(),
            remove_ids: vec![9],
        }
        .encode_to_vec(),
        Command::ClusterAddHsm | Command::ClusterRemoveHsm => proto::AddHsmRequest {
            name: "x".into(),
            overwrite: false,
        }
        .encode_to_vec(),
        Command::EnclaveCreate | Command::EnclaveDelete => proto::EnclaveRequest {
            name: format!("enc-new-{n}"),
        }
        .encode_to_vec(),
        Command::EnclaveStatus => proto::EnclaveRequest { name: "A".into() }.encode_to_vec(),
        Command::KeySign => proto::SignRequest {
            name: "k1".into(),
            message: b"m".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyVerify => proto::VerifyRequest {
            name: "k1".into(),
            message: b"m".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyPublicKey => proto::PublicKeyRequest {
            name: "k1".into(),
            version: 0,
        }
        .encode_to_vec(),
        Command::KeyAsymDecrypt => proto::AsymDecryptRequest {
            name: "k1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyDescribe => proto::DescribeKeyRequest { name: "k1".into() }.encode_to_vec(),
        Command::ObjectCreate | Command::ObjectSet => proto::ObjectRequest {
            name: format!("o-new-{n}"),
            class: 0,
            attributes: vec![],
        }
        .encode_to_vec(),
        Command::ObjectDelete => proto::DeleteObjectRequest {
            name: "o-victim".into(),
        }
        .encode_to_vec(),
        Command::EnclaveList
        | Command::KeyList
        | Command::KeyListAll
        | Command::ObjectList
        | Command::PolicyList
        | Command::IdentityList => proto::ListRequest::default().encode_to_vec(),
        Command::KeyCreate => proto::CreateKeyRequest {
            name,
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyImport => proto::ImportKeyRequest {
            name,
            r#type: "AES256".into(),
            key: vec![9; 32],
        }
        .encode_to_vec(),
        Command::KeyDelete => proto::DeleteKeyRequest {
            name: "k-victim".into(),
            version: 0,
            all_versions: true,
        }
        .encode_to_vec(),
        Command::KeyStatus => proto::KeyStatusRequest {
            name: "k1".into(),
            version: 0,
        }
        .encode_to_vec(),
        Command::KeyListVersions => proto::ListRequest {
            prefix: "k1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyEncrypt => proto::EncryptRequest {
            name: "k1".into(),
            plaintext: b"x".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyDecrypt => proto::DecryptRequest {
            name: "k1".into(),
            ciphertext: vec![1; 60],
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyGenerate => proto::GenerateKeyRequest {
            name: "k1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyMac => proto::MacRequest {
            name: "k1".into(),
            message: b"m".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyRawEncrypt | Command::KeyRawDecrypt => proto::RawCryptRequest {
            name: "k1".into(),
            mechanism: 1,
            iv: vec![0; 12],
            data: vec![0; 32],
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyRawMac => proto::RawMacRequest {
            name: "k1".into(),
            message: b"m".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::KeyMacVerify => proto::MacVerifyRequest {
            name: "k1".into(),
            message: b"m".to_vec(),
            mac: vec![0; 32],
            ..Default::default()
        }
        .encode_to_vec(),
        Command::PolicyCreate => proto::CreatePolicyRequest {
            name: format!("p-new-{n}"),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::PolicyDelete => proto::PolicyRequest {
            name: "p-victim".into(),
        }
        .encode_to_vec(),
        Command::PolicyGet | Command::PolicyStatus => proto::PolicyRequest {
            name: "p-keys".into(),
        }
        .encode_to_vec(),
        Command::PolicyAssign => proto::AssignPolicyRequest {
            identity: fresh_identity.into(),
            policy: "p-keys".into(),
        }
        .encode_to_vec(),
        Command::IdentityCreate => proto::CreateIdentityRequest {
            identity: ApiKey::generate().identity().to_string(),
            privilege: "User".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Command::IdentityDelete | Command::IdentityGet => proto::IdentityRequest {
            identity: fresh_identity.into(),
        }
        .encode_to_vec(),
    }
}

/// Asserts that `r` is the API error `status` with exactly `message`.
#[track_caller]
fn assert_api_err<T: std::fmt::Debug>(r: Result<T, kms_client::Error>, status: u16, message: &str) {
    match r {
        Err(kms_client::Error::Api {
            status: s,
            message: m,
        }) => {
            assert_eq!((s, m.as_str()), (status, message));
        }
        other => panic!("expected HTTP {status} `{message}`, got {other:?}"),
    }
}

/// Asserts that `r` is the refusal every denied request gets (docs/api.md).
#[track_caller]
fn denied<T: std::fmt::Debug>(r: Result<T, kms_client::Error>) {
    assert_api_err(r, 403, "access denied: insufficient permissions");
}

async fn status(c: &Client, enclave: Option<&str>, cmd: Command, body: Vec<u8>) -> u16 {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(cmd as u16).to_be_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    match c.send(enclave, buf.freeze()).await {
        Ok(_) => 200,
        // A refusal is exactly the documented one, whatever the command.
        Err(kms_client::Error::Api {
            status: 403,
            message,
        }) => {
            assert_eq!(message, "access denied: insufficient permissions", "{cmd}");
            403
        }
        Err(e) => e
            .status()
            .unwrap_or_else(|| panic!("{cmd}: transport error {e}")),
    }
}

#[test]
fn authorization_matrix_and_isolation() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let root = srv.root();
    let (sys2, admin_a, admin_b, user_pol, user_nopol, user_deny) = (
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
    );
    let policy = |allow: serde_json::Value, deny: serde_json::Value| {
        let p = tmp.path().join(format!("p{}.json", rand::random::<u32>()));
        std::fs::write(
            &p,
            serde_json::json!({"allow": allow, "deny": deny}).to_string(),
        )
        .unwrap();
        p
    };
    let keys_policy = policy(serde_json::json!({"KEY:*": ["k*"]}), serde_json::json!({}));
    let deny_policy = policy(
        serde_json::json!({"KEY:*": ["*"]}),
        serde_json::json!({"KEY:GENERATE": ["k1"], "KEY:CREATE": ["*"]}),
    );
    let cli = |args: &[&str]| kms_tests::ok(&srv.cli(None, args));
    cli(&["add-enclave", "A"]);
    cli(&["add-enclave", "B"]);
    cli(&["add-key", "-e", "A", "k1"]);
    cli(&["add-key", "-e", "B", "secret-of-b"]);
    cli(&[
        "add-policy",
        "-e",
        "A",
        "p-keys",
        keys_policy.to_str().unwrap(),
    ]);
    cli(&[
        "add-policy",
        "-e",
        "A",
        "p-deny",
        deny_policy.to_str().unwrap(),
    ]);
    cli(&["add-identity", "--sysadmin", &sys2.identity().to_string()]);
    cli(&[
        "add-identity",
        "-e",
        "A",
        "--admin",
        &admin_a.identity().to_string(),
    ]);
    cli(&[
        "add-identity",
        "-e",
        "B",
        "--admin",
        &admin_b.identity().to_string(),
    ]);
    cli(&[
        "add-identity",
        "-e",
        "A",
        &user_pol.identity().to_string(),
        "--policy",
        "p-keys",
    ]);
    cli(&[
        "add-identity",
        "-e",
        "A",
        &user_nopol.identity().to_string(),
    ]);
    cli(&[
        "add-identity",
        "-e",
        "A",
        &user_deny.identity().to_string(),
        "--policy",
        "p-deny",
    ]);

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Who {
        Root,
        Sys2,
        AdminA,
        AdminB,
        UserPol,
        UserNoPol,
        UserDeny,
    }
    let who = [
        (Who::Root, root.clone()),
        (Who::Sys2, srv.client(&sys2)),
        (Who::AdminA, srv.client(&admin_a)),
        (Who::AdminB, srv.client(&admin_b)),
        (Who::UserPol, srv.client(&user_pol)),
        (Who::UserNoPol, srv.client(&user_nopol)),
        (Who::UserDeny, srv.client(&user_deny)),
    ];
    let stranger = srv.client(&ApiKey::generate());

    rt().block_on(async {
        let mut n = 0;
        for &cmd in Command::ALL {
            let enclave = if cmd.is_cluster() { None } else { Some("A") };
            for (w, c) in &who {
                n += 1;
                // A User identity of A that exists, for PolicyAssign/IdentityGet/Delete.
                let fresh = ApiKey::generate().identity().to_string();
                root.exec(
                    Some("A"),
                    Command::IdentityCreate,
                    &proto::CreateIdentityRequest {
                        identity: fresh.clone(),
                        privilege: "User".into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                // A victim key for KEY:DELETE and a victim policy for POLICY:DELETE.
                // It is there already unless the previous case deleted it.
                match root.create_key("A", "k-victim", "", false).await {
                    Ok(_) => {}
                    Err(e) => assert!(
                        e.status() == Some(409) && e.to_string().contains("key already exists"),
                        "creating the victim key: {e}"
                    ),
                }
                root.exec(
                    Some("A"),
                    Command::PolicyCreate,
                    &proto::CreatePolicyRequest {
                        name: "p-victim".into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                let got = status(c, enclave, cmd, payload(cmd, n, &fresh)).await;
                let allowed = match w {
                    Who::Root | Who::Sys2 => true,
                    // Any identity may ask who it is, in its own enclave.
                    _ if cmd == Command::IdentitySelf => *w != Who::AdminB,
                    _ if cmd.is_cluster() => false,
                    Who::AdminA => true,
                    Who::AdminB => false,
                    Who::UserNoPol => false,
                    Who::UserPol => cmd.name().starts_with("KEY:"),
                    Who::UserDeny => {
                        cmd.name().starts_with("KEY:")
                            && cmd != Command::KeyGenerate
                            && cmd != Command::KeyCreate
                    }
                };
                if allowed {
                    assert_ne!(got, 403, "{w:?} must be allowed {cmd}");
                } else {
                    assert_eq!(got, 403, "{w:?} must be denied {cmd}");
                }
            }
            // Unknown identities are denied everything.
            assert_eq!(
                status(&stranger, enclave, cmd, payload(cmd, 0, "h1:x")).await,
                403,
                "stranger {cmd}"
            );
        }

        // A matching policy covers only matching names.
        let up = srv.client(&user_pol);
        root.create_key("A", "other", "", false).await.unwrap();
        denied(up.generate("A", "other", b"", 32).await);
        assert!(up.generate("A", "k1", b"", 32).await.is_ok());
        // Listings show a User only what its policy allows.
        let names: Vec<String> = up
            .list_keys("A", "")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert!(
            names.contains(&"k1".to_string()) && !names.contains(&"other".to_string()),
            "{names:?}"
        );

        // Isolation: nothing of B is visible or usable from A's identities.
        let aa = srv.client(&admin_a);
        denied(aa.key_status("B", "secret-of-b").await);
        denied(aa.list_keys("B", "").await);
        assert_api_err(
            aa.key_status("A", "secret-of-b").await,
            404,
            "key does not exist",
        );
        assert!(aa
            .list_keys("A", "")
            .await
            .unwrap()
            .iter()
            .all(|k| k.name != "secret-of-b"));
        let g = root.generate("B", "secret-of-b", b"", 32).await.unwrap();
        denied(aa.decrypt("B", "secret-of-b", &g.ciphertext, b"").await);
        // Whether an enclave exists is not revealed to other enclaves' identities.
        denied(aa.key_status("no-such-enclave", "k").await);
        // Admins cannot create SysAdmins or identities in other enclaves.
        let sys_req = proto::CreateIdentityRequest {
            identity: ApiKey::generate().identity().to_string(),
            privilege: "SysAdmin".into(),
            ..Default::default()
        };
        denied(aa.exec(Some("A"), Command::IdentityCreate, &sys_req).await);
        denied(aa.exec(None, Command::IdentityCreate, &sys_req).await);
        // Deleting enclave B removes its identities: admin_b is now unknown.
        root.exec(
            None,
            Command::EnclaveDelete,
            &proto::EnclaveRequest { name: "B".into() },
        )
        .await
        .unwrap();
        denied(srv.client(&admin_b).list_keys("B", "").await);
    });
    // Denied requests leave an audit record.
    let log = std::fs::read_to_string(srv.dir.with_extension("log")).unwrap();
    assert!(
        log.contains("request denied") && log.contains(&admin_b.identity().to_string()),
        "no audit record of denials"
    );
    assert!(
        log.contains("state change"),
        "no audit record of state changes"
    );
}
