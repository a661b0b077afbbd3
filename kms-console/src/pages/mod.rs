//! The pages, one file per family; the layout and the form helpers they
//! share. Every page is plain HTML with forms and works without JavaScript;
//! the cluster page's live refresh is the only script (`console.js`).
//!
//! A successful POST answers 303 to the page it came from; a failed one
//! renders that page again with the server's message next to the form and
//! the form filled with what was typed (the [`Flash`]).

use std::fmt::Display;

use http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use crate::web::{html as respond, plain, App, Form, Resp, Sess};

mod audit;
mod cluster;
mod enclaves;
mod hsms;
mod identities;
mod keys;
mod words;

/// Routes a GET of a signed-in session.
pub(crate) async fn get(app: &App, s: &Sess, path: &str, q: &Form) -> Resp {
    let f = Flash::default();
    match path {
        "/" => cluster::page(app, s).await,
        "/live/cluster" => cluster::live(app, s).await,
        "/hsms" => hsms::page(app, s, &f).await,
        "/audit" => audit::page(app, s, q).await,
        "/enclaves" => enclaves::page(app, s, q, &f).await,
        "/keys" => keys::list(app, s, q, &f).await,
        "/key" => keys::detail(app, s, q, &f).await,
        "/identities" => identities::identities(app, s, q, &f).await,
        "/policies" => identities::policies(app, s, q, &f).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Routes a POST whose CSRF token was checked.
pub(crate) async fn post(app: &App, s: &Sess, path: &str, f: &Form) -> Resp {
    match path {
        "/enclaves/create" | "/enclaves/delete" => enclaves::post(app, s, path, f).await,
        "/keys/create" | "/keys/import" => keys::create(app, s, path, f).await,
        "/hsms/add" | "/hsms/remove" => hsms::post(app, s, path, f).await,
        "/key/rotate" | "/key/delete" | "/key/try" => keys::post(app, s, path, f).await,
        "/identities/create" | "/identities/delete" | "/identities/assign" => {
            identities::post_identity(app, s, path, f).await
        }
        "/policies/save" | "/policies/delete" => identities::post_policy(app, s, path, f).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1";
                   title { (title) " · KMS console" } link rel="stylesheet" href="/style.css"; }
            body { main { (body) } }
        }
    }
}

/// The page shown without a session.
pub(crate) fn signed_out(status: StatusCode, shared: bool) -> Resp {
    respond(
        status,
        bare(
            "Not signed in",
            html! {
                h1 { "Not signed in" }
                @if shared {
                    p { a href="/signin" { "Sign in" } " with your API key." }
                } @else {
                    p { "Open the one-time login URL that " code { "kms console" } " printed. "
                        "It works once; restart the console for a new one." }
                }
            },
        ),
    )
}

/// Shared mode's sign-in form: the person's own API key.
pub(crate) fn signin(status: StatusCode, token: &str, error: Option<&str>) -> Resp {
    respond(
        status,
        bare(
            "Sign in",
            html! {
                h1 { "Sign in to the KMS console" }
                p { "Sign in with your own API key (" code { "k1:..." } "). It is kept in this console's memory "
                    "for this session only, and what you see and may do is what your identity may do in the cluster." }
                form #signin method="post" action="/signin" {
                    input type="hidden" name="pre" value=(token);
                    label for="api-key" { "API key" }
                    input type="password" id="api-key" name="api_key" required autocomplete="off" autofocus;
                    button type="submit" { "Sign in" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                }
            },
        ),
    )
}

/// What a failed POST hands back to its page: which form failed, why, what
/// was typed; or the result of a successful action shown once (a new API
/// key, a ciphertext).
#[derive(Default)]
pub(crate) struct Flash {
    form: &'static str,
    error: Option<String>,
    values: Form,
    result: Option<Markup>,
}

impl Flash {
    fn failed(form: &'static str, e: impl Display, values: &Form) -> Self {
        Flash {
            form,
            error: Some(e.to_string()),
            values: values.clone(),
            result: None,
        }
    }

    fn result(form: &'static str, values: &Form, m: Markup) -> Self {
        Flash {
            form,
            error: None,
            values: values.clone(),
            result: Some(m),
        }
    }

    /// What was typed in `field` of `form`, if that form was just sent.
    fn v(&self, form: &str, field: &str) -> &str {
        if self.form == form {
            self.values.get(field)
        } else {
            ""
        }
    }

    /// The error or result next to `form`.
    fn note(&self, form: &str) -> Markup {
        if self.form != form {
            return html! {};
        }
        html! {
            @if let Some(e) = &self.error { p.error role="alert" { (e) } }
            @if let Some(r) = &self.result { div.result role="status" { (r) } }
        }
    }

    /// The HTTP status of a page rendered with this flash.
    fn status(&self) -> StatusCode {
        if self.error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }
}

/// The layout of every signed-in page.
fn layout(s: &Sess, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · KMS console" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a href="/" { "Cluster" }
                        a href={ "/enclaves" } { "Enclaves" }
                        @if let Some(e) = s.who.as_ref().map(|w| &w.enclave).filter(|e| !e.is_empty()) {
                            a href={ "/keys?enclave=" (crate::web::enc(e)) } { "Keys" }
                            a href={ "/identities?enclave=" (crate::web::enc(e)) } { "Identities" }
                        } @else {
                            a href="/identities" { "Identities" }
                        }
                        a href="/hsms" { "HSMs" }
                        a href="/audit" { "Audit" }
                    }
                    @if let Some(w) = &s.who {
                        span.who title=(w.identity) { (w.privilege) @if !w.enclave.is_empty() { " of " (w.enclave) } " " code { (short(&w.identity)) } }
                    }
                    form method="post" action="/logout" class="inline" {
                        (csrf(s))
                        button type="submit" { "Sign out" }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// The first characters of an identity, for display.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The hidden CSRF field every POST form carries.
fn csrf(s: &Sess) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A labelled text input.
fn field(id: &str, name: &str, label: &str, value: &str, required: bool) -> Markup {
    html! {
        label for=(id) { (label) }
        input type="text" id=(id) name=(name) value=(value) required[required] autocomplete="off";
    }
}

/// A page that failed as a whole (the listing itself was refused).
fn failed_page(s: &Sess, title: &str, what: &str, e: impl Display) -> Resp {
    respond(
        StatusCode::BAD_GATEWAY,
        layout(s, title, html! { p.error role="alert" { (what) ": " (e) } }),
    )
}

/// A page that failed as a whole after a failed form: both messages.
fn failed_page_after(s: &Sess, title: &str, what: &str, e: impl Display, f: &Flash) -> Resp {
    respond(
        StatusCode::BAD_GATEWAY,
        layout(
            s,
            title,
            html! {
                @if let Some(err) = &f.error { p.error role="alert" { (err) } }
                p.error role="alert" { (what) ": " (e) }
            },
        ),
    )
}

/// A protobuf timestamp as `YYYY-MM-DD HH:MM:SS UTC`.
fn ts(t: &Option<kms_client::proto::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds > 0 => ts_secs(t.seconds),
        _ => "-".into(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn ts_secs(secs: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| d.format(fmt).ok())
        .unwrap_or_else(|| secs.to_string())
}
