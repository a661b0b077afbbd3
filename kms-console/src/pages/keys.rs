//! Keys of an enclave: a prefix search paged on the server's listing
//! (`continue_at`; never the whole enclave), a key's versions, create,
//! import, rotate, delete, and a try-it panel (data key, encrypt, decrypt,
//! MAC).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::KeyVersions;
use maud::{html, Markup};

use super::{csrf, field, layout, ts, Flash};
use crate::web::{enc, html as respond, redirect, App, Form, Resp, Sess};

/// Keys per page.
const PAGE: u32 = 50;

/// The key types KEY:CREATE takes (as `kms add-key --type`).
const TYPES: &[(&str, &str)] = &[
    ("aes256", "AES-256 (secret)"),
    ("chacha20", "ChaCha20-Poly1305 (secret)"),
    ("ec-p256", "ECDSA P-256"),
    ("ec-p384", "ECDSA P-384"),
    ("ed25519", "Ed25519"),
    ("rsa-2048", "RSA 2048"),
    ("rsa-3072", "RSA 3072"),
    ("rsa-4096", "RSA 4096"),
    ("ml-dsa-44", "ML-DSA-44"),
    ("ml-dsa-65", "ML-DSA-65"),
    ("ml-dsa-87", "ML-DSA-87"),
];

fn key_url(enclave: &str, name: &str) -> String {
    format!("/key?enclave={}&name={}", enc(enclave), enc(name))
}

pub(super) async fn list(_app: &App, s: &Sess, q: &Form, f: &Flash) -> Resp {
    let e = q.get("enclave");
    let prefix = q.get("prefix");
    let at = q.get("at");
    let title = format!("Keys of {e}");
    // A refused listing still shows the forms (and a failed form's message).
    let (page, list_err) = match s.client.list_all_keys_page(e, prefix, at, PAGE).await {
        Ok(p) => (p, None),
        Err(err) => (Default::default(), Some(err.to_string())),
    };
    let status = match (&list_err, f.status()) {
        (Some(_), http::StatusCode::OK) => http::StatusCode::BAD_GATEWAY,
        (_, st) => st,
    };
    let body = html! {
        form method="get" action="/keys" class="search" {
            input type="hidden" name="enclave" value=(e);
            (field("key-prefix", "prefix", "Name starts with", prefix, false))
            button type="submit" { "Search" }
        }
        table {
            thead { tr { th scope="col" { "Key" } th scope="col" { "Type" } th scope="col" { "Latest version" }
                         th scope="col" { "Created" } th scope="col" { "Created by" } } }
            tbody {
                @for k in &page.keys {
                    tr {
                        td { a href=(key_url(e, &k.name)) { (k.name) } }
                        td { (k.r#type) } td { (k.version) } td { (ts(&k.created_at)) } td.id { (k.created_by) }
                    }
                }
            }
        }
        @if let Some(err) = &list_err { p.error role="alert" { "listing keys failed: " (err) } }
        p.paging {
            @if !at.is_empty() { a href={ "/keys?enclave=" (enc(e)) "&prefix=" (enc(prefix)) } { "First page" } " " }
            @if !page.continue_at.is_empty() {
                a href={ "/keys?enclave=" (enc(e)) "&prefix=" (enc(prefix)) "&at=" (enc(&page.continue_at)) } { "Next page" }
            }
        }
        section {
            h2 { "Create a key" }
            form method="post" action="/keys/create" {
                (csrf(s))
                input type="hidden" name="enclave" value=(e);
                (field("key-new", "name", "Name", f.v("create", "name"), true))
                label for="key-type" { "Type" }
                select id="key-type" name="type" {
                    @for (t, label) in TYPES {
                        option value=(t) selected[f.v("create", "type") == *t] { (label) }
                    }
                }
                button type="submit" { "Create" }
                (f.note("create"))
            }
        }
        section {
            h2 { "Import a key" }
            p.hint { "A secret key as base64 (32 bytes for AES-256 and ChaCha20), or a private key as PEM "
                     "(PKCS#8, SEC1 or PKCS#1; its type is detected). The key material is sent to the cluster "
                     "and not kept or shown again, not even when the import fails." }
            form method="post" action="/keys/import" {
                (csrf(s))
                input type="hidden" name="enclave" value=(e);
                (field("imp-name", "name", "Name", f.v("import", "name"), true))
                label for="imp-type" { "Type" }
                select id="imp-type" name="type" {
                    option value="" selected[f.v("import", "type").is_empty()] { "Detect from a PEM private key" }
                    @for (t, label) in TYPES {
                        option value=(t) selected[f.v("import", "type") == *t] { (label) }
                    }
                }
                label for="imp-key" { "Key material (base64 or PEM)" }
                textarea id="imp-key" name="key" rows="4" spellcheck="false" autocomplete="off" required {}
                button type="submit" { "Import" }
                (f.note("import"))
            }
        }
    };
    respond(status, layout(s, &title, body))
}

/// `POST /keys/create` and `/keys/import`.
pub(super) async fn create(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let e = f.get("enclave");
    let name = f.get("name").trim();
    let r = if path == "/keys/import" {
        let mut f = f.clone();
        let key = f.take("key");
        let text = key.trim();
        let bytes = if text.starts_with("-----BEGIN") {
            Ok(zeroize::Zeroizing::new(text.as_bytes().to_vec()))
        } else {
            let clean = zeroize::Zeroizing::new(text.split_whitespace().collect::<String>());
            B64.decode(clean.as_bytes())
                .map(zeroize::Zeroizing::new)
                .map_err(|err| format!("the key material is neither PEM nor base64: {err}"))
        };
        match bytes {
            Ok(b) => s
                .client
                .import_key(e, name, f.get("type"), &b)
                .await
                .map_err(|err| ("import", err.to_string())),
            Err(err) => Err(("import", err)),
        }
    } else {
        s.client
            .create_key(e, name, f.get("type"), false)
            .await
            .map_err(|err| ("create", err.to_string()))
    };
    match r {
        Ok(()) => redirect(&key_url(e, name)),
        Err((form, err)) => {
            let mut kept = f.clone();
            drop(kept.take("key"));
            let q = Form::parse(format!("enclave={}", enc(e)).as_bytes());
            list(app, s, &q, &Flash::failed(form, err, &kept)).await
        }
    }
}

pub(super) async fn detail(_app: &App, s: &Sess, q: &Form, f: &Flash) -> Resp {
    let e = q.get("enclave");
    let name = q.get("name");
    let title = format!("Key {name}");
    // A User may be allowed to use a key but not to describe it: the page
    // then says so and keeps its forms.
    let (k, desc_err) = match s.client.describe_key(e, name).await {
        Ok(k) => (Some(k), None),
        Err(err) => (None, Some(err.to_string())),
    };
    let hidden = html! {
        (csrf(s))
        input type="hidden" name="enclave" value=(e);
        input type="hidden" name="name" value=(name);
    };
    let body = html! {
        p { a href={ "/keys?enclave=" (enc(e)) } { "All keys of " (e) } }
        @if let Some(err) = &desc_err { p.error role="alert" { "describing the key failed: " (err) } }
        @if let Some(k) = &k {
            dl { dt { "Type" } dd { (k.r#type) } dt { "Kind" } dd { @if k.asymmetric { "asymmetric (a key pair per version)" } @else { "secret" } } }
            table {
                caption { "Versions" }
                thead { tr { th scope="col" { "Version" } th scope="col" { "Created" } th scope="col" { "Created by" }
                             th scope="col" { "Imported" } @if k.asymmetric { th scope="col" { "Public key fingerprint" } } } }
                tbody {
                    @for v in &k.versions {
                        tr { td { (v.version) } td { (ts(&v.created_at)) } td.id { (v.created_by) }
                             td { @if v.imported { "yes" } @else { "no" } }
                             @if k.asymmetric { td.id { (v.fingerprint) } } }
                    }
                }
            }
        }
        section {
            h2 { "Rotate" }
            form method="post" action="/key/rotate" {
                (hidden)
                p { "Adds a new version; it becomes the one that encrypts and signs." }
                button type="submit" { "Add a version" }
                (f.note("rotate"))
            }
        }
        section {
            h2 { "Delete" }
            form method="post" action="/key/delete" {
                (hidden)
                label for="del-version" { "Version (empty: the latest; \"all\": the key itself)" }
                input type="text" id="del-version" name="version" value=(f.v("delete", "version")) autocomplete="off";
                (field("del-confirm", "confirm", "Type the key's name to confirm", "", true))
                button.danger type="submit" { "Delete" }
                (f.note("delete"))
            }
        }
        @if !k.as_ref().is_some_and(|k| k.asymmetric) { (try_it(&hidden, f)) }
    };
    let status = match (&desc_err, f.status()) {
        (Some(_), http::StatusCode::OK) if f.result.is_none() => http::StatusCode::BAD_GATEWAY,
        (_, st) => st,
    };
    respond(status, layout(s, &title, body))
}

/// The try-it panel of a secret key.
fn try_it(hidden: &Markup, f: &Flash) -> Markup {
    html! {
        section {
            h2 { "Try it" }
            form method="post" action="/key/try" {
                (hidden)
                fieldset {
                    legend { "Operation" }
                    @for (op, label) in [("generate", "Generate a data key"), ("encrypt", "Encrypt the text"),
                                         ("decrypt", "Decrypt the text (base64 ciphertext)"), ("mac", "MAC of the text")] {
                        label.radio { input type="radio" name="op" value=(op) checked[f.v("try", "op") == op || (f.v("try", "op").is_empty() && op == "generate")]; " " (label) }
                    }
                }
                label for="try-text" { "Text" }
                textarea id="try-text" name="text" rows="3" { (f.v("try", "text")) }
                (field("try-context", "context", "Context (associated data, optional)", f.v("try", "context"), false))
                button type="submit" { "Run" }
                (f.note("try"))
            }
        }
    }
}

pub(super) async fn post(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let e = f.get("enclave");
    let name = f.get("name");
    let c = &s.client;
    let r: Result<Option<Markup>, (&'static str, String)> = match path {
        "/key/rotate" => c
            .create_key(e, name, "", true)
            .await
            .map(|()| None)
            .map_err(|err| ("rotate", err.to_string())),
        "/key/delete" => {
            let versions = match f.get("version").trim() {
                "" => Ok(KeyVersions::Latest),
                "all" => Ok(KeyVersions::All),
                v => v
                    .parse()
                    .map(KeyVersions::One)
                    .map_err(|_| ("delete", format!("'{v}' is not a version number"))),
            };
            match versions {
                Err(x) => Err(x),
                Ok(_) if f.get("confirm") != name => Err((
                    "delete",
                    "the confirmation does not match the key's name".into(),
                )),
                Ok(v) => match c.delete_key(e, name, v).await {
                    Ok(()) if v == KeyVersions::All => {
                        return redirect(&format!("/keys?enclave={}", enc(e)))
                    }
                    Ok(()) => Ok(None),
                    Err(err) => Err(("delete", err.to_string())),
                },
            }
        }
        _ => try_op(s, e, name, f).await.map(Some),
    };
    let q = Form::parse(format!("enclave={}&name={}", enc(e), enc(name)).as_bytes());
    match r {
        Ok(None) => redirect(&key_url(e, name)),
        Ok(Some(m)) => detail(app, s, &q, &Flash::result("try", f, m)).await,
        Err((form, err)) => detail(app, s, &q, &Flash::failed(form, err, f)).await,
    }
}

async fn try_op(s: &Sess, e: &str, name: &str, f: &Form) -> Result<Markup, (&'static str, String)> {
    let c = &s.client;
    let text = f.get("text");
    let ad = f.get("context").as_bytes();
    let fail = |err: kms_client::Error| ("try", err.to_string());
    Ok(match f.get("op") {
        "generate" => {
            let r = c.generate(e, name, ad, 32).await.map_err(fail)?;
            html! { dl {
                dt { "Version" } dd { (r.version) }
                dt { "Plaintext data key (base64)" } dd.id #dk-plaintext { (B64.encode(&r.plaintext)) }
                dt { "Ciphertext (base64)" } dd.id #dk-ciphertext { (B64.encode(&r.ciphertext)) }
            } }
        }
        "encrypt" => {
            let r = c
                .encrypt(e, name, text.as_bytes(), ad)
                .await
                .map_err(fail)?;
            html! { dl { dt { "Version" } dd { (r.version) } dt { "Ciphertext (base64)" } dd.id #enc-ciphertext { (B64.encode(&r.ciphertext)) } } }
        }
        "decrypt" => {
            let ct = B64
                .decode(text.trim())
                .map_err(|err| ("try", format!("the text is not base64: {err}")))?;
            let r = c.decrypt(e, name, &ct, ad).await.map_err(fail)?;
            html! { dl {
                dt { "Plaintext" } dd.id #dec-text { (String::from_utf8_lossy(&r.plaintext)) }
                dt { "Plaintext (base64)" } dd.id #dec-plaintext { (B64.encode(&r.plaintext)) }
            } }
        }
        "mac" => {
            let r = c.mac(e, name, text.as_bytes()).await.map_err(fail)?;
            html! { dl { dt { "Version" } dd { (r.version) } dt { "MAC (hex)" } dd.id #mac-out { (hex::encode(&r.mac)) } } }
        }
        other => return Err(("try", format!("unknown operation '{other}'"))),
    })
}
