//! Errors of the access model. The server maps each to HTTP in one place.

/// Why an access-model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Credentials missing, malformed, unknown, expired or revoked.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// Valid credentials, not enough rights.
    #[error("denied: {0}")]
    Denied(String),
    /// Bad input: a name, pattern, duration or request outside the rules.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A user, team, robot, namespace, grant or token that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Something that already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// The policy kept changing under a writer; retry.
    #[error("the policy changed concurrently too often; retry")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] stowage_storage::Error),
    /// A record in the store does not parse.
    #[error("corrupt auth record {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Randomness or hashing failed (the OS refused).
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl AuthError {
    pub(crate) fn invalid(m: impl Into<String>) -> Self {
        AuthError::Invalid(m.into())
    }
}

/// Results of this crate.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
