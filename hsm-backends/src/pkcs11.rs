//! An HSM reached through PKCS#11 (tested with SoftHSM2), on the `cryptoki` crate.
//!
//! The device holds one AES-256 key (found by its label). It never leaves the
//! device:
//! - **seal**: `CKM_AES_GCM` through `C_Encrypt`, with a 96-bit IV from
//!   `C_GenerateRandom`, a 128-bit tag and the context as associated data.
//!   Sealed format: `0x02 | IV (12) | ciphertext and tag`.
//! - **derive**: AES-GCM as a PRF, through the same `C_Encrypt`: the first
//!   32 bytes of `AES-GCM(K, IV = SHA-256("kms/v1/derive-iv" || label)[..12],
//!   AAD = "kms/v1/derive" || 0x00 || label, 32 zero bytes)`, that is the AES
//!   keystream blocks `E_K(IV || 2) || E_K(IV || 3)`. Distinct labels give
//!   distinct IVs; sealing uses random IVs, which meet a derivation IV with
//!   probability 2^-96 per seal. Every device holding the same key material
//!   derives the same bytes. Only `CKA_ENCRYPT`/`CKA_DECRYPT` are needed, which
//!   every import tool sets (OpenSC's `pkcs11-tool` cannot give an AES key
//!   `CKA_SIGN`, so CMAC or HMAC would need vendor tools).
//! - **name**: `pkcs11:` and the first 8 bytes (hex) of `derive("kms/v1/fingerprint")`:
//!   equal for devices holding the same key, whatever their token labels.
//!
//! See docs/hsm.md for why these mechanisms and what a device must support.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::{Error, Hsm};

const FORMAT_PKCS11_GCM: u8 = 0x02;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which token to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSel {
    Label(String),
    Slot(u64),
}

/// Settings of a PKCS#11 HSM (`KMS_HSM_PKCS11_*`, or `[hsm.pkcs11]` in the config file).
#[derive(Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`KMS_HSM_PKCS11_MODULE`).
    pub module: PathBuf,
    /// The token (`KMS_HSM_PKCS11_TOKEN`: a label, or `slot:N` / a bare number for a slot id).
    pub token: TokenSel,
    /// The user PIN (`KMS_HSM_PKCS11_PIN`, or the content of `KMS_HSM_PKCS11_PIN_FILE`).
    pub pin: Zeroizing<String>,
    /// Label of the AES key (`KMS_HSM_PKCS11_KEY`).
    pub key_label: String,
    /// Create the key when it is missing (`KMS_HSM_PKCS11_GENERATE_KEY=1`). Off by default.
    pub generate_key: bool,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("key_label", &self.key_label)
            .field("generate_key", &self.generate_key)
            .finish_non_exhaustive()
    }
}

impl TokenSel {
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if let Some(n) = s.strip_prefix("slot:").and_then(|n| n.parse().ok()) {
            return TokenSel::Slot(n);
        }
        match s.parse() {
            Ok(n) => TokenSel::Slot(n),
            Err(_) => TokenSel::Label(s.to_string()),
        }
    }
}

impl Pkcs11Config {
    /// Reads the settings from a variable lookup (`KMS_HSM_PKCS11_*` names);
    /// `None` when no module is configured.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, Error> {
        let Some(module) = get("KMS_HSM_PKCS11_MODULE") else {
            return Ok(None);
        };
        let token = get("KMS_HSM_PKCS11_TOKEN").ok_or_else(|| {
            Error::Config("KMS_HSM_PKCS11_TOKEN is not set (a token label, or slot:N)".into())
        })?;
        let pin = match (get("KMS_HSM_PKCS11_PIN"), get("KMS_HSM_PKCS11_PIN_FILE")) {
            (Some(p), _) => Zeroizing::new(p),
            (None, Some(f)) => Zeroizing::new(
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        Error::Config(format!("KMS_HSM_PKCS11_PIN_FILE: cannot read {f}: {e}"))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => {
                return Err(Error::Config(
                    "KMS_HSM_PKCS11_PIN (or KMS_HSM_PKCS11_PIN_FILE) is not set".into(),
                ))
            }
        };
        let key_label = get("KMS_HSM_PKCS11_KEY").ok_or_else(|| {
            Error::Config("KMS_HSM_PKCS11_KEY is not set (the label of the AES key)".into())
        })?;
        let generate_key = get("KMS_HSM_PKCS11_GENERATE_KEY")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Ok(Some(Self {
            module: PathBuf::from(module),
            token: TokenSel::parse(&token),
            pin,
            key_label,
            generate_key,
        }))
    }
}

struct Conn {
    session: Session,
    key: ObjectHandle,
}

/// An HSM reached through a PKCS#11 module.
pub struct Pkcs11Hsm {
    cfg: Pkcs11Config,
    ctx: Pkcs11,
    slot: Slot,
    conn: Mutex<Option<Conn>>,
    name: String,
}

impl std::fmt::Debug for Pkcs11Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Hsm")
            .field("name", &self.name)
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Errors after which a new session, and a new lookup of the key, may
/// succeed: a lost session, and a key handle gone stale (the token was
/// removed and put back, or its store was replaced).
fn session_lost(e: &CkError) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::DeviceError
        )
    )
}

impl Pkcs11Hsm {
    /// Loads the module, finds the token, logs in and finds (or, if allowed,
    /// creates) the key. Every failure names the setting to fix.
    pub fn open(cfg: Pkcs11Config) -> Result<Self, Error> {
        let module = &cfg.module;
        if !module.exists() {
            return Err(Error::Config(format!(
                "KMS_HSM_PKCS11_MODULE: {} does not exist",
                module.display()
            )));
        }
        let ctx = Pkcs11::new(module).map_err(|e| {
            Error::Config(format!(
                "KMS_HSM_PKCS11_MODULE: {} is not a PKCS#11 module ({e})",
                module.display()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "{}: C_Initialize failed: {e}",
                    module.display()
                )))
            }
        }
        let slot = find_slot(&ctx, &cfg)?;
        let mut hsm = Self {
            cfg,
            ctx,
            slot,
            conn: Mutex::new(None),
            name: String::new(),
        };
        {
            let mut conn = hsm.conn.lock();
            *conn = Some(hsm.connect()?);
        }
        let fp = hsm.derive("kms/v1/fingerprint")?;
        hsm.name = format!(
            "pkcs11:{}",
            fp[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(hsm)
    }

    fn token_name(&self) -> String {
        match &self.cfg.token {
            TokenSel::Label(l) => format!("token '{l}'"),
            TokenSel::Slot(s) => format!("slot {s}"),
        }
    }

    /// Opens a session, logs in, and finds the key.
    fn connect(&self) -> Result<Conn, Error> {
        let session = self.ctx.open_rw_session(self.slot).map_err(|e| {
            Error::Unavailable(format!(
                "cannot open a session on {}: {e}",
                self.token_name()
            ))
        })?;
        let pin = AuthPin::new(self.cfg.pin.as_str().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) => {}
            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => {}
            Err(e)
                if matches!(
                    rv(&e),
                    Some(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid)
                ) =>
            {
                return Err(Error::Config(format!(
                    "KMS_HSM_PKCS11_PIN: {} refused the PIN ({e})",
                    self.token_name()
                )))
            }
            Err(e) if rv(&e) == Some(RvError::PinLocked) => {
                return Err(Error::Config(format!(
                    "KMS_HSM_PKCS11_PIN: the PIN of {} is locked",
                    self.token_name()
                )))
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "cannot log in to {}: {e}",
                    self.token_name()
                )))
            }
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.cfg.key_label.as_bytes().to_vec()),
        ];
        let found = session.find_objects(&template).map_err(|e| {
            Error::Unavailable(format!(
                "cannot search {} for the key: {e}",
                self.token_name()
            ))
        })?;
        let key = match found.as_slice() {
            [k] => *k,
            [] if self.cfg.generate_key => self.generate(&session)?,
            [] => {
                return Err(Error::Config(format!(
                    "KMS_HSM_PKCS11_KEY: no AES key labelled '{}' on {} (import one, or set KMS_HSM_PKCS11_GENERATE_KEY=1 to create it)",
                    self.cfg.key_label,
                    self.token_name()
                )))
            }
            more => {
                return Err(Error::Config(format!(
                    "KMS_HSM_PKCS11_KEY: {} AES keys are labelled '{}' on {}; labels must be unique",
                    more.len(),
                    self.cfg.key_label,
                    self.token_name()
                )))
            }
        };
        Ok(Conn { session, key })
    }

    fn generate(&self, session: &Session) -> Result<ObjectHandle, Error> {
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(self.cfg.key_label.as_bytes().to_vec()),
        ];
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create the key '{}' on {}: {e}",
                    self.cfg.key_label,
                    self.token_name()
                ))
            })
    }

    /// Runs `f` on the session, reconnecting once if the session was lost.
    fn with<T>(
        &self,
        what: &str,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, Error> {
        self.with_map(f, |e| map_op_error(what, e))
    }

    fn with_map<T>(
        &self,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
        map: impl Fn(&CkError) -> Error,
    ) -> Result<T, Error> {
        let mut guard = self.conn.lock();
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect()?);
            }
            let conn = guard.as_ref().expect("connected above");
            match f(&conn.session, conn.key) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && session_lost(&e) => {
                    *guard = None;
                }
                Err(e) => return Err(map(&e)),
            }
        }
        Err(Error::Unavailable("the HSM session was lost twice".into()))
    }

    /// The derivation PRF described in the module docs.
    fn gcm_prf(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        use sha2::Digest;
        let h = sha2::Sha256::new()
            .chain_update(b"kms/v1/derive-iv")
            .chain_update(label.as_bytes())
            .finalize();
        let mut aad = b"kms/v1/derive\0".to_vec();
        aad.extend_from_slice(label.as_bytes());
        let ct = Zeroizing::new(self.with("AES-GCM derivation", |s, k| {
            let mut iv = h[..IV_LEN].to_vec();
            let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
            s.encrypt(&Mechanism::AesGcm(params), k, &[0u8; 32])
        })?);
        if ct.len() != 32 + TAG_LEN {
            return Err(Error::Unavailable(format!(
                "AES-GCM returned {} bytes, not {}",
                ct.len(),
                32 + TAG_LEN
            )));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&ct[..32]);
        Ok(out)
    }
}

fn map_op_error(what: &str, e: &CkError) -> Error {
    match rv(e) {
        Some(RvError::MechanismInvalid) => Error::Unavailable(format!("{what}: the device does not support this mechanism ({e})")),
        Some(RvError::KeyFunctionNotPermitted | RvError::KeyTypeInconsistent) => Error::Config(format!(
            "KMS_HSM_PKCS11_KEY: the key does not permit {what} (it needs CKA_ENCRYPT and CKA_DECRYPT): {e}"
        )),
        Some(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange) => Error::Unseal,
        _ => Error::Unavailable(format!("{what}: {e}")),
    }
}

fn find_slot(ctx: &Pkcs11, cfg: &Pkcs11Config) -> Result<Slot, Error> {
    let slots = ctx.get_slots_with_token().map_err(|e| {
        Error::Unavailable(format!("{}: cannot list slots: {e}", cfg.module.display()))
    })?;
    let mut labels = Vec::new();
    for slot in &slots {
        let Ok(info) = ctx.get_token_info(*slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        match &cfg.token {
            TokenSel::Slot(id) if slot.id() == *id => return Ok(*slot),
            TokenSel::Label(l) if *l == label => return Ok(*slot),
            _ => labels.push(format!("'{label}' (slot {})", slot.id())),
        }
    }
    Err(Error::Config(format!(
        "KMS_HSM_PKCS11_TOKEN: no token {} in {} (tokens: {})",
        match &cfg.token {
            TokenSel::Label(l) => format!("labelled '{l}'"),
            TokenSel::Slot(s) => format!("in slot {s}"),
        },
        cfg.module.display(),
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels.join(", ")
        }
    )))
}

impl Hsm for Pkcs11Hsm {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
        let iv = self.with("C_GenerateRandom", |s, _| {
            s.generate_random_vec(IV_LEN as u32)
        })?;
        let ct = self.with("AES-GCM encryption", |s, k| {
            let mut iv = iv.clone();
            let params = GcmParams::new(&mut iv, context, (TAG_LEN as u64 * 8).into())?;
            s.encrypt(&Mechanism::AesGcm(params), k, plaintext)
        })?;
        let mut out = Vec::with_capacity(1 + IV_LEN + ct.len());
        out.push(FORMAT_PKCS11_GCM);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < 1 + IV_LEN + TAG_LEN {
            return Err(Error::Malformed("too short"));
        }
        if sealed[0] != FORMAT_PKCS11_GCM {
            return Err(Error::Malformed("not sealed by a PKCS#11 HSM"));
        }
        let (iv, ct) = sealed[1..].split_at(IV_LEN);
        self.with_map(
            |s, k| {
                let mut iv = iv.to_vec();
                let params = GcmParams::new(&mut iv, context, (TAG_LEN as u64 * 8).into())?;
                s.decrypt(&Mechanism::AesGcm(params), k, ct)
            },
            // A failed tag check is CKR_ENCRYPTED_DATA_INVALID, or on some
            // devices CKR_FUNCTION_FAILED or CKR_GENERAL_ERROR.
            |e| match rv(e) {
                Some(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::FunctionFailed
                    | RvError::GeneralError,
                ) => Error::Unseal,
                _ => map_op_error("AES-GCM decryption", e),
            },
        )
        .map(Zeroizing::new)
    }

    fn derive(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        self.gcm_prf(label)
    }
}
