//! OBJECT:* commands: the PKCS#11 module's token objects (certificates and
//! data objects), stored per enclave as the module gives them: a class and
//! attribute type/value pairs, opaque to the server, which checks only
//! names and sizes. Creation, change and deletion are replicated writes.

use std::collections::BTreeMap;

use kms_client::{proto, Command};
use prost::Message;

use super::{decode, validate_name, ApiError, Ctx};
use crate::change::Change;
use crate::model::{ObjectRecord, Time};

/// Most attributes per object.
pub const MAX_ATTRIBUTES: usize = 64;
/// Most bytes of attribute values per object (a certificate chain fits).
pub const MAX_OBJECT_BYTES: usize = 64 << 10;

fn attributes(req: &proto::ObjectRequest) -> Result<BTreeMap<u64, Vec<u8>>, ApiError> {
    if req.attributes.len() > MAX_ATTRIBUTES {
        return Err(ApiError::bad(format!(
            "an object has at most {MAX_ATTRIBUTES} attributes, not {}",
            req.attributes.len()
        )));
    }
    let total: usize = req.attributes.iter().map(|a| a.value.len()).sum();
    if total > MAX_OBJECT_BYTES {
        return Err(ApiError::bad(format!(
            "an object's attribute values hold at most {MAX_OBJECT_BYTES} bytes, not {total}"
        )));
    }
    let mut out = BTreeMap::new();
    for a in &req.attributes {
        if out.insert(a.r#type, a.value.clone()).is_some() {
            return Err(ApiError::bad(format!(
                "attribute 0x{:x} is given twice",
                a.r#type
            )));
        }
    }
    Ok(out)
}

fn response(name: &str, o: &ObjectRecord) -> proto::ObjectResponse {
    proto::ObjectResponse {
        name: name.to_string(),
        class: o.class,
        attributes: o
            .attributes
            .iter()
            .map(|(t, v)| proto::ObjectAttribute {
                r#type: *t,
                value: v.clone(),
            })
            .collect(),
        created_at: Some(o.created_at.to_proto()),
        created_by: o.created_by.clone(),
    }
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::ObjectCreate | Command::ObjectSet => {
            let req: proto::ObjectRequest = decode(cmd, payload)?;
            validate_name("object", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let attributes = attributes(&req)?;
            let change = Change::PutObject {
                enclave: ctx.enclave()?.name.clone(),
                name: req.name,
                class: req.class,
                attributes,
                replace: cmd == Command::ObjectSet,
                at: Time::now(),
                by: ctx.caller.identity.to_string(),
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        Command::ObjectDelete => {
            let req: proto::DeleteObjectRequest = decode(cmd, payload)?;
            validate_name("object", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let change = Change::DeleteObject {
                enclave: ctx.enclave()?.name.clone(),
                name: req.name,
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        Command::ObjectList => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            let e = ctx.enclave()?;
            let (objects, continue_at) = super::page(&e.objects, &req, |name, o| {
                ctx.visible(cmd, name).then(|| response(name, o))
            });
            Ok(proto::ListObjectsResponse {
                objects,
                continue_at,
            }
            .encode_to_vec())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not an object command"))),
    }
}
