//! The engine's one error type. Variants carry meaning (what was missing, what did not
//! match) so the HTTP layer can map each to its spec error code without string matching.

use crate::digest::Digest;

/// Boxed error from a caller-supplied byte stream (an HTTP body, a file).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest string that does not match the OCI grammar or its algorithm's encoding.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The rejected string.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A well-formed digest whose algorithm this store cannot verify.
    #[error("unsupported digest algorithm {0:?}: only sha256 and sha512 are supported")]
    UnsupportedAlgorithm(String),
    /// A repository name outside the OCI grammar.
    #[error("invalid repository name {value:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A tag outside the OCI grammar.
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
    /// A record name that could leave its area of the store.
    #[error("invalid record name {name:?}: {reason}")]
    InvalidRecordName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upload session id that is not one this store issues.
    #[error("invalid upload id {0:?}")]
    InvalidUploadId(String),
    /// No committed blob has this digest.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// The repository has no manifest with this digest.
    #[error("manifest {digest} not found in repository {repo}")]
    ManifestNotFound {
        /// Repository searched.
        repo: String,
        /// Digest asked for.
        digest: Digest,
    },
    /// The repository has no such tag.
    #[error("tag {tag} not found in repository {repo}")]
    TagNotFound {
        /// Repository searched.
        repo: String,
        /// Tag asked for.
        tag: String,
    },
    /// A tag rollback to a digest the tag never pointed to (or whose entry the garbage
    /// collector pruned from its history): only an image from the tag's history can be
    /// rolled back to.
    #[error(
        "{digest} is not in the history of tag {repo}:{tag}; a tag can only be rolled back to a digest it pointed to before"
    )]
    NotInHistory {
        /// Repository.
        repo: String,
        /// Tag.
        tag: String,
        /// Digest asked for.
        digest: Digest,
    },
    /// No upload session with this id (never created, finished, cancelled or expired).
    #[error("upload {0} not found")]
    UploadNotFound(String),
    /// The upload belongs to another repository than the one it was addressed through.
    #[error("upload {id} belongs to repository {actual}, not {requested}")]
    UploadRepositoryMismatch {
        /// Session id.
        id: String,
        /// Repository the session was started in.
        actual: String,
        /// Repository the caller used.
        requested: String,
    },
    /// The content does not hash to the digest the client declared.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes are.
        actual: Digest,
    },
    /// The content is not the size the client declared.
    #[error("size mismatch: expected {expected} bytes, received {actual}")]
    SizeMismatch {
        /// What the client said.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// An append that does not start where the session ends.
    #[error("upload {id} is at offset {current}, an append at {requested} is out of order")]
    OffsetMismatch {
        /// Session id.
        id: String,
        /// Where the session ends: the next append must start here.
        current: u64,
        /// Where the rejected append started.
        requested: u64,
    },
    /// Another writer changed the object between our read and our write.
    #[error("concurrent update of {what}; retry")]
    Conflict {
        /// What was being updated.
        what: String,
    },
    /// The object is being deleted by a garbage collection run; a writer that needs it
    /// must store it again (the request can be retried).
    #[error("{0} is being garbage collected; retry")]
    Collected(String),
    /// A manifest names a blob or child manifest the repository does not hold.
    #[error("manifest references {0}, which is not in the repository")]
    ReferenceUnknown(Digest),
    /// A byte range outside the blob.
    #[error("range {start}-{end} is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// First byte asked for.
        start: u64,
        /// Last byte asked for (inclusive).
        end: u64,
        /// Blob size.
        size: u64,
    },
    /// Stored data that fails its own checks (hash, format, checksum).
    #[error("corrupt object {key}: {reason}")]
    Corrupt {
        /// Object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store was created with settings this process cannot or must not use.
    #[error("store is incompatible: {0}")]
    IncompatibleStore(String),
    /// A storage URL or option that cannot be opened.
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The client's byte stream failed before it ended.
    #[error("reading the upload body failed: {0}")]
    Body(#[source] BoxError),
    /// The backend failed.
    #[error("storage backend error on {key}: {source}")]
    Backend {
        /// Object key involved.
        key: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },
    /// Local file I/O failed (direct pack writes, lock files).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// True for errors caused by the request (bad names, digests, ranges, offsets),
    /// false for failures of the store itself.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::Corrupt { .. }
                | Error::IncompatibleStore(_)
                | Error::InvalidConfig(_)
                | Error::Backend { .. }
                | Error::Io { .. }
                | Error::Task(_)
        )
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
