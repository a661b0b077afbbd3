//! Test vectors of the formats written down in docs/formats.md.

pub struct CiphertextVector {
    pub key_type: &'static str,
    pub version: u32,
    pub key: &'static str,
    pub plaintext: &'static str,
    pub associated_data: &'static str,
    pub ciphertext: &'static str,
}

pub struct MacVector {
    pub key: &'static str,
    pub message: &'static str,
    pub mac: &'static str,
}

pub const CIPHERTEXT_V1: &[CiphertextVector] = &[];
pub const MAC_V1: &[MacVector] = &[];
