//! The seed's image-stream API (OpenShift's `image.openshift.io/v1`, at both
//! `/oapi/v1/namespaces/{ns}/...` and `/apis/image.openshift.io/v1/namespaces/{ns}/...`):
//! a namespace's image streams (its repositories, with every tag's history) and image
//! stream tags (one tag's image with its config's metadata and layers). Everything comes
//! from the store's own records: tag records with their history, manifests and configs,
//! which are content-addressed and so cached by digest without ever going stale.
//! Access is the registry's: a caller sees a namespace it may pull from; errors are
//! `kind: Status` objects with the HTTP code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt as _;
use serde_json::{Value, json};
use stowage_storage::manifest::{self, Kind};
use stowage_storage::{Digest, RepoName, Store, Tag, TagRecord};

use crate::api::AppState;
use crate::error::{ApiError, ErrorCode};

/// Largest config blob read for metadata; a larger one is shown without it.
pub const CONFIG_READ_MAX: u64 = 4 << 20;
/// Image streams per page when the caller gives no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// Most image streams per page.
const MAX_LIMIT: usize = 1000;
/// Image metadata entries kept in memory.
const CACHE_MAX: usize = 10_000;

/// Image metadata by manifest digest: immutable, so never stale.
#[derive(Clone, Debug, Default)]
pub struct ImageCache(Arc<Mutex<HashMap<Digest, Arc<Value>>>>);

impl ImageCache {
    fn get(&self, d: &Digest) -> Option<Arc<Value>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .cloned()
    }

    fn put(&self, d: Digest, v: Arc<Value>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(d, v);
    }
}

/// A request of this API, parsed from the path after `namespaces/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Streams,
    Stream(RepoName),
    StreamTags,
    StreamTag(RepoName, Tag),
    /// `POST .../imagestreamtags/NAME:TAG/rollback`: re-point the tag to an image of its
    /// history.
    Rollback(RepoName, Tag),
}

/// A `kind: Status` error.
fn status(
    code: StatusCode,
    message: &str,
    headers: &[(header::HeaderName, header::HeaderValue)],
) -> Response {
    let reason = match code {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::CONFLICT => "Conflict",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for (k, v) in headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

fn from_api(e: ApiError) -> Response {
    status(e.status, &e.message, &e.headers)
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, what)
}

fn bad(what: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, what)
}

fn parse(rest: &str) -> Result<(String, Resource), ApiError> {
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| bad("the path is not valid percent-encoded UTF-8".into()))?;
    let (ns, tail) = decoded
        .split_once('/')
        .ok_or_else(|| not_found(format!("no resource at namespaces/{decoded}")))?;
    if !stowage_auth::policy::valid_namespace(ns) {
        return Err(bad(format!("{ns:?} is not a namespace")));
    }
    let repo = |name: &str| RepoName::parse(&format!("{ns}/{name}")).map_err(ApiError::from);
    let resource = match tail.split_once('/') {
        None if tail == "imagestreams" => Resource::Streams,
        None if tail == "imagestreamtags" => Resource::StreamTags,
        Some(("imagestreams", name)) => Resource::Stream(repo(name)?),
        Some(("imagestreamtags", name_tag)) => {
            let (name_tag, rollback) = match name_tag.strip_suffix("/rollback") {
                Some(nt) => (nt, true),
                None => (name_tag, false),
            };
            let (name, tag) = name_tag
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("{name_tag:?} is not NAME:TAG")))?;
            let (name, tag) = (repo(name)?, Tag::parse(tag).map_err(ApiError::from)?);
            if rollback {
                Resource::Rollback(name, tag)
            } else {
                Resource::StreamTag(name, tag)
            }
        }
        _ => return Err(not_found(format!("no resource at namespaces/{decoded}"))),
    };
    Ok((ns.to_string(), resource))
}

/// What every handler here needs.
struct Ctx<'a> {
    state: &'a AppState,
    /// `v1` (oapi) or `image.openshift.io/v1`.
    api_version: &'static str,
    /// `/oapi/v1` or `/apis/image.openshift.io/v1`.
    base: &'static str,
    /// host[:port][/path] clients pull by.
    registry: String,
    cache: &'a ImageCache,
}

/// `GET /oapi/v1/namespaces/{*rest}`.
pub async fn oapi(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    serve(state, req, "v1", "/oapi/v1").await
}

/// `GET /apis/image.openshift.io/v1/namespaces/{*rest}`.
pub async fn apis(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    serve(
        state,
        req,
        "image.openshift.io/v1",
        "/apis/image.openshift.io/v1",
    )
    .await
}

fn registry_address(state: &AppState, headers: &HeaderMap) -> String {
    let https = state.gate.as_ref().is_some_and(|g| g.https);
    crate::address::registry_host(&crate::address::public_base(
        state.public_url.as_deref(),
        https,
        headers,
    ))
}

async fn serve(
    state: AppState,
    req: axum::extract::Request,
    api_version: &'static str,
    base: &'static str,
) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let prefix = format!("{base}/namespaces/");
        let rest = parts.uri.path().strip_prefix(&prefix).unwrap_or("");
        let (ns, resource) = parse(rest)?;
        let post = parts.method == axum::http::Method::POST;
        let allowed = match &resource {
            Resource::Rollback(..) => post,
            _ => parts.method == axum::http::Method::GET,
        };
        if !allowed {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!("{} is not supported here", parts.method),
            ));
        }
        let caller = crate::auth::caller_of(state.gate.as_ref(), &parts).await?;
        if let Some(gate) = &state.gate {
            // Reading needs pull in the namespace; a rollback, push on the repository.
            let need = match &resource {
                Resource::Rollback(name, _) => {
                    crate::auth::Need::Repo(name.clone(), stowage_auth::Action::Push)
                }
                _ => crate::auth::Need::Namespace(ns.clone(), stowage_auth::Action::Pull),
            };
            gate.authorize(&caller, &need, &parts.headers)?;
        }
        let query: HashMap<String, String> = crate::api::query_pairs(&parts.uri).collect();
        let ctx = Ctx {
            state: &state,
            api_version,
            base,
            registry: registry_address(&state, &parts.headers),
            cache: &state.images,
        };
        match resource {
            Resource::Streams => ctx.list(&ns, &query, false).await,
            Resource::StreamTags => ctx.list(&ns, &query, true).await,
            Resource::Stream(name) => {
                let v = ctx.stream(&name).await?.ok_or_else(|| {
                    not_found(format!("imagestreams \"{}\" not found", short(&name)))
                })?;
                Ok(v)
            }
            Resource::StreamTag(name, tag) => ctx.stream_tag(&name, &tag).await,
            Resource::Rollback(name, tag) => {
                let bytes = axum::body::to_bytes(axum::body::Body::new(body), 64 * 1024)
                    .await
                    .map_err(|_| bad("the request body is too large".into()))?;
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("the body is not JSON: {e}")))?;
                let digest = v["digest"]
                    .as_str()
                    .ok_or_else(|| bad("the body needs {\"digest\": \"sha256:...\"}".into()))?;
                let digest = Digest::parse(digest).map_err(ApiError::from)?;
                let by = caller.principal.id();
                state
                    .store
                    .repository(&name)
                    .rollback_tag(&tag, &digest, Some(&by))
                    .await?;
                tracing::info!(
                    target: "stowage::audit",
                    who = %caller.principal,
                    action = "rollback",
                    repository = %name,
                    what = %format!("{tag} -> {digest}"),
                    "registry change"
                );
                ctx.stream_tag(&name, &tag).await
            }
        }
    }
    .await;
    match result {
        Ok(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => from_api(e),
    }
}

/// A stream's name within its namespace.
fn short(name: &RepoName) -> &str {
    name.as_str()
        .split_once('/')
        .map(|(_, n)| n)
        .unwrap_or(name.as_str())
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Ctx<'_> {
    fn store(&self) -> &Store {
        &self.state.store
    }

    async fn records(&self, name: &RepoName) -> Result<Vec<TagRecord>, ApiError> {
        let repo = self.store().repository(name);
        let tags = repo.tags().await?;
        let reads = tags.iter().map(|t| repo.tag(t));
        let mut out: Vec<TagRecord> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        out.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(out)
    }

    /// One image stream, or `None` if the repository has no tags and no content.
    async fn stream(&self, name: &RepoName) -> Result<Option<Value>, ApiError> {
        let records = self.records(name).await?;
        if records.is_empty() && !self.store().repository(name).exists().await? {
            return Ok(None);
        }
        let reference = format!("{}/{}", self.registry, name);
        let created = records
            .iter()
            .flat_map(|r| r.history.iter().map(|e| e.created))
            .min();
        let version: u64 = records.iter().map(|r| r.generation).sum();
        let tags: Vec<Value> = records
            .iter()
            .map(|r| {
                let items: Vec<Value> = r
                    .history
                    .iter()
                    .map(|e| {
                        let mut item = json!({
                            "created": time(e.created),
                            "dockerImageReference": format!("{reference}@{}", e.digest),
                            "image": e.digest.to_string(),
                        });
                        if let Some(by) = &e.by {
                            item["pushedBy"] = json!(by);
                        }
                        item
                    })
                    .collect();
                json!({ "tag": r.tag.as_str(), "items": items, "generation": r.generation })
            })
            .collect();
        let ns = name.namespace();
        let mut metadata = json!({
            "name": short(name),
            "namespace": ns,
            "selfLink": format!("{}/namespaces/{ns}/imagestreams/{}", self.base, short(name)),
            "resourceVersion": version.to_string(),
        });
        if let Some(c) = created {
            metadata["creationTimestamp"] = json!(time(c));
        }
        Ok(Some(json!({
            "kind": "ImageStream",
            "apiVersion": self.api_version,
            "metadata": metadata,
            "spec": {},
            "status": {
                "dockerImageRepository": reference,
                "publicDockerImageRepository": reference,
                "tags": tags,
            },
        })))
    }

    /// A page of a namespace's image streams (or of their tags): `limit` streams after
    /// the `continue` token (the last name of the previous page).
    async fn list(
        &self,
        ns: &str,
        query: &HashMap<String, String>,
        tags: bool,
    ) -> Result<Value, ApiError> {
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| bad(format!("limit={l:?} is not a positive number")))?
                .min(MAX_LIMIT),
            None => DEFAULT_LIMIT,
        };
        let after = query
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(|c| format!("{ns}/{c}"));
        let mut names =
            std::pin::pin!(self.store().repositories_stream(Some(ns), after.as_deref()));
        let mut page: Vec<RepoName> = Vec::new();
        let mut more = false;
        while let Some(n) = names.try_next().await? {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(n);
        }
        let mut items = Vec::new();
        if tags {
            for name in &page {
                for r in self.records(name).await? {
                    items.push(self.stream_tag_of(name, &r).await?);
                }
            }
        } else {
            let streams =
                futures::future::try_join_all(page.iter().map(|n| self.stream(n))).await?;
            items.extend(streams.into_iter().flatten());
        }
        let mut metadata = json!({});
        if more && let Some(last) = page.last() {
            metadata["continue"] = json!(short(last));
        }
        Ok(json!({
            "kind": if tags { "ImageStreamTagList" } else { "ImageStreamList" },
            "apiVersion": self.api_version,
            "metadata": metadata,
            "items": items,
        }))
    }

    async fn stream_tag(&self, name: &RepoName, tag: &Tag) -> Result<Value, ApiError> {
        let record = self
            .store()
            .repository(name)
            .tag(tag)
            .await?
            .ok_or_else(|| {
                not_found(format!(
                    "imagestreamtags \"{}:{tag}\" not found",
                    short(name)
                ))
            })?;
        self.stream_tag_of(name, &record).await
    }

    async fn stream_tag_of(&self, name: &RepoName, record: &TagRecord) -> Result<Value, ApiError> {
        let ns = name.namespace();
        let current = &record.history[0];
        let reference = format!("{}/{}@{}", self.registry, name, current.digest);
        let image = self.image(name, &current.digest).await?;
        let mut image = (*image).clone();
        image["metadata"] = json!({
            "name": current.digest.to_string(),
            "creationTimestamp": time(current.created),
        });
        image["dockerImageReference"] = json!(reference);
        Ok(json!({
            "kind": "ImageStreamTag",
            "apiVersion": self.api_version,
            "metadata": {
                "name": format!("{}:{}", short(name), record.tag),
                "namespace": ns,
                "selfLink": format!("{}/namespaces/{ns}/imagestreamtags/{}%3A{}", self.base, short(name), record.tag),
                "creationTimestamp": time(current.created),
                "resourceVersion": record.generation.to_string(),
            },
            "tag": null,
            "generation": record.generation,
            "image": image,
        }))
    }

    /// An image's description (cached by digest): for a manifest its config's
    /// metadata and its layers; for an index, each platform's.
    async fn image(&self, name: &RepoName, digest: &Digest) -> Result<Arc<Value>, ApiError> {
        if let Some(v) = self.cache.get(digest) {
            return Ok(v);
        }
        let repo = self.store().repository(name);
        let Some(link) = repo.manifest_link(digest).await? else {
            // The tag's image was collected: say so rather than invent metadata.
            return Ok(Arc::new(
                json!({ "dockerImageMetadata": null, "collected": true }),
            ));
        };
        let bytes = self
            .store()
            .blob_bytes_limited(digest, manifest::MANIFEST_READ_MAX)
            .await?
            .ok_or_else(|| bad(format!("manifest {digest} is too large to describe")))?;
        let v = match manifest::kind_of(&link.media_type) {
            Some(Kind::Index) => {
                let index: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut platforms = Vec::new();
                for child in index["manifests"].as_array().into_iter().flatten() {
                    let Some(d) = child["digest"].as_str().and_then(|d| Digest::parse(d).ok())
                    else {
                        continue;
                    };
                    let mut p = json!({
                        "digest": d.to_string(),
                        "mediaType": child["mediaType"],
                        "manifestSize": child["size"],
                        "architecture": child["platform"]["architecture"],
                        "os": child["platform"]["os"],
                    });
                    if let Some(v) = child["platform"]["variant"].as_str() {
                        p["variant"] = json!(v);
                    }
                    if repo.manifest_link(&d).await?.is_some()
                        && let Ok(b) = self
                            .store()
                            .blob_bytes_limited(&d, manifest::MANIFEST_READ_MAX)
                            .await
                        && let Some(b) = b
                    {
                        let m = self.manifest_metadata(&b).await?;
                        p["dockerImageMetadata"] = m["dockerImageMetadata"].clone();
                        p["dockerImageLayers"] = m["dockerImageLayers"].clone();
                    }
                    platforms.push(p);
                }
                json!({
                    "dockerImageManifestMediaType": link.media_type,
                    "dockerImageManifests": platforms,
                })
            }
            _ => {
                let mut m = self.manifest_metadata(&bytes).await?;
                m["dockerImageManifestMediaType"] = json!(link.media_type);
                m
            }
        };
        let v = Arc::new(v);
        self.cache.put(digest.clone(), v.clone());
        Ok(v)
    }

    /// Metadata of one image manifest: its layers and its config's fields the seed shows.
    async fn manifest_metadata(&self, bytes: &[u8]) -> Result<Value, ApiError> {
        let m: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let layers: Vec<Value> = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| json!({ "name": l["digest"], "size": l["size"], "mediaType": l["mediaType"] }))
            .collect();
        let size: u64 = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum();
        let mut meta = json!({ "kind": "DockerImage", "apiVersion": "1.0", "Size": size });
        if let Some(cfg) = m["config"]["digest"]
            .as_str()
            .and_then(|d| Digest::parse(d).ok())
        {
            meta["Id"] = json!(cfg.to_string());
            let config = match self.store().blob_bytes_limited(&cfg, CONFIG_READ_MAX).await {
                Ok(Some(b)) => serde_json::from_slice::<Value>(&b).ok(),
                _ => None,
            };
            if let Some(c) = config {
                for (from, to) in [
                    ("created", "Created"),
                    ("author", "Author"),
                    ("architecture", "Architecture"),
                    ("os", "Os"),
                ] {
                    if let Some(v) = c.get(from).filter(|v| !v.is_null()) {
                        meta[to] = v.clone();
                    }
                }
                let mut conf = json!({});
                for k in [
                    "Env",
                    "Cmd",
                    "Entrypoint",
                    "WorkingDir",
                    "User",
                    "ExposedPorts",
                    "Labels",
                ] {
                    if let Some(v) = c["config"].get(k).filter(|v| !v.is_null()) {
                        conf[k] = v.clone();
                    }
                }
                meta["Config"] = conf;
            }
        }
        Ok(json!({
            "dockerImageMetadata": meta,
            "dockerImageMetadataVersion": "1.0",
            "dockerImageLayers": layers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_namespace_and_a_resource() {
        let (ns, r) = parse("tripleo/imagestreams").unwrap();
        assert_eq!((ns.as_str(), r), ("tripleo", Resource::Streams));
        let (_, r) = parse("tripleo/imagestreams/centos-binary-aodh-api").unwrap();
        assert_eq!(
            r,
            Resource::Stream(RepoName::parse("tripleo/centos-binary-aodh-api").unwrap())
        );
        let (_, r) = parse("tripleo/imagestreamtags/aodh:latest").unwrap();
        assert_eq!(
            r,
            Resource::StreamTag(
                RepoName::parse("tripleo/aodh").unwrap(),
                Tag::parse("latest").unwrap()
            )
        );
        let (_, r) = parse("tripleo/imagestreamtags/aodh%3Alatest").unwrap();
        assert!(matches!(r, Resource::StreamTag(..)));
        assert_eq!(
            parse("Bad/imagestreams").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(parse("ns/other").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(
            parse("ns/imagestreamtags/notag").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse("ns/imagestreams/..%2F..").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
