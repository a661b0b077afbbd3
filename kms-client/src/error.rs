//! Client errors.

/// An error of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    /// No server could be reached.
    #[error("no server reachable: {0}")]
    Transport(String),
    /// The request was sent but no complete answer arrived (connection lost,
    /// timeout): it may or may not have been applied.
    #[error("request interrupted, outcome unknown: {0}")]
    Interrupted(String),
    /// The server's answer is not a valid response.
    #[error("invalid response: {0}")]
    Protocol(String),
    /// A client setting is invalid.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
