//! Typed administration methods of [`Client`]: one method per command, the
//! framing hidden (as in mini-redis's `clients/client.rs`).
//!
//! Each method takes plain Rust arguments and returns the decoded response.
//! Listings come in two forms: `list_*_page` sends one request and returns
//! one page as the server gives it (at most `limit` items, 0 for the
//! server's maximum, and a `continue_at` token that is empty on the last
//! page), so that a caller such as a web console can page without loading
//! everything; `list_*` follows every page and returns all items.
//!
//! Methods whose name has no enclave argument are cluster commands (sent to
//! `/v1/kms`, SysAdmin only). Identity methods take `Option<&str>`: `None`
//! addresses the cluster's SysAdmin identities.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use bytes::Bytes;

use crate::client::{check, Client};
use crate::cmd::Command;
use crate::proto;
use crate::Error;

/// Which versions of a key [`Client::delete_key`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVersions {
    /// The latest version (older ones become the latest).
    Latest,
    /// One version, by number.
    One(u32),
    /// Every version: the key itself.
    All,
}

/// The privilege of an identity created with [`Client::create_identity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Everything, cluster and enclaves included (no enclave).
    SysAdmin,
    /// Everything inside one enclave.
    Admin,
    /// What its policy allows inside one enclave.
    User,
}

impl Privilege {
    /// The name the API uses (`SysAdmin`, `Admin`, `User`).
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::SysAdmin => "SysAdmin",
            Privilege::Admin => "Admin",
            Privilege::User => "User",
        }
    }
}

/// Follows `continue_at` from the first page to the last, collecting items.
/// A server that answers the same `continue_at` twice in a row is an error,
/// not an endless loop.
pub(crate) async fn all_pages<P, T, F, Fut>(
    mut page: F,
    split: impl Fn(P) -> (Vec<T>, String),
) -> Result<Vec<T>, Error>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<P, Error>>,
{
    let mut out = Vec::new();
    let mut continue_at = String::new();
    loop {
        let (items, next) = split(page(continue_at.clone()).await?);
        out.extend(items);
        if next.is_empty() {
            return Ok(out);
        }
        if next == continue_at {
            return Err(Error::Protocol(format!(
                "the listing does not advance past '{next}'"
            )));
        }
        continue_at = next;
    }
}

pub(crate) fn list_request(prefix: &str, continue_at: &str, limit: u32) -> proto::ListRequest {
    proto::ListRequest {
        prefix: prefix.into(),
        continue_at: continue_at.into(),
        limit,
    }
}

fn rule_sets(m: &BTreeMap<String, Vec<String>>) -> HashMap<String, proto::RuleSet> {
    m.iter()
        .map(|(cmd, patterns)| {
            let rules = patterns.iter().map(|p| (p.clone(), proto::Rule {}));
            (
                cmd.clone(),
                proto::RuleSet {
                    rules: rules.collect(),
                },
            )
        })
        .collect()
}

/// A CLUSTER:AUDIT query: empty filters match anything, `limit` 0 means
/// 100 (at most 1,000), `before_seq` 0 means from the newest event.
pub type AuditQuery = proto::AuditRequest;

/// Merges the answers of several nodes to CLUSTER:AUDIT into one list,
/// newest first (by time, then node id, then sequence number), at most
/// `limit` events. Each node numbers its own events: sequence numbers of
/// different nodes are not comparable, times are.
pub fn merge_audit(
    answers: impl IntoIterator<Item = proto::AuditResponse>,
    limit: usize,
) -> Vec<proto::AuditEvent> {
    let mut all: Vec<proto::AuditEvent> = answers.into_iter().flat_map(|a| a.events).collect();
    let key = |e: &proto::AuditEvent| {
        let t = e.time.unwrap_or_default();
        (t.seconds, t.nanos, e.node_id, e.seq)
    };
    all.sort_by_key(|e| std::cmp::Reverse(key(e)));
    all.truncate(limit);
    all
}

impl Client {
    // ---- audit and self-description ----

    /// CLUSTER:AUDIT on whichever server answers. Each node keeps the events
    /// it recorded itself: see [`Client::audit_at`] and [`Client::audit_all`]
    /// for a view of the whole cluster.
    pub async fn audit(&self, q: &AuditQuery) -> Result<proto::AuditResponse, Error> {
        self.call(None, Command::ClusterAudit, q).await
    }

    /// CLUSTER:AUDIT on the server `endpoints()[idx]`, without failover.
    pub async fn audit_at(
        &self,
        idx: usize,
        q: &AuditQuery,
    ) -> Result<proto::AuditResponse, Error> {
        self.call_at(idx, None, Command::ClusterAudit, q).await
    }

    /// CLUSTER:AUDIT on every server at once: one result per endpoint, in
    /// the order of [`Client::endpoints`] (merge them with [`merge_audit`]).
    pub async fn audit_all(&self, q: &AuditQuery) -> Vec<Result<proto::AuditResponse, Error>> {
        let mut tasks = tokio::task::JoinSet::new();
        for idx in 0..self.endpoints().len() {
            let (c, q) = (self.clone(), q.clone());
            tasks.spawn(async move { (idx, c.audit_at(idx, &q).await) });
        }
        let mut out: Vec<Result<proto::AuditResponse, Error>> = (0..self.endpoints().len())
            .map(|_| Err(Error::Protocol("no answer".into())))
            .collect();
        while let Some(r) = tasks.join_next().await {
            if let Ok((idx, r)) = r {
                out[idx] = r;
            }
        }
        out
    }

    /// IDENTITY:SELF: the caller's own identity record (any identity the
    /// cluster knows may ask).
    pub async fn whoami(&self) -> Result<proto::IdentitySelfResponse, Error> {
        self.call(None, Command::IdentitySelf, &proto::IdentitySelfRequest {})
            .await
    }

    // ---- cluster ----

    /// CLUSTER:STATUS: the status of every member that answers, and the
    /// addresses of those that do not.
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatusResponse, Error> {
        self.call(
            None,
            Command::ClusterStatus,
            &proto::ClusterStatusRequest {},
        )
        .await
    }

    /// CLUSTER:ADDNODE: joins the fresh node at `url` (same HSM key) to the cluster.
    pub async fn add_node(&self, url: &str) -> Result<(), Error> {
        let req = proto::AddClusterNodeRequest { host: url.into() };
        self.exec(None, Command::ClusterAddNode, &req).await
    }

    /// CLUSTER:REMOVENODE: removes the node at `url` from a healthy cluster.
    pub async fn remove_node(&self, url: &str) -> Result<(), Error> {
        let req = proto::RemoveClusterNodeRequest {
            host: url.into(),
            delete_cluster_on_host: false,
        };
        self.exec(None, Command::ClusterRemoveNode, &req).await
    }

    /// CLUSTER:EDIT: force-removes the nodes `remove_ids` from the view of
    /// the node at `url` (no quorum needed). The override applies to that
    /// node only, so this client should be configured with `url` alone.
    pub async fn edit_cluster(&self, url: &str, remove_ids: &[u32]) -> Result<(), Error> {
        let req = proto::EditClusterRequest {
            host: url.into(),
            remove_ids: remove_ids.to_vec(),
        };
        self.exec(None, Command::ClusterEdit, &req).await
    }

    /// CLUSTER:ADDHSM: seals the state with the configured HSM `name` too
    /// (`overwrite` replaces that HSM's existing entry).
    pub async fn add_hsm(&self, name: &str, overwrite: bool) -> Result<(), Error> {
        let req = proto::AddHsmRequest {
            name: name.into(),
            overwrite,
        };
        self.exec(None, Command::ClusterAddHsm, &req).await
    }

    /// CLUSTER:REMOVEHSM: removes the root key sealed by the HSM `name`.
    pub async fn remove_hsm(&self, name: &str) -> Result<(), Error> {
        let req = proto::RemoveHsmRequest { name: name.into() };
        self.exec(None, Command::ClusterRemoveHsm, &req).await
    }

    /// `GET /v1/db`: a sealed backup of the whole state.
    pub async fn backup(&self) -> Result<Bytes, Error> {
        check(self.request(http::Method::GET, "/v1/db", None).await?)
    }

    /// `PUT /v1/db`: restores the state from a sealed backup.
    pub async fn restore(&self, backup: Bytes) -> Result<(), Error> {
        check(
            self.request(http::Method::PUT, "/v1/db", Some(backup))
                .await?,
        )
        .map(drop)
    }

    // ---- enclaves ----

    /// ENCLAVE:DELETE: deletes the enclave `name` and everything in it.
    pub async fn delete_enclave(&self, name: &str) -> Result<(), Error> {
        let req = proto::EnclaveRequest { name: name.into() };
        self.exec(None, Command::EnclaveDelete, &req).await
    }

    /// ENCLAVE:STATUS of the enclave `name`.
    pub async fn enclave_status(&self, name: &str) -> Result<proto::EnclaveStatusResponse, Error> {
        let req = proto::EnclaveRequest { name: name.into() };
        self.call(None, Command::EnclaveStatus, &req).await
    }

    /// One page of ENCLAVE:LIST: enclaves whose name starts with `prefix`,
    /// from `continue_at` (empty: the first page), at most `limit` (0: the
    /// server's maximum).
    pub async fn list_enclaves_page(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListEnclavesResponse, Error> {
        let req = list_request(prefix, continue_at, limit);
        self.call(None, Command::EnclaveList, &req).await
    }

    /// Every page of ENCLAVE:LIST with `prefix`.
    pub async fn list_enclaves(
        &self,
        prefix: &str,
    ) -> Result<Vec<proto::EnclaveStatusResponse>, Error> {
        all_pages(
            |at| async move { self.list_enclaves_page(prefix, &at, 0).await },
            |p| (p.enclaves, p.continue_at),
        )
        .await
    }

    // ---- keys ----

    /// KEY:IMPORT: creates the key `name` of `key_type` from raw key bytes.
    pub async fn import_key(
        &self,
        enclave: &str,
        name: &str,
        key_type: &str,
        key: &[u8],
    ) -> Result<(), Error> {
        let mut req = proto::ImportKeyRequest {
            name: name.into(),
            r#type: key_type.into(),
            key: key.to_vec(),
        };
        let r = self.exec(Some(enclave), Command::KeyImport, &req).await;
        // The request's copy of the key material is wiped once sent.
        zeroize::Zeroize::zeroize(&mut req.key);
        r
    }

    /// KEY:DELETE: deletes the latest version, one version, or the whole key.
    pub async fn delete_key(
        &self,
        enclave: &str,
        name: &str,
        versions: KeyVersions,
    ) -> Result<(), Error> {
        let (version, all_versions) = match versions {
            KeyVersions::Latest => (0, false),
            KeyVersions::One(v) => (v, false),
            KeyVersions::All => (0, true),
        };
        let req = proto::DeleteKeyRequest {
            name: name.into(),
            version,
            all_versions,
        };
        self.exec(Some(enclave), Command::KeyDelete, &req).await
    }

    /// One page of KEY:LIST: keys whose name starts with `prefix`, from
    /// `continue_at` (empty: the first page), at most `limit` (0: the
    /// server's maximum).
    pub async fn list_keys_page(
        &self,
        enclave: &str,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListKeysResponse, Error> {
        let req = list_request(prefix, continue_at, limit);
        self.call(Some(enclave), Command::KeyList, &req).await
    }

    /// Every page of KEY:LIST with `prefix`.
    pub async fn list_keys(
        &self,
        enclave: &str,
        prefix: &str,
    ) -> Result<Vec<proto::KeyStatusResponse>, Error> {
        all_pages(
            |at| async move { self.list_keys_page(enclave, prefix, &at, 0).await },
            |p| (p.keys, p.continue_at),
        )
        .await
    }

    /// KEY:MAC: HMAC-SHA256 of `message` under the latest version of `name`.
    pub async fn mac(
        &self,
        enclave: &str,
        name: &str,
        message: &[u8],
    ) -> Result<proto::MacResponse, Error> {
        let req = proto::MacRequest {
            name: name.into(),
            version: 0,
            message: message.to_vec(),
        };
        self.call(Some(enclave), Command::KeyMac, &req).await
    }

    // ---- identities ----

    /// IDENTITY:CREATE. `enclave` is `None` for a SysAdmin identity, and
    /// names the identity's enclave otherwise.
    pub async fn create_identity(
        &self,
        enclave: Option<&str>,
        identity: &str,
        privilege: Privilege,
    ) -> Result<(), Error> {
        let req = proto::CreateIdentityRequest {
            identity: identity.into(),
            privilege: privilege.as_str().into(),
            ..Default::default()
        };
        self.exec(enclave, Command::IdentityCreate, &req).await
    }

    /// IDENTITY:DELETE (`enclave` `None`: a SysAdmin identity).
    pub async fn delete_identity(
        &self,
        enclave: Option<&str>,
        identity: &str,
    ) -> Result<(), Error> {
        let req = proto::IdentityRequest {
            identity: identity.into(),
        };
        self.exec(enclave, Command::IdentityDelete, &req).await
    }

    /// One page of IDENTITY:LIST (`enclave` `None`: the SysAdmin
    /// identities): identities starting with `prefix`, from `continue_at`
    /// (empty: the first page), at most `limit` (0: the server's maximum).
    pub async fn list_identities_page(
        &self,
        enclave: Option<&str>,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListIdentitiesResponse, Error> {
        let req = list_request(prefix, continue_at, limit);
        self.call(enclave, Command::IdentityList, &req).await
    }

    /// Every page of IDENTITY:LIST with `prefix`.
    pub async fn list_identities(
        &self,
        enclave: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<proto::IdentityResponse>, Error> {
        all_pages(
            |at| async move { self.list_identities_page(enclave, prefix, &at, 0).await },
            |p| (p.identities, p.continue_at),
        )
        .await
    }

    // ---- policies ----

    /// POLICY:CREATE: creates or replaces the policy `name`. `allow` and
    /// `deny` map command names (`KEY:GENERATE`) to glob patterns over key
    /// names, as in the policy's JSON form.
    pub async fn create_policy(
        &self,
        enclave: &str,
        name: &str,
        allow: &BTreeMap<String, Vec<String>>,
        deny: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), Error> {
        let req = proto::CreatePolicyRequest {
            name: name.into(),
            allow: rule_sets(allow),
            deny: rule_sets(deny),
        };
        self.exec(Some(enclave), Command::PolicyCreate, &req).await
    }

    /// POLICY:ASSIGN: gives the User `identity` the policy `policy`.
    pub async fn assign_policy(
        &self,
        enclave: &str,
        policy: &str,
        identity: &str,
    ) -> Result<(), Error> {
        let req = proto::AssignPolicyRequest {
            identity: identity.into(),
            policy: policy.into(),
        };
        self.exec(Some(enclave), Command::PolicyAssign, &req).await
    }

    /// POLICY:DELETE.
    pub async fn delete_policy(&self, enclave: &str, name: &str) -> Result<(), Error> {
        let req = proto::PolicyRequest { name: name.into() };
        self.exec(Some(enclave), Command::PolicyDelete, &req).await
    }

    /// POLICY:GET: the policy `name` with its rules.
    pub async fn policy(&self, enclave: &str, name: &str) -> Result<proto::PolicyResponse, Error> {
        let req = proto::PolicyRequest { name: name.into() };
        self.call(Some(enclave), Command::PolicyGet, &req).await
    }

    /// One page of POLICY:LIST: policies whose name starts with `prefix`,
    /// from `continue_at` (empty: the first page), at most `limit` (0: the
    /// server's maximum).
    pub async fn list_policies_page(
        &self,
        enclave: &str,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListPoliciesResponse, Error> {
        let req = list_request(prefix, continue_at, limit);
        self.call(Some(enclave), Command::PolicyList, &req).await
    }

    /// Every page of POLICY:LIST with `prefix`.
    pub async fn list_policies(
        &self,
        enclave: &str,
        prefix: &str,
    ) -> Result<Vec<proto::PolicyStatusResponse>, Error> {
        all_pages(
            |at| async move { self.list_policies_page(enclave, prefix, &at, 0).await },
            |p| (p.policies, p.continue_at),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_names_are_the_apis() {
        assert_eq!(Privilege::SysAdmin.as_str(), "SysAdmin");
        assert_eq!(Privilege::Admin.as_str(), "Admin");
        assert_eq!(Privilege::User.as_str(), "User");
    }

    #[test]
    fn rules_map_commands_to_patterns() {
        let mut allow = BTreeMap::new();
        allow.insert("KEY:GENERATE".to_string(), vec!["a*".into(), "b".into()]);
        let r = rule_sets(&allow);
        let mut pats: Vec<_> = r["KEY:GENERATE"].rules.keys().cloned().collect();
        pats.sort();
        assert_eq!(pats, ["a*", "b"]);
    }

    fn event(secs: i64, node_id: u32, seq: u64) -> proto::AuditEvent {
        proto::AuditEvent {
            seq,
            node_id,
            time: Some(proto::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn audit_answers_merge_newest_first() {
        let a = proto::AuditResponse {
            events: vec![event(30, 1, 3), event(10, 1, 2), event(5, 1, 1)],
            node_id: 1,
            oldest_seq: 1,
        };
        let b = proto::AuditResponse {
            events: vec![event(20, 2, 9), event(10, 2, 8)],
            node_id: 2,
            oldest_seq: 8,
        };
        let got: Vec<(u32, u64)> = merge_audit([a.clone(), b.clone()], 4)
            .iter()
            .map(|e| (e.node_id, e.seq))
            .collect();
        assert_eq!(got, [(1, 3), (2, 9), (2, 8), (1, 2)]);
        assert_eq!(merge_audit([a, b], 100).len(), 5);
        assert!(merge_audit([], 10).is_empty());
    }

    #[tokio::test]
    async fn all_pages_follows_continue_at() {
        // Three pages: "" -> "b" -> "c" -> done.
        let pages = |at: String| async move {
            Ok::<_, Error>(match at.as_str() {
                "" => (vec![1, 2], "b".to_string()),
                "b" => (vec![3], "c".to_string()),
                _ => (vec![4], String::new()),
            })
        };
        let all = all_pages(pages, |p| p).await.unwrap();
        assert_eq!(all, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn all_pages_stops_when_the_listing_does_not_advance() {
        let stuck = |_at: String| async { Ok::<_, Error>((vec![1], "b".to_string())) };
        let e = all_pages(stuck, |p| p).await.unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
    }
}
