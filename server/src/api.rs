//! The distribution API's router and handlers. Every request under `/v2/` is parsed by
//! [`crate::route`] and dispatched here; every failure is an [`ApiError`].

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::TryStreamExt;
use stowage_storage::{Digest, RepoName, Store, UploadId};

use crate::error::{ApiError, ErrorCode};
use crate::route::{self, Route};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store behind the registry.
    pub store: Store,
}

/// The registry's HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .with_state(state)
}

const API_VERSION: &str = "registry/2.0";

fn with_api_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

async fn base() -> Response {
    with_api_version(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
    )
}

async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let route = route::parse(&rest)?;
        let req = Request {
            state: &state,
            query: &query,
            headers: &headers,
        };
        match (route, method) {
            (Route::Base, _) => Ok(base().await),
            (Route::Blob(name, digest), Method::GET) => req.get_blob(&name, &digest, true).await,
            (Route::Blob(name, digest), Method::HEAD) => req.get_blob(&name, &digest, false).await,
            (Route::UploadStart(name), Method::POST) => req.start_upload(&name, body).await,
            (Route::Upload(name, id), Method::PATCH) => req.patch_upload(&name, &id, body).await,
            (Route::Upload(name, id), Method::PUT) => req.finish_upload(&name, &id, body).await,
            (Route::Upload(name, id), Method::GET) => req.upload_status(&name, &id).await,
            (Route::Upload(name, id), Method::DELETE) => {
                state.store.cancel_upload(&id, &name).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            (route, method) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!("{method} is not supported on {route:?}"),
            )),
        }
    }
    .await;
    with_api_version(result.unwrap_or_else(IntoResponse::into_response))
}

struct Request<'a> {
    state: &'a AppState,
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
}

fn upload_location(name: &RepoName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn blob_location(name: &RepoName, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

/// `Range` of an upload holding `offset` bytes, as clients expect it (`0-0` when empty).
fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn body_stream(
    body: Body,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send {
    body.into_data_stream()
}

impl Request<'_> {
    fn store(&self) -> &Store {
        &self.state.store
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    async fn get_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: bool,
    ) -> Result<Response, ApiError> {
        let repo = self.store().repository(name);
        let info = repo.blob(digest).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in repository {name}"),
            )
        })?;
        let range = match self.header(header::RANGE) {
            Some(r) => Some(parse_range(r, info.size)?),
            None => None,
        };
        let mut builder = Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::ACCEPT_RANGES, "bytes")
            .header("Docker-Content-Digest", digest.to_string());
        let (status, len) = match &range {
            Some(r) => {
                builder = builder.header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", r.start, r.end - 1, info.size),
                );
                (StatusCode::PARTIAL_CONTENT, r.end - r.start)
            }
            None => (StatusCode::OK, info.size),
        };
        builder = builder.status(status).header(header::CONTENT_LENGTH, len);
        let body = if body && len > 0 {
            let read = self.store().read_blob(digest, range).await?;
            Body::from_stream(read.stream.map_err(std::io::Error::other))
        } else {
            Body::empty()
        };
        builder.body(body).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unsupported,
                e.to_string(),
            )
        })
    }

    async fn start_upload(&self, name: &RepoName, body: Body) -> Result<Response, ApiError> {
        let repo = self.store().repository(name);
        if let Some(mount) = self.query.get("mount") {
            let digest = Digest::parse(mount)?;
            let source = match self.query.get("from") {
                Some(from) => {
                    self.store()
                        .repository(&RepoName::parse(from)?)
                        .blob(&digest)
                        .await?
                }
                // Without `from`, any committed blob may be mounted (OCI 1.1).
                None => self.store().blob(&digest).await?,
            };
            if source.is_some() {
                repo.link_blob(&digest).await?;
                return Ok(created(&blob_location(name, &digest), &digest));
            }
            // Not mountable: fall back to an ordinary upload session, as the spec says.
        } else if let Some(d) = self.query.get("digest") {
            let digest = Digest::parse(d)?;
            repo.put_blob(&digest, body_stream(body)).await?;
            return Ok(created(&blob_location(name, &digest), &digest));
        }
        let status = self.store().start_upload(name).await?;
        Ok(accepted(name, &status.id, status.offset))
    }

    /// Where an append starts: the `Content-Range` start if given (checked against the
    /// session), else the session's end (a streamed PATCH).
    async fn append_offset(&self, name: &RepoName, id: &UploadId) -> Result<Option<u64>, ApiError> {
        let Some(range) = self.header(header::CONTENT_RANGE) else {
            return Ok(None);
        };
        let (start, end) = parse_content_range(range)?;
        if let Some(len) = self
            .header(header::CONTENT_LENGTH)
            .and_then(|l| l.parse::<u64>().ok())
            && end + 1 - start != len
        {
            let current = self.store().upload_status(id, name).await?.offset;
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range {start}-{end} does not match Content-Length {len}"),
            )
            .with_header(header::RANGE, upload_range(current)));
        }
        Ok(Some(start))
    }

    async fn patch_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        body: Body,
    ) -> Result<Response, ApiError> {
        let offset = match self.append_offset(name, id).await? {
            Some(o) => o,
            None => self.store().upload_status(id, name).await?.offset,
        };
        let status = self
            .store()
            .append_upload(id, name, offset, body_stream(body))
            .await?;
        Ok(accepted(name, id, status.offset))
    }

    async fn finish_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        body: Body,
    ) -> Result<Response, ApiError> {
        let digest = self.query.get("digest").ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::DigestInvalid,
                "closing an upload needs ?digest=",
            )
        })?;
        let digest = Digest::parse(digest)?;
        let offset = self.append_offset(name, id).await?;
        self.store()
            .finish_upload(id, name, offset, body_stream(body), &digest)
            .await?;
        Ok(created(&blob_location(name, &digest), &digest))
    }

    async fn upload_status(&self, name: &RepoName, id: &UploadId) -> Result<Response, ApiError> {
        let status = self.store().upload_status(id, name).await?;
        let mut resp = accepted(name, id, status.offset);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }
}

fn created(location: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, location.to_string()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

fn accepted(name: &RepoName, id: &UploadId, offset: u64) -> Response {
    (
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, upload_location(name, id)),
            (header::RANGE, upload_range(offset)),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                id.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

/// A single `bytes=` range (`a-b`, `a-`, `-n`) against a blob of `size` bytes, as a
/// half-open range; anything unsatisfiable is a 416 with `Content-Range: bytes */size`.
fn parse_range(value: &str, size: u64) -> Result<std::ops::Range<u64>, ApiError> {
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeInvalid,
            format!("range {value:?} is not satisfiable for a blob of {size} bytes"),
        )
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    };
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        return Err(unsatisfiable());
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            let n = num(b)?.min(size);
            size - n..size
        }
        (false, true) => num(a)?..size,
        (false, false) => num(a)?..num(b)?.saturating_add(1).min(size),
        (true, true) => return Err(unsatisfiable()),
    };
    if range.start >= range.end || range.start >= size {
        return Err(unsatisfiable());
    }
    Ok(range)
}

/// `Content-Range: <start>-<end>` of a PATCH (inclusive; with or without `bytes `).
fn parse_content_range(value: &str) -> Result<(u64, u64), ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            format!("malformed Content-Range {value:?}"),
        )
    };
    let v = value
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), 0..10);
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), 90..100);
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), 90..100);
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), 50..100);
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=x-1",
        ] {
            let e = parse_range(bad, 100).unwrap_err();
            assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
        assert_eq!(parse_content_range("0-99").unwrap(), (0, 99));
        assert_eq!(parse_content_range("bytes 100-199/*").unwrap(), (100, 199));
        assert!(parse_content_range("9-1").is_err());
    }
}
