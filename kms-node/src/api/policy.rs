//! POLICY:* commands.

use kms_client::{proto, Command, Identity};
use prost::Message;

use super::{decode, validate_name, ApiError, Ctx};
use crate::change::Change;
use crate::model::Time;
use crate::policy::Policy;

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::PolicyCreate => {
            let req: proto::CreatePolicyRequest = decode(cmd, payload)?;
            validate_name("policy", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let policy = Policy::from_proto(&req).map_err(ApiError::bad)?;
            let enclave = ctx.enclave()?.name.clone();
            ctx.commit(
                cmd,
                Change::CreatePolicy {
                    enclave,
                    name: req.name,
                    policy,
                    at: Time::now(),
                    by: ctx.caller.identity.to_string(),
                },
            )
            .await?;
            Ok(Vec::new())
        }
        Command::PolicyDelete => {
            let req: proto::PolicyRequest = decode(cmd, payload)?;
            validate_name("policy", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let enclave = ctx.enclave()?.name.clone();
            ctx.commit(
                cmd,
                Change::DeletePolicy {
                    enclave,
                    name: req.name,
                },
            )
            .await?;
            Ok(Vec::new())
        }
        Command::PolicyAssign => {
            let req: proto::AssignPolicyRequest = decode(cmd, payload)?;
            validate_name("policy", &req.policy)?;
            let identity =
                Identity::parse(&req.identity).map_err(|e| ApiError::bad(e.to_string()))?;
            ctx.authorize(cmd, &req.policy)?;
            let enclave = ctx.enclave()?.name.clone();
            ctx.commit(
                cmd,
                Change::AssignPolicy {
                    enclave,
                    identity,
                    policy: req.policy,
                },
            )
            .await?;
            Ok(Vec::new())
        }
        Command::PolicyGet | Command::PolicyStatus => {
            let req: proto::PolicyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let p = ctx
                .enclave()?
                .policies
                .get(&req.name)
                .ok_or_else(|| ApiError::new(404, "policy does not exist"))?;
            if cmd == Command::PolicyStatus {
                return Ok(proto::PolicyStatusResponse {
                    name: req.name,
                    created_at: Some(p.created_at.to_proto()),
                    created_by: p.created_by.clone(),
                }
                .encode_to_vec());
            }
            Ok(proto::PolicyResponse {
                name: req.name,
                allow: Policy::to_proto_rules(&p.policy.allow),
                deny: Policy::to_proto_rules(&p.policy.deny),
                created_at: Some(p.created_at.to_proto()),
                created_by: p.created_by.clone(),
            }
            .encode_to_vec())
        }
        Command::PolicyList => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            let e = ctx.enclave()?;
            let (policies, continue_at) = super::page(&e.policies, &req, |name, p| {
                ctx.visible(cmd, name).then(|| proto::PolicyStatusResponse {
                    name: name.clone(),
                    created_at: Some(p.created_at.to_proto()),
                    created_by: p.created_by.clone(),
                })
            });
            Ok(proto::ListPoliciesResponse {
                policies,
                continue_at,
            }
            .encode_to_vec())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not a policy command"))),
    }
}
