//! Identities and policies: list, create an identity (its new API key shown
//! once), delete, assign a policy; list policies and edit one as JSON, with
//! the parse error shown inline.

use std::collections::BTreeMap;

use kms_client::{ApiKey, Privilege};
use maud::html;

use super::{csrf, failed_page, failed_page_after, field, layout, ts, Flash};
use crate::web::{enc, html as respond, redirect, App, Form, Resp, Sess};

const PAGE: u32 = 100;

fn privilege_name(p: u32) -> &'static str {
    match p {
        kms_client::proto::privilege::SYS_ADMIN => "SysAdmin",
        kms_client::proto::privilege::ADMIN => "Admin",
        _ => "User",
    }
}

fn opt(e: &str) -> Option<&str> {
    (!e.is_empty()).then_some(e)
}

pub(super) async fn identities(_app: &App, s: &Sess, q: &Form, f: &Flash) -> Resp {
    let e = q.get("enclave");
    let at = q.get("at");
    let title = if e.is_empty() {
        "SysAdmin identities".to_string()
    } else {
        format!("Identities of {e}")
    };
    let list = match s
        .client
        .list_identities_page(opt(e), q.get("prefix"), at, PAGE)
        .await
    {
        Ok(l) => l,
        Err(err) => return failed_page_after(s, &title, "listing identities failed", err, f),
    };
    // What each identity may do: its policy in plain words (each distinct
    // policy read once per page).
    let mut may: BTreeMap<String, maud::Markup> = BTreeMap::new();
    for i in &list.identities {
        if i.privilege != kms_client::proto::privilege::USER || i.policy.is_empty() || e.is_empty()
        {
            continue;
        }
        if !may.contains_key(&i.policy) {
            let m = match s.client.policy(e, &i.policy).await {
                Ok(p) => super::words::policy(&p.allow, &p.deny),
                Err(err) => html! { span.error { "policy " code { (i.policy) } ": " (err) } },
            };
            may.insert(i.policy.clone(), m);
        }
    }
    let hidden = html! { (csrf(s)) input type="hidden" name="enclave" value=(e); };
    let body = html! {
        form method="get" action="/identities" class="search" {
            (field("id-enclave", "enclave", "Enclave (empty: the SysAdmin identities)", e, false))
            button type="submit" { "Show" }
        }
        table {
            thead { tr { th scope="col" { "Identity" } th scope="col" { "Privilege" } th scope="col" { "Policy" }
                         th scope="col" { "May do" } th scope="col" { "Created" } th scope="col" { "Created by" } } }
            tbody {
                @for i in &list.identities {
                    tr { td.id { (i.identity) } td { (privilege_name(i.privilege)) } td { (i.policy) }
                         td {
                            @match (privilege_name(i.privilege), may.get(&i.policy)) {
                                ("User", Some(m)) => { (m) }
                                ("User", None) => { "Nothing: a User without a policy is refused everything." }
                                (p, _) => { (super::words::privilege(p, e)) }
                            }
                         }
                         td { (ts(&i.created_at)) } td.id { (i.created_by) } }
                }
            }
        }
        @if !list.continue_at.is_empty() {
            p { a href={ "/identities?enclave=" (enc(e)) "&at=" (enc(&list.continue_at)) } { "Next page" } }
        }
        section {
            h2 { "Create an identity" }
            p { "The console makes a new API key; its identity is created in the cluster and the key is shown once." }
            form method="post" action="/identities/create" {
                (hidden)
                label for="id-priv" { "Privilege" }
                select id="id-priv" name="privilege" {
                    @for p in ["User", "Admin", "SysAdmin"] {
                        option value=(p) selected[f.v("create", "privilege") == p] { (p) }
                    }
                }
                (field("id-policy", "policy", "Policy (User identities, optional)", f.v("create", "policy"), false))
                button type="submit" { "Create" }
                (f.note("create"))
            }
        }
        section {
            h2 { "Assign a policy" }
            form method="post" action="/identities/assign" {
                (hidden)
                (field("as-id", "identity", "Identity", f.v("assign", "identity"), true))
                (field("as-policy", "policy", "Policy", f.v("assign", "policy"), true))
                button type="submit" { "Assign" }
                (f.note("assign"))
            }
        }
        section {
            h2 { "Delete an identity" }
            form method="post" action="/identities/delete" {
                (hidden)
                (field("del-id", "identity", "Identity", f.v("delete", "identity"), true))
                (field("del-id-confirm", "confirm", "Type it again to confirm", "", true))
                button.danger type="submit" { "Delete" }
                (f.note("delete"))
            }
        }
    };
    respond(f.status(), layout(s, &title, body))
}

pub(super) async fn post_identity(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let e = f.get("enclave");
    let c = &s.client;
    let back = Form::parse(format!("enclave={}", enc(e)).as_bytes());
    let r = match path {
        "/identities/create" => {
            let privilege = match f.get("privilege") {
                "SysAdmin" => Privilege::SysAdmin,
                "Admin" => Privilege::Admin,
                _ => Privilege::User,
            };
            let enclave = if privilege == Privilege::SysAdmin {
                None
            } else {
                opt(e)
            };
            let key = ApiKey::generate();
            let id = key.identity().to_string();
            let mut r = c.create_identity(enclave, &id, privilege).await;
            if let (Ok(()), Some(en), p) = (&r, enclave, f.get("policy").trim()) {
                if !p.is_empty() {
                    r = c.assign_policy(en, p, &id).await;
                }
            }
            match r {
                Ok(()) => {
                    let secret = key.to_secret_string();
                    let shown = html! {
                        p { strong { "Copy this API key now: it is not stored and will not be shown again." } }
                        label for="new-key" { "API key" }
                        input.id type="text" id="new-key" readonly value=(secret.as_str());
                        p { "Identity: " span.id { (id) } }
                    };
                    return identities(
                        app,
                        s,
                        &back,
                        &Flash::result("create", &Form::default(), shown),
                    )
                    .await;
                }
                Err(err) => Err(("create", err.to_string())),
            }
        }
        "/identities/assign" => match opt(e) {
            None => Err((
                "assign",
                "policies belong to an enclave: choose one first".into(),
            )),
            Some(en) => c
                .assign_policy(en, f.get("policy").trim(), f.get("identity").trim())
                .await
                .map_err(|err| ("assign", err.to_string())),
        },
        _ => {
            let id = f.get("identity").trim();
            if f.get("confirm").trim() != id {
                Err((
                    "delete",
                    "the confirmation does not match the identity".into(),
                ))
            } else {
                c.delete_identity(opt(e), id)
                    .await
                    .map_err(|err| ("delete", err.to_string()))
            }
        }
    };
    match r {
        Ok(()) => redirect(&format!("/identities?enclave={}", enc(e))),
        Err((form, err)) => identities(app, s, &back, &Flash::failed(form, err, f)).await,
    }
}

/// A policy's JSON form (`{"allow": {CMD: [patterns]}, "deny": {...}}`).
type Rules = BTreeMap<String, Vec<String>>;

fn parse_policy(text: &str) -> Result<(Rules, Rules), String> {
    #[derive(Default)]
    struct P {
        allow: Rules,
        deny: Rules,
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid policy JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("invalid policy JSON: expected an object with \"allow\" and \"deny\"")?;
    let mut p = P::default();
    for (k, rules) in obj {
        let dst = match k.as_str() {
            "allow" => &mut p.allow,
            "deny" => &mut p.deny,
            other => return Err(format!("invalid policy JSON: unknown field \"{other}\"")),
        };
        let rules = rules
            .as_object()
            .ok_or_else(|| format!("\"{k}\" must map commands to lists of name patterns"))?;
        for (cmd, pats) in rules {
            let pats = pats
                .as_array()
                .and_then(|a| a.iter().map(|p| p.as_str().map(str::to_string)).collect())
                .ok_or_else(|| format!("\"{k}\".\"{cmd}\" must be a list of strings"))?;
            dst.insert(cmd.clone(), pats);
        }
    }
    Ok((p.allow, p.deny))
}

fn rules_json(
    m: &std::collections::HashMap<String, kms_client::proto::RuleSet>,
) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    let mut keys: Vec<_> = m.keys().collect();
    keys.sort();
    for k in keys {
        let mut pats: Vec<_> = m[k].rules.keys().cloned().collect();
        pats.sort();
        o.insert(k.clone(), serde_json::json!(pats));
    }
    serde_json::Value::Object(o)
}

pub(super) async fn policies(_app: &App, s: &Sess, q: &Form, f: &Flash) -> Resp {
    let e = q.get("enclave");
    let title = format!("Policies of {e}");
    let list = match s.client.list_policies_page(e, "", q.get("at"), PAGE).await {
        Ok(l) => l,
        Err(err) => return failed_page_after(s, &title, "listing policies failed", err, f),
    };
    // The editor: what was typed, else the policy opened with ?name=.
    let (mut name, mut text) = (
        f.v("save", "name").to_string(),
        f.v("save", "json").to_string(),
    );
    let open = q.get("name");
    let mut words = None;
    if name.is_empty() && !open.is_empty() {
        match s.client.policy(e, open).await {
            Ok(p) => {
                words = Some(super::words::policy(&p.allow, &p.deny));
                name = p.name.clone();
                let v =
                    serde_json::json!({"allow": rules_json(&p.allow), "deny": rules_json(&p.deny)});
                text = serde_json::to_string_pretty(&v).unwrap_or_default();
            }
            Err(err) => return failed_page(s, &title, "reading the policy failed", err),
        }
    }
    if text.is_empty() {
        text = "{\n  \"allow\": {\n    \"KEY:GENERATE\": [\"*\"]\n  },\n  \"deny\": {}\n}".into();
    }
    let body = html! {
        table {
            thead { tr { th scope="col" { "Policy" } th scope="col" { "Created" } th scope="col" { "Created by" } } }
            tbody {
                @for p in &list.policies {
                    tr { td { a href={ "/policies?enclave=" (enc(e)) "&name=" (enc(&p.name)) } { (p.name) } }
                         td { (ts(&p.created_at)) } td.id { (p.created_by) } }
                }
            }
        }
        @if !list.continue_at.is_empty() {
            p { a href={ "/policies?enclave=" (enc(e)) "&at=" (enc(&list.continue_at)) } { "Next page" } }
        }
        @if let Some(w) = &words {
            section {
                h2 { "What " code { (name) } " allows, in plain words" }
                (w)
            }
        }
        section {
            h2 { "Create or replace a policy" }
            form method="post" action="/policies/save" {
                (csrf(s))
                input type="hidden" name="enclave" value=(e);
                (field("pol-name", "name", "Name", &name, true))
                label for="pol-json" { "Policy (JSON: commands to name patterns)" }
                textarea id="pol-json" name="json" rows="12" spellcheck="false" { (text) }
                button type="submit" { "Save" }
                (f.note("save"))
            }
        }
        section {
            h2 { "Delete a policy" }
            form method="post" action="/policies/delete" {
                (csrf(s))
                input type="hidden" name="enclave" value=(e);
                (field("pol-del", "name", "Policy", f.v("delete", "name"), true))
                (field("pol-del-confirm", "confirm", "Type its name again to confirm", "", true))
                button.danger type="submit" { "Delete" }
                (f.note("delete"))
            }
        }
    };
    respond(f.status(), layout(s, &title, body))
}

pub(super) async fn post_policy(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let e = f.get("enclave");
    let name = f.get("name").trim();
    let r = if path == "/policies/save" {
        match parse_policy(f.get("json")) {
            Err(err) => Err(("save", err)),
            Ok((allow, deny)) => s
                .client
                .create_policy(e, name, &allow, &deny)
                .await
                .map_err(|err| ("save", err.to_string())),
        }
    } else if f.get("confirm").trim() != name {
        Err(("delete", "the confirmation does not match the name".into()))
    } else {
        s.client
            .delete_policy(e, name)
            .await
            .map_err(|err| ("delete", err.to_string()))
    };
    let back = Form::parse(format!("enclave={}", enc(e)).as_bytes());
    match r {
        Ok(()) if path == "/policies/save" => {
            redirect(&format!("/policies?enclave={}&name={}", enc(e), enc(name)))
        }
        Ok(()) => redirect(&format!("/policies?enclave={}", enc(e))),
        Err((form, err)) => policies(app, s, &back, &Flash::failed(form, err, f)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_json() {
        let (a, d) = parse_policy(r#"{"allow":{"KEY:GENERATE":["a*"]},"deny":{}}"#).unwrap();
        assert_eq!(a["KEY:GENERATE"], ["a*"]);
        assert!(d.is_empty());
        assert!(parse_policy("{").unwrap_err().contains("line 1"));
        assert!(parse_policy(r#"{"allow":{"X":"a"}}"#).is_err());
        assert!(parse_policy(r#"{"permit":{}}"#).is_err());
    }
}
