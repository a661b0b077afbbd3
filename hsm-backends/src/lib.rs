//! The HSM abstraction of the KMS.
//!
//! Every KMS node seals its on-disk state with a *root key*. The root key
//! never touches the disk in plaintext: it is sealed by one or more HSMs.
//! The HSM also derives, deterministically, the secrets that every node of
//! a cluster must agree on without talking to each other: the root API key
//! and the secret that roots inter-node mutual TLS.
//!
//! [`Hsm`] is the contract; [`SoftHsm`] is the built-in software HSM keyed by
//! `KMS_HSM_KEY=hsm:aes256:...`. [`conformance`] is the test suite every
//! implementation must pass.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod pkcs11;
mod soft;

pub use pkcs11::{Pkcs11Config, Pkcs11Hsm};
pub use soft::SoftHsm;

use std::sync::Arc;

use zeroize::Zeroizing;

/// The HSMs of a node: every configured one unseals; `primary` also derives
/// the root API key and the inter-node trust (see docs/hsm.md).
pub struct Hsms {
    pub all: Vec<Arc<dyn Hsm>>,
    pub primary: Arc<dyn Hsm>,
}

impl Hsms {
    /// The names of every configured HSM, the primary first.
    pub fn names(&self) -> Vec<String> {
        self.all.iter().map(|h| h.name()).collect()
    }
}

/// Errors returned by an [`Hsm`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HSM configuration is invalid (for example a malformed `KMS_HSM_KEY`).
    /// The message names the setting to fix.
    #[error("invalid HSM configuration: {0}")]
    Config(String),
    /// Unsealing failed: the sealed value was produced by another HSM key,
    /// for another context, or was modified.
    #[error("cannot unseal: the value was sealed by another HSM key or has been modified")]
    Unseal,
    /// The sealed value is not in a format this HSM understands.
    #[error("cannot unseal: malformed sealed value ({0})")]
    Malformed(&'static str),
    /// The HSM could not be reached or refused the operation.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
}

/// A hardware (or software) security module that protects the node's root key.
///
/// # Contract
///
/// Implementations must uphold every rule below; [`conformance::run`] checks them.
///
/// 1. **Sealing is authenticated encryption bound to a context.**
///    `unseal(seal(p, c), c) == p` for every plaintext `p` (including the empty
///    one) and context `c`. `unseal` with any other context, any modified byte,
///    or a value sealed by an HSM holding a different key fails with
///    [`Error::Unseal`] or [`Error::Malformed`], never with wrong plaintext.
/// 2. **Sealing is randomized.** Sealing the same plaintext twice gives two
///    different values, so equal secrets cannot be recognized on disk.
/// 3. **Sealed values are portable across instances holding the same key.**
///    Two instances configured with the same key material (two nodes sharing
///    one software HSM key, or two devices holding the same imported key)
///    unseal each other's values.
/// 4. **Derivation is deterministic and domain-separated.** `derive(label)`
///    returns the same 32 bytes on every instance holding the same key, different
///    bytes for different labels, and unrelated bytes for instances holding
///    different keys. Outputs are pseudo-random: they are used as key material.
/// 5. **The HSM key never leaves the HSM** through this interface: no method
///    returns it, and [`Hsm::name`] reveals nothing about it beyond a
///    fingerprint that identifies it.
/// 6. Methods are safe to call from many threads at once.
pub trait Hsm: Send + Sync + std::fmt::Debug {
    /// A stable, non-secret name identifying this HSM and its key, used to label
    /// the sealed root key entry that belongs to it (for example
    /// `soft:1a2b3c4d5e6f7a8b`). Two instances with the same key have the same name.
    fn name(&self) -> String;

    /// Seals `plaintext`, bound to `context`.
    fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, Error>;

    /// Unseals a value produced by [`Hsm::seal`] with the same `context`.
    fn unseal(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;

    /// Derives a 32-byte secret for `label`, deterministically.
    fn derive(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error>;
}

/// Labels passed to [`Hsm::derive`] by the KMS. Fixed forever: changing one
/// changes the root identity or the inter-node trust of every cluster.
pub mod labels {
    /// The Ed25519 seed of the root (SysAdmin) API key.
    pub const ROOT_API_KEY: &str = "kms/v1/root-api-key";
    /// The secret from which inter-node TLS certificates are derived.
    pub const CLUSTER_TLS: &str = "kms/v1/cluster-tls";
}
