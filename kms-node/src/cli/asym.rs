//! Asymmetric-key commands: `sign`, `verify`, `pubkey` (keys are made with
//! `add-key --type ec-p256|...|ml-dsa-87` or `add-key --import key.pem`).

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::proto;
use serde_json::json;

use super::output::{b64, Human};
use super::{with, Ctx};
use crate::asym::{self, AsymType};

/// The signature options `sign` and `verify` share.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SignOpts {
    /// The message, or its digest with --prehashed (default: stdin)
    pub message: Option<String>,
    /// Read the message (or digest) from FILE instead
    #[arg(long = "in", value_name = "FILE", conflicts_with = "message")]
    pub input: Option<PathBuf>,
    /// The input is the digest (ECDSA and RSA), as hex
    #[arg(long)]
    pub prehashed: bool,
    /// SHA-256, SHA-384 or SHA-512 (ECDSA and RSA; default SHA-256, SHA-384 for EC-P384)
    #[arg(long)]
    pub hash: Option<String>,
    /// RSA: PSS padding instead of PKCS#1 v1.5
    #[arg(long)]
    pub pss: bool,
    /// RSA-PSS salt length in bytes (default: the hash length)
    #[arg(long, requires = "pss")]
    pub salt_length: Option<u32>,
    /// ML-DSA context string
    #[arg(long)]
    pub context: Option<String>,
    /// ML-DSA: deterministic instead of hedged signing
    #[arg(long)]
    pub deterministic: bool,
    /// The key version (default: the latest to sign, every version to verify)
    #[arg(long = "key-version", default_value_t = 0)]
    pub key_version: u32,
    /// ECDSA signatures in DER (as OpenSSL writes them) instead of raw r||s
    #[arg(long)]
    pub der: bool,
}

impl SignOpts {
    fn params(&self) -> proto::SignParams {
        proto::SignParams {
            hash: self.hash.clone().unwrap_or_default(),
            prehashed: self.prehashed,
            padding: if self.pss {
                "PSS".into()
            } else {
                String::new()
            },
            salt_length: self.salt_length,
            mgf1_hash: String::new(),
            context: self
                .context
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            deterministic: self.deterministic,
        }
    }

    /// The message bytes: the argument, the file, or stdin; a digest as hex.
    fn input(&self, what: &str) -> Result<Vec<u8>, String> {
        let raw = match (&self.message, &self.input) {
            (Some(m), _) => m.clone().into_bytes(),
            (None, Some(p)) => {
                std::fs::read(p).map_err(|e| format!("{what}: cannot read {}: {e}", p.display()))?
            }
            (None, None) => {
                super::key::read_stdin().map_err(|e| format!("{what}: reading stdin: {e}"))?
            }
        };
        if !self.prehashed {
            return Ok(raw);
        }
        let text = String::from_utf8_lossy(&raw);
        hex::decode(text.trim())
            .map_err(|e| format!("{what}: --prehashed takes the digest as hex: {e}"))
    }
}

/// `kms sign NAME [MESSAGE]`: prints the base64 signature.
pub async fn sign(cx: &Ctx<'_>, name: &str, o: &SignOpts) -> Result<(), String> {
    let e = cx.enclave()?;
    let what = format!("sign {name}");
    let msg = o.input(&what)?;
    let r = with(
        &what,
        cx.c.sign(&e, name, o.key_version, &msg, o.params()).await,
    )?;
    let mut sig = r.signature;
    if o.der {
        sig = asym::ecdsa_raw_to_der(&sig)
            .map_err(|e| format!("{what}: --der applies to ECDSA signatures: {e}"))?;
    }
    cx.out.show(
        json!({"version": r.version, "signature": b64(&sig)}),
        Human::Lines(vec![b64(&sig)]),
    );
    Ok(())
}

/// `kms verify NAME SIGNATURE [MESSAGE]`: exit 0 for a valid signature.
pub async fn verify(cx: &Ctx<'_>, name: &str, signature: &str, o: &SignOpts) -> Result<(), String> {
    let e = cx.enclave()?;
    let what = format!("verify {name}");
    let msg = o.input(&what)?;
    let mut sig = B64
        .decode(signature.trim())
        .map_err(|e| format!("{what}: the signature is not base64: {e}"))?;
    if o.der {
        let pk = with(&what, cx.c.public_key(&e, name, o.key_version).await)?;
        let t = AsymType::parse(&pk.r#type)
            .ok_or_else(|| format!("{what}: unknown key type {}", pk.r#type))?;
        sig = asym::ecdsa_der_to_raw(&sig, t)
            .map_err(|e| format!("{what}: --der applies to ECDSA signatures: {e}"))?;
    }
    let r = with(
        &what,
        cx.c.verify(&e, name, o.key_version, &msg, &sig, o.params())
            .await,
    )?;
    if !r.valid {
        return Err(format!("{what}: the signature is not valid"));
    }
    cx.out.show(
        json!({"valid": true, "version": r.version}),
        Human::Lines(vec![format!("valid (version {})", r.version)]),
    );
    Ok(())
}

/// `kms pubkey NAME`: the public key as PEM (SubjectPublicKeyInfo).
pub async fn pubkey(cx: &Ctx<'_>, name: &str, version: u32) -> Result<(), String> {
    let e = cx.enclave()?;
    let r = with(
        &format!("pubkey {name}"),
        cx.c.public_key(&e, name, version).await,
    )?;
    let pem = asym::public_key_pem(&r.public_key);
    cx.out.show(
        json!({"version": r.version, "type": r.r#type, "fingerprint": r.fingerprint, "public_key": pem}),
        Human::Lines(vec![pem.trim_end().to_string()]),
    );
    Ok(())
}
