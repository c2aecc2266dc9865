//! Manifests as far as the registry must understand them: which media types it accepts,
//! whether the JSON is well formed, and what a manifest references (config, layers,
//! child manifests, subject). The HTTP layer validates pushes with this; the garbage
//! collector walks reachability with it.

use base64::Engine as _;
use serde::Deserialize;

use crate::digest::Digest;
use crate::repo::Descriptor;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The most bytes of a stored manifest the engine reads into memory on its own account
/// (to fill in what an old referrer record lacks): the registry's default limit on
/// pushed manifests. A larger one is left unread.
pub const MANIFEST_READ_MAX: u64 = 4 << 20;

/// What kind of manifest a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A single image (or artifact): a config and layers.
    Image,
    /// A list of manifests (multi-platform images).
    Index,
}

/// The kind of a manifest media type, or `None` if the registry does not take it.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Image or index.
    pub kind: Kind,
    /// The media type it was accepted as.
    pub media_type: String,
    /// The `artifactType` the referrers API lists for it: the manifest's own, or for
    /// an image without one (missing or empty), its config's media type, whatever that
    /// is (an ordinary image config too: distribution spec, "Listing Referrers"); for
    /// an index without one, none.
    pub artifact_type: Option<String>,
    /// Annotations of the manifest itself.
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Config blob (images).
    pub config: Option<Descriptor>,
    /// Layer blobs (images), in order.
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    pub subject: Option<Descriptor>,
}

impl Parsed {
    /// Blobs this manifest needs in its repository: config and layers, except
    /// non-distributable layers, which by definition are not pushed.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(
            self.layers
                .iter()
                .filter(|l| !is_non_distributable(&l.media_type)),
        )
    }
}

/// Layers that registries do not hold (foreign layers).
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

fn descriptor(raw: RawDescriptor, field: &str) -> Result<Descriptor, Invalid> {
    let digest = Digest::parse(&raw.digest).map_err(|e| Invalid(format!("{field}: {e}")))?;
    if let Some(data) = &raw.data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| Invalid(format!("{field}: data is not base64")))?;
        if bytes.len() as u64 != raw.size || Digest::of(digest.algorithm(), &bytes) != digest {
            return Err(Invalid(format!(
                "{field}: embedded data does not match its size and digest"
            )));
        }
    }
    Ok(Descriptor {
        media_type: raw.media_type,
        digest,
        size: raw.size,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
    })
}

/// Parses and checks a manifest pushed with `content_type`.
pub fn parse(content_type: &str, bytes: &[u8]) -> Result<Parsed, Invalid> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| Invalid(format!("manifest is not valid JSON: {e}")))?;
    let media_type = match (&raw.media_type, content_type) {
        (Some(m), c) if !c.is_empty() && m != c => {
            return Err(Invalid(format!(
                "mediaType {m:?} in the manifest differs from Content-Type {c:?}"
            )));
        }
        (_, c) if !c.is_empty() => c.to_string(),
        (Some(m), _) => m.clone(),
        (None, _) => {
            return Err(Invalid(
                "no media type: set Content-Type or mediaType".into(),
            ));
        }
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| Invalid(format!("unsupported manifest media type {media_type:?}")))?;
    if raw.schema_version != Some(2) {
        return Err(Invalid("schemaVersion must be 2".into()));
    }
    let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
    let mut parsed = Parsed {
        kind,
        media_type,
        artifact_type: raw.artifact_type.filter(|t| !t.is_empty()),
        annotations: raw.annotations,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
    };
    match kind {
        Kind::Image => {
            let config = raw
                .config
                .ok_or_else(|| Invalid("an image manifest needs a config".into()))?;
            let config = descriptor(config, "config")?;
            let layers = raw
                .layers
                .ok_or_else(|| Invalid("an image manifest needs layers".into()))?;
            parsed.layers = layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| descriptor(l, &format!("layers[{i}]")))
                .collect::<Result<_, _>>()?;
            if parsed.artifact_type.is_none() && !config.media_type.is_empty() {
                parsed.artifact_type = Some(config.media_type.clone());
            }
            parsed.config = Some(config);
        }
        Kind::Index => {
            let manifests = raw
                .manifests
                .ok_or_else(|| Invalid("an index needs manifests".into()))?;
            parsed.manifests = manifests
                .into_iter()
                .enumerate()
                .map(|(i, m)| descriptor(m, &format!("manifests[{i}]")))
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(parsed)
}

/// The `artifactType` the referrers API lists for a stored manifest of `media_type`, as
/// [`Parsed::artifact_type`] has it, read leniently (the manifest was validated when it
/// was pushed): for referrer records written before every image got one. `None` for an
/// index without one, and for bytes that do not parse.
pub fn referrer_artifact_type(media_type: &str, bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        media_type: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        artifact_type: Option<String>,
        config: Option<Config>,
    }
    let doc: Doc = serde_json::from_slice(bytes).ok()?;
    let own = doc.artifact_type.filter(|t| !t.is_empty());
    match kind_of(media_type)? {
        Kind::Index => own,
        Kind::Image => own.or_else(|| doc.config?.media_type.filter(|t| !t.is_empty())),
    }
}

/// Everything a stored manifest points at, whatever its media type: blobs (config and
/// layers) and child manifests. Lenient on purpose: the garbage collector keeps whatever
/// a manifest names, and the manifest was validated when it was pushed.
pub fn references(bytes: &[u8]) -> Result<(Vec<Digest>, Vec<Digest>), Invalid> {
    #[derive(Deserialize)]
    struct Ref {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Refs {
        config: Option<Ref>,
        layers: Option<Vec<Ref>>,
        manifests: Option<Vec<Ref>>,
    }
    let raw: Refs = serde_json::from_slice(bytes)
        .map_err(|e| Invalid(format!("manifest is not valid JSON: {e}")))?;
    let digests = |refs: Vec<Ref>| -> Vec<Digest> {
        refs.into_iter()
            .filter_map(|r| Digest::parse(&r.digest).ok())
            .collect()
    };
    let mut blobs = digests(raw.config.into_iter().collect());
    blobs.extend(digests(raw.layers.unwrap_or_default()));
    Ok((blobs, digests(raw.manifests.unwrap_or_default())))
}

/// The child of an index built for `os`/`architecture`, for clients that cannot read
/// indexes (they are served that child instead, as Docker's registry does).
pub fn platform_child(index: &[u8], os: &str, architecture: &str) -> Option<Descriptor> {
    #[derive(Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Child {
        media_type: String,
        digest: String,
        size: u64,
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Child>,
    }
    let index: Index = serde_json::from_slice(index).ok()?;
    let child = index.manifests.into_iter().find(|c| {
        c.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == architecture)
    })?;
    Some(Descriptor {
        media_type: child.media_type,
        digest: Digest::parse(&child.digest).ok()?,
        size: child.size,
        artifact_type: None,
        annotations: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: &str) -> String {
        Digest::sha256(x.as_bytes()).to_string()
    }

    #[test]
    fn images_indexes_and_artifacts_parse() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":4}}]}}"#,
            d("c"),
            d("l"),
            d("f")
        );
        let p = parse(OCI_MANIFEST, image.as_bytes()).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.required_blobs().count(), 2, "foreign layer excluded");
        // No artifactType: the referrers API lists the config's media type, an
        // ordinary image config included.
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(
            referrer_artifact_type(OCI_MANIFEST, image.as_bytes()),
            p.artifact_type
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10}}]}}"#,
            d("m")
        );
        let p = parse(OCI_INDEX, index.as_bytes()).unwrap();
        assert_eq!(p.manifests.len(), 1);
        assert_eq!(
            p.artifact_type, None,
            "an index without artifactType has none"
        );
        assert_eq!(referrer_artifact_type(OCI_INDEX, index.as_bytes()), None);
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.example+json","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}}}"#,
            d("c"),
            d("s")
        );
        let p = parse("", artifact.as_bytes()).unwrap();
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.example+json")
        );
        assert_eq!(p.subject.unwrap().digest, Digest::sha256(b"s"));
        assert_eq!(
            referrer_artifact_type(OCI_MANIFEST, artifact.as_bytes()).as_deref(),
            Some("application/vnd.example+json")
        );
    }

    #[test]
    fn the_referrer_artifact_type_is_the_manifests_own_or_its_config_media_type() {
        let image = |config_type: &str, artifact_type: Option<&str>| {
            let at = artifact_type
                .map(|t| format!(r#","artifactType":"{t}""#))
                .unwrap_or_default();
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"{config_type}","digest":"{}","size":2}},"layers":[]{at}}}"#,
                d("c")
            )
        };
        let index = |artifact_type: Option<&str>| {
            let at = artifact_type
                .map(|t| format!(r#","artifactType":"{t}""#))
                .unwrap_or_default();
            format!(r#"{{"schemaVersion":2,"manifests":[]{at}}}"#)
        };
        let cases = [
            // (media type, body, expected)
            (
                OCI_MANIFEST,
                image("application/vnd.oci.image.config.v1+json", None),
                Some("application/vnd.oci.image.config.v1+json"),
            ),
            (
                DOCKER_MANIFEST,
                image("application/vnd.docker.container.image.v1+json", None),
                Some("application/vnd.docker.container.image.v1+json"),
            ),
            (
                OCI_MANIFEST,
                image("application/vnd.oci.empty.v1+json", None),
                Some("application/vnd.oci.empty.v1+json"),
            ),
            (
                OCI_MANIFEST,
                image("application/vnd.oci.image.config.v1+json", Some("")),
                Some("application/vnd.oci.image.config.v1+json"),
            ),
            (
                OCI_MANIFEST,
                image(
                    "application/vnd.oci.empty.v1+json",
                    Some("application/x-sig"),
                ),
                Some("application/x-sig"),
            ),
            (OCI_INDEX, index(None), None),
            (OCI_INDEX, index(Some("")), None),
            (
                OCI_INDEX,
                index(Some("application/x-sbom")),
                Some("application/x-sbom"),
            ),
        ];
        for (mt, body, expected) in cases {
            let parsed = parse(mt, body.as_bytes()).unwrap();
            assert_eq!(parsed.artifact_type.as_deref(), expected, "{mt} {body}");
            assert_eq!(
                referrer_artifact_type(mt, body.as_bytes()).as_deref(),
                expected,
                "{mt} {body}"
            );
        }
        assert_eq!(referrer_artifact_type(OCI_MANIFEST, b"not json"), None);
        assert_eq!(
            referrer_artifact_type("text/plain", image("x", None).as_bytes()),
            None
        );
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        let cases = [
            (OCI_MANIFEST, "not json".to_string()),
            ("application/x-whatever", r#"{"schemaVersion":2}"#.to_string()),
            (OCI_MANIFEST, r#"{"schemaVersion":1,"config":{},"layers":[]}"#.to_string()),
            (OCI_MANIFEST, r#"{"schemaVersion":2,"layers":[]}"#.to_string()),
            (OCI_INDEX, format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#)),
            (OCI_INDEX, r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:1","size":1}]}"#.to_string()),
            (
                OCI_MANIFEST,
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":1,"data":"aGVsbG8="}},"layers":[]}}"#,
                    d("not hello")
                ),
            ),
        ];
        for (ct, body) in cases {
            assert!(parse(ct, body.as_bytes()).is_err(), "{ct} {body}");
        }
    }
}
