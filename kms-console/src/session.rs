//! Sign-in and sessions.
//!
//! Local mode prints a one-time login URL whose token (256 random bits) is
//! accepted once: it becomes a session. A session id is 256 random bits,
//! sent only as an `HttpOnly`, `SameSite=Strict` cookie; the console keeps
//! only its SHA-256, so neither a lookup's timing nor a memory dump of the
//! table gives the id away. Each session has its own CSRF token (256 random
//! bits) that every POST must carry; comparisons are constant-time. A
//! session ends after `idle` without a request or `absolute` after sign-in.
//!
//! Shared mode signs each person in with their own API key: the session then
//! holds a [`Client`] made with that key (and who it is), in memory only;
//! ending the session drops it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kms_client::Client;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The name of the session cookie.
pub const COOKIE: &str = "kms_console";

/// Expiry and size bounds of the session table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
    /// At most this many live sessions (the oldest is dropped past it).
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            max_sessions: 64,
        }
    }
}

/// Who a session acts as, from `IDENTITY:SELF` at sign-in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Who {
    /// The identity (the API key's public half), hex.
    pub identity: String,
    /// `SysAdmin`, `Admin` or `User`.
    pub privilege: String,
    /// The identity's enclave; empty for a SysAdmin.
    pub enclave: String,
    /// The policy of a User; may be empty.
    pub policy: String,
}

struct Entry {
    csrf: [u8; 32],
    created: Instant,
    last_seen: Instant,
    /// Shared mode: the client made with this person's API key.
    client: Option<Client>,
    who: Option<Who>,
}

/// A live session, as a request sees it.
#[derive(Clone)]
pub struct Session {
    /// The CSRF token forms carry, hex.
    pub csrf: String,
    csrf_raw: [u8; 32],
    /// Shared mode: this person's own client; `None`: the console's.
    pub client: Option<Client>,
    /// Who the session acts as, when known.
    pub who: Option<Who>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether `token` (hex, from a form) is this session's CSRF token;
    /// constant-time.
    pub fn csrf_ok(&self, token: &str) -> bool {
        let mut b = [0u8; 32];
        if hex::decode_to_slice(token.as_bytes(), &mut b).is_err() {
            return false;
        }
        bool::from(b.ct_eq(&self.csrf_raw))
    }
}

/// The one-time login token and the session table.
pub struct Sessions {
    limits: Limits,
    login: Mutex<Option<[u8; 32]>>,
    table: Mutex<HashMap<[u8; 32], Entry>>,
}

fn random() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn digest(id: &[u8]) -> [u8; 32] {
    Sha256::digest(id).into()
}

impl Sessions {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            login: Mutex::new(None),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Makes a new one-time login token (replacing any unused one); hex.
    pub fn new_login_token(&self) -> String {
        let t = random();
        *self.login.lock() = Some(t);
        hex::encode(t)
    }

    /// Spends the login token: if `token` is it, the token is gone and a new
    /// session's id (hex, for the cookie) is returned.
    pub fn sign_in(&self, token: &str) -> Option<String> {
        let mut given = [0u8; 32];
        hex::decode_to_slice(token.as_bytes(), &mut given).ok()?;
        {
            let mut login = self.login.lock();
            let expected = (*login)?;
            if !bool::from(given.ct_eq(&expected)) {
                return None;
            }
            *login = None;
        }
        Some(self.create(None, None))
    }

    /// Creates a session acting with `client` as `who` (shared mode's
    /// sign-in with a person's own API key); its id, hex.
    pub fn create_for(&self, client: Client, who: Who) -> String {
        self.create(Some(client), Some(who))
    }

    /// Creates a session; its id, hex.
    fn create(&self, client: Option<Client>, who: Option<Who>) -> String {
        let id = random();
        let now = Instant::now();
        let mut t = self.table.lock();
        self.expire(&mut t, now);
        if t.len() >= self.limits.max_sessions {
            if let Some(oldest) = t.iter().min_by_key(|(_, e)| e.created).map(|(k, _)| *k) {
                t.remove(&oldest);
            }
        }
        t.insert(
            digest(&id),
            Entry {
                csrf: random(),
                created: now,
                last_seen: now,
                client,
                who,
            },
        );
        hex::encode(id)
    }

    fn expire(&self, t: &mut HashMap<[u8; 32], Entry>, now: Instant) {
        t.retain(|_, e| {
            now.duration_since(e.last_seen) < self.limits.idle
                && now.duration_since(e.created) < self.limits.absolute
        });
    }

    /// The live session whose id is `id` (hex, from the cookie), touched.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(id.as_bytes(), &mut raw).ok()?;
        let now = Instant::now();
        let mut t = self.table.lock();
        self.expire(&mut t, now);
        let e = t.get_mut(&digest(&raw))?;
        e.last_seen = now;
        Some(Session {
            csrf: hex::encode(e.csrf),
            csrf_raw: e.csrf,
            client: e.client.clone(),
            who: e.who.clone(),
        })
    }

    /// Ends the session `id`.
    pub fn end(&self, id: &str) {
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(id.as_bytes(), &mut raw).is_ok() {
            self.table.lock().remove(&digest(&raw));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_token_works_once() {
        let s = Sessions::new(Limits::default());
        let t = s.new_login_token();
        assert!(s.sign_in(&"00".repeat(32)).is_none());
        let id = s.sign_in(&t).expect("first use");
        assert!(s.sign_in(&t).is_none(), "second use");
        assert!(s.get(&id).is_some());
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn csrf_is_per_session_and_checked() {
        let s = Sessions::new(Limits::default());
        let t = s.new_login_token();
        let a = s.get(&s.sign_in(&t).unwrap()).unwrap();
        let t = s.new_login_token();
        let b = s.get(&s.sign_in(&t).unwrap()).unwrap();
        assert!(a.csrf_ok(&a.csrf));
        assert!(!a.csrf_ok(&b.csrf));
        assert!(!a.csrf_ok(""));
        assert!(!a.csrf_ok("zz"));
    }

    #[test]
    fn sessions_expire() {
        let s = Sessions::new(Limits {
            idle: Duration::from_millis(1),
            absolute: Duration::from_secs(60),
            max_sessions: 2,
        });
        let t = s.new_login_token();
        let id = s.sign_in(&t).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn bounded_table() {
        let s = Sessions::new(Limits {
            max_sessions: 2,
            ..Limits::default()
        });
        let ids: Vec<_> = (0..3)
            .map(|_| {
                let t = s.new_login_token();
                std::thread::sleep(Duration::from_millis(1));
                s.sign_in(&t).unwrap()
            })
            .collect();
        assert!(s.get(&ids[0]).is_none());
        assert!(s.get(&ids[2]).is_some());
    }
}
