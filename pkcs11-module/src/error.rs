//! Errors of the safe layer, each mapped to one `CK_RV` at the C boundary.

use cryptoki_sys::*;

/// What went wrong in a call. Every variant maps to exactly one `CK_RV`
/// ([`Error::rv`]); variants that need more than the code say why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A condition that the PKCS#11 return code itself describes fully
    /// (invalid handle, operation not initialized, ...).
    #[error("{}", rv_name(*.0))]
    Ck(CK_RV),
    /// The output buffer is too small; the value is the size needed.
    #[error("buffer too small: {0} bytes needed")]
    BufferTooSmall(usize),
    /// A bad configuration (from `KMS_PKCS11_CONFIG` or the `KMS_*`
    /// variables): `C_Initialize` fails with `CKR_GENERAL_ERROR`.
    #[error("configuration: {0}")]
    Config(String),
    /// A mechanism parameter or template value that is invalid, and why.
    #[error("{what}: {why}")]
    Invalid {
        rv: CK_RV,
        what: &'static str,
        why: String,
    },
    /// The cluster answered with an error or could not be reached.
    #[error("cluster: {0}")]
    Remote(#[from] kms_client::Error),
}

impl Error {
    pub fn invalid(rv: CK_RV, what: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            rv,
            what,
            why: why.into(),
        }
    }

    /// The PKCS#11 return code of this error.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::Ck(rv) => *rv,
            Error::BufferTooSmall(_) => CKR_BUFFER_TOO_SMALL,
            Error::Config(_) => CKR_GENERAL_ERROR,
            Error::Invalid { rv, .. } => *rv,
            Error::Remote(e) => match e.status() {
                // Callers map a 400 where it means bad input data.
                Some(400) => CKR_FUNCTION_FAILED,
                Some(403) => CKR_KEY_FUNCTION_NOT_PERMITTED,
                Some(404) => CKR_KEY_HANDLE_INVALID,
                Some(409) => CKR_ATTRIBUTE_VALUE_INVALID,
                Some(413) => CKR_DATA_LEN_RANGE,
                _ => CKR_DEVICE_ERROR,
            },
        }
    }
}

/// Shorthand for results of the safe layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of a return code, for logs.
pub fn rv_name(rv: CK_RV) -> &'static str {
    macro_rules! names {
        ($($c:ident),* $(,)?) => {
            $( if rv == $c { return stringify!($c); } )*
        };
    }
    names!(
        CKR_OK,
        CKR_ARGUMENTS_BAD,
        CKR_ATTRIBUTE_READ_ONLY,
        CKR_ATTRIBUTE_SENSITIVE,
        CKR_ATTRIBUTE_TYPE_INVALID,
        CKR_ATTRIBUTE_VALUE_INVALID,
        CKR_BUFFER_TOO_SMALL,
        CKR_CANT_LOCK,
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
        CKR_CRYPTOKI_NOT_INITIALIZED,
        CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE,
        CKR_DEVICE_ERROR,
        CKR_ENCRYPTED_DATA_INVALID,
        CKR_ENCRYPTED_DATA_LEN_RANGE,
        CKR_FUNCTION_NOT_PARALLEL,
        CKR_FUNCTION_NOT_SUPPORTED,
        CKR_GENERAL_ERROR,
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        CKR_KEY_HANDLE_INVALID,
        CKR_KEY_SIZE_RANGE,
        CKR_KEY_TYPE_INCONSISTENT,
        CKR_KEY_UNEXTRACTABLE,
        CKR_MECHANISM_INVALID,
        CKR_MECHANISM_PARAM_INVALID,
        CKR_OBJECT_HANDLE_INVALID,
        CKR_OPERATION_ACTIVE,
        CKR_OPERATION_NOT_INITIALIZED,
        CKR_PIN_INCORRECT,
        CKR_SESSION_CLOSED,
        CKR_SESSION_HANDLE_INVALID,
        CKR_SESSION_PARALLEL_NOT_SUPPORTED,
        CKR_SESSION_READ_ONLY,
        CKR_SESSION_READ_ONLY_EXISTS,
        CKR_SESSION_READ_WRITE_SO_EXISTS,
        CKR_SIGNATURE_INVALID,
        CKR_SIGNATURE_LEN_RANGE,
        CKR_SLOT_ID_INVALID,
        CKR_TEMPLATE_INCOMPLETE,
        CKR_TEMPLATE_INCONSISTENT,
        CKR_TOKEN_NOT_PRESENT,
        CKR_TOKEN_WRITE_PROTECTED,
        CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        CKR_USER_ALREADY_LOGGED_IN,
        CKR_USER_NOT_LOGGED_IN,
        CKR_USER_TYPE_INVALID,
        CKR_WRAPPED_KEY_INVALID,
        CKR_WRAPPED_KEY_LEN_RANGE,
        CKR_WRAPPING_KEY_HANDLE_INVALID,
        CKR_NEED_TO_CREATE_THREADS,
        CKR_FUNCTION_FAILED,
        CKR_RANDOM_SEED_NOT_SUPPORTED,
        CKR_ACTION_PROHIBITED,
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_CURVE_NOT_SUPPORTED,
    );
    "CKR_(other)"
}
