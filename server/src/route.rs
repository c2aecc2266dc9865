//! Paths of the distribution API. Repository names contain slashes, so `/v2/<name>/...`
//! cannot be matched segment by segment: the path is taken whole and split at the
//! endpoint marker closest to its end.

use stowage_storage::{Digest, Reference, RepoName, UploadId};

use crate::error::{ApiError, ErrorCode};

/// An endpoint and its parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

fn name(s: &str) -> Result<RepoName, ApiError> {
    RepoName::parse(s).map_err(ApiError::from)
}

/// Parses the part of a path after `/v2/`.
pub fn parse(rest: &str) -> Result<Route, ApiError> {
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(n) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(name(n)?));
    }
    if let Some((n, id)) = rest.rsplit_once("/blobs/uploads/") {
        let n = name(n)?;
        if id.is_empty() {
            return Ok(Route::UploadStart(n));
        }
        return id
            .parse()
            .map(|id| Route::Upload(n, id))
            .map_err(ApiError::from);
    }
    if let Some(n) = rest.strip_suffix("/blobs/uploads") {
        return Ok(Route::UploadStart(name(n)?));
    }
    if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        let n = name(n)?;
        let reference = Reference::parse(r).map_err(|e| match e {
            stowage_storage::Error::InvalidTag(_) => ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                e.to_string(),
            ),
            other => ApiError::from(other),
        })?;
        return Ok(Route::Manifest(n, reference));
    }
    if let Some((n, d)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob(name(n)?, Digest::parse(d)?));
    }
    if let Some((n, d)) = rest.rsplit_once("/referrers/") {
        return Ok(Route::Referrers(name(n)?, Digest::parse(d)?));
    }
    Err(ApiError::not_found(format!("no endpoint at /v2/{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_the_last_endpoint_marker() {
        let d = Digest::sha256(b"x");
        let n = RepoName::parse("a/blobs/b").unwrap();
        assert_eq!(parse("").unwrap(), Route::Base);
        assert_eq!(parse("_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse("a/blobs/b/tags/list").unwrap(),
            Route::Tags(n.clone())
        );
        assert_eq!(
            parse(&format!("a/blobs/b/blobs/{d}")).unwrap(),
            Route::Blob(n.clone(), d.clone())
        );
        assert_eq!(
            parse("a/blobs/b/blobs/uploads/").unwrap(),
            Route::UploadStart(n.clone())
        );
        let id = "0f5c4a60-7a4b-4f0e-9a35-95f0d3e0c1a2";
        assert!(matches!(
            parse(&format!("x/blobs/uploads/{id}")),
            Ok(Route::Upload(_, _))
        ));
        assert!(matches!(
            parse("library/alpine/manifests/latest"),
            Ok(Route::Manifest(_, Reference::Tag(_)))
        ));
        assert!(matches!(
            parse(&format!("x/referrers/{d}")),
            Ok(Route::Referrers(_, _))
        ));
    }

    #[test]
    fn bad_parts_get_their_spec_codes() {
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("UPPER/blobs/uploads/"), ErrorCode::NameInvalid);
        assert_eq!(code("x/blobs/sha256:short"), ErrorCode::DigestInvalid);
        assert_eq!(code("x/manifests/-bad-tag"), ErrorCode::ManifestInvalid);
        assert_eq!(
            code("x/blobs/uploads/not-a-uuid"),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(code("x/whatever"), ErrorCode::Unsupported);
    }
}
