//! Certificates (`CKO_CERTIFICATE`, `CKC_X_509`) and data objects
//! (`CKO_DATA`): their attributes, templates for create, set and copy, and
//! their form in the enclave's token-object store (OBJECT:*).
//!
//! Invariants:
//! - A [`StoredObject`] holds every attribute its class has (PKCS#11 3.0
//!   sections 4.4 to 4.6, X.509 certificates only) except `CKA_CLASS` and
//!   `CKA_TOKEN`, defaults filled in, each value of the right shape: so
//!   `C_GetAttributeValue` answers from it alone, and an attribute not in
//!   it is `CKR_ATTRIBUTE_TYPE_INVALID`.
//! - A certificate's `CKA_VALUE` parsed as X.509 DER when it was created
//!   here; `CKA_SUBJECT`, `CKA_ISSUER`, `CKA_SERIAL_NUMBER` and
//!   `CKA_PUBLIC_KEY_INFO` not given are derived from it, given ones are
//!   kept. `CKA_CHECK_VALUE` is always derived (a given one must match).
//! - In the store, the class is the record's class and each attribute one
//!   (type, value) pair; `CK_ULONG` values are 8 bytes little-endian there
//!   (native in memory), so any architecture reads them. A record read back
//!   is checked like a template ([`StoredObject::from_record`]): unknown
//!   attributes are dropped, a malformed record is not shown.
//! - Which attribute may change how ([`Rule`]) is decided here only.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::collections::BTreeMap;

use cryptoki_sys::*;
use sha1::Digest as _;

use crate::error::{Error, Result};
use crate::object::{Attr, AttrOut};

/// Most bytes of attribute values in one object (the store's limit).
pub const MAX_OBJECT_BYTES: usize = 64 << 10;

/// How an attribute's value is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Bool,
    Ulong,
    Bytes,
    /// `CK_DATE`: empty, eight ASCII digits, or eight zero bytes.
    Date,
}

/// When an attribute may be given or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// At creation; read-only afterwards.
    Create,
    /// At creation, by `C_SetAttributeValue` and by `C_CopyObject`.
    Set,
    /// At creation and by `C_CopyObject` (`CKA_COPYABLE` may also be set
    /// from true to false).
    Copy,
    /// Computed from `CKA_VALUE`; a given value must match.
    Derived,
}

/// The attributes of a class (besides `CKA_CLASS` and `CKA_TOKEN`), with
/// their shape and rule.
fn attributes(class: CK_OBJECT_CLASS) -> &'static [(CK_ATTRIBUTE_TYPE, Shape, Rule)] {
    use Rule::*;
    use Shape::*;
    const DATA: &[(CK_ATTRIBUTE_TYPE, Shape, Rule)] = &[
        (CKA_PRIVATE, Bool, Copy),
        (CKA_MODIFIABLE, Bool, Copy),
        (CKA_COPYABLE, Bool, Copy),
        (CKA_DESTROYABLE, Bool, Copy),
        (CKA_LABEL, Bytes, Set),
        (CKA_APPLICATION, Bytes, Set),
        (CKA_OBJECT_ID, Bytes, Set),
        (CKA_VALUE, Bytes, Set),
    ];
    const CERT: &[(CK_ATTRIBUTE_TYPE, Shape, Rule)] = &[
        (CKA_PRIVATE, Bool, Copy),
        (CKA_MODIFIABLE, Bool, Copy),
        (CKA_COPYABLE, Bool, Copy),
        (CKA_DESTROYABLE, Bool, Copy),
        (CKA_LABEL, Bytes, Set),
        (CKA_CERTIFICATE_TYPE, Ulong, Create),
        (CKA_TRUSTED, Bool, Set),
        (CKA_CERTIFICATE_CATEGORY, Ulong, Set),
        (CKA_CHECK_VALUE, Bytes, Derived),
        (CKA_START_DATE, Date, Set),
        (CKA_END_DATE, Date, Set),
        (CKA_PUBLIC_KEY_INFO, Bytes, Create),
        (CKA_SUBJECT, Bytes, Create),
        (CKA_ID, Bytes, Set),
        (CKA_ISSUER, Bytes, Set),
        (CKA_SERIAL_NUMBER, Bytes, Set),
        (CKA_VALUE, Bytes, Create),
        (CKA_URL, Bytes, Create),
        (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Bytes, Create),
        (CKA_HASH_OF_ISSUER_PUBLIC_KEY, Bytes, Create),
        (CKA_JAVA_MIDP_SECURITY_DOMAIN, Ulong, Create),
        (CKA_NAME_HASH_ALGORITHM, Ulong, Create),
    ];
    match class {
        CKO_DATA => DATA,
        CKO_CERTIFICATE => CERT,
        _ => &[],
    }
}

fn spec(class: CK_OBJECT_CLASS, ty: CK_ATTRIBUTE_TYPE) -> Option<(Shape, Rule)> {
    attributes(class)
        .iter()
        .find(|(t, _, _)| *t == ty)
        .map(|(_, s, r)| (*s, *r))
}

/// Whether `class` is one this module stores as a [`StoredObject`].
pub fn is_stored_class(class: CK_OBJECT_CLASS) -> bool {
    class == CKO_DATA || class == CKO_CERTIFICATE
}

/// A certificate or data object's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub class: CK_OBJECT_CLASS,
    /// Every attribute of the class but `CKA_CLASS` and `CKA_TOKEN`.
    pub attrs: BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>,
}

fn bad(rv: CK_RV, why: impl Into<String>) -> Error {
    Error::invalid(rv, "template", why)
}

/// Checks a value's shape.
fn check_shape(ty: CK_ATTRIBUTE_TYPE, shape: Shape, v: &[u8]) -> Result<()> {
    let ok = match shape {
        Shape::Bool => v.len() == 1,
        Shape::Ulong => v.len() == std::mem::size_of::<CK_ULONG>(),
        Shape::Bytes => true,
        // (Eight zero bytes: an empty CK_DATE as some callers pass it.)
        Shape::Date => {
            v.is_empty()
                || (v.len() == 8 && (v.iter().all(u8::is_ascii_digit) || v.iter().all(|b| *b == 0)))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute {ty:#x} has a malformed value"),
        ))
    }
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn as_ulong(v: &[u8]) -> Option<CK_ULONG> {
    v.try_into().ok().map(CK_ULONG::from_ne_bytes)
}

/// Whether a template gives `CKA_TRUSTED` true.
fn trusted(v: &[u8]) -> bool {
    v.first().is_some_and(|b| *b != 0)
}

/// What a certificate's DER gives: subject, issuer, serial number (DER
/// INTEGER), SubjectPublicKeyInfo.
struct X509Parts {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
    spki: Vec<u8>,
}

fn parse_x509(der: &[u8]) -> Result<X509Parts> {
    let invalid = |why: String| Error::invalid(CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE", why);
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(format!("not an X.509 certificate (DER): {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let tbs = &cert.tbs_certificate;
    let raw = tbs.raw_serial();
    let mut serial = vec![0x02];
    der_length(&mut serial, raw.len());
    serial.extend_from_slice(raw);
    Ok(X509Parts {
        subject: tbs.subject.as_raw().to_vec(),
        issuer: tbs.issuer.as_raw().to_vec(),
        serial,
        spki: tbs.subject_pki.raw.to_vec(),
    })
}

fn der_length(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let b = n.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        let tail = b.get(skip..).unwrap_or(&[]);
        out.push(0x80 | tail.len() as u8);
        out.extend_from_slice(tail);
    }
}

/// `CKA_CHECK_VALUE` of a certificate: the first three bytes of the SHA-1
/// of its `CKA_VALUE`.
fn check_value(value: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(value)
        .get(..3)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// What a creation template asks beyond the attributes: `CKA_TOKEN`.
pub struct Created {
    pub object: StoredObject,
    pub token: bool,
}

impl StoredObject {
    /// `C_CreateObject` of a certificate or data object: the template
    /// read, checked and completed. `so`: the SO is logged in (only the
    /// SO may set `CKA_TRUSTED` true).
    pub fn create(template: &[Attr], so: bool) -> Result<Created> {
        let mut class = None;
        let mut token = false;
        let mut given: BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>> = BTreeMap::new();
        for a in template {
            if let Some(prev) = given.get(&a.ty) {
                if *prev != a.value {
                    return Err(bad(
                        CKR_TEMPLATE_INCONSISTENT,
                        format!("attribute {:#x} given twice with different values", a.ty),
                    ));
                }
            }
            match a.ty {
                CKA_CLASS => class = Some(a.as_ulong()?),
                CKA_TOKEN => token = a.as_bool()?,
                _ => {
                    given.insert(a.ty, a.value.clone());
                }
            }
        }
        let class = class.ok_or_else(|| bad(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is missing"))?;
        if !is_stored_class(class) {
            return Err(bad(
                CKR_TEMPLATE_INCONSISTENT,
                format!("class {class:#x} is not a certificate or data object"),
            ));
        }
        for (ty, v) in &given {
            let (shape, _) = spec(class, *ty).ok_or_else(|| {
                bad(
                    CKR_ATTRIBUTE_TYPE_INVALID,
                    format!("attribute {ty:#x} is not one of class {class:#x}"),
                )
            })?;
            check_shape(*ty, shape, v)?;
        }
        if given.get(&CKA_TRUSTED).is_some_and(|v| trusted(v)) && !so {
            return Err(bad(
                CKR_ATTRIBUTE_READ_ONLY,
                "only the SO may set CKA_TRUSTED to true",
            ));
        }
        let mut attrs = given.clone();
        fn put(
            attrs: &mut BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>,
            ty: CK_ATTRIBUTE_TYPE,
            v: Vec<u8>,
        ) {
            attrs.entry(ty).or_insert(v);
        }
        macro_rules! fill {
            ($ty:expr, $v:expr) => {
                put(&mut attrs, $ty, $v)
            };
        }
        fill!(CKA_PRIVATE, vec![0]);
        fill!(CKA_MODIFIABLE, vec![1]);
        fill!(CKA_COPYABLE, vec![1]);
        fill!(CKA_DESTROYABLE, vec![1]);
        fill!(CKA_LABEL, Vec::new());
        if class == CKO_DATA {
            fill!(CKA_APPLICATION, Vec::new());
            fill!(CKA_OBJECT_ID, Vec::new());
            fill!(CKA_VALUE, Vec::new());
        } else {
            let ct = given
                .get(&CKA_CERTIFICATE_TYPE)
                .ok_or_else(|| bad(CKR_TEMPLATE_INCOMPLETE, "CKA_CERTIFICATE_TYPE is missing"))?;
            if as_ulong(ct) != Some(CKC_X_509) {
                return Err(Error::invalid(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "CKA_CERTIFICATE_TYPE",
                    "only X.509 certificates (CKC_X_509) are supported",
                ));
            }
            let value = given
                .get(&CKA_VALUE)
                .ok_or_else(|| bad(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is missing"))?;
            let parts = parse_x509(value)?;
            let cv = check_value(value);
            if given.get(&CKA_CHECK_VALUE).is_some_and(|v| *v != cv) {
                return Err(Error::invalid(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "CKA_CHECK_VALUE",
                    "does not match CKA_VALUE",
                ));
            }
            let category = given
                .get(&CKA_CERTIFICATE_CATEGORY)
                .and_then(|v| as_ulong(v))
                .unwrap_or(0);
            let domain = given
                .get(&CKA_JAVA_MIDP_SECURITY_DOMAIN)
                .and_then(|v| as_ulong(v))
                .unwrap_or(0);
            if category > 3 || domain > 3 {
                return Err(bad(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "CKA_CERTIFICATE_CATEGORY and CKA_JAVA_MIDP_SECURITY_DOMAIN are 0 to 3",
                ));
            }
            attrs.insert(CKA_CHECK_VALUE, cv);
            fill!(CKA_TRUSTED, vec![0]);
            fill!(CKA_CERTIFICATE_CATEGORY, ulong(0));
            fill!(CKA_START_DATE, Vec::new());
            fill!(CKA_END_DATE, Vec::new());
            fill!(CKA_PUBLIC_KEY_INFO, parts.spki);
            fill!(CKA_SUBJECT, parts.subject);
            fill!(CKA_ID, Vec::new());
            fill!(CKA_ISSUER, parts.issuer);
            fill!(CKA_SERIAL_NUMBER, parts.serial);
            fill!(CKA_URL, Vec::new());
            fill!(CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Vec::new());
            fill!(CKA_HASH_OF_ISSUER_PUBLIC_KEY, Vec::new());
            fill!(CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong(0));
            fill!(CKA_NAME_HASH_ALGORITHM, ulong(CKM_SHA_1));
        }
        let o = StoredObject { class, attrs };
        o.check_size()?;
        Ok(Created { object: o, token })
    }

    fn check_size(&self) -> Result<()> {
        let total: usize = self.attrs.values().map(Vec::len).sum();
        if total > MAX_OBJECT_BYTES {
            return Err(bad(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!("an object holds at most {MAX_OBJECT_BYTES} bytes of values, not {total}"),
            ));
        }
        Ok(())
    }

    /// One attribute for `C_GetAttributeValue`.
    pub fn get(&self, token: bool, ty: CK_ATTRIBUTE_TYPE) -> AttrOut {
        match ty {
            CKA_CLASS => AttrOut::Value(ulong(self.class)),
            CKA_TOKEN => AttrOut::Value(vec![token as u8]),
            _ => match self.attrs.get(&ty) {
                Some(v) => AttrOut::Value(v.clone()),
                None => AttrOut::Invalid,
            },
        }
    }

    fn flag(&self, ty: CK_ATTRIBUTE_TYPE, default: bool) -> bool {
        self.attrs.get(&ty).map_or(default, |v| trusted(v))
    }

    pub fn private(&self) -> bool {
        self.flag(CKA_PRIVATE, false)
    }
    pub fn modifiable(&self) -> bool {
        self.flag(CKA_MODIFIABLE, true)
    }
    pub fn copyable(&self) -> bool {
        self.flag(CKA_COPYABLE, true)
    }
    pub fn destroyable(&self) -> bool {
        self.flag(CKA_DESTROYABLE, true)
    }
    pub fn label(&self) -> Vec<u8> {
        self.attrs.get(&CKA_LABEL).cloned().unwrap_or_default()
    }
    pub fn id(&self) -> Vec<u8> {
        self.attrs.get(&CKA_ID).cloned().unwrap_or_default()
    }
    /// Bytes of attribute values (for `C_GetObjectSize`).
    pub fn size(&self) -> usize {
        self.attrs.values().map(Vec::len).sum()
    }

    /// `C_SetAttributeValue` (`copy` false) or the template of
    /// `C_CopyObject` (`copy` true) applied to a copy of this object;
    /// returns it and, for a copy, the new `CKA_TOKEN` if given. A value
    /// equal to the current one is accepted for any attribute (it changes
    /// nothing); on an object with `CKA_MODIFIABLE` false, any other set is
    /// `CKR_ACTION_PROHIBITED`.
    pub fn changed(
        &self,
        token: bool,
        template: &[Attr],
        copy: bool,
        so: bool,
    ) -> Result<(StoredObject, Option<bool>)> {
        let mut out = self.clone();
        let mut new_token = None;
        for (i, a) in template.iter().enumerate() {
            if template
                .iter()
                .take(i)
                .any(|p| p.ty == a.ty && p.value != a.value)
            {
                return Err(bad(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {:#x} given twice with different values", a.ty),
                ));
            }
            let current = match a.ty {
                CKA_CLASS => ulong(self.class),
                CKA_TOKEN => vec![token as u8],
                ty => match self.attrs.get(&ty) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(bad(
                            CKR_ATTRIBUTE_TYPE_INVALID,
                            format!("attribute {ty:#x} is not one of class {:#x}", self.class),
                        ))
                    }
                },
            };
            if a.ty == CKA_TOKEN && copy {
                new_token = Some(a.as_bool()?);
                continue;
            }
            if a.value == current {
                continue;
            }
            if !copy && !self.modifiable() {
                return Err(bad(
                    CKR_ACTION_PROHIBITED,
                    "the object is not modifiable (CKA_MODIFIABLE false)",
                ));
            }
            let read_only = || {
                Err(bad(
                    CKR_ATTRIBUTE_READ_ONLY,
                    format!("attribute {:#x} cannot be changed", a.ty),
                ))
            };
            let Some((shape, rule)) = spec(self.class, a.ty) else {
                return read_only(); // CKA_CLASS, or CKA_TOKEN on a set
            };
            check_shape(a.ty, shape, &a.value)?;
            let allowed = match rule {
                Rule::Set => true,
                Rule::Copy => copy || (a.ty == CKA_COPYABLE && !trusted(&a.value)),
                Rule::Create | Rule::Derived => false,
            };
            if !allowed {
                return read_only();
            }
            if a.ty == CKA_COPYABLE && trusted(&a.value) && !self.copyable() {
                return read_only(); // never back from false
            }
            if a.ty == CKA_TRUSTED && trusted(&a.value) && !so {
                return Err(bad(
                    CKR_ATTRIBUTE_READ_ONLY,
                    "only the SO may set CKA_TRUSTED to true",
                ));
            }
            if a.ty == CKA_CERTIFICATE_CATEGORY && as_ulong(&a.value).is_some_and(|c| c > 3) {
                return Err(bad(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "CKA_CERTIFICATE_CATEGORY is 0 to 3",
                ));
            }
            out.attrs.insert(a.ty, a.value.clone());
        }
        out.check_size()?;
        Ok((out, new_token))
    }

    /// The record for OBJECT:CREATE and OBJECT:SET: every attribute, its
    /// `CK_ULONG` values little-endian. (`CK_ULONG` is 32 bits on some
    /// platforms: the casts are not always no-ops.)
    #[allow(clippy::unnecessary_cast)]
    pub fn record(&self) -> Vec<(u64, Vec<u8>)> {
        self.attrs
            .iter()
            .map(|(ty, v)| {
                let v = match spec(self.class, *ty) {
                    Some((Shape::Ulong, _)) => match as_ulong(v) {
                        Some(n) => (n as u64).to_le_bytes().to_vec(),
                        None => v.clone(),
                    },
                    _ => v.clone(),
                };
                (*ty as u64, v)
            })
            .collect()
    }

    /// An object read back from OBJECT:LIST: `None` (with why) when its
    /// class is not one of ours or a value is malformed. Unknown attributes
    /// are dropped, missing ones take their defaults.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_record(class: u64, attrs: &[(u64, Vec<u8>)]) -> Result<StoredObject, String> {
        let class = class as CK_OBJECT_CLASS;
        if !is_stored_class(class) {
            return Err(format!(
                "class {class:#x} is not a certificate or data object"
            ));
        }
        let mut template = vec![Attr::new(CKA_CLASS, ulong(class))];
        for (ty, v) in attrs {
            let ty = *ty as CK_ATTRIBUTE_TYPE;
            let Some((shape, _)) = spec(class, ty) else {
                continue;
            };
            let v = if shape == Shape::Ulong {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("attribute {ty:#x} is not 8 bytes"))?;
                let n = CK_ULONG::try_from(u64::from_le_bytes(b))
                    .map_err(|_| format!("attribute {ty:#x} out of range"))?;
                ulong(n)
            } else {
                v.clone()
            };
            template.push(Attr::new(ty, v));
        }
        // Checked as a creation by the SO (a stored CKA_TRUSTED true was
        // allowed when it was written).
        StoredObject::create(&template, true)
            .map(|c| c.object)
            .map_err(|e| e.to_string())
    }
}

/// A new object's name in the enclave's store: `cert-` or `data-`, the
/// label (else the id in hex) with every byte that a name may not hold
/// replaced by `_`, cut to 64 bytes, then `-` and 16 random hex digits.
/// The name never changes afterwards (a new label does not rename).
pub fn object_name(class: CK_OBJECT_CLASS, label: &[u8], id: &[u8]) -> String {
    let prefix = if class == CKO_CERTIFICATE {
        "cert"
    } else {
        "data"
    };
    let middle: String = if !label.is_empty() {
        label
            .iter()
            .take(64)
            .map(|b| {
                let c = *b as char;
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '+' | '=' | '@')
                {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    } else {
        id.iter().take(32).map(|b| format!("{b:02x}")).collect()
    };
    let mut r = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut r);
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    if middle.is_empty() {
        format!("{prefix}-{suffix}")
    } else {
        format!("{prefix}-{middle}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 certificate (openssl req -x509, CN=t).
    fn cert() -> Vec<u8> {
        let pem = include_str!("../tests/data/cert.pem");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&b64)
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    fn cert_template(value: Vec<u8>) -> Vec<Attr> {
        vec![
            Attr::ulong(CKA_CLASS, CKO_CERTIFICATE),
            Attr::ulong(CKA_CERTIFICATE_TYPE, CKC_X_509),
            Attr::bool(CKA_TOKEN, true),
            Attr::new(CKA_LABEL, b"c".to_vec()),
            Attr::new(CKA_VALUE, value),
        ]
    }

    #[test]
    fn certificates_derive_their_names() {
        let der = cert();
        let c = StoredObject::create(&cert_template(der.clone()), false).unwrap();
        assert!(c.token);
        let o = c.object;
        let subject = o.attrs[&CKA_SUBJECT].clone();
        assert_eq!(subject.first(), Some(&0x30));
        assert_eq!(o.attrs[&CKA_ISSUER], subject); // self-signed
        assert_eq!(o.attrs[&CKA_SERIAL_NUMBER].first(), Some(&0x02));
        assert_eq!(o.attrs[&CKA_PUBLIC_KEY_INFO].first(), Some(&0x30));
        assert_eq!(o.attrs[&CKA_CHECK_VALUE].len(), 3);
        assert_eq!(o.get(true, CKA_MODULUS), AttrOut::Invalid);
        assert_eq!(o.get(true, CKA_APPLICATION), AttrOut::Invalid);
        assert!(!o.private() && o.modifiable());
        // Given names are kept.
        let mut t = cert_template(der.clone());
        t.push(Attr::new(CKA_SUBJECT, b"given".to_vec()));
        let o2 = StoredObject::create(&t, false).unwrap().object;
        assert_eq!(o2.attrs[&CKA_SUBJECT], b"given");
        // Round trip through the store's form.
        let back = StoredObject::from_record(o.class, &o.record()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn bad_certificates_and_templates() {
        let rv = |t: &[Attr], so| StoredObject::create(t, so).err().unwrap().rv();
        assert_eq!(
            rv(&cert_template(b"not der".to_vec()), false),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let mut trailing = cert();
        trailing.push(0);
        assert_eq!(
            rv(&cert_template(trailing), false),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let mut t = cert_template(cert());
        t.retain(|a| a.ty != CKA_VALUE);
        assert_eq!(rv(&t, false), CKR_TEMPLATE_INCOMPLETE);
        let mut t = cert_template(cert());
        t.push(Attr::bool(CKA_TRUSTED, true));
        assert_eq!(rv(&t, false), CKR_ATTRIBUTE_READ_ONLY);
        assert!(StoredObject::create(&t, true).is_ok());
        let mut t = cert_template(cert());
        t.push(Attr::new(CKA_CHECK_VALUE, vec![1, 2, 3]));
        assert_eq!(rv(&t, false), CKR_ATTRIBUTE_VALUE_INVALID);
        let mut t = cert_template(cert());
        t.push(Attr::ulong(CKA_KEY_TYPE, CKK_AES));
        assert_eq!(rv(&t, false), CKR_ATTRIBUTE_TYPE_INVALID);
        let mut t = cert_template(cert());
        t.push(Attr::new(CKA_START_DATE, b"2026".to_vec()));
        assert_eq!(rv(&t, false), CKR_ATTRIBUTE_VALUE_INVALID);
        let data = [
            Attr::ulong(CKA_CLASS, CKO_DATA),
            Attr::new(CKA_APPLICATION, b"app".to_vec()),
            Attr::new(CKA_VALUE, vec![0; MAX_OBJECT_BYTES + 1]),
        ];
        assert_eq!(rv(&data, false), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(
            rv(
                &[
                    Attr::ulong(CKA_CLASS, CKO_DATA),
                    Attr::bool(CKA_PRIVATE, true),
                    Attr::bool(CKA_PRIVATE, false)
                ],
                false
            ),
            CKR_TEMPLATE_INCONSISTENT
        );
    }

    #[test]
    fn changes_follow_the_rules() {
        let o = StoredObject::create(&cert_template(cert()), false)
            .unwrap()
            .object;
        let set = |t: &[Attr]| o.changed(true, t, false, false);
        let (n, _) = set(&[Attr::new(CKA_LABEL, b"new".to_vec())]).unwrap();
        assert_eq!(n.label(), b"new");
        let rv = |r: Result<(StoredObject, Option<bool>)>| r.err().unwrap().rv();
        assert_eq!(
            rv(set(&[Attr::new(CKA_VALUE, b"x".to_vec())])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[Attr::bool(CKA_PRIVATE, true)])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[Attr::new(CKA_APPLICATION, b"x".to_vec())])),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(
            rv(set(&[Attr::bool(CKA_TRUSTED, true)])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        // Same value: nothing changes, always accepted.
        assert!(set(&[Attr::ulong(CKA_CLASS, CKO_CERTIFICATE)]).is_ok());
        let (n, _) = set(&[Attr::bool(CKA_COPYABLE, false)]).unwrap();
        assert_eq!(
            rv(n.changed(true, &[Attr::bool(CKA_COPYABLE, true)], false, false)),
            CKR_ATTRIBUTE_READ_ONLY
        );
        let (c, tok) = o
            .changed(
                true,
                &[
                    Attr::bool(CKA_TOKEN, false),
                    Attr::bool(CKA_MODIFIABLE, false),
                ],
                true,
                false,
            )
            .unwrap();
        assert_eq!(tok, Some(false));
        assert_eq!(
            rv(c.changed(false, &[Attr::new(CKA_LABEL, b"z".to_vec())], false, false)),
            CKR_ACTION_PROHIBITED
        );
    }

    #[test]
    fn names() {
        let n = object_name(CKO_CERTIFICATE, b"my key/1", b"");
        assert!(n.starts_with("cert-my_key_1-") && n.len() == "cert-my_key_1-".len() + 16);
        let n = object_name(CKO_DATA, b"", &[1, 2]);
        assert!(n.starts_with("data-0102-"));
        assert_eq!(object_name(CKO_DATA, b"", b"").len(), 5 + 16);
    }
}
