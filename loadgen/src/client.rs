//! A small client of the distribution API, enough to push and pull blobs and
//! manifests against any registry: plain HTTP or HTTPS, anonymous, Basic, or the
//! Bearer-token dance (`WWW-Authenticate: Bearer realm=…`) that Docker Hub-style
//! registries use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use sha2::Digest as _;
use url::Url;

use crate::measure::{Kind, Recorder};

/// The manifest types a pull accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the body (the registry's error message).
        body: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// Content did not hash to its digest.
    #[error("{0} does not match its content")]
    Digest(String),
    /// The registry's answer made no sense (a missing `Location`, bad JSON).
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// How the error is counted in a report: the HTTP status, or a word.
    pub fn label(&self) -> String {
        match self {
            Error::Status { status, .. } => status.as_u16().to_string(),
            Error::Transport(_) => "transport".into(),
            Error::Digest(_) => "digest".into(),
            Error::Protocol(_) => "protocol".into(),
        }
    }
}

/// Result of a registry request.
pub type Result<T> = std::result::Result<T, Error>;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub url: Url,
    /// User name for Basic auth or for fetching tokens.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// A personal access token (Stowage's `stowage token create`, a Docker Hub or
    /// GitLab access token): presented as the password with any user name, as
    /// `docker login -u unused -p TOKEN` does. Wins over `password`.
    pub token: Option<String>,
    /// Accept any TLS certificate (self-signed test registries).
    pub insecure: bool,
}

impl Target {
    /// Whether there are credentials to log in with.
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || self.username.is_some()
    }
}

/// A registry client. Cheap to share between tasks by reference.
///
/// Authentication works as Docker's does. With credentials, the first request to a
/// repository is preceded by `GET /v2/`, whose `401` names the scheme: `Basic`
/// (credentials sent with every request) or `Bearer realm=…,service=…` (the token
/// flow: `GET realm?service=…&scope=repository:NAME:pull[,push]` with Basic
/// credentials, whose answer's token is then sent as `Authorization: Bearer …`). Any
/// `401` later (an expired token, one lacking a scope) is answered from its own
/// challenge and the request retried once; concurrent requests share one refetch.
/// Without credentials, a challenge is still answered (anonymous tokens, as Docker
/// Hub hands out for public images).
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    target: Target,
    /// `Authorization` per repository, once decided (`None`: send nothing).
    auth: Mutex<HashMap<String, Option<HeaderValue>>>,
    /// The challenge of `GET /v2/` (`None`: the base answered without one).
    base_challenge: tokio::sync::OnceCell<Option<String>>,
    /// Held while credentials are fetched, so that many connections meeting the same
    /// challenge fetch one token.
    fetching: tokio::sync::Mutex<()>,
}

/// The scope a request needs when the challenge does not say: pull for reads, pull
/// and push for writes (what Docker asks for).
fn scope_for(repo: &str, method: &Method) -> String {
    let actions = match *method {
        Method::GET | Method::HEAD => "pull",
        _ => "pull,push",
    };
    format!("repository:{repo}:{actions}")
}

impl Registry {
    /// A client for `target`.
    pub fn new(target: Target) -> Result<Registry> {
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(target.insecure)
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Registry {
            http,
            target,
            auth: Mutex::new(HashMap::new()),
            base_challenge: tokio::sync::OnceCell::new(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.target
            .url
            .join(path)
            .map_err(|e| Error::Protocol(format!("URL {path}: {e}")))
    }

    /// The decided `Authorization` of a repository: `None` if not decided yet.
    fn cached_auth(&self, repo: &str) -> Option<Option<HeaderValue>> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        auth.get(repo).cloned()
    }

    fn remember(&self, repo: &str, value: Option<HeaderValue>) {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.to_string(), value);
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (user, pass) = match (&self.target.token, &self.target.username) {
            (Some(token), user) => (user.as_deref().unwrap_or("unused"), token.as_str()),
            (None, Some(user)) => (user.as_str(), self.target.password.as_deref().unwrap_or("")),
            (None, None) => return None,
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {token}")).ok()
    }

    /// Sends a request built by `build`, authenticated as described on [`Registry`].
    /// The body must be cheap to rebuild (`Bytes`).
    async fn send(
        &self,
        repo: &str,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let request = |auth: Option<HeaderValue>| {
            let mut r = build(self.http.request(method.clone(), url.clone()));
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r
        };
        let sent = match self.cached_auth(repo) {
            Some(auth) => auth,
            None if self.target.has_credentials() => {
                self.log_in(repo, &scope_for(repo, &method)).await?
            }
            None => None,
        };
        let resp = request(sent.clone()).send().await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let Some(auth) = self
            .reauthenticate(repo, sent.as_ref(), &challenge, &scope_for(repo, &method))
            .await?
        else {
            return Ok(resp);
        };
        Ok(request(Some(auth)).send().await?)
    }

    /// Before the first request to `repo` with credentials: the `Authorization` the
    /// base's challenge calls for, if any (remembered for the repository).
    async fn log_in(&self, repo: &str, scope: &str) -> Result<Option<HeaderValue>> {
        let challenge = self
            .base_challenge
            .get_or_init(|| async {
                let url = self.url("/v2/").ok()?;
                let resp = self.http.get(url).send().await.ok()?;
                if resp.status() != StatusCode::UNAUTHORIZED {
                    return None;
                }
                resp.headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .await
            .clone();
        let _fetching = self.fetching.lock().await;
        if let Some(decided) = self.cached_auth(repo) {
            return Ok(decided);
        }
        let auth = match challenge {
            Some(c) => self.answer(&c, scope).await?,
            None => None,
        };
        self.remember(repo, auth.clone());
        Ok(auth)
    }

    /// After a `401` to a request sent with `sent`: the `Authorization` answering its
    /// `challenge` — fetched once however many requests were refused at once.
    async fn reauthenticate(
        &self,
        repo: &str,
        sent: Option<&HeaderValue>,
        challenge: &str,
        scope: &str,
    ) -> Result<Option<HeaderValue>> {
        let _fetching = self.fetching.lock().await;
        if let Some(Some(current)) = self.cached_auth(repo)
            && Some(&current) != sent
        {
            // Another request fetched a new one while this one waited.
            return Ok(Some(current));
        }
        let auth = self.answer(challenge, scope).await?;
        if auth.is_some() {
            self.remember(repo, auth.clone());
        }
        Ok(auth)
    }

    /// The `Authorization` value answering a `WWW-Authenticate` challenge, if any;
    /// `scope` is asked for when the challenge names none.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<Option<HeaderValue>> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(self.basic());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let params = parse_challenge(params);
        let Some(realm) = params.get("realm") else {
            return Err(Error::Protocol(format!(
                "Bearer challenge without realm: {challenge}"
            )));
        };
        let mut url =
            Url::parse(realm).map_err(|e| Error::Protocol(format!("realm {realm}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(v) = params.get("service") {
                q.append_pair("service", v);
            }
            q.append_pair(
                "scope",
                params.get("scope").map(String::as_str).unwrap_or(scope),
            );
        }
        let mut req = self.http.get(url.clone());
        if let Some(basic) = self.basic() {
            req = req.header(header::AUTHORIZATION, basic);
        }
        let resp = req.send().await?;
        let resp = expect(Method::GET, &url, resp, &[StatusCode::OK]).await?;
        let body: serde_json::Value = resp.json().await?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| Error::Protocol("token response without a token".into()))?;
        Ok(HeaderValue::from_str(&format!("Bearer {token}")).ok())
    }

    /// Pushes one blob: POST, then either one PUT with the whole body (monolithic)
    /// or PATCHes of `chunk` bytes and an empty PUT.
    pub async fn push_blob(
        &self,
        rec: &Recorder,
        repo: &str,
        data: &Bytes,
        digest: &str,
        chunk: Option<usize>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let resp = timed(rec, Kind::UploadStart, 0, async {
            let resp = self
                .send(repo, Method::POST, start.clone(), |r| {
                    r.header(header::CONTENT_LENGTH, 0)
                })
                .await?;
            expect(Method::POST, &start, resp, &[StatusCode::ACCEPTED]).await
        })
        .await?;
        let mut location = self.location(&resp)?;
        let body = match chunk {
            None => data.clone(),
            Some(size) => {
                let mut offset = 0;
                for part in data.chunks(size.max(1)) {
                    let part = data.slice_ref(part);
                    let len = part.len() as u64;
                    let url = location.clone();
                    let resp = timed(rec, Kind::UploadChunk, len, async {
                        let resp = self
                            .send(repo, Method::PATCH, url.clone(), |r| {
                                r.header(header::CONTENT_TYPE, "application/octet-stream")
                                    .header(
                                        header::CONTENT_RANGE,
                                        format!("{offset}-{}", offset + len - 1),
                                    )
                                    .header(header::CONTENT_LENGTH, len)
                                    .body(part.clone())
                            })
                            .await?;
                        expect(Method::PATCH, &url, resp, &[StatusCode::ACCEPTED]).await
                    })
                    .await?;
                    location = self.location(&resp)?;
                    offset += len;
                    progress(len);
                }
                Bytes::new()
            }
        };
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", digest);
        let len = body.len() as u64;
        timed(rec, Kind::UploadFinish, len, async {
            let resp = self
                .send(repo, Method::PUT, url.clone(), |r| {
                    r.header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, len)
                        .body(body.clone())
                })
                .await?;
            expect(Method::PUT, &url, resp, &[StatusCode::CREATED]).await
        })
        .await?;
        if chunk.is_none() {
            progress(len);
        }
        Ok(())
    }

    fn location(&self, resp: &reqwest::Response) -> Result<Url> {
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol(format!("{} without Location", resp.url())))?;
        self.url(location)
    }

    /// Pushes a manifest under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        rec: &Recorder,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &Bytes,
    ) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        timed(rec, Kind::ManifestPut, body.len() as u64, async {
            let resp = self
                .send(repo, Method::PUT, url.clone(), |r| {
                    r.header(header::CONTENT_TYPE, media_type)
                        .body(body.clone())
                })
                .await?;
            expect(Method::PUT, &url, resp, &[StatusCode::CREATED]).await
        })
        .await?;
        Ok(())
    }

    /// GETs (or HEADs) a manifest; returns its body (empty for HEAD).
    pub async fn get_manifest(
        &self,
        rec: &Recorder,
        repo: &str,
        reference: &str,
        head: bool,
    ) -> Result<Bytes> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let (method, kind) = if head {
            (Method::HEAD, Kind::ManifestHead)
        } else {
            (Method::GET, Kind::ManifestGet)
        };
        let started = Instant::now();
        let result = async {
            let resp = self
                .send(repo, method.clone(), url.clone(), |r| {
                    r.header(header::ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            let resp = expect(method.clone(), &url, resp, &[StatusCode::OK]).await?;
            Ok(resp.bytes().await?)
        }
        .await;
        record(rec, kind, started, &result, |b| b.len() as u64);
        result
    }

    /// GETs a blob and checks it hashes (sha256) to `digest`; returns its size.
    pub async fn pull_blob(
        &self,
        rec: &Recorder,
        repo: &str,
        digest: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let started = Instant::now();
        let result = async {
            let resp = self.send(repo, Method::GET, url.clone(), |r| r).await?;
            let resp = expect(Method::GET, &url, resp, &[StatusCode::OK]).await?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                progress(chunk.len() as u64);
            }
            let got = format!("sha256:{}", hex::encode(hasher.finalize()));
            if got != digest {
                return Err(Error::Digest(digest.to_string()));
            }
            Ok(size)
        }
        .await;
        record(rec, Kind::BlobGet, started, &result, |n| *n);
        result
    }

    /// On Stowage: bytes of new chunks stored by the server so far (its metrics).
    pub async fn stored_bytes(&self) -> Option<u64> {
        let url = self.url("/metrics").ok()?;
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        let key = "stowage_store_chunk_bytes_total{outcome=\"stored\"} ";
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// Checks the status; an unexpected one becomes [`Error::Status`] with the body's start.
async fn expect(
    method: Method,
    url: &Url,
    resp: reqwest::Response,
    ok: &[StatusCode],
) -> Result<reqwest::Response> {
    let status = resp.status();
    if ok.contains(&status) {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(Error::Status {
        method,
        url: url.to_string(),
        status,
        body: body.chars().take(300).collect(),
    })
}

/// Runs `request`, recording its latency under `kind` if it succeeds and its error
/// label if it fails.
async fn timed<T>(
    rec: &Recorder,
    kind: Kind,
    bytes: u64,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = request.await;
    record(rec, kind, started, &result, |_| bytes);
    result
}

fn record<T>(
    rec: &Recorder,
    kind: Kind,
    started: Instant,
    result: &Result<T>,
    bytes: impl Fn(&T) -> u64,
) {
    match result {
        Ok(v) => rec.request(kind, started.elapsed(), bytes(v)),
        Err(e) => rec.error(e.label()),
    }
}

/// `realm="…",service="…",scope="…"` → map (quotes removed).
fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, a)) => (v.to_string(), a),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, a)) => (v.trim().to_string(), a),
                None => (after.trim().to_string(), ""),
            }
        };
        out.insert(key, value);
        rest = after.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let p = parse_challenge(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }
}
