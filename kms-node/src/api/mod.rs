//! The HTTP API: `POST /v1/kms[/{enclave}]` with framed protobuf commands,
//! plus `/version`, health, metrics and backup/restore.
//!
//! A request flows: TLS handshake (the client certificate's public key is the
//! caller's identity) → [`route`] → [`kms`]: size limit, frame decoding,
//! authentication against the current state, then one handler call per frame
//! (one file per command family), each authorized on its own.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod asym;
mod cluster;
pub use cluster::server_status;
mod enclave;
mod identity;
mod key;
mod object;
mod pkcs11;
mod policy;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body_util::{BodyExt, Full};
use kms_client::{frame, proto, Command, Identity};
use prost::Message;

use crate::change::{ApplyError, Change};
use crate::model::{Privilege, State};
use crate::node::{Node, ProposeError};

pub type Body = Full<Bytes>;

/// An error answered to the client: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    /// kms-go's `ErrPermission`, matched exactly.
    pub fn denied() -> Self {
        Self::new(403, "access denied: insufficient permissions")
    }
    pub fn enclave_not_found() -> Self {
        Self::new(404, "enclave does not exist")
    }
    pub fn key_not_found() -> Self {
        Self::new(404, "key does not exist")
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Apply(a) => a.into(),
            ProposeError::Unavailable(m) => Self::new(503, m),
            ProposeError::NotLeader(_) => Self::new(503, "no leader"),
            ProposeError::Failed { status, message } => Self::new(status, message),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    pub privilege: Privilege,
    pub enclave: Option<String>,
    pub policy: Option<String>,
    pub is_root: bool,
}

impl Caller {
    fn from_state(node: &Node, st: &State, identity: &Identity) -> Option<Self> {
        Self::resolve(&node.root_identity, st, identity)
    }

    /// The caller `identity`: the root identity `root`, or one of the state's.
    fn resolve(root: &Identity, st: &State, identity: &Identity) -> Option<Self> {
        if identity == root {
            return Some(Caller {
                identity: identity.clone(),
                privilege: Privilege::SysAdmin,
                enclave: None,
                policy: None,
                is_root: true,
            });
        }
        let r = st.identities.get(identity)?;
        Some(Caller {
            identity: identity.clone(),
            privilege: r.privilege,
            enclave: r.enclave.clone(),
            policy: r.policy.clone(),
            is_root: false,
        })
    }
}

/// Everything a command handler needs.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub st: arc_swap::Guard<Arc<State>>,
    pub caller: &'a Caller,
    /// The enclave of the request path, if any.
    pub enclave: Option<&'a str>,
}

impl Ctx<'_> {
    /// Authorizes `cmd` on `name` (a key, policy or identity name; empty for listings).
    pub fn authorize(&self, cmd: Command, name: &str) -> Result<(), ApiError> {
        let c = self.caller;
        if c.privilege == Privilege::SysAdmin {
            return Ok(());
        }
        if cmd.is_cluster() || self.enclave.is_none() || c.enclave.as_deref() != self.enclave {
            return Err(self.deny(cmd, name));
        }
        match c.privilege {
            Privilege::Admin => Ok(()),
            _ if self.user_allows(cmd, name) => Ok(()),
            _ => Err(self.deny(cmd, name)),
        }
    }

    /// Whether a User's policy allows `cmd` on `name` (`None` name: any allow
    /// rule for `cmd`). KEY:LISTALL and KEY:DESCRIBE show what KEY:LIST and
    /// KEY:STATUS show, for every kind of key: a policy that allows the
    /// kms-go command allows its extension too (docs/api.md).
    pub fn user_allows(&self, cmd: Command, name: &str) -> bool {
        let alias = match cmd {
            Command::KeyListAll => Some(Command::KeyList),
            Command::KeyDescribe => Some(Command::KeyStatus),
            _ => None,
        };
        self.user_allows_exactly(cmd, name)
            || alias.is_some_and(|a| self.user_allows_exactly(a, name))
    }

    fn user_allows_exactly(&self, cmd: Command, name: &str) -> bool {
        let (Some(p), Some(e)) = (
            &self.caller.policy,
            self.enclave.and_then(|e| self.st.enclave(e)),
        ) else {
            return false;
        };
        let Some(rec) = e.policies.get(p) else {
            return false;
        };
        if name.is_empty() {
            return rec
                .policy
                .allow
                .keys()
                .any(|c| crate::policy::glob(&c.to_ascii_uppercase(), cmd.name()));
        }
        rec.policy.allows(cmd.name(), name)
    }

    /// Whether the caller may see `name` in a listing of `cmd`.
    pub fn visible(&self, cmd: Command, name: &str) -> bool {
        self.caller.privilege != Privilege::User || self.user_allows(cmd, name)
    }

    fn deny(&self, cmd: Command, name: &str) -> ApiError {
        self.node
            .audit
            .denied(&self.caller.identity, cmd, self.enclave, name);
        ApiError::denied()
    }

    /// The enclave of the request, which must exist.
    pub fn enclave(&self) -> Result<&Arc<crate::model::Enclave>, ApiError> {
        let name = self.enclave.ok_or_else(|| {
            ApiError::bad("this command needs an enclave: POST /v1/kms/{enclave}")
        })?;
        self.st
            .enclave(name)
            .ok_or_else(ApiError::enclave_not_found)
    }

    /// Commits a change, auditing its outcome, and reloads the state.
    pub async fn commit(&mut self, cmd: Command, change: Change) -> Result<u64, ApiError> {
        let (enclave, name) = change.subject();
        let (enclave, name) = (enclave.map(str::to_string), name);
        let r = self.node.propose(change).await;
        self.node.audit.change(
            &self.caller.identity,
            cmd,
            enclave.as_deref(),
            &name,
            r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        if r.is_ok() {
            self.node
                .metrics
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.st = self.node.state();
        Ok(r?)
    }
}

/// Enclave isolation: a SysAdmin may address any enclave (or none); an
/// Admin or User only its own. The one exception is a request of nothing
/// but IDENTITY:SELF sent to `/v1/kms` (no enclave): its answer is about the
/// caller alone, so every identity may ask it there.
fn isolation_allows(caller: &Caller, enclave: Option<&str>, cmds: &[Command]) -> bool {
    caller.privilege == Privilege::SysAdmin
        || caller.enclave.as_deref() == enclave
        || (enclave.is_none()
            && !cmds.is_empty()
            && cmds.iter().all(|c| *c == Command::IdentitySelf))
}

/// Most items in one page of a listing.
const LIST_MAX: usize = 1000;

/// The page size a listing request asks for (0: the maximum).
pub fn page_limit(req: &proto::ListRequest) -> usize {
    if req.limit == 0 {
        LIST_MAX
    } else {
        (req.limit as usize).min(LIST_MAX)
    }
}

/// One page of a name-ordered listing: the entries whose name starts with
/// the request's prefix, from its `continue_at` (or the prefix), mapped by
/// `item` (which skips an entry by returning `None`). Returns the items and
/// the name to continue at, empty when the listing is complete.
pub fn page<V, T>(
    map: &imbl::OrdMap<String, V>,
    req: &proto::ListRequest,
    mut item: impl FnMut(&String, &V) -> Option<T>,
) -> (Vec<T>, String) {
    let limit = page_limit(req);
    let start = if req.continue_at.is_empty() {
        &req.prefix
    } else {
        &req.continue_at
    };
    let mut out = Vec::new();
    for (name, v) in map.range(start.clone()..) {
        if !name.starts_with(&req.prefix) {
            break;
        }
        let Some(t) = item(name, v) else { continue };
        if out.len() == limit {
            return (out, name.clone());
        }
        out.push(t);
    }
    (out, String::new())
}

/// Decodes a request message, mapping garbage to a 400.
pub fn decode<M: Message + Default>(cmd: Command, payload: &[u8]) -> Result<M, ApiError> {
    M::decode(payload).map_err(|e| ApiError::bad(format!("malformed {cmd} request: {e}")))
}

pub fn validate_name(kind: &str, name: &str) -> Result<(), ApiError> {
    crate::model::validate_name(kind, name).map_err(ApiError::bad)
}

fn response(status: u16, content_type: &'static str, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn wants_json(req: &http::request::Parts) -> bool {
    req.headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.trim() == "application/json")
}

fn error_response(e: &ApiError, json: bool) -> Response<Body> {
    if json {
        let body = serde_json::json!({ "message": e.message }).to_string();
        response(e.status, "application/json", Bytes::from(body))
    } else {
        let body = proto::ErrResponse {
            message: e.message.clone(),
        }
        .encode_to_vec();
        response(e.status, "application/octet-stream", Bytes::from(body))
    }
}

/// Who is on the other end of a client connection.
#[derive(Clone)]
pub struct Access {
    /// The identity of the client's certificate; `None`: it sent none.
    pub identity: Option<Identity>,
    /// Whether `/v1/health/metrics` answers without a certificate.
    pub metrics_public: bool,
}

/// Serves one HTTP request of a client connection.
pub async fn route(
    node: Arc<Node>,
    access: Access,
    req: http::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let json = wants_json(&parts);
    let path = parts.uri.path().to_string();

    {
        let v = node.view();
        let why = v.removed.clone().or_else(|| {
            // A learner holds a partial state until its membership entry is
            // applied (by then it has every acknowledged write): no reads yet.
            (!v.members.is_empty() && !v.members.contains_key(&node.id())).then(|| {
                "this node is joining a cluster and does not serve until it is a member".into()
            })
        });
        if let Some(why) = why {
            if path != "/version" && path != "/v1/health/live" {
                return error_response(&ApiError::new(503, why), json);
            }
        }
    }
    let Some(identity) = access.identity else {
        return anonymous(&node, &parts, &path, json, access.metrics_public).await;
    };
    let result = match (&parts.method, path.as_str()) {
        (&Method::GET, "/version") => Ok(version(&node, json)),
        (&Method::GET, "/v1/health/live") => Ok(response(200, "text/plain", Bytes::new())),
        (&Method::GET, "/v1/health/ready") => Ok(ready(&node, &parts).await),
        (&Method::GET, "/v1/health/metrics") => Ok(metrics(&node)),
        (&Method::GET, "/v1/db") => backup(&node, &identity),
        (&Method::PUT, "/v1/db") => restore(&node, &identity, &parts, body).await,
        (&Method::POST, p) if p == "/v1/kms" || p.starts_with("/v1/kms/") => {
            let enclave = p
                .strip_prefix("/v1/kms")
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            match kms(&node, &identity, &parts, body, &enclave).await {
                Ok(Ok(r)) => Ok(r),
                // Recorded per command already: not a rejection.
                Ok(Err(e)) => return error_response(&e, json),
                Err(e) => Err(e),
            }
        }
        (
            _,
            "/version" | "/v1/health/live" | "/v1/health/ready" | "/v1/health/metrics" | "/v1/db"
            | "/v1/kms",
        ) => Err(ApiError::new(
            405,
            format!("method {} not allowed on {path}", parts.method),
        )),
        _ => Err(ApiError::new(
            404,
            format!("no such endpoint: {} {path}", parts.method),
        )),
    };
    result.unwrap_or_else(|e| {
        node.metrics.reject();
        error_response(&e, json)
    })
}

fn version(node: &Node, json: bool) -> Response<Body> {
    let v = proto::VersionResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: option_env!("KMS_GIT_COMMIT").unwrap_or("").into(),
        api_version: "v1".into(),
        host: node.addr.clone(),
        fips140: false,
    };
    if json {
        let body = serde_json::json!({"version": v.version, "commit": v.commit, "api_version": v.api_version, "host": v.host, "fips140": false});
        response(200, "application/json", Bytes::from(body.to_string()))
    } else {
        response(
            200,
            "application/octet-stream",
            Bytes::from(v.encode_to_vec()),
        )
    }
}

/// Ready: the node serves reads (it is unsealed and a member). With
/// `?write`: a write could also succeed now (a leader is known and every
/// member is reachable from it); otherwise 503 with the reason.
/// A request on a connection without a client certificate. Only what
/// reveals nothing but liveness (and the version) answers, as MinIO's KMS
/// does, so that probes, load balancers and uptime monitors can use it; the
/// metrics too if the operator made them public. Everything else is 401.
async fn anonymous(
    node: &Node,
    parts: &http::request::Parts,
    path: &str,
    json: bool,
    metrics_public: bool,
) -> Response<Body> {
    match (&parts.method, path) {
        (&Method::GET, "/version") => version(node, json),
        (&Method::GET, "/v1/health/live") => response(200, "text/plain", Bytes::new()),
        (&Method::GET, "/v1/health/ready") => ready(node, parts).await,
        (&Method::GET, "/v1/health/metrics") if metrics_public => metrics(node),
        _ => error_response(
            &ApiError::new(
                401,
                format!(
                    "{} {path} needs a client certificate: connect with your API key \
                     (TLS client authentication)",
                    parts.method
                ),
            ),
            json,
        ),
    }
}

async fn ready(node: &Node, parts: &http::request::Parts) -> Response<Body> {
    if !node.writer_alive() {
        return response(
            503,
            "text/plain",
            Bytes::from_static(b"the node is shutting down: state changes are not possible"),
        );
    }
    let write = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "write" || p.starts_with("write="))
    });
    if write {
        if let Some(why) = node.write_blocker().await {
            return response(503, "text/plain", Bytes::from(why));
        }
    }
    response(200, "text/plain", Bytes::new())
}

fn metrics(node: &Node) -> Response<Body> {
    let st = node.state();
    let v = node.view();
    let up = node.started.elapsed().as_secs_f64();
    let body = node.metrics.render(&[
        ("kms_uptime_seconds", "Seconds since the node started.", up),
        (
            "kms_memory_locked",
            "1 if the node's memory is locked (mlockall): key material is never swapped.",
            f64::from(u8::from(
                crate::harden::MEMORY_LOCKED.load(std::sync::atomic::Ordering::Relaxed),
            )),
        ),
        (
            "kms_commit_index",
            "Index of the last applied log entry.",
            st.applied as f64,
        ),
        ("kms_enclaves", "Enclaves.", st.enclaves.len() as f64),
        ("kms_keys", "Keys in all enclaves.", st.key_count() as f64),
        (
            "kms_cluster_nodes",
            "Members of the cluster.",
            v.members.len() as f64,
        ),
        (
            "kms_cluster_nodes_down",
            "Members the leader has not heard from within an election timeout (on the leader).",
            v.down.len() as f64,
        ),
        (
            "kms_is_leader",
            "1 if this node is the leader.",
            f64::from(u8::from(v.role == crate::replication::core::Role::Leader)),
        ),
        ("kms_raft_term", "Current election term.", v.term as f64),
        (
            "kms_raft_commit_index",
            "Highest log index known committed on every member.",
            v.commit as f64,
        ),
        (
            "kms_raft_last_index",
            "Last index of this node's log.",
            v.last_index as f64,
        ),
        (
            "kms_replication_lag_entries",
            "On the leader: the largest number of entries a member or learner is behind.",
            v.progress
                .values()
                .map(|(m, _)| v.last_index.saturating_sub(*m))
                .max()
                .unwrap_or(0) as f64,
        ),
        (
            "kms_leader_contact_seconds",
            "Seconds since this node last heard from the leader (0 on the leader).",
            v.leader_contact.map_or(-1.0, |t| t.elapsed().as_secs_f64()),
        ),
    ]);
    response(200, "text/plain; version=0.0.4", Bytes::from(body))
}

fn require_sysadmin(node: &Node, identity: &Identity, what: &'static str) -> Result<(), ApiError> {
    let st = node.state();
    match Caller::from_state(node, &st, identity) {
        Some(c) if c.privilege == Privilege::SysAdmin => Ok(()),
        _ => {
            node.audit.denied_op(identity, what);
            Err(ApiError::denied())
        }
    }
}

fn backup(node: &Node, identity: &Identity) -> Result<Response<Body>, ApiError> {
    require_sysadmin(node, identity, "BACKUP")?;
    let blob = crate::backup::create(node.hsm.as_ref(), &node.state()).map_err(|e| {
        node.audit.op(identity, "BACKUP", false);
        ApiError::new(500, e)
    })?;
    node.audit.op(identity, "BACKUP", true);
    Ok(response(200, "application/octet-stream", Bytes::from(blob)))
}

async fn restore(
    node: &Node,
    identity: &Identity,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<Response<Body>, ApiError> {
    require_sysadmin(node, identity, "RESTORE")?;
    let body = read_body(parts, body, 1 << 30).await?;
    let (st, n) = crate::backup::open(&node.configured, &body).map_err(|e| {
        node.audit.op(identity, "RESTORE", false);
        ApiError::bad(e)
    })?;
    let r = node.replace_state(st, n).await;
    node.audit.op(identity, "RESTORE", r.is_ok());
    r?;
    Ok(response(200, "application/octet-stream", Bytes::new()))
}

/// Reads a request body of at most `limit` bytes. A larger body gets 413;
/// up to [`DRAIN_MAX`] bytes of it are read and dropped first, so that the
/// client, still sending, receives the 413 instead of a broken connection.
async fn read_body(
    parts: &http::request::Parts,
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    const DRAIN_MAX: usize = 64 << 20;
    let too_large = || {
        ApiError::new(
            413,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|len| len <= limit as u64) {
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(buf.freeze()),
                Some(Err(e)) => {
                    return Err(ApiError::bad(format!("cannot read request body: {e}")))
                }
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if buf.len() + data.len() > limit {
                            break;
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    let mut drained = 0usize;
    while drained < DRAIN_MAX && declared.is_none_or(|len| len <= DRAIN_MAX as u64) {
        match body.frame().await {
            Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    Err(too_large())
}

/// `POST /v1/kms[/{enclave}]`. The outer error is a request rejected before
/// any command ran; the inner one an error of a command, already recorded in
/// the metrics.
async fn kms(
    node: &Arc<Node>,
    identity: &Identity,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    enclave: &str,
) -> Result<Result<Response<Body>, ApiError>, ApiError> {
    let started = Instant::now();
    let body = tokio::time::timeout(
        node.body_timeout,
        read_body(parts, body, node.max_request_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            408,
            format!("request body not received within {:?}", node.body_timeout),
        )
    })??;
    if !enclave.is_empty() {
        validate_name("enclave", enclave)?;
    }
    let frames = frame::decode_all(&body).map_err(|e| ApiError::bad(e.to_string()))?;
    let mut cmds = Vec::with_capacity(frames.len());
    for f in &frames {
        cmds.push(
            Command::from_id(f.id)
                .ok_or_else(|| ApiError::bad(format!("unknown command id {}", f.id)))?,
        );
    }
    let Some(&first) = cmds.first() else {
        return Err(ApiError::bad("the request holds no command"));
    };
    if cmds.iter().any(|c| c.is_write() != first.is_write()) {
        return Err(ApiError::bad(
            "a request must not mix commands that change state with commands that do not",
        ));
    }
    if !first.is_write() {
        // Reads wait for writes to this enclave (or, outside any enclave,
        // to anything) that another node may serve before this one.
        node.fence(enclave).await;
    }
    let st = node.state();
    let Some(caller) = Caller::from_state(node, &st, identity) else {
        node.audit.denied(
            identity,
            first,
            (!enclave.is_empty()).then_some(enclave),
            "",
        );
        node.metrics
            .record(first, frames.len(), 0, 403, started.elapsed());
        return Ok(Err(ApiError::denied()));
    };
    let mut ctx = Ctx {
        node,
        st,
        caller: &caller,
        enclave: (!enclave.is_empty()).then_some(enclave),
    };
    // Isolation: an identity of one enclave learns nothing about another,
    // not even whether it exists.
    if !isolation_allows(&caller, ctx.enclave, &cmds) {
        let e = ctx.deny(first, "");
        node.metrics
            .record(first, frames.len(), 0, 403, started.elapsed());
        return Ok(Err(e));
    }
    let mut out = BytesMut::with_capacity(frames.len() * 64);
    let mut result = Ok(());
    let mut processed = 0;
    for (i, (f, cmd)) in frames.iter().zip(&cmds).enumerate() {
        processed = i + 1;
        let r = match cmd.name().split(':').next() {
            Some("KEY") if cmd.is_asym() => asym::handle(&ctx, *cmd, f.payload).await,
            Some("KEY") if cmd.is_extension() => pkcs11::handle(&ctx, *cmd, f.payload),
            Some("KEY") => key::handle(&mut ctx, *cmd, f.payload).await,
            Some("ENCLAVE") => enclave::handle(&mut ctx, *cmd, f.payload).await,
            Some("OBJECT") => object::handle(&mut ctx, *cmd, f.payload).await,
            Some("POLICY") => policy::handle(&mut ctx, *cmd, f.payload).await,
            Some("IDENTITY") => identity::handle(&mut ctx, *cmd, f.payload).await,
            _ => cluster::handle(&mut ctx, *cmd, f.payload).await,
        };
        match r {
            Ok(msg) => {
                out.extend_from_slice(&(*cmd as u16).to_be_bytes());
                out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                out.extend_from_slice(&msg);
            }
            Err(mut e) => {
                if frames.len() > 1 {
                    e.message = format!("{} (frame {} of {})", e.message, i + 1, frames.len());
                }
                result = Err(e);
                break;
            }
        }
    }
    let status = result.as_ref().map(|_| 200).unwrap_or_else(|e| e.status);
    node.metrics
        .record(first, frames.len(), processed, status, started.elapsed());
    Ok(result.map(|()| response(200, "application/octet-stream", out.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityRecord, Time};
    use kms_client::ApiKey;

    fn record(privilege: Privilege, enclave: &str, policy: Option<&str>) -> Arc<IdentityRecord> {
        Arc::new(IdentityRecord {
            privilege,
            enclave: Some(enclave.to_string()),
            policy: policy.map(str::to_string),
            created_at: Time {
                secs: 1_700_000_000,
                nanos: 5,
            },
            created_by: format!("creator-of-{enclave}"),
        })
    }

    fn answer(caller: &Caller, st: &State, payload: &[u8]) -> proto::IdentitySelfResponse {
        let body = identity::identity_self(caller, st, payload).unwrap();
        proto::IdentitySelfResponse::decode(body.as_slice()).unwrap()
    }

    /// IDENTITY:SELF answers with the caller's own record, whatever the
    /// request names, and only it may cross the isolation check (and only
    /// to `/v1/kms`, not into another enclave).
    #[test]
    fn identity_self_reveals_only_the_caller() {
        let (root, user_a, admin_b, stranger) = (
            ApiKey::generate().identity(),
            ApiKey::generate().identity(),
            ApiKey::generate().identity(),
            ApiKey::generate().identity(),
        );
        let mut st = State::default();
        st.identities
            .insert(user_a.clone(), record(Privilege::User, "A", Some("p-a")));
        st.identities
            .insert(admin_b.clone(), record(Privilege::Admin, "B", None));

        let ua = Caller::resolve(&root, &st, &user_a).unwrap();
        let want = proto::IdentitySelfResponse {
            identity: user_a.to_string(),
            privilege: "User".into(),
            enclave: "A".into(),
            policy: "p-a".into(),
            is_root: false,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            created_by: "creator-of-A".into(),
        };
        assert_eq!(answer(&ua, &st, &[]), want);
        // A request naming another identity (as IDENTITY:STATUS would) or
        // an enclave gets the same answer: the fields are ignored.
        for other in [
            proto::IdentityRequest {
                identity: admin_b.to_string(),
            }
            .encode_to_vec(),
            proto::EnclaveRequest { name: "B".into() }.encode_to_vec(),
        ] {
            let body = identity::identity_self(&ua, &st, &other).unwrap();
            assert_eq!(
                proto::IdentitySelfResponse::decode(body.as_slice()).unwrap(),
                want
            );
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains(&admin_b.to_string()) && !text.contains("creator-of-B"));
        }
        // Garbage is a 400, not a panic.
        let e = identity::identity_self(&ua, &st, &[0xff, 0xff]).unwrap_err();
        assert_eq!(e.status, 400);

        let ab = Caller::resolve(&root, &st, &admin_b).unwrap();
        let got = answer(&ab, &st, &[]);
        assert_eq!(
            (
                got.identity,
                got.privilege.as_str(),
                got.enclave.as_str(),
                got.policy.as_str()
            ),
            (admin_b.to_string(), "Admin", "B", "")
        );

        let r = Caller::resolve(&root, &st, &root).unwrap();
        assert_eq!(
            answer(&r, &st, &[]),
            proto::IdentitySelfResponse {
                identity: root.to_string(),
                privilege: "SysAdmin".into(),
                is_root: true,
                ..Default::default()
            }
        );
        // An unknown identity is no caller: the request gets the usual 403.
        assert!(Caller::resolve(&root, &st, &stranger).is_none());

        // Isolation: IDENTITY:SELF alone, to /v1/kms or the caller's own
        // enclave; never into another enclave, never with other commands.
        let me = [Command::IdentitySelf];
        assert!(isolation_allows(&ua, None, &me));
        assert!(isolation_allows(&ua, Some("A"), &me));
        assert!(!isolation_allows(&ua, Some("B"), &me));
        assert!(!isolation_allows(&ua, Some("nonexistent"), &me));
        assert!(!isolation_allows(
            &ua,
            None,
            &[Command::IdentitySelf, Command::KeyList]
        ));
        assert!(!isolation_allows(&ua, None, &[Command::IdentityGet]));
        assert!(!isolation_allows(&ua, None, &[Command::ClusterAudit]));
        assert!(!isolation_allows(&ua, None, &[]));
        assert!(isolation_allows(&ua, Some("A"), &[Command::KeyList]));
        assert!(!isolation_allows(&ab, Some("A"), &me));
        assert!(isolation_allows(&r, Some("B"), &[Command::KeyList]));
        assert!(isolation_allows(&r, None, &[Command::ClusterAudit]));
    }

    #[test]
    fn audit_requests_are_checked() {
        let a = crate::audit::Audit::default();
        let id = ApiKey::generate();
        for i in 0..1500 {
            a.change(
                &id.identity(),
                Command::KeyCreate,
                Some("e"),
                &format!("k{i}"),
                Ok(()),
            );
        }
        let ask = |req: proto::AuditRequest| cluster::audit_answer(&a, 7, &req);
        let r = ask(proto::AuditRequest::default()).unwrap();
        assert_eq!((r.events.len(), r.node_id, r.oldest_seq), (100, 7, 1));
        assert_eq!(r.events[0].seq, 1500);
        assert_eq!(r.events[0].node_id, 7);
        assert_eq!(r.events[0].outcome, "ok");
        let r = ask(proto::AuditRequest {
            limit: u32::MAX,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.events.len(), 1000);
        let bad = |req: proto::AuditRequest| ask(req).unwrap_err();
        let e = bad(proto::AuditRequest {
            command: "KEY:FROB".into(),
            ..Default::default()
        });
        assert_eq!(e.status, 400);
        assert!(
            e.message.starts_with("unknown command 'KEY:FROB'"),
            "{}",
            e.message
        );
        // An API key given as the identity filter is refused, not echoed.
        let secret = id.to_secret_string();
        let e = bad(proto::AuditRequest {
            identity: secret.to_string(),
            ..Default::default()
        });
        assert_eq!(e.status, 400);
        assert!(!e.message.contains(&secret[3..]), "{}", e.message);
        let e = bad(proto::AuditRequest {
            identity: "h1:nope".into(),
            ..Default::default()
        });
        assert_eq!(e.status, 400);
        let e = bad(proto::AuditRequest {
            enclave: "a/b".into(),
            ..Default::default()
        });
        assert_eq!(e.status, 400);
    }
}
