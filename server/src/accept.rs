//! Content negotiation for manifests: which of the stored media types a client's
//! `Accept` headers allow.
//!
//! A manifest is served as it was pushed. Clients that name the manifest types they
//! read (Docker, containerd, skopeo do) and leave out the stored one get a clear
//! 404 instead of a body they cannot parse; an index is replaced by its linux/amd64
//! child for clients that read images but not indexes, as Docker's registry does.
//! `Accept` headers that name no manifest type at all (`application/json`, a browser's
//! `text/html`) are treated as "anything", so curl and browsers see what is stored.

use axum::http::{HeaderMap, header};
use stowage_storage::manifest;

/// The manifest types whose presence in `Accept` means the client is choosing.
const MANIFEST_TYPES: &[&str] = &[
    manifest::OCI_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_MANIFEST,
    manifest::DOCKER_LIST,
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The media ranges of a request's `Accept` headers (all of them, comma-separated
/// lists included), minus those with `q=0`.
#[derive(Debug, Default)]
pub struct Accept {
    ranges: Vec<String>,
    refused: Vec<String>,
}

impl Accept {
    /// Reads every `Accept` header of a request.
    pub fn from_headers(headers: &HeaderMap) -> Accept {
        let mut accept = Accept::default();
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                if range.is_empty() {
                    continue;
                }
                let q_zero = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if q_zero {
                    accept.refused.push(range);
                } else {
                    accept.ranges.push(range);
                }
            }
        }
        accept
    }

    /// Whether a manifest stored as `media_type` may be served as it is.
    pub fn allows(&self, media_type: &str) -> bool {
        let media_type = media_type.to_ascii_lowercase();
        if self.refused.contains(&media_type) {
            return false;
        }
        if !self.chooses_manifest_types() {
            return true;
        }
        let family = media_type.split('/').next().unwrap_or("");
        self.ranges.iter().any(|r| {
            *r == media_type || r == "*/*" || r.strip_suffix("/*").is_some_and(|f| f == family)
        })
    }

    /// Whether the client named any manifest media type, so its list is a choice.
    fn chooses_manifest_types(&self) -> bool {
        self.ranges
            .iter()
            .any(|r| MANIFEST_TYPES.contains(&r.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(values: &[&str]) -> Accept {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        Accept::from_headers(&headers)
    }

    #[test]
    fn no_header_or_no_manifest_type_allows_anything() {
        assert!(accept(&[]).allows(manifest::OCI_INDEX));
        assert!(accept(&["application/json"]).allows(manifest::OCI_MANIFEST));
        assert!(accept(&["text/html,*/*;q=0.8"]).allows(manifest::DOCKER_LIST));
    }

    #[test]
    fn a_list_of_manifest_types_is_a_choice() {
        let docker = accept(&[&format!(
            "{}, {}",
            manifest::DOCKER_MANIFEST,
            manifest::DOCKER_LIST
        )]);
        assert!(docker.allows(manifest::DOCKER_LIST));
        assert!(!docker.allows(manifest::OCI_MANIFEST));
        // Several headers count together; parameters are ignored.
        let both = accept(&[
            manifest::DOCKER_MANIFEST,
            &format!("{}; q=0.5", manifest::OCI_MANIFEST),
        ]);
        assert!(both.allows(manifest::OCI_MANIFEST));
        assert!(!both.allows(manifest::OCI_INDEX));
    }

    #[test]
    fn wildcards_and_q_zero() {
        let wild = accept(&[&format!("{}, */*", manifest::OCI_MANIFEST)]);
        assert!(wild.allows(manifest::DOCKER_LIST));
        let family = accept(&[&format!("{}, application/*", manifest::OCI_MANIFEST)]);
        assert!(family.allows(manifest::OCI_INDEX));
        let refused = accept(&[&format!("*/*, {};q=0", manifest::OCI_INDEX)]);
        assert!(!refused.allows(manifest::OCI_INDEX));
        assert!(refused.allows(manifest::OCI_MANIFEST));
    }
}
