//! Test content built for one run: digests, random blobs, and the JSON documents
//! (image manifests, indexes, Docker manifests, artifacts) pushed by the cases. Every
//! document is serialised once and its bytes are what gets pushed and compared, since a
//! registry must store manifests byte for byte.

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest.
pub(crate) const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub(crate) const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub(crate) const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub(crate) const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI non-distributable gzip layer.
pub(crate) const MT_NONDIST_GZ: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable uncompressed layer.
pub(crate) const MT_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// The empty descriptor's media type (content `{}`).
pub(crate) const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker schema 2 manifest.
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 config.
pub(crate) const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker schema 2 gzip layer.
pub(crate) const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Example artifact type A.
pub(crate) const AT_EXAMPLE_A: &str = "application/vnd.example.conformance.a.v1";
/// Example artifact type B.
pub(crate) const AT_EXAMPLE_B: &str = "application/vnd.example.conformance.b.v1";
/// Example config media type used as artifact type fallback.
pub(crate) const MT_EXAMPLE_CONFIG: &str = "application/vnd.example.conformance.config.v1+json";

/// A digest algorithm the suite can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Algorithm {
    /// `sha256`, the canonical algorithm.
    Sha256,
    /// `sha512`.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex length of an encoded digest.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest `<algorithm>:<hex>`, always computed by this suite or parsed from a
/// registry header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The digest of `bytes` under `algorithm`.
    pub(crate) fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let hex = match algorithm {
            Algorithm::Sha256 => hex::encode(Sha256::digest(bytes)),
            Algorithm::Sha512 => hex::encode(Sha512::digest(bytes)),
        };
        Self { algorithm, hex }
    }

    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>`; anything else is `None`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (alg, hex) = s.split_once(':')?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return None,
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// Whether `bytes` hash to this digest.
    pub(crate) fn matches(&self, bytes: &[u8]) -> bool {
        Digest::of(self.algorithm, bytes) == *self
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// `len` random bytes.
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::fill(&mut v[..]);
    v
}

/// A short random lowercase hex id, used to make tags and annotations unique per run.
pub(crate) fn random_id() -> String {
    hex::encode(random_bytes(6))
}

/// A random UUID-shaped string (version 4 layout), for upload sessions that never existed.
pub(crate) fn random_uuid() -> String {
    let h = hex::encode(random_bytes(16));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A blob with its digest and the media type its descriptors carry.
#[derive(Clone, Debug)]
pub(crate) struct Blob {
    /// The content.
    pub bytes: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// Media type used in descriptors pointing at it.
    pub media_type: String,
}

impl Blob {
    /// A blob of the given content.
    pub(crate) fn new(bytes: Vec<u8>, algorithm: Algorithm, media_type: &str) -> Self {
        let digest = Digest::of(algorithm, &bytes);
        Self {
            bytes,
            digest,
            media_type: media_type.to_owned(),
        }
    }

    /// A blob of `len` random bytes.
    pub(crate) fn random(len: usize, algorithm: Algorithm, media_type: &str) -> Self {
        Self::new(random_bytes(len), algorithm, media_type)
    }

    /// The empty JSON object blob `{}` with the empty media type.
    pub(crate) fn empty_json(algorithm: Algorithm) -> Self {
        Self::new(b"{}".to_vec(), algorithm, MT_EMPTY)
    }

    /// An image config (JSON) whose content is unique to this run.
    pub(crate) fn config(algorithm: Algorithm, media_type: &str, layers: &[&Blob]) -> Result<Self> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
        let value = json!({
            "architecture": "amd64",
            "os": "linux",
            "author": format!("stowage-conformance {}", random_id()),
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "config": {}
        });
        let bytes = serde_json::to_vec(&value).context("serialising a config")?;
        Ok(Self::new(bytes, algorithm, media_type))
    }

    /// The descriptor of this blob.
    pub(crate) fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }

    /// The descriptor with the content embedded in `data` (base64).
    pub(crate) fn descriptor_with_data(&self) -> Value {
        let mut d = self.descriptor();
        if let Some(obj) = d.as_object_mut() {
            obj.insert(
                "data".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(&self.bytes)),
            );
        }
        d
    }
}

/// A manifest document: exact bytes, digest and media type.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    /// The serialised document, pushed and compared byte for byte.
    pub bytes: Vec<u8>,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// The media type, sent as `Content-Type`.
    pub media_type: String,
    /// `artifactType` a referrers listing must report for it, if it has a subject.
    pub referrer_artifact_type: Option<String>,
    /// Annotations of the document.
    pub annotations: Map<String, Value>,
}

impl Manifest {
    /// Serialises `doc` as a manifest of `media_type`.
    pub(crate) fn from_json(doc: &Value, media_type: &str, algorithm: Algorithm) -> Result<Self> {
        let bytes = serde_json::to_vec(doc).context("serialising a manifest")?;
        Ok(Self::from_bytes(bytes, doc, media_type, algorithm))
    }

    /// A manifest from pre-serialised bytes (`doc` is the parsed form, for metadata).
    pub(crate) fn from_bytes(
        bytes: Vec<u8>,
        doc: &Value,
        media_type: &str,
        algorithm: Algorithm,
    ) -> Self {
        let digest = Digest::of(algorithm, &bytes);
        let artifact_type = doc
            .get("artifactType")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let referrer_artifact_type = if media_type == MT_INDEX {
            artifact_type
        } else {
            artifact_type.or_else(|| {
                doc.pointer("/config/mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
        };
        let annotations = doc
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Self {
            bytes,
            digest,
            media_type: media_type.to_owned(),
            referrer_artifact_type,
            annotations,
        }
    }

    /// The descriptor of this manifest.
    pub(crate) fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }

    /// The descriptor with a platform, for index entries.
    pub(crate) fn platform_descriptor(&self, arch: &str) -> Value {
        let mut d = self.descriptor();
        if let Some(obj) = d.as_object_mut() {
            obj.insert(
                "platform".into(),
                json!({"architecture": arch, "os": "linux"}),
            );
        }
        d
    }
}

/// Optional parts of an image manifest or index.
#[derive(Default, Clone)]
pub(crate) struct Extra {
    /// `artifactType`.
    pub artifact_type: Option<String>,
    /// `subject` descriptor.
    pub subject: Option<Value>,
    /// `annotations`.
    pub annotations: Option<Map<String, Value>>,
    /// Fields outside the OCI schema, which registries must carry unchanged.
    pub custom: Option<Map<String, Value>>,
}

impl Extra {
    fn apply(self, doc: &mut Map<String, Value>) {
        if let Some(at) = self.artifact_type {
            doc.insert("artifactType".into(), Value::String(at));
        }
        if let Some(s) = self.subject {
            doc.insert("subject".into(), s);
        }
        if let Some(a) = self.annotations {
            doc.insert("annotations".into(), Value::Object(a));
        }
        if let Some(c) = self.custom {
            doc.extend(c);
        }
    }
}

/// One annotation map `{key: value}`.
pub(crate) fn annotations(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

/// An OCI image manifest with the given config and layer descriptors.
pub(crate) fn image(
    config: Value,
    layers: Vec<Value>,
    extra: Extra,
    algorithm: Algorithm,
) -> Result<Manifest> {
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), json!(2));
    doc.insert("mediaType".into(), json!(MT_MANIFEST));
    doc.insert("config".into(), config);
    doc.insert("layers".into(), Value::Array(layers));
    extra.apply(&mut doc);
    Manifest::from_json(&Value::Object(doc), MT_MANIFEST, algorithm)
}

/// An OCI image index listing `manifests`.
pub(crate) fn index(manifests: Vec<Value>, extra: Extra, algorithm: Algorithm) -> Result<Manifest> {
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), json!(2));
    doc.insert("mediaType".into(), json!(MT_INDEX));
    doc.insert("manifests".into(), Value::Array(manifests));
    extra.apply(&mut doc);
    Manifest::from_json(&Value::Object(doc), MT_INDEX, algorithm)
}

/// A Docker schema 2 manifest.
pub(crate) fn docker_manifest(config: &Blob, layers: &[&Blob]) -> Result<Manifest> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.descriptor()).collect::<Vec<_>>(),
    });
    Manifest::from_json(&doc, MT_DOCKER_MANIFEST, Algorithm::Sha256)
}

/// A complete image: config, layers and the manifest tying them together.
#[derive(Clone, Debug)]
pub(crate) struct Image {
    /// The config blob.
    pub config: Blob,
    /// Layer blobs.
    pub layers: Vec<Blob>,
    /// The manifest.
    pub manifest: Manifest,
}

impl Image {
    /// A fresh random image with `layer_sizes` layers, optionally with extra fields.
    pub(crate) fn random(
        algorithm: Algorithm,
        layer_sizes: &[usize],
        extra: Extra,
    ) -> Result<Self> {
        let layers: Vec<Blob> = layer_sizes
            .iter()
            .map(|&n| Blob::random(n, algorithm, MT_LAYER_GZ))
            .collect();
        let config = Blob::config(algorithm, MT_CONFIG, &layers.iter().collect::<Vec<_>>())?;
        let manifest = image(
            config.descriptor(),
            layers.iter().map(Blob::descriptor).collect(),
            extra,
            algorithm,
        )?;
        Ok(Self {
            config,
            layers,
            manifest,
        })
    }

    /// Every blob of the image, config first.
    pub(crate) fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config)
            .chain(self.layers.iter())
            .collect()
    }
}

/// An artifact manifest: `artifactType`, the empty config, one layer of `layer`.
pub(crate) fn artifact(artifact_type: &str, layer: &Blob, mut extra: Extra) -> Result<Manifest> {
    extra.artifact_type = Some(artifact_type.to_owned());
    image(
        Blob::empty_json(Algorithm::Sha256).descriptor(),
        vec![layer.descriptor()],
        extra,
        Algorithm::Sha256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_content() {
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"").to_string(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(Digest::parse(&d.to_string()), Some(d.clone()));
        assert!(d.matches(b"abc"));
        assert!(!d.matches(b"abd"));
        assert_eq!(Digest::parse("sha256:abc"), None);
        assert_eq!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e"), None);
        assert_eq!(Digest::parse(&format!("sha256:{}", "A".repeat(64))), None);
    }

    #[test]
    fn referrer_artifact_type_falls_back_to_config_media_type() {
        let layer = Blob::random(8, Algorithm::Sha256, MT_LAYER_GZ);
        let cfg = Blob::new(b"{}".to_vec(), Algorithm::Sha256, MT_EXAMPLE_CONFIG);
        let m = image(
            cfg.descriptor(),
            vec![layer.descriptor()],
            Extra::default(),
            Algorithm::Sha256,
        )
        .unwrap();
        assert_eq!(m.referrer_artifact_type.as_deref(), Some(MT_EXAMPLE_CONFIG));
        let a = artifact(AT_EXAMPLE_A, &layer, Extra::default()).unwrap();
        assert_eq!(a.referrer_artifact_type.as_deref(), Some(AT_EXAMPLE_A));
        let i = index(vec![], Extra::default(), Algorithm::Sha256).unwrap();
        assert_eq!(i.referrer_artifact_type, None);
    }

    #[test]
    fn uuid_has_the_expected_shape() {
        let u = random_uuid();
        let parts: Vec<_> = u.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    }
}
