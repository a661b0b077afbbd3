//! The enclaves page: list (paged), create, delete (type the name again).

use maud::html;

use super::{csrf, failed_page_after, field, layout, ts, Flash};
use crate::web::{enc, html as respond, redirect, App, Form, Resp, Sess};

const PAGE: u32 = 100;

pub(super) async fn page(_app: &App, s: &Sess, q: &Form, f: &Flash) -> Resp {
    let prefix = q.get("prefix");
    let at = q.get("at");
    let list = match s.client.list_enclaves_page(prefix, at, PAGE).await {
        Ok(l) => l,
        Err(e) => return failed_page_after(s, "Enclaves", "listing enclaves failed", e, f),
    };
    let body = html! {
        form method="get" action="/enclaves" class="search" {
            (field("enc-prefix", "prefix", "Name starts with", prefix, false))
            button type="submit" { "Search" }
        }
        table {
            thead { tr { th scope="col" { "Enclave" } th scope="col" { "Created" } th scope="col" { "Created by" } th scope="col" { "Open" } } }
            tbody {
                @for e in &list.enclaves {
                    tr {
                        td { (e.name) } td { (ts(&e.created_at)) } td.id { (e.created_by) }
                        td {
                            a href={ "/keys?enclave=" (enc(&e.name)) } { "Keys" } " · "
                            a href={ "/identities?enclave=" (enc(&e.name)) } { "Identities" } " · "
                            a href={ "/policies?enclave=" (enc(&e.name)) } { "Policies" }
                        }
                    }
                }
            }
        }
        @if !list.continue_at.is_empty() {
            p { a href={ "/enclaves?prefix=" (enc(prefix)) "&at=" (enc(&list.continue_at)) } { "Next page" } }
        }
        section {
            h2 { "Create an enclave" }
            form method="post" action="/enclaves/create" {
                (csrf(s))
                (field("enc-new", "name", "Name", f.v("create", "name"), true))
                button type="submit" { "Create" }
                (f.note("create"))
            }
        }
        section {
            h2 { "Delete an enclave" }
            p { "Deletes the enclave and every key, policy and identity in it." }
            form method="post" action="/enclaves/delete" {
                (csrf(s))
                (field("enc-del", "name", "Enclave", f.v("delete", "name"), true))
                (field("enc-del-confirm", "confirm", "Type its name again to confirm", "", true))
                button.danger type="submit" { "Delete" }
                (f.note("delete"))
            }
        }
    };
    respond(f.status(), layout(s, "Enclaves", body))
}

pub(super) async fn post(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    let name = f.get("name").trim();
    let r = if path == "/enclaves/create" {
        s.client
            .create_enclave(name)
            .await
            .map_err(|e| ("create", e.to_string()))
    } else if f.get("confirm") != name {
        Err(("delete", "the confirmation does not match the name".into()))
    } else {
        s.client
            .delete_enclave(name)
            .await
            .map_err(|e| ("delete", e.to_string()))
    };
    match r {
        Ok(()) => redirect("/enclaves"),
        Err((form, e)) => page(app, s, &Form::default(), &Flash::failed(form, e, f)).await,
    }
}
