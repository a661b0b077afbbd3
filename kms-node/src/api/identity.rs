//! IDENTITY:* commands.
//!
//! SysAdmin identities belong to no enclave (`POST /v1/kms`); Admin and User
//! identities belong to the enclave of the request path. Nobody creates or
//! deletes an identity more privileged than itself.

use kms_client::{proto, Command, Identity};
use prost::Message;

use super::{decode, ApiError, Ctx};
use crate::change::Change;
use crate::model::{IdentityRecord, Privilege, Time};

fn response(id: &Identity, r: &IdentityRecord) -> proto::IdentityResponse {
    proto::IdentityResponse {
        identity: id.to_string(),
        privilege: r.privilege as u32,
        policy: r.policy.clone().unwrap_or_default(),
        created_at: Some(r.created_at.to_proto()),
        created_by: r.created_by.clone(),
        ..Default::default()
    }
}

/// IDENTITY:SELF: the caller's own record, `rec` (none for the root
/// identity, which is derived from the HSM). Built from the authenticated
/// caller only: nothing in the request can name anyone else.
pub fn self_record(
    caller: &super::Caller,
    rec: Option<&IdentityRecord>,
) -> proto::IdentitySelfResponse {
    let rec = rec.filter(|_| !caller.is_root);
    proto::IdentitySelfResponse {
        identity: caller.identity.to_string(),
        privilege: caller.privilege.name().into(),
        enclave: caller.enclave.clone().unwrap_or_default(),
        policy: caller.policy.clone().unwrap_or_default(),
        is_root: caller.is_root,
        created_at: rec
            .filter(|r| r.created_at.secs > 0)
            .map(|r| r.created_at.to_proto()),
        created_by: rec.map(|r| r.created_by.clone()).unwrap_or_default(),
    }
}

/// IDENTITY:SELF for any identity the cluster knows (authenticated
/// already): no policy is consulted, and the answer is about the caller
/// alone, whatever the request holds.
pub fn identity_self(
    caller: &super::Caller,
    st: &crate::model::State,
    payload: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let _: proto::IdentitySelfRequest = decode(Command::IdentitySelf, payload)?;
    let rec = st.identities.get(&caller.identity);
    Ok(self_record(caller, rec.map(|r| r.as_ref())).encode_to_vec())
}

fn parse(s: &str) -> Result<Identity, ApiError> {
    Identity::parse(s).map_err(|e| ApiError::bad(e.to_string()))
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::IdentitySelf => identity_self(ctx.caller, &ctx.st, payload),
        Command::IdentityCreate => {
            let req: proto::CreateIdentityRequest = decode(cmd, payload)?;
            let identity = parse(&req.identity)?;
            let privilege = Privilege::parse(&req.privilege).ok_or_else(|| {
                ApiError::bad(format!(
                    "invalid privilege '{}': use SysAdmin, Admin or User",
                    req.privilege
                ))
            })?;
            ctx.authorize(cmd, &req.identity)?;
            if privilege < ctx.caller.privilege {
                return Err(ctx.deny(cmd, &req.identity));
            }
            if identity == ctx.node.root_identity {
                return Err(ApiError::new(409, "identity already exists"));
            }
            let enclave = match privilege {
                Privilege::SysAdmin => {
                    if ctx.enclave.is_some() {
                        return Err(ApiError::bad("SysAdmin identities belong to no enclave: send IDENTITY:CREATE to /v1/kms"));
                    }
                    None
                }
                _ => Some(ctx.enclave()?.name.clone()),
            };
            let change = Change::CreateIdentity {
                enclave,
                identity,
                privilege,
                policy: None,
                at: Time::now(),
                by: ctx.caller.identity.to_string(),
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        Command::IdentityDelete => {
            let req: proto::IdentityRequest = decode(cmd, payload)?;
            let identity = parse(&req.identity)?;
            ctx.authorize(cmd, &req.identity)?;
            if identity == ctx.node.root_identity {
                return Err(ApiError::bad(
                    "the root identity is derived from the HSM and cannot be deleted",
                ));
            }
            if let Some(r) = ctx.st.identities.get(&identity) {
                if r.privilege < ctx.caller.privilege {
                    return Err(ctx.deny(cmd, &req.identity));
                }
            }
            let enclave = ctx.enclave.map(str::to_string);
            ctx.commit(cmd, Change::DeleteIdentity { enclave, identity })
                .await?;
            Ok(Vec::new())
        }
        Command::IdentityGet => {
            let req: proto::IdentityRequest = decode(cmd, payload)?;
            let identity = parse(&req.identity)?;
            ctx.authorize(cmd, &req.identity)?;
            if identity == ctx.node.root_identity && ctx.enclave.is_none() {
                let r = IdentityRecord {
                    privilege: Privilege::SysAdmin,
                    enclave: None,
                    policy: None,
                    created_at: Time::default(),
                    created_by: "hsm".into(),
                };
                return Ok(response(&identity, &r).encode_to_vec());
            }
            match ctx.st.identities.get(&identity) {
                Some(r) if r.enclave.as_deref() == ctx.enclave => {
                    Ok(response(&identity, r).encode_to_vec())
                }
                _ => Err(ApiError::new(404, "identity does not exist")),
            }
        }
        Command::IdentityList => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            if ctx.enclave.is_some() {
                ctx.enclave()?;
            }
            let limit = super::page_limit(&req);
            let mut all: Vec<(String, &IdentityRecord)> = ctx
                .st
                .identities
                .iter()
                .filter(|(_, r)| r.enclave.as_deref() == ctx.enclave)
                .map(|(i, r)| (i.to_string(), r.as_ref()))
                .filter(|(s, _)| {
                    s.starts_with(&req.prefix) && s.as_str() >= req.continue_at.as_str()
                })
                .filter(|(s, _)| ctx.visible(cmd, s))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            let continue_at = all.get(limit).map(|(s, _)| s.clone()).unwrap_or_default();
            let identities = all
                .iter()
                .take(limit)
                .filter_map(|(s, r)| Identity::parse(s).ok().map(|i| response(&i, r)))
                .collect();
            Ok(proto::ListIdentitiesResponse {
                identities,
                continue_at,
            }
            .encode_to_vec())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not an identity command"))),
    }
}
