//! Key and crypto commands: `add-key`, `rm-key`, `stat-key`, `ls-key`,
//! `keygen`, `encrypt`, `decrypt`, `mac`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::KeyVersions;
use serde_json::json;
use zeroize::Zeroizing;

use super::output::{b64, ts, Human};
use super::{with, Ctx};

/// Reads all of stdin.
pub(super) fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
    Ok(b)
}

/// `kms add-key NAME [--type T] [--version] [--import FILE]`.
pub async fn add(
    cx: &Ctx<'_>,
    name: &str,
    key_type: Option<&str>,
    version: bool,
    import: Option<&Path>,
) -> Result<(), String> {
    let e = cx.enclave()?;
    let what = format!("add-key {name}");
    if let Some(path) = import {
        let bytes = Zeroizing::new(if path.as_os_str() == "-" {
            read_stdin().map_err(|e| format!("{what}: reading stdin: {e}"))?
        } else {
            std::fs::read(path)
                .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?
        });
        // Without --type, the server tells a private key (PKCS#8) from
        // the 32 bytes of a secret key.
        let key_type = key_type.unwrap_or(if bytes.len() == 32 { "aes256" } else { "" });
        return with(&what, cx.c.import_key(&e, name, key_type, &bytes).await);
    }
    with(
        &what,
        cx.c.create_key(&e, name, key_type.unwrap_or("aes256"), version)
            .await,
    )
}

/// `kms rm-key NAME [--version N | --all]`.
pub async fn rm(cx: &Ctx<'_>, name: &str, version: Option<u32>, all: bool) -> Result<(), String> {
    let e = cx.enclave()?;
    let versions = match (all, version) {
        (true, _) => KeyVersions::All,
        (false, Some(v)) => KeyVersions::One(v),
        (false, None) => KeyVersions::Latest,
    };
    with(
        &format!("rm-key {name}"),
        cx.c.delete_key(&e, name, versions).await,
    )
}

/// `kms stat-key NAME`.
pub async fn stat(cx: &Ctx<'_>, name: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    // KEY:DESCRIBE shows every kind of key (a policy allowing KEY:STATUS
    // allows it too); secret keys print as KEY:STATUS did.
    let r = with(
        &format!("stat-key {name}"),
        cx.c.describe_key(&e, name).await,
    )?;
    let latest = r.versions.last().cloned().unwrap_or_default();
    let mut json = json!({"name": r.name, "version": latest.version, "type": r.r#type, "created_at": ts(&latest.created_at), "created_by": latest.created_by});
    let mut rows = vec![
        vec!["Name".into(), r.name.clone()],
        vec!["Version".into(), latest.version.to_string()],
        vec!["Type".into(), r.r#type.clone()],
        vec!["Created".into(), ts(&latest.created_at)],
        vec!["Created by".into(), latest.created_by.clone()],
    ];
    if r.asymmetric {
        // Asymmetric keys also show each version's public key fingerprint.
        json["fingerprint"] = json!(latest.fingerprint);
        json["versions"] = r
            .versions
            .iter()
            .map(|v| json!({"version": v.version, "created_at": ts(&v.created_at), "created_by": v.created_by, "imported": v.imported, "fingerprint": v.fingerprint}))
            .collect();
        rows.push(vec!["Public key".into(), latest.fingerprint.clone()]);
        for v in r.versions.iter().rev().skip(1) {
            rows.push(vec![
                format!("Version {}", v.version),
                format!("{} {}", ts(&v.created_at), v.fingerprint),
            ]);
        }
    }
    cx.out.show(json, Human::Table(rows));
    Ok(())
}

/// `kms ls-key [PREFIX]`: every key, secret and asymmetric.
pub async fn ls(cx: &Ctx<'_>, prefix: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    let keys = with("ls-key", cx.c.list_all_keys(&e, prefix).await)?;
    let json: Vec<_> = keys
        .iter()
        .map(|k| json!({"name": k.name, "version": k.version, "type": k.r#type, "created_at": ts(&k.created_at), "created_by": k.created_by}))
        .collect();
    let mut rows = vec![vec![
        "NAME".into(),
        "VERSION".into(),
        "TYPE".into(),
        "CREATED".into(),
    ]];
    rows.extend(keys.into_iter().map(|k| {
        vec![
            k.name.clone(),
            k.version.to_string(),
            k.r#type.clone(),
            ts(&k.created_at),
        ]
    }));
    cx.out.show(json!(json), Human::Table(rows));
    Ok(())
}

/// `kms keygen NAME [--length N] [--context TEXT]`: a data key.
pub async fn keygen(
    cx: &Ctx<'_>,
    name: &str,
    length: u32,
    context: Option<&str>,
) -> Result<(), String> {
    let e = cx.enclave()?;
    let r = with(
        &format!("keygen {name}"),
        cx.c.generate(&e, name, context.unwrap_or_default().as_bytes(), length)
            .await,
    )?;
    let pt = Zeroizing::new(r.plaintext);
    cx.out.show(
        json!({"version": r.version, "plaintext": b64(&pt), "ciphertext": b64(&r.ciphertext)}),
        Human::Lines(vec![
            format!("Version:    {}", r.version),
            format!("Plaintext:  {}", b64(&pt)),
            format!("Ciphertext: {}", b64(&r.ciphertext)),
        ]),
    );
    Ok(())
}

/// `kms encrypt NAME [MESSAGE] [--context TEXT]` (the message from stdin
/// when not given).
pub async fn encrypt(
    cx: &Ctx<'_>,
    name: &str,
    message: Option<String>,
    context: Option<&str>,
) -> Result<(), String> {
    let e = cx.enclave()?;
    let msg = match message {
        Some(m) => m.into_bytes(),
        None => read_stdin().map_err(|e| format!("encrypt: reading stdin: {e}"))?,
    };
    let r = with(
        &format!("encrypt {name}"),
        cx.c.encrypt(&e, name, &msg, context.unwrap_or_default().as_bytes())
            .await,
    )?;
    cx.out.show(
        json!({"version": r.version, "ciphertext": b64(&r.ciphertext)}),
        Human::Lines(vec![b64(&r.ciphertext)]),
    );
    Ok(())
}

/// `kms decrypt NAME CIPHERTEXT [--context TEXT]` (base64 ciphertext).
pub async fn decrypt(
    cx: &Ctx<'_>,
    name: &str,
    ciphertext: &str,
    context: Option<&str>,
) -> Result<(), String> {
    let e = cx.enclave()?;
    let ct = B64
        .decode(ciphertext.trim())
        .map_err(|_| "decrypt: the ciphertext is not valid base64".to_string())?;
    let r = with(
        &format!("decrypt {name}"),
        cx.c.decrypt(&e, name, &ct, context.unwrap_or_default().as_bytes())
            .await,
    )?;
    let pt = Zeroizing::new(r.plaintext);
    // Text as it is, other bytes as base64.
    let human = match std::str::from_utf8(&pt) {
        Ok(s) => s.to_string(),
        Err(_) => b64(&pt),
    };
    cx.out
        .show(json!({"plaintext": b64(&pt)}), Human::Lines(vec![human]));
    Ok(())
}

/// `kms mac NAME MESSAGE`.
pub async fn mac(cx: &Ctx<'_>, name: &str, message: &str) -> Result<(), String> {
    let e = cx.enclave()?;
    let r = with(
        &format!("mac {name}"),
        cx.c.mac(&e, name, message.as_bytes()).await,
    )?;
    cx.out.show(
        json!({"version": r.version, "mac": b64(&r.mac)}),
        Human::Lines(vec![b64(&r.mac)]),
    );
    Ok(())
}
