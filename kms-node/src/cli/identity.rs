//! Identity commands: `add-identity`, `rm-identity`, `ls-identity`.

use kms_client::{Identity, Privilege};
use serde_json::json;

use super::output::{ts, Human};
use super::{enclave_opt, with, Ctx};

/// `kms add-identity IDENTITY [--admin | --sysadmin] [--policy NAME]`.
pub async fn add(
    cx: &Ctx<'_>,
    identity: &str,
    admin: bool,
    sysadmin: bool,
    policy: Option<&str>,
) -> Result<(), String> {
    let what = format!("add-identity {identity}");
    Identity::parse(identity).map_err(|e| format!("{what}: {e}"))?;
    let (privilege, enc) = if sysadmin {
        (Privilege::SysAdmin, None)
    } else {
        let p = if admin {
            Privilege::Admin
        } else {
            Privilege::User
        };
        (p, Some(cx.enclave()?))
    };
    with(
        &what,
        cx.c.create_identity(enc.as_deref(), identity, privilege)
            .await,
    )?;
    if let (Some(p), Some(e)) = (policy, enc) {
        with(&what, cx.c.assign_policy(&e, p, identity).await)?;
    }
    Ok(())
}

/// `kms rm-identity IDENTITY` (a SysAdmin identity without an enclave).
pub async fn rm(cx: &Ctx<'_>, identity: &str) -> Result<(), String> {
    let e = enclave_opt(cx.g);
    with(
        &format!("rm-identity {identity}"),
        cx.c.delete_identity(e.as_deref(), identity).await,
    )
}

/// The name of a privilege as IDENTITY:LIST numbers it.
fn privilege_name(p: u32) -> &'static str {
    match p {
        kms_client::proto::privilege::SYS_ADMIN => "SysAdmin",
        kms_client::proto::privilege::ADMIN => "Admin",
        _ => "User",
    }
}

/// `kms ls-identity [PREFIX]` (the SysAdmin identities without an enclave).
pub async fn ls(cx: &Ctx<'_>, prefix: &str) -> Result<(), String> {
    let e = enclave_opt(cx.g);
    let all = with(
        "ls-identity",
        cx.c.list_identities(e.as_deref(), prefix).await,
    )?;
    let json: Vec<_> = all
        .iter()
        .map(|i| json!({"identity": i.identity, "privilege": privilege_name(i.privilege), "policy": i.policy, "created_at": ts(&i.created_at)}))
        .collect();
    let mut rows = vec![vec![
        "IDENTITY".into(),
        "PRIVILEGE".into(),
        "POLICY".into(),
        "CREATED".into(),
    ]];
    rows.extend(all.into_iter().map(|i| {
        vec![
            i.identity.clone(),
            privilege_name(i.privilege).into(),
            i.policy.clone(),
            ts(&i.created_at),
        ]
    }));
    cx.out.show(json!(json), Human::Table(rows));
    Ok(())
}
