//! The request framing of the KMS API (kms-go's u16 command id, u32 length,
//! payload) and every command's protobuf messages: no input may panic,
//! hang or allocate without bound. Each frame's payload is decoded as every
//! request and response type.
#![no_main]

use kms_client::{frame, proto, Command};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn decode_all_types(payload: &[u8]) {
    let _ = proto::Empty::decode(payload);
    let _ = proto::ClusterStatusRequest::decode(payload);
    let _ = proto::ListRequest::decode(payload);
    let _ = proto::AddClusterNodeRequest::decode(payload);
    let _ = proto::RemoveClusterNodeRequest::decode(payload);
    let _ = proto::EditClusterRequest::decode(payload);
    let _ = proto::AddHsmRequest::decode(payload);
    let _ = proto::RemoveHsmRequest::decode(payload);
    let _ = proto::EnclaveRequest::decode(payload);
    let _ = proto::CreateKeyRequest::decode(payload);
    let _ = proto::ImportKeyRequest::decode(payload);
    let _ = proto::DeleteKeyRequest::decode(payload);
    let _ = proto::KeyStatusRequest::decode(payload);
    let _ = proto::EncryptRequest::decode(payload);
    let _ = proto::GenerateKeyRequest::decode(payload);
    let _ = proto::MacRequest::decode(payload);
    let _ = proto::DecryptRequest::decode(payload);
    let _ = proto::RuleSet::decode(payload);
    let _ = proto::CreatePolicyRequest::decode(payload);
    let _ = proto::PolicyRequest::decode(payload);
    let _ = proto::AssignPolicyRequest::decode(payload);
    let _ = proto::CreateIdentityRequest::decode(payload);
    let _ = proto::IdentityRequest::decode(payload);
    let _ = proto::RawCryptRequest::decode(payload);
    let _ = proto::MacVerifyRequest::decode(payload);
    let _ = proto::ErrResponse::decode(payload);
    let _ = proto::VersionResponse::decode(payload);
    let _ = proto::ServerStatusResponse::decode(payload);
    let _ = proto::ClusterStatusResponse::decode(payload);
    let _ = proto::EnclaveStatusResponse::decode(payload);
    let _ = proto::ListEnclavesResponse::decode(payload);
    let _ = proto::KeyStatusResponse::decode(payload);
    let _ = proto::ListKeysResponse::decode(payload);
    let _ = proto::EncryptResponse::decode(payload);
    let _ = proto::DecryptResponse::decode(payload);
    let _ = proto::GenerateKeyResponse::decode(payload);
    let _ = proto::MacResponse::decode(payload);
    let _ = proto::RawCryptResponse::decode(payload);
    let _ = proto::MacVerifyResponse::decode(payload);
    let _ = proto::PolicyStatusResponse::decode(payload);
    let _ = proto::PolicyResponse::decode(payload);
    let _ = proto::ListPoliciesResponse::decode(payload);
    let _ = proto::IdentityResponse::decode(payload);
    let _ = proto::ListIdentitiesResponse::decode(payload);
}

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode_all(data);
    // Every frame up to the first bad one (the iterator stops there).
    for f in frame::frames(data).take(4096).flatten() {
        let _ = Command::from_id(f.id);
        decode_all_types(f.payload);
    }
    // Also as one bare payload.
    decode_all_types(data);
});
