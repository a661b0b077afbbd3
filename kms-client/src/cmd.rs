//! Command ids of the `POST /v1/kms/{enclave}` API.
//!
//! Ids 1..=499 are those of MinIO's kms-go SDK (`kms/cmds`), matched exactly.
//! Ids 0x8000..=0xFFFF are reserved for this project's extensions (see
//! docs/api.md); kms-go numbers its commands by hundreds per family from 1, so
//! the upper half of the u16 space cannot collide with it.

/// First id of the range reserved for this project's own commands.
pub const EXTENSION_RANGE_START: u16 = 0x8000;

macro_rules! commands {
    ($( $variant:ident = $id:literal, $name:literal, write: $w:literal, cluster: $c:literal; )*) => {
        /// A command of the KMS API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Command {
            $( #[doc = $name] $variant = $id, )*
        }

        impl Command {
            /// Every command, in id order.
            pub const ALL: &'static [Command] = &[$(Command::$variant,)*];

            /// The command with the given wire id, if any.
            pub fn from_id(id: u16) -> Option<Self> {
                match id { $( $id => Some(Command::$variant), )* _ => None }
            }

            /// The canonical name, e.g. `KEY:GENERATE`, as used in policies and logs.
            pub fn name(self) -> &'static str {
                match self { $( Command::$variant => $name, )* }
            }

            /// Parses a canonical name (case-insensitive).
            pub fn from_name(s: &str) -> Option<Self> {
                let s = s.to_ascii_uppercase();
                match s.as_str() { $( $name => Some(Command::$variant), )* _ => None }
            }

            /// Whether the command changes state (goes through the replicated log).
            pub fn is_write(self) -> bool {
                match self { $( Command::$variant => $w, )* }
            }

            /// Whether the command operates on the cluster rather than inside
            /// an enclave (SysAdmin only).
            pub fn is_cluster(self) -> bool {
                match self { $( Command::$variant => $c, )* }
            }
        }
    };
}

commands! {
    ClusterAddNode = 1, "CLUSTER:ADDNODE", write: true, cluster: true;
    ClusterRemoveNode = 2, "CLUSTER:REMOVENODE", write: true, cluster: true;
    ClusterStatus = 3, "CLUSTER:STATUS", write: false, cluster: true;
    ClusterEdit = 4, "CLUSTER:EDIT", write: true, cluster: true;
    ClusterAddHsm = 5, "CLUSTER:ADDHSM", write: true, cluster: true;
    ClusterRemoveHsm = 6, "CLUSTER:REMOVEHSM", write: true, cluster: true;
    EnclaveCreate = 101, "ENCLAVE:CREATE", write: true, cluster: true;
    EnclaveDelete = 102, "ENCLAVE:DELETE", write: true, cluster: true;
    EnclaveStatus = 103, "ENCLAVE:STATUS", write: false, cluster: true;
    EnclaveList = 104, "ENCLAVE:LIST", write: false, cluster: true;
    KeyCreate = 201, "KEY:CREATE", write: true, cluster: false;
    KeyDelete = 202, "KEY:DELETE", write: true, cluster: false;
    KeyImport = 203, "KEY:IMPORT", write: true, cluster: false;
    KeyStatus = 204, "KEY:STATUS", write: false, cluster: false;
    KeyEncrypt = 205, "KEY:ENCRYPT", write: false, cluster: false;
    KeyDecrypt = 206, "KEY:DECRYPT", write: false, cluster: false;
    KeyGenerate = 207, "KEY:GENERATE", write: false, cluster: false;
    KeyList = 208, "KEY:LIST", write: false, cluster: false;
    KeyListVersions = 209, "KEY:LISTVERSIONS", write: false, cluster: false;
    KeyMac = 210, "KEY:MAC", write: false, cluster: false;
    PolicyCreate = 301, "POLICY:CREATE", write: true, cluster: false;
    PolicyDelete = 302, "POLICY:DELETE", write: true, cluster: false;
    PolicyAssign = 303, "POLICY:ASSIGN", write: true, cluster: false;
    PolicyGet = 304, "POLICY:GET", write: false, cluster: false;
    PolicyStatus = 305, "POLICY:STATUS", write: false, cluster: false;
    PolicyList = 306, "POLICY:LIST", write: false, cluster: false;
    IdentityCreate = 401, "IDENTITY:CREATE", write: true, cluster: false;
    IdentityDelete = 402, "IDENTITY:DELETE", write: true, cluster: false;
    IdentityGet = 403, "IDENTITY:STATUS", write: false, cluster: false;
    IdentityList = 404, "IDENTITY:LIST", write: false, cluster: false;
    // Extensions for the PKCS#11 module (docs/api.md, "PKCS#11 commands"):
    // 0x8100..=0x81FF. Reads: they change no state.
    KeyRawEncrypt = 0x8100, "KEY:RAWENCRYPT", write: false, cluster: false;
    KeyRawDecrypt = 0x8101, "KEY:RAWDECRYPT", write: false, cluster: false;
    KeyMacVerify = 0x8102, "KEY:MACVERIFY", write: false, cluster: false;
    KeyRawMac = 0x8103, "KEY:RAWMAC", write: false, cluster: false;
    // Asymmetric keys (docs/api.md, "Asymmetric keys"): 0x8200..=0x82FF.
    KeySign = 0x8200, "KEY:SIGN", write: false, cluster: false;
    KeyVerify = 0x8201, "KEY:VERIFY", write: false, cluster: false;
    KeyPublicKey = 0x8202, "KEY:PUBLICKEY", write: false, cluster: false;
    KeyAsymDecrypt = 0x8203, "KEY:ASYMDECRYPT", write: false, cluster: false;
    KeyDescribe = 0x8204, "KEY:DESCRIBE", write: false, cluster: false;
    KeyListAll = 0x8205, "KEY:LISTALL", write: false, cluster: false;
    // PKCS#11 token objects (docs/api.md, "Token objects"): 0x8300..=0x83FF.
    ObjectCreate = 0x8300, "OBJECT:CREATE", write: true, cluster: false;
    ObjectSet = 0x8301, "OBJECT:SET", write: true, cluster: false;
    ObjectDelete = 0x8302, "OBJECT:DELETE", write: true, cluster: false;
    ObjectList = 0x8303, "OBJECT:LIST", write: false, cluster: false;
    // Audit and self-description (docs/api.md, "Audit and identity"): 0x8400..=0x84FF.
    ClusterAudit = 0x8400, "CLUSTER:AUDIT", write: false, cluster: true;
    // Any identity the cluster knows may ask who it is (not a cluster
    // command: Admins and Users may send it; the server answers with the
    // caller's own record only).
    IdentitySelf = 0x8401, "IDENTITY:SELF", write: false, cluster: false;
}

/// First id of the PKCS#11 extension commands.
pub const PKCS11_RANGE_START: u16 = 0x8100;
/// First id of the asymmetric-key commands.
pub const ASYM_RANGE_START: u16 = 0x8200;
/// First id of the token-object commands.
pub const OBJECT_RANGE_START: u16 = 0x8300;
/// First id of the audit and self-description commands.
pub const AUDIT_RANGE_START: u16 = 0x8400;

impl Command {
    /// Whether the command is one of this project's extensions.
    pub fn is_extension(self) -> bool {
        self as u16 >= EXTENSION_RANGE_START
    }

    /// Whether the command is one of the asymmetric-key commands.
    pub fn is_asym(self) -> bool {
        (ASYM_RANGE_START..ASYM_RANGE_START + 0x100).contains(&(self as u16))
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_roundtrip() {
        for &c in Command::ALL {
            assert_eq!(Command::from_id(c as u16), Some(c));
            assert_eq!(Command::from_name(c.name()), Some(c));
            assert_eq!(Command::from_name(&c.name().to_lowercase()), Some(c));
            assert_eq!((c as u16) < EXTENSION_RANGE_START, !c.is_extension(), "{c}");
            if c.is_extension() {
                assert!((c as u16) >= PKCS11_RANGE_START && (c as u16) < 0x8500);
            } else {
                assert!((c as u16) < 500);
            }
        }
        assert_eq!(Command::from_id(0), None);
        assert_eq!(Command::from_id(999), None);
        assert_eq!(Command::KeyGenerate as u16, 207);
        assert_eq!(Command::IdentityGet.name(), "IDENTITY:STATUS");
        assert_eq!(Command::ClusterAudit as u16, AUDIT_RANGE_START);
        assert_eq!(Command::ObjectCreate as u16, OBJECT_RANGE_START);
        assert_eq!(
            Command::from_name("cluster:audit"),
            Some(Command::ClusterAudit)
        );
        assert!(Command::ClusterAudit.is_cluster() && !Command::ClusterAudit.is_write());
        assert_eq!(Command::from_id(0x8401), Some(Command::IdentitySelf));
        assert!(!Command::IdentitySelf.is_cluster() && !Command::IdentitySelf.is_write());
    }
}
