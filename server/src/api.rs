//! The distribution API's router and handlers. Every request under `/v2/` is parsed by
//! [`crate::route`] and dispatched here; every failure is an [`ApiError`].

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{StreamExt as _, TryStreamExt};
use stowage_storage::manifest::{self, Kind};
use stowage_storage::{
    Descriptor, Digest, ManifestLink, Reference, References, RepoName, Store, Tag, UploadId,
};

use stowage_auth::Caller;

use crate::accept::Accept;
use crate::auth::Gate;
use crate::error::{ApiError, BodyTooLarge, ErrorCode};
use crate::route::{self, Route};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store behind the registry.
    pub store: Store,
    /// Accept manifests whose blobs and child manifests are not in the repository
    /// (for partial mirrors; the spec permits it).
    pub allow_sparse: bool,
    /// Largest manifest accepted; larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Largest blob accepted (monolithic or all chunks together); 413 above. None:
    /// unlimited (bodies are streamed, so size costs disk, not memory).
    pub max_blob_bytes: Option<u64>,
    /// Which DELETE requests are served (the others get 405 UNSUPPORTED).
    pub deletes: Deletes,
    /// Base URL clients reach the registry by (behind a proxy); `Location` and `Link`
    /// headers are made absolute with it. Relative when unset.
    pub public_url: Option<String>,
    /// Prometheus instruments, served at `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Access control; `None`: none at all (every caller may do everything).
    pub gate: Option<Gate>,
    /// Image metadata for the image-stream API, by manifest digest.
    pub images: crate::imagestreams::ImageCache,
}

/// Which kinds of DELETE the registry accepts; operators of shared registries often
/// turn some off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deletes {
    /// `DELETE /v2/<name>/manifests/<tag>`.
    pub tags: bool,
    /// `DELETE /v2/<name>/manifests/<digest>`.
    pub manifests: bool,
    /// `DELETE /v2/<name>/blobs/<digest>` (unlinks the blob from the repository).
    pub blobs: bool,
}

impl Default for Deletes {
    fn default() -> Self {
        Deletes {
            tags: true,
            manifests: true,
            blobs: true,
        }
    }
}

impl AppState {
    /// Defaults: strict manifests, 4 MiB limit.
    pub fn new(store: Store) -> Self {
        AppState {
            store,
            allow_sparse: false,
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: None,
            deletes: Deletes::default(),
            public_url: None,
            metrics: crate::metrics::Metrics::new(),
            gate: None,
            images: Default::default(),
        }
    }
}

/// The registry's HTTP routes, with metrics recorded for each request.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone().with_store(state.store.clone());
    let gate = state.gate.clone();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route(
            "/oapi/v1/namespaces/{*rest}",
            any(crate::imagestreams::oapi),
        )
        .route(
            "/apis/image.openshift.io/v1/namespaces/{*rest}",
            any(crate::imagestreams::apis),
        )
        .with_state(state)
        .route(
            "/metrics",
            get(expose_metrics).with_state((metrics.clone(), gate.clone())),
        );
    if let Some(gate) = gate {
        router = router
            .route(
                "/auth/token",
                get(crate::auth::token_endpoint)
                    .post(crate::auth::token_endpoint)
                    .with_state(gate.clone()),
            )
            .route(
                "/stowage/v1/admin",
                axum::routing::post(crate::auth::admin_endpoint).with_state(gate.clone()),
            )
            .route(
                "/stowage/v1/whoami",
                get(crate::auth::admin_endpoint).with_state(gate),
            );
    }
    router.layer(axum::middleware::from_fn_with_state(
        metrics,
        crate::metrics::record,
    ))
}

/// `/metrics`, for registry admins only when access control is on (it names endpoints
/// and counts what the registry holds), unless configured public.
async fn expose_metrics(
    State((metrics, gate)): State<(crate::metrics::Metrics, Option<Gate>)>,
    req: axum::extract::Request,
) -> Response {
    if let Some(g) = &gate
        && g.auth.enabled()
        && !g.public_metrics
    {
        let (parts, _) = req.into_parts();
        let allowed = match crate::auth::caller_of(Some(g), &parts).await {
            Ok(caller) => g.may_read_metrics(&caller),
            Err(e) => return e.into_response(),
        };
        if !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "/metrics is for registry admins",
            )
            .into_response();
        }
    }
    crate::metrics::expose(State(metrics)).await.into_response()
}

const API_VERSION: &str = "registry/2.0";

/// How much of a refused blob body is read and discarded before answering 413.
const DRAIN_BEFORE_REFUSING: u64 = 64 << 20;

/// Most `?tag=` parameters one manifest push may carry (the spec asks for at least 10).
const MAX_TAGS_PER_PUSH: usize = 100;

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

async fn dispatch(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let method = method.clone();
    // Path and query are read here rather than by axum's extractors, whose plain-text
    // rejections (bad percent-encoding, say) would bypass the spec's error bodies.
    let raw_query = uri.query().unwrap_or("");
    let query: HashMap<String, String> = query_pairs(uri).collect();
    let result = async {
        let path = uri.path().strip_prefix("/v2/").unwrap_or("");
        let rest = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::NameInvalid,
                    "the path is not valid percent-encoded UTF-8",
                )
            })?;
        let route = route::parse(&rest)?;
        // Every request passes the one access decision, with what its route needs.
        let caller = crate::auth::caller_of(state.gate.as_ref(), &parts).await?;
        if let Some(gate) = &state.gate {
            gate.authorize(&caller, &crate::auth::need(&route, &method), headers)?;
        }
        let req = Request {
            state: &state,
            query: &query,
            raw_query,
            headers,
            caller: &caller,
        };
        match (route, method) {
            (Route::Base, _) => Ok(base().await),
            (Route::Catalog, Method::GET) => req.catalog().await,
            (Route::Tags(name), Method::GET) => req.tags(&name).await,
            (Route::Manifest(name, r), Method::GET) => req.get_manifest(&name, &r, true).await,
            (Route::Manifest(name, r), Method::HEAD) => req.get_manifest(&name, &r, false).await,
            (Route::Manifest(name, r), Method::PUT) => req.put_manifest(&name, &r, body).await,
            (Route::Manifest(name, r), Method::DELETE) => req.delete_manifest(&name, &r).await,
            (Route::Referrers(name, d), Method::GET) => req.referrers(&name, &d).await,
            (Route::Blob(name, digest), Method::GET) => req.get_blob(&name, &digest, true).await,
            (Route::Blob(name, digest), Method::HEAD) => req.get_blob(&name, &digest, false).await,
            (Route::Blob(name, digest), Method::DELETE) => req.delete_blob(&name, &digest).await,
            (Route::UploadStart(name), Method::POST) => req.start_upload(&name, body).await,
            (Route::Upload(name, id), Method::PATCH) => req.patch_upload(&name, &id, body).await,
            (Route::Upload(name, id), Method::PUT) => req.finish_upload(&name, &id, body).await,
            (Route::Upload(name, id), Method::GET) => req.upload_status(&name, &id).await,
            (Route::Upload(name, id), Method::DELETE) => {
                state.store.cancel_upload(&id, &name).await?;
                req.audit("cancel-upload", &name, &id.to_string());
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
    let resp = with_api_version(result.unwrap_or_else(IntoResponse::into_response));
    match &state.public_url {
        Some(base) => absolute_urls(resp, base),
        None => resp,
    }
}

/// A request's query parameters, decoded, in order (repeated keys repeat).
pub(crate) fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned()
}

/// Prefixes the paths in `Location` and `Link` headers with the public base URL.
fn absolute_urls(mut resp: Response, base: &str) -> Response {
    let base = base.trim_end_matches('/');
    for (name, open) in [(header::LOCATION, ""), (header::LINK, "<")] {
        let Some(value) = resp.headers().get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(path) = value.strip_prefix(open).filter(|p| p.starts_with('/')) else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_str(&format!("{open}{base}{path}")) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

struct Request<'a> {
    state: &'a AppState,
    /// The query, one value per key.
    query: &'a HashMap<String, String>,
    /// The query as sent, for keys that repeat (`?tag=a&tag=b`).
    raw_query: &'a str,
    headers: &'a HeaderMap,
    /// Who is asking (already authorized for the route).
    caller: &'a Caller,
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

impl Request<'_> {
    fn store(&self) -> &Store {
        &self.state.store
    }

    /// Whether the caller may pull from `name` (listings, mounts).
    fn may_pull(&self, name: &RepoName) -> bool {
        self.state
            .gate
            .as_ref()
            .is_none_or(|g| g.may_pull(self.caller, name))
    }

    /// One structured audit line for a change, naming who made it.
    fn audit(&self, action: &str, repo: &RepoName, what: &str) {
        tracing::info!(
            target: "stowage::audit",
            who = %self.caller.principal,
            token = self.caller.token.as_ref().map(|t| t.id.as_str()),
            action,
            repository = %repo,
            what,
            "registry change"
        );
    }

    /// A blob request's body as a stream that fails with [`BodyTooLarge`] once the
    /// blob (`already` bytes plus this body) passes the limit; refused at once when
    /// `Content-Length` already says so.
    fn blob_body(
        &self,
        body: Body,
        already: u64,
    ) -> Result<
        impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + use<>,
        ApiError,
    > {
        let limit = self.state.max_blob_bytes.unwrap_or(u64::MAX);
        let declared = self
            .header(header::CONTENT_LENGTH)
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        if already.saturating_add(declared) > limit {
            return Err(BodyTooLarge { limit }.into());
        }
        let state = (body.into_data_stream(), already, false);
        Ok(futures::stream::unfold(
            state,
            move |(mut data, seen, done)| async move {
                if done {
                    return None;
                }
                let chunk = match data.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), (data, seen, true))),
                };
                let seen = seen.saturating_add(chunk.len() as u64);
                if seen <= limit {
                    return Some((Ok(chunk), (data, seen, false)));
                }
                // Read on (a bounded amount) before refusing, so that a client still
                // sending gets the 413 rather than a reset connection.
                let mut drained = 0u64;
                while drained < DRAIN_BEFORE_REFUSING {
                    match data.next().await {
                        Some(Ok(c)) => drained += c.len() as u64,
                        _ => break,
                    }
                }
                let too_large = axum::Error::new(BodyTooLarge { limit });
                Some((Err(too_large), (data, seen, true)))
            },
        ))
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
        let unknown = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in repository {name}"),
            )
        };
        // A GET reads the recipe once, for the size and the chunks; a HEAD reads only
        // the recipe's header.
        let (size, reader) = if body {
            let reader = repo.open_blob(digest).await?.ok_or_else(unknown)?;
            (reader.size(), Some(reader))
        } else {
            (repo.blob(digest).await?.ok_or_else(unknown)?.size, None)
        };
        let range = match self.header(header::RANGE) {
            Some(r) => Some(parse_range(r, size)?),
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
                    format!("bytes {}-{}/{}", r.start, r.end - 1, size),
                );
                (StatusCode::PARTIAL_CONTENT, r.end - r.start)
            }
            None => (StatusCode::OK, size),
        };
        builder = builder.status(status).header(header::CONTENT_LENGTH, len);
        let body = match reader {
            Some(reader) if len > 0 => {
                Body::from_stream(reader.read(range)?.stream.map_err(std::io::Error::other))
            }
            _ => Body::empty(),
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
            let open = self.state.gate.as_ref().is_none_or(|g| !g.auth.enabled());
            let source = match self.query.get("from") {
                // Only from a repository the caller may pull: else a plain upload.
                Some(from) => match RepoName::parse(from) {
                    Ok(from) if self.may_pull(&from) => {
                        self.store().repository(&from).blob(&digest).await?
                    }
                    _ => None,
                },
                // Without `from`, any committed blob may be mounted (OCI 1.1), but only
                // where nothing is private: a digest alone must not read another's blob.
                None if open => self.store().blob(&digest).await?,
                None => None,
            };
            if source.is_some() {
                repo.link_blob(&digest).await?;
                return Ok(created(&blob_location(name, &digest), &digest));
            }
            // Not mountable: fall back to an ordinary upload session, as the spec says.
        } else if let Some(d) = self.query.get("digest") {
            let digest = Digest::parse(d)?;
            repo.put_blob(&digest, self.blob_body(body, 0)?).await?;
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
            && end.checked_sub(start).and_then(|n| n.checked_add(1)) != Some(len)
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
        let body = self.blob_body(body, offset)?;
        let status = self.store().append_upload(id, name, offset, body).await?;
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
        let already = match (offset, self.state.max_blob_bytes) {
            (Some(o), _) => o,
            (None, Some(_)) => self.store().upload_status(id, name).await?.offset,
            (None, None) => 0,
        };
        let body = self.blob_body(body, already)?;
        self.store()
            .finish_upload(id, name, offset, body, &digest)
            .await?;
        Ok(created(&blob_location(name, &digest), &digest))
    }

    /// Page of a sorted list: names after `last`, at most `n`, and the `Link` to the
    /// next page when more remain.
    fn page(
        &self,
        mut all: Vec<String>,
        path: &str,
    ) -> Result<(Vec<String>, Option<String>), ApiError> {
        if let Some(last) = self.query.get("last") {
            all.retain(|t| t.as_str() > last.as_str());
        }
        let n = match self.query.get("n") {
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Unsupported,
                    format!("n={n:?} is not a number"),
                )
            })?),
            None => None,
        };
        let mut link = None;
        if let Some(n) = n
            && all.len() > n
        {
            all.truncate(n);
            if let Some(last) = all.last() {
                link = Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""));
            }
        }
        Ok((all, link))
    }

    async fn tags(&self, name: &RepoName) -> Result<Response, ApiError> {
        let repo = self.store().repository(name);
        let tags: Vec<String> = repo.tags().await?.iter().map(|t| t.to_string()).collect();
        if tags.is_empty() && !repo.exists().await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NameUnknown,
                format!("repository {name} is not known"),
            ));
        }
        let (tags, link) = self.page(tags, &format!("/v2/{name}/tags/list"))?;
        let body = serde_json::json!({ "name": name.as_str(), "tags": tags });
        Ok(json_response(
            StatusCode::OK,
            "application/json",
            &body,
            link,
        ))
    }

    async fn catalog(&self) -> Result<Response, ApiError> {
        // Filtered by access before paging, so that a page is never short or leaky, and
        // read from the store's listing only as far as the page needs (one name more,
        // to know whether another page follows).
        let after = self.query.get("last").map(String::as_str);
        let want = match self.query.get("n") {
            Some(n) => n.parse::<usize>().ok().map(|n| n.saturating_add(1)),
            None => None,
        };
        let mut names = std::pin::pin!(self.store().repositories_stream(None, after));
        let mut all: Vec<String> = Vec::new();
        while let Some(name) = names.try_next().await? {
            if self.may_pull(&name) {
                all.push(name.to_string());
                if want.is_some_and(|w| all.len() >= w) {
                    break;
                }
            }
        }
        let (repos, link) = self.page(all, "/v2/_catalog")?;
        let body = serde_json::json!({ "repositories": repos });
        Ok(json_response(
            StatusCode::OK,
            "application/json",
            &body,
            link,
        ))
    }

    async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Digest, ApiError> {
        let unknown = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in repository {name}"),
            )
        };
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => Ok(self
                .store()
                .repository(name)
                .tag(t)
                .await?
                .ok_or_else(unknown)?
                .current()
                .clone()),
        }
    }

    async fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<Response, ApiError> {
        let digest = self.resolve(name, reference).await?;
        let repo = self.store().repository(name);
        let link = repo.manifest_link(&digest).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in repository {name}"),
            )
        })?;
        let accept = Accept::from_headers(self.headers);
        let (digest, link) = if accept.allows(&link.media_type) {
            (digest, link)
        } else {
            self.platform_fallback(name, reference, &digest, &link.media_type, &accept)
                .await?
        };
        let bytes = if body {
            Body::from(self.store().blob_bytes(&digest).await?)
        } else {
            Body::empty()
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, &link.media_type)
            .header(header::CONTENT_LENGTH, link.size)
            .header("Docker-Content-Digest", digest.to_string())
            .body(bytes)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unsupported,
                    e.to_string(),
                )
            })
    }

    /// For a client that does not accept the stored type: an index's linux/amd64
    /// child when the client reads that child's type, else MANIFEST_UNKNOWN.
    async fn platform_fallback(
        &self,
        name: &RepoName,
        reference: &Reference,
        digest: &Digest,
        stored: &str,
        accept: &Accept,
    ) -> Result<(Digest, ManifestLink), ApiError> {
        let not_acceptable = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {reference} in {name} is a {stored}, which the request's Accept header excludes"
                ),
            )
        };
        if manifest::kind_of(stored) != Some(Kind::Index) {
            return Err(not_acceptable());
        }
        let index = self.store().blob_bytes(digest).await?;
        let Some(child) = manifest::platform_child(&index, "linux", "amd64") else {
            return Err(not_acceptable());
        };
        let link = self
            .store()
            .repository(name)
            .manifest_link(&child.digest)
            .await?
            .filter(|l| accept.allows(&l.media_type))
            .ok_or_else(not_acceptable)?;
        Ok((child.digest, link))
    }

    /// The `tag` query parameters of a manifest push (tags given beside a digest),
    /// all checked before anything is stored.
    fn tag_params(&self) -> Result<Vec<Tag>, ApiError> {
        let tags: Vec<Tag> = url::form_urlencoded::parse(self.raw_query.as_bytes())
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| Tag::parse(&v))
            .collect::<Result<_, _>>()?;
        if tags.len() > MAX_TAGS_PER_PUSH {
            return Err(ApiError::new(
                StatusCode::URI_TOO_LONG,
                ErrorCode::Unsupported,
                format!("at most {MAX_TAGS_PER_PUSH} tags per manifest push"),
            ));
        }
        Ok(tags)
    }

    async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        body: Body,
    ) -> Result<Response, ApiError> {
        let limit = self.state.max_manifest_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                format!("manifests are limited to {limit} bytes"),
            )
        })?;
        let content_type = self
            .header(header::CONTENT_TYPE)
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .unwrap_or("");
        let invalid =
            |m: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, m);
        let parsed = manifest::parse(content_type, &bytes).map_err(|e| invalid(e.0))?;
        let extra_tags = self.tag_params()?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if &actual != d {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::DigestInvalid,
                        format!("manifest hashes to {actual}, not {d}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256(&bytes),
        };
        let repo = self.store().repository(name);
        if !self.state.allow_sparse {
            for blob in parsed.required_blobs() {
                if repo.blob(&blob.digest).await?.is_none() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::ManifestBlobUnknown,
                        format!("blob {} is not in repository {name}", blob.digest),
                    ));
                }
            }
            if parsed.kind == Kind::Index {
                for child in &parsed.manifests {
                    if repo.manifest_link(&child.digest).await?.is_none() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::ManifestBlobUnknown,
                            format!("manifest {} is not in repository {name}", child.digest),
                        ));
                    }
                }
            }
        }
        let me = Descriptor {
            media_type: parsed.media_type.clone(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
        };
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let references = References {
            blobs: parsed.required_blobs().map(|b| b.digest.clone()).collect(),
            manifests: match parsed.kind {
                Kind::Index => parsed.manifests.iter().map(|m| m.digest.clone()).collect(),
                _ => Vec::new(),
            },
            required: !self.state.allow_sparse,
        };
        repo.put_manifest(
            &digest,
            &parsed.media_type,
            bytes,
            subject.as_ref().map(|s| (s, &me)),
            &references,
        )
        .await?;
        self.audit("push-manifest", name, &digest.to_string());
        let by = self.caller.principal.id();
        if let Reference::Tag(t) = reference {
            repo.set_tag_by(t, &digest, Some(&by)).await?;
            self.audit("tag", name, &format!("{t} -> {digest}"));
        }
        for t in &extra_tags {
            repo.set_tag_by(t, &digest, Some(&by)).await?;
            self.audit("tag", name, &format!("{t} -> {digest}"));
        }
        let mut resp = created(&format!("/v2/{name}/manifests/{digest}"), &digest);
        if !extra_tags.is_empty() {
            let list: Vec<&str> = extra_tags.iter().map(Tag::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                resp.headers_mut().insert("OCI-Tag", v);
            }
        }
        if let Some(s) = subject
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert("OCI-Subject", v);
        }
        Ok(resp)
    }

    async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> Result<Response, ApiError> {
        if !self.state.deletes.blobs {
            return Err(deletes_disabled("blob"));
        }
        if !self.store().repository(name).unlink_blob(digest).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in repository {name}"),
            ));
        }
        self.audit("delete-blob", name, &digest.to_string());
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn delete_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Response, ApiError> {
        let (allowed, what) = match reference {
            Reference::Tag(_) => (self.state.deletes.tags, "tag"),
            Reference::Digest(_) => (self.state.deletes.manifests, "manifest"),
        };
        if !allowed {
            return Err(deletes_disabled(what));
        }
        let repo = self.store().repository(name);
        let found = match reference {
            Reference::Tag(t) => repo.delete_tag(t).await?,
            Reference::Digest(d) => repo.delete_manifest(d).await?,
        };
        if !found {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in repository {name}"),
            ));
        }
        self.audit(&format!("delete-{what}"), name, &reference.to_string());
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Response, ApiError> {
        let mut list = self.store().repository(name).referrers(subject).await?;
        let filter = self.query.get("artifactType");
        if let Some(t) = filter {
            list.retain(|d| d.artifact_type.as_deref() == Some(t.as_str()));
        }
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": list,
        });
        let mut resp = json_response(StatusCode::OK, manifest::OCI_INDEX, &body, None);
        if filter.is_some() {
            resp.headers_mut().insert(
                "OCI-Filters-Applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(resp)
    }

    async fn upload_status(&self, name: &RepoName, id: &UploadId) -> Result<Response, ApiError> {
        let status = self.store().upload_status(id, name).await?;
        let mut resp = accepted(name, id, status.offset);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }
}

fn deletes_disabled(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unsupported,
        format!("deleting a {what} is disabled on this registry"),
    )
}

fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &serde_json::Value,
    link: Option<String>,
) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response();
    if let Some(link) = link
        && let Ok(v) = HeaderValue::from_str(&link)
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
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
