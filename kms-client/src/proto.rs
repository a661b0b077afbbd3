//! Protobuf messages of the KMS API.
//!
//! Field numbers and types match MinIO's kms-go `kms/protobuf/*.proto`
//! (package `minio.kms`) exactly; the definitions are our own, written with
//! `prost` derive. Field names follow Rust conventions.
#![allow(missing_docs)]

use std::collections::HashMap;

pub use prost_types::{Duration, Timestamp};

// ---- requests ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterStatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListRequest {
    #[prost(string, tag = "1")]
    pub prefix: String,
    #[prost(string, tag = "2")]
    pub continue_at: String,
    #[prost(uint32, tag = "3")]
    pub limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddClusterNodeRequest {
    #[prost(string, tag = "1")]
    pub host: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveClusterNodeRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(bool, tag = "2")]
    pub delete_cluster_on_host: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EditClusterRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(uint32, repeated, tag = "2")]
    pub remove_ids: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddHsmRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bool, tag = "2")]
    pub overwrite: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveHsmRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// Request of ENCLAVE:CREATE, ENCLAVE:DELETE and ENCLAVE:STATUS (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnclaveRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(bool, tag = "3")]
    pub add_version: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImportKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bool, tag = "3")]
    pub all_versions: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyStatusRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub plaintext: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub associated_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GenerateKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub associated_data: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MacRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DecryptRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub ciphertext: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub associated_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rule {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RuleSet {
    #[prost(map = "string, message", tag = "1")]
    pub rules: HashMap<String, Rule>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePolicyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, message", tag = "2")]
    pub allow: HashMap<String, RuleSet>,
    #[prost(map = "string, message", tag = "3")]
    pub deny: HashMap<String, RuleSet>,
}

/// Request of POLICY:GET, POLICY:STATUS and POLICY:DELETE (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AssignPolicyRequest {
    #[prost(string, tag = "1")]
    pub identity: String,
    #[prost(string, tag = "2")]
    pub policy: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateIdentityRequest {
    #[prost(string, tag = "1")]
    pub identity: String,
    #[prost(string, tag = "2")]
    pub privilege: String,
    #[prost(bool, tag = "3")]
    pub is_service_account: bool,
    #[prost(map = "string, string", tag = "4")]
    pub tags: HashMap<String, String>,
}

/// Request of IDENTITY:STATUS and IDENTITY:DELETE (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdentityRequest {
    #[prost(string, tag = "1")]
    pub identity: String,
}

/// Request of KEY:RAWENCRYPT and KEY:RAWDECRYPT (PKCS#11 extensions).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawCryptRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The key version; 0: the latest (encrypt), or every version newest
    /// first for authenticated mechanisms (decrypt).
    #[prost(uint32, tag = "2")]
    pub version: u32,
    /// `kms_client::raw::RawMechanism` as a number.
    #[prost(uint32, tag = "3")]
    pub mechanism: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub iv: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub associated_data: Vec<u8>,
    /// AES-GCM tag length in bytes (4..=16); 0 means 16.
    #[prost(uint32, tag = "6")]
    pub tag_length: u32,
    #[prost(bytes = "vec", tag = "7")]
    pub data: Vec<u8>,
}

/// Request of KEY:MACVERIFY (PKCS#11 extension).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MacVerifyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: every version, newest first.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub mac: Vec<u8>,
    /// `SHA-1`, `SHA-256` (empty), `SHA-384` or `SHA-512`.
    #[prost(string, tag = "5")]
    pub hash: String,
}

/// KEY:RAWMAC: an HMAC with a chosen hash (KEY:MAC is HMAC-SHA256).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawMacRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: the latest version.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    /// `SHA-1`, `SHA-256` (empty), `SHA-384` or `SHA-512`.
    #[prost(string, tag = "4")]
    pub hash: String,
}

// ---- responses ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrResponse {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub commit: String,
    #[prost(string, tag = "3")]
    pub api_version: String,
    #[prost(string, tag = "4")]
    pub host: String,
    #[prost(bool, tag = "5")]
    pub fips140: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerStatusResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub api_version: String,
    #[prost(string, tag = "3")]
    pub host: String,
    #[prost(message, optional, tag = "4")]
    pub up_time: Option<Duration>,
    #[prost(string, tag = "5")]
    pub role: String,
    #[prost(uint64, tag = "6")]
    pub commit: u64,
    #[prost(map = "uint32, string", tag = "7")]
    pub nodes: HashMap<u32, String>,
    #[prost(uint32, tag = "8")]
    pub id: u32,
    #[prost(sint64, tag = "9")]
    pub leader_id: i64,
    #[prost(message, optional, tag = "10")]
    pub last_heartbeat: Option<Duration>,
    #[prost(message, optional, tag = "11")]
    pub heartbeat_interval: Option<Duration>,
    #[prost(message, optional, tag = "12")]
    pub election_timeout: Option<Duration>,
    #[prost(string, tag = "13")]
    pub os: String,
    #[prost(string, tag = "14")]
    pub arch: String,
    #[prost(uint32, tag = "15")]
    pub cpus: u32,
    #[prost(uint32, tag = "16")]
    pub usable_cpus: u32,
    #[prost(uint64, tag = "17")]
    pub heap_mem_in_use: u64,
    #[prost(uint64, tag = "18")]
    pub stack_mem_in_use: u64,
    #[prost(string, repeated, tag = "19")]
    pub hsms: Vec<String>,
    #[prost(string, repeated, tag = "20")]
    pub configured_hsms: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterStatusResponse {
    #[prost(map = "uint32, message", tag = "1")]
    pub nodes_up: HashMap<u32, ServerStatusResponse>,
    #[prost(map = "uint32, string", tag = "2")]
    pub nodes_down: HashMap<u32, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EnclaveStatusResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "3")]
    pub created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListEnclavesResponse {
    #[prost(message, repeated, tag = "1")]
    pub enclaves: Vec<EnclaveStatusResponse>,
    #[prost(string, tag = "2")]
    pub continue_at: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyStatusResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(string, tag = "3")]
    pub r#type: String,
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "5")]
    pub created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListKeysResponse {
    #[prost(message, repeated, tag = "1")]
    pub keys: Vec<KeyStatusResponse>,
    #[prost(string, tag = "2")]
    pub continue_at: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptResponse {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DecryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub plaintext: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GenerateKeyResponse {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub plaintext: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MacResponse {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub mac: Vec<u8>,
}

/// Response of KEY:RAWENCRYPT and KEY:RAWDECRYPT.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawCryptResponse {
    /// The key version that was used.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// Response of KEY:MACVERIFY.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MacVerifyResponse {
    /// The version whose MAC matched (0: none).
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bool, tag = "2")]
    pub valid: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyStatusResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "5")]
    pub created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PolicyResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, message", tag = "2")]
    pub allow: HashMap<String, RuleSet>,
    #[prost(map = "string, message", tag = "3")]
    pub deny: HashMap<String, RuleSet>,
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "5")]
    pub created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPoliciesResponse {
    #[prost(message, repeated, tag = "1")]
    pub policies: Vec<PolicyStatusResponse>,
    #[prost(string, tag = "2")]
    pub continue_at: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IdentityResponse {
    #[prost(string, tag = "1")]
    pub identity: String,
    #[prost(uint32, tag = "2")]
    pub privilege: u32,
    #[prost(string, tag = "3")]
    pub policy: String,
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "5")]
    pub created_by: String,
    #[prost(bool, tag = "6")]
    pub is_service_account: bool,
    #[prost(string, repeated, tag = "7")]
    pub service_accounts: Vec<String>,
    #[prost(map = "string, string", tag = "8")]
    pub tags: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListIdentitiesResponse {
    #[prost(message, repeated, tag = "1")]
    pub identities: Vec<IdentityResponse>,
    #[prost(string, tag = "2")]
    pub continue_at: String,
}

/// Privileges as numbered by kms-go (`IdentityResponse.privilege`).
pub mod privilege {
    pub const SYS_ADMIN: u32 = 1;
    pub const ADMIN: u32 = 2;
    pub const USER: u32 = 3;
}

// ---- Asymmetric keys (extensions 0x8200..=0x82FF; docs/api.md) ----
//
// Key creation and import use KEY:CREATE and KEY:IMPORT with an asymmetric
// type (`EC-P256`, `ML-DSA-65`, ...); KEY:DELETE deletes either kind.

/// The signature algorithm's parameters, shared by KEY:SIGN and KEY:VERIFY.
/// Unset fields take the key type's defaults (docs/api.md).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignParams {
    /// `SHA-256`, `SHA-384`, `SHA-512` (ECDSA and RSA); default SHA-256,
    /// SHA-384 for EC-P384. `NONE` with RSA PKCS#1: `message` is a complete
    /// DigestInfo, padded as is (PKCS#11 `CKM_RSA_PKCS`).
    #[prost(string, tag = "1")]
    pub hash: String,
    /// `message` is the digest, not the message (ECDSA and RSA).
    #[prost(bool, tag = "2")]
    pub prehashed: bool,
    /// RSA: `PKCS1` (default) or `PSS`.
    #[prost(string, tag = "3")]
    pub padding: String,
    /// RSA-PSS salt length in bytes; default: the hash length.
    #[prost(uint32, optional, tag = "4")]
    pub salt_length: Option<u32>,
    /// RSA-PSS MGF1 hash; default: `hash`.
    #[prost(string, tag = "5")]
    pub mgf1_hash: String,
    /// ML-DSA context (at most 255 bytes).
    #[prost(bytes = "vec", tag = "6")]
    pub context: Vec<u8>,
    /// ML-DSA: deterministic instead of hedged signing.
    #[prost(bool, tag = "7")]
    pub deterministic: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: the latest version.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub params: Option<SignParams>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignResponse {
    /// ECDSA: raw `r || s`; Ed25519, RSA and ML-DSA: their standard encodings.
    #[prost(bytes = "vec", tag = "1")]
    pub signature: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub version: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VerifyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: every version, newest first.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub params: Option<SignParams>,
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VerifyResponse {
    #[prost(bool, tag = "1")]
    pub valid: bool,
    /// The version whose key verified the signature (0 when not valid).
    #[prost(uint32, tag = "2")]
    pub version: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: the latest version.
    #[prost(uint32, tag = "2")]
    pub version: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicKeyResponse {
    /// SubjectPublicKeyInfo, DER.
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(string, tag = "3")]
    pub r#type: String,
    /// `SHA256:` and the unpadded base64 of SHA-256(SPKI), as OpenSSH prints.
    #[prost(string, tag = "4")]
    pub fingerprint: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AsymDecryptRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 0: every version, newest first.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub ciphertext: Vec<u8>,
    /// OAEP hash: `SHA-1`, `SHA-256` (default), `SHA-384`, `SHA-512`.
    #[prost(string, tag = "4")]
    pub hash: String,
    /// MGF1 hash; default: `hash`.
    #[prost(string, tag = "5")]
    pub mgf1_hash: String,
    #[prost(bytes = "vec", tag = "6")]
    pub label: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AsymDecryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub plaintext: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub version: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeKeyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyVersionInfo {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(message, optional, tag = "2")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "3")]
    pub created_by: String,
    #[prost(bool, tag = "4")]
    pub imported: bool,
    /// Asymmetric keys: the public key's fingerprint (see PublicKeyResponse).
    #[prost(string, tag = "5")]
    pub fingerprint: String,
}

/// Any key, secret or asymmetric.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeKeyResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    /// Whether the key is asymmetric (a key pair per version).
    #[prost(bool, tag = "3")]
    pub asymmetric: bool,
    #[prost(message, repeated, tag = "4")]
    pub versions: Vec<KeyVersionInfo>,
}

// ---- PKCS#11 token objects (extensions 0x8300..=0x83FF; docs/api.md) ----

/// One PKCS#11 attribute as the module stores it: its `CKA_*` type and value
/// bytes (opaque to the server).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectAttribute {
    #[prost(uint64, tag = "1")]
    pub r#type: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// OBJECT:CREATE and OBJECT:SET (which replaces every attribute).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The `CKO_*` class (`CKO_DATA` 0, `CKO_CERTIFICATE` 1, ...).
    #[prost(uint64, tag = "2")]
    pub class: u64,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<ObjectAttribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteObjectRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub class: u64,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<ObjectAttribute>,
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "5")]
    pub created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListObjectsResponse {
    #[prost(message, repeated, tag = "1")]
    pub objects: Vec<ObjectResponse>,
    #[prost(string, tag = "2")]
    pub continue_at: String,
}

// ---- Audit and self-description (extensions 0x8400..=0x84FF; docs/api.md) ----

/// CLUSTER:AUDIT: the latest audit events the answering node recorded
/// (each node keeps its own, in memory). Empty filters match anything.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditRequest {
    /// Only events of this identity (`h1:...`, exact).
    #[prost(string, tag = "1")]
    pub identity: String,
    /// Only events of this command (`KEY:CREATE`, `BACKUP`...; case-insensitive).
    #[prost(string, tag = "2")]
    pub command: String,
    /// Only events in this enclave (exact).
    #[prost(string, tag = "3")]
    pub enclave: String,
    /// At most this many events; 0: 100; more than 1,000: 1,000.
    #[prost(uint32, tag = "4")]
    pub limit: u32,
    /// Only events older than this sequence number (paging backwards); 0: from the newest.
    #[prost(uint64, tag = "5")]
    pub before_seq: u64,
}

/// One audit event: who did what, where, and how it ended. Never key material.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditEvent {
    /// Per node, from 1, increasing by one per event.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "2")]
    pub time: Option<Timestamp>,
    /// The node that recorded it.
    #[prost(uint32, tag = "3")]
    pub node_id: u32,
    #[prost(string, tag = "4")]
    pub identity: String,
    /// A command name (`KEY:CREATE`), or `BACKUP` / `RESTORE`.
    #[prost(string, tag = "5")]
    pub command: String,
    /// Empty outside any enclave.
    #[prost(string, tag = "6")]
    pub enclave: String,
    /// What the command named: a key, policy, identity, node, HSM...
    #[prost(string, tag = "7")]
    pub name: String,
    /// `ok`, `failed` or `denied`.
    #[prost(string, tag = "8")]
    pub outcome: String,
    /// Why it failed (outcome `failed`), else empty.
    #[prost(string, tag = "9")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditResponse {
    /// Newest first.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<AuditEvent>,
    /// The node that answered.
    #[prost(uint32, tag = "2")]
    pub node_id: u32,
    /// The oldest sequence number the node still holds (0: none yet):
    /// older events are only in its `audit` log.
    #[prost(uint64, tag = "3")]
    pub oldest_seq: u64,
}

/// IDENTITY:SELF carries nothing: it is always about the caller.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdentitySelfRequest {}

/// The caller's own identity record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdentitySelfResponse {
    #[prost(string, tag = "1")]
    pub identity: String,
    /// `SysAdmin`, `Admin` or `User`.
    #[prost(string, tag = "2")]
    pub privilege: String,
    /// Empty for SysAdmins.
    #[prost(string, tag = "3")]
    pub enclave: String,
    /// The policy of a User identity, if one is assigned.
    #[prost(string, tag = "4")]
    pub policy: String,
    /// The root identity, derived from the HSM (it has no record).
    #[prost(bool, tag = "5")]
    pub is_root: bool,
    #[prost(message, optional, tag = "6")]
    pub created_at: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub created_by: String,
}
