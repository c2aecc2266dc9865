//! A small HTTP helper over reqwest: builds registry URLs, resolves `Location` headers,
//! and turns every exchange into a [`Resp`] whose checks produce error messages that name
//! the request, so a failed case says what was sent and what came back.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

/// How long one request may take before the case fails; generous because the large
/// manifest case uploads a few megabytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Every manifest media type this suite pushes, offered on each manifest pull.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// The registry's base URL and a shared connection pool.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
}

/// A complete response: status, headers and the whole body, plus the request line that
/// produced it for error messages.
#[derive(Debug)]
pub(crate) struct Resp {
    /// `METHOD /path?query` of the request.
    pub what: String,
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (empty for HEAD).
    pub body: Bytes,
}

/// One error entry of the spec's error body.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ErrorEntry {
    /// The spec's error code, e.g. `BLOB_UNKNOWN`.
    pub code: String,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

/// Error codes listed in the spec's error code table.
pub(crate) const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

impl Http {
    /// A client for the registry at `base` (scheme, host and port; any path is ignored).
    pub(crate) fn new(base: &str) -> Result<Self> {
        let base = Url::parse(base).with_context(|| format!("invalid registry URL {base:?}"))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client, base })
    }

    /// The absolute URL of a registry path such as `/v2/<name>/tags/list`.
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("cannot build a URL from {path:?}"))
    }

    /// Resolves a `Location` header, absolute or relative, against the registry URL.
    pub(crate) fn resolve(&self, location: &str) -> Result<Url> {
        self.base
            .join(location)
            .with_context(|| format!("cannot resolve Location {location:?}"))
    }

    /// Sends `method url`, letting `build` add headers and a body.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: &Url,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Resp> {
        let what = describe(&method, url);
        let req = build(self.client.request(method, url.clone()));
        let resp = req
            .send()
            .await
            .with_context(|| format!("{what}: request failed"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("{what}: reading the response body"))?;
        Ok(Resp {
            what,
            status,
            headers,
            body,
        })
    }

    /// `GET` of a registry path with no extra headers.
    pub(crate) async fn get(&self, path: &str) -> Result<Resp> {
        self.call(Method::GET, &self.url(path)?, |r| r).await
    }

    /// `GET` or `HEAD` of a manifest, offering every manifest type this suite knows.
    pub(crate) async fn manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
    ) -> Result<Resp> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        self.call(method, &url, |r| r.header("Accept", ACCEPT_MANIFESTS))
            .await
    }

    /// `GET` or `HEAD` of a blob, with an optional `Range` header.
    pub(crate) async fn blob(
        &self,
        method: Method,
        repo: &str,
        digest: &str,
        range: Option<&str>,
    ) -> Result<Resp> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        self.call(method, &url, |r| match range {
            Some(range) => r.header("Range", range),
            None => r,
        })
        .await
    }
}

/// Appends `key=value` to the query of `url`. Unlike form encoding, `:` and `/` stay
/// as they are (digests read `sha256:…` on the wire, as in the spec's examples) while `+`,
/// `&`, `=`, `%`, spaces and the like are percent-encoded, so media types such as
/// `application/vnd.x+json` survive a form-decoding server.
pub(crate) fn add_query(url: &mut Url, key: &str, value: &str) {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    let pair = format!("{}={}", enc(key), enc(value));
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{pair}"),
        _ => pair,
    };
    url.set_query(Some(&query));
}

/// `METHOD /path?query` for messages.
fn describe(method: &Method, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{method} {}?{q}", url.path()),
        None => format!("{method} {}", url.path()),
    }
}

impl Resp {
    /// A header's value as text, if present and valid ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header.
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v: &HeaderValue| v.to_str().ok())
            .collect()
    }

    /// A header that must be present.
    pub(crate) fn require_header(&self, name: &str) -> Result<&str> {
        self.header(name)
            .ok_or_else(|| anyhow!("{}: response has no {name} header", self.what))
    }

    /// The media type of `Content-Type` without parameters (the spec tells clients to
    /// ignore them).
    pub(crate) fn media_type(&self) -> Option<&str> {
        self.header("Content-Type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    /// Fails unless the status is one of `expected`.
    pub(crate) fn expect(&self, expected: &[u16]) -> Result<&Self> {
        if expected.contains(&self.status.as_u16()) {
            return Ok(self);
        }
        let wanted = expected
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        bail!(
            "{}: expected status {wanted}, got {}{}",
            self.what,
            self.status.as_u16(),
            self.body_excerpt()
        )
    }

    /// Fails unless header `name` equals `value` exactly.
    pub(crate) fn expect_header(&self, name: &str, value: &str) -> Result<&Self> {
        match self.header(name) {
            Some(v) if v == value => Ok(self),
            Some(v) => bail!("{}: header {name} is {v:?}, expected {value:?}", self.what),
            None => bail!("{}: no {name} header, expected {value:?}", self.what),
        }
    }

    /// Fails unless the body equals `expected` byte for byte.
    pub(crate) fn expect_body(&self, expected: &[u8]) -> Result<&Self> {
        if self.body.as_ref() == expected {
            return Ok(self);
        }
        bail!(
            "{}: body differs from what was pushed ({} bytes received, {} expected)",
            self.what,
            self.body.len(),
            expected.len()
        )
    }

    /// The body parsed as JSON.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{}: body is not the expected JSON{}",
                self.what,
                self.body_excerpt()
            )
        })
    }

    /// Checks an error response: status in `statuses`, a JSON body of the spec's form
    /// whose codes are all from the spec's table, and one of them in `codes`.
    pub(crate) fn expect_error(&self, statuses: &[u16], codes: &[&str]) -> Result<()> {
        self.expect(statuses)?;
        let entries = self.error_entries()?;
        if let Some(bad) = entries
            .iter()
            .find(|e| !SPEC_ERROR_CODES.contains(&e.code.as_str()) && e.code != "TAG_INVALID")
        {
            bail!(
                "{}: error code {:?} is not in the spec's table",
                self.what,
                bad.code
            );
        }
        if codes.is_empty() || entries.iter().any(|e| codes.contains(&e.code.as_str())) {
            return Ok(());
        }
        let got = entries
            .iter()
            .map(|e| e.code.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "{}: error codes [{got}], expected {}",
            self.what,
            codes.join(" or ")
        )
    }

    /// The `errors` array of a JSON error body; fails if the body is not of the spec's form.
    pub(crate) fn error_entries(&self) -> Result<Vec<ErrorEntry>> {
        let body: ErrorBody = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{}: error body is not JSON of the form {{\"errors\":[{{\"code\":..}}]}}{}",
                self.what,
                self.body_excerpt()
            )
        })?;
        if body.errors.is_empty() {
            bail!("{}: error body has an empty errors array", self.what);
        }
        for e in &body.errors {
            if e.code.is_empty() || !e.code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                bail!(
                    "{}: error code {:?} is not uppercase letters and underscores",
                    self.what,
                    e.code
                );
            }
        }
        Ok(body.errors)
    }

    /// A short, printable excerpt of the body for messages.
    fn body_excerpt(&self) -> String {
        if self.body.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&self.body);
        let short: String = text.chars().take(300).collect();
        format!(" (body: {})", short.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_query_keeps_digest_colons_and_escapes_plus() {
        let mut u = Url::parse("http://r/v2/x/blobs/uploads/1?state=a%2Bb").unwrap();
        add_query(&mut u, "digest", "sha256:abc");
        add_query(&mut u, "artifactType", "application/vnd.x+json");
        assert_eq!(
            u.as_str(),
            "http://r/v2/x/blobs/uploads/1?state=a%2Bb&digest=sha256:abc&artifactType=application/vnd.x%2Bjson"
        );
    }
}
