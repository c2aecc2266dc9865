//! The one place where failures become HTTP: every error a handler can return is an
//! [`ApiError`], rendered as the distribution spec's JSON error body with its code.
//! Rendering has no side effects; internal causes are logged, never echoed in 5xx bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stowage_storage::Error as StoreError;

/// The error codes of the OCI distribution spec (and the Docker registry API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    Toomanyrequests,
    /// A byte range outside the content (Docker's code for 416).
    RangeInvalid,
}

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
#[error("{code:?} ({status}): {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Spec error code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Extra headers (e.g. `Range` with the current upload offset on a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    /// 404 for a path that names no endpoint.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::Unsupported, message)
    }

    fn internal(e: &StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unsupported,
            "internal storage error; see the server log",
        )
    }
}

/// A blob request body that passed `max_blob_bytes`; raised inside the body stream,
/// so it reaches here wrapped in the store's body error.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("blobs are limited to {limit} bytes")]
pub struct BodyTooLarge {
    /// The configured limit.
    pub limit: u64,
}

impl BodyTooLarge {
    fn in_chain(mut e: &(dyn std::error::Error + 'static)) -> Option<BodyTooLarge> {
        loop {
            if let Some(t) = e.downcast_ref::<BodyTooLarge>() {
                return Some(*t);
            }
            e = e.source()?;
        }
    }
}

impl From<BodyTooLarge> for ApiError {
    fn from(e: BodyTooLarge) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            e.to_string(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match &e {
            StoreError::InvalidDigest { .. } | StoreError::UnsupportedAlgorithm(_) => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::DigestInvalid, msg)
            }
            StoreError::DigestMismatch { .. } => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::DigestInvalid, msg)
            }
            StoreError::SizeMismatch { .. } => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::SizeInvalid, msg)
            }
            StoreError::InvalidName { .. } => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::NameInvalid, msg)
            }
            StoreError::InvalidTag(_) => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::ManifestInvalid, msg)
            }
            StoreError::InvalidUploadId(_)
            | StoreError::UploadNotFound(_)
            | StoreError::UploadRepositoryMismatch { .. } => {
                ApiError::new(S::NOT_FOUND, ErrorCode::BlobUploadUnknown, msg)
            }
            StoreError::BlobNotFound(_) => ApiError::new(S::NOT_FOUND, ErrorCode::BlobUnknown, msg),
            StoreError::NotInHistory { .. } => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::ManifestUnknown, msg)
            }
            StoreError::ManifestNotFound { .. } | StoreError::TagNotFound { .. } => {
                ApiError::new(S::NOT_FOUND, ErrorCode::ManifestUnknown, msg)
            }
            StoreError::OffsetMismatch { current, .. } => {
                let last = current.saturating_sub(1);
                ApiError::new(S::RANGE_NOT_SATISFIABLE, ErrorCode::BlobUploadInvalid, msg)
                    .with_header(header::RANGE, format!("0-{last}"))
            }
            StoreError::RangeNotSatisfiable { size, .. } => {
                ApiError::new(S::RANGE_NOT_SATISFIABLE, ErrorCode::RangeInvalid, msg)
                    .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
            }
            StoreError::Conflict { .. } => {
                ApiError::new(S::CONFLICT, ErrorCode::BlobUploadInvalid, msg)
            }
            StoreError::ReferenceUnknown(_) => {
                ApiError::new(S::BAD_REQUEST, ErrorCode::ManifestBlobUnknown, msg)
            }
            // Content this write deduplicated against was swept while it ran: nothing was
            // committed, and a retry stores the bytes afresh.
            StoreError::Collected(_) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, ErrorCode::BlobUploadInvalid, msg)
                    .with_header(header::RETRY_AFTER, "1")
            }
            StoreError::Body(source) => match BodyTooLarge::in_chain(source.as_ref()) {
                Some(too_large) => too_large.into(),
                None => ApiError::new(S::BAD_REQUEST, ErrorCode::BlobUploadInvalid, msg),
            },
            _ => ApiError::internal(&e),
        }
    }
}

impl From<stowage_auth::AuthError> for ApiError {
    fn from(e: stowage_auth::AuthError) -> Self {
        use StatusCode as S;
        use stowage_auth::AuthError as A;
        let msg = e.to_string();
        match e {
            A::Unauthenticated(_) => ApiError::new(S::UNAUTHORIZED, ErrorCode::Unauthorized, msg),
            A::Denied(_) => ApiError::new(S::FORBIDDEN, ErrorCode::Denied, msg),
            A::Invalid(_) => ApiError::new(S::BAD_REQUEST, ErrorCode::Unsupported, msg),
            A::NotFound(_) => ApiError::new(S::NOT_FOUND, ErrorCode::NameUnknown, msg),
            A::Exists(_) | A::Conflict => ApiError::new(S::CONFLICT, ErrorCode::Unsupported, msg),
            A::Store(s) => s.into(),
            A::Corrupt { .. } | A::Crypto(_) => {
                tracing::error!(error = %msg, "access control failure");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unsupported,
                    "internal access control error; see the server log",
                )
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            errors: [Entry {
                code: self.code,
                message: &self.message,
            }],
        })
        .unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            headers.insert(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_storage::Digest;

    #[test]
    fn store_errors_map_to_spec_codes_and_statuses() {
        let cases: Vec<(StoreError, StatusCode, ErrorCode)> = vec![
            (
                Digest::parse("sha256:xyz").unwrap_err(),
                StatusCode::BAD_REQUEST,
                ErrorCode::DigestInvalid,
            ),
            (
                StoreError::BlobNotFound(Digest::sha256(b"x")),
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
            ),
            (
                StoreError::OffsetMismatch {
                    id: "u".into(),
                    current: 10,
                    requested: 3,
                },
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
            ),
            (
                StoreError::UploadNotFound("u".into()),
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUploadUnknown,
            ),
            (
                StoreError::Corrupt {
                    key: "k".into(),
                    reason: "r".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unsupported,
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code), (status, code), "{api}");
        }
        let api = ApiError::from(StoreError::OffsetMismatch {
            id: "u".into(),
            current: 10,
            requested: 3,
        });
        let resp = api.into_response();
        assert_eq!(resp.headers()[header::RANGE], "0-9");
    }
}
