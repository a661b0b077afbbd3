//! ENCLAVE:* commands (SysAdmin only).

use kms_client::{proto, Command};
use prost::Message;

use super::{decode, validate_name, ApiError, Ctx};
use crate::change::Change;
use crate::model::{Enclave, Time};

fn status(e: &Enclave) -> proto::EnclaveStatusResponse {
    proto::EnclaveStatusResponse {
        name: e.name.clone(),
        created_at: Some(e.created_at.to_proto()),
        created_by: e.created_by.clone(),
    }
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::EnclaveCreate | Command::EnclaveDelete | Command::EnclaveStatus => {
            let req: proto::EnclaveRequest = decode(cmd, payload)?;
            validate_name("enclave", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            match cmd {
                Command::EnclaveCreate => {
                    ctx.commit(
                        cmd,
                        Change::CreateEnclave {
                            name: req.name,
                            at: Time::now(),
                            by: ctx.caller.identity.to_string(),
                        },
                    )
                    .await?;
                    Ok(Vec::new())
                }
                Command::EnclaveDelete => {
                    ctx.commit(cmd, Change::DeleteEnclave { name: req.name })
                        .await?;
                    Ok(Vec::new())
                }
                _ => {
                    let e = ctx
                        .st
                        .enclave(&req.name)
                        .ok_or_else(ApiError::enclave_not_found)?;
                    Ok(status(e).encode_to_vec())
                }
            }
        }
        Command::EnclaveList => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            let (enclaves, continue_at) =
                super::page(&ctx.st.enclaves, &req, |_, e| Some(status(e)));
            Ok(proto::ListEnclavesResponse {
                enclaves,
                continue_at,
            }
            .encode_to_vec())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not an enclave command"))),
    }
}
