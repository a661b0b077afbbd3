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

pub const CIPHERTEXT_V1: &[CiphertextVector] = &[
    CiphertextVector {
        key_type: "AES256",
        version: 1,
        key: "0101010101010101010101010101010101010101010101010101010101010101",
        plaintext: "68656c6c6f2c20776f726c64",
        associated_data: "context",
        ciphertext: "0101000000010ceea3aa71c64176ed221d6674482627ca5215e36bf8bfd102bca8ff4f4832a3154be42ded981f197e6d37cc2c4268b6089538a72171235d",
    },
    CiphertextVector {
        key_type: "ChaCha20",
        version: 1,
        key: "0101010101010101010101010101010101010101010101010101010101010101",
        plaintext: "68656c6c6f2c20776f726c64",
        associated_data: "context",
        ciphertext: "01020000000172371f9dffef5113cf746f989483cfc20503d9cf4112ca3a2df3fd36580442be60b6e09a12a8d9f72b5d8dd9f94e2899401cf2abdca6bb10",
    },
];
pub const MAC_V1: &[MacVector] = &[MacVector {
    key: "0101010101010101010101010101010101010101010101010101010101010101",
    message: "message",
    mac: "8c10e7bf5d65e8fbe795e100ade16d5a1b6b521098d14a76d1f123b0f039e946",
}];
