//! Builds OCI image layouts on disk for clients to push: images with gzip and
//! uncompressed layers that can share a base layer, indexes, and artifacts with a
//! subject. Real clients (skopeo) copy from these into the registry and back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use stowage_storage::Digest;

/// A blob as written into a layout.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.into(),
            digest: Digest::sha256(&bytes),
            bytes,
        }
    }

    /// The blob's descriptor, as JSON.
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// A tar of `files` (path, contents).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// Gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// An image: layers (uncompressed tars and whether to gzip each) and a config with the
/// fields `skopeo inspect` shows.
pub struct ImageSpec<'a> {
    /// Layer contents as tars, and whether each is pushed gzip-compressed.
    pub layers: Vec<(Vec<u8>, bool)>,
    /// Image labels.
    pub labels: BTreeMap<&'a str, &'a str>,
    /// Environment.
    pub env: Vec<&'a str>,
    /// Command.
    pub cmd: Vec<&'a str>,
    /// CPU architecture.
    pub architecture: &'a str,
}

/// A built image: its manifest and every blob.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest.
    pub manifest: Blob,
    /// The config.
    pub config: Blob,
    /// The layers, in order.
    pub layers: Vec<Blob>,
}

impl Image {
    /// Builds an OCI image from a spec.
    pub fn build(spec: &ImageSpec<'_>) -> Image {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, gz) in &spec.layers {
            diff_ids.push(Digest::sha256(tar).to_string());
            layers.push(if *gz {
                Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gzip(tar))
            } else {
                Blob::new("application/vnd.oci.image.layer.v1.tar", tar.clone())
            });
        }
        let config = serde_json::json!({
            "created": "2017-05-29T21:29:21.715464885Z",
            "architecture": spec.architecture,
            "os": "linux",
            "docker_version": "1.12.6",
            "config": {
                "Labels": spec.labels,
                "Env": spec.env,
                "Cmd": spec.cmd,
                "WorkingDir": "/srv",
                "User": "1000",
                "ExposedPorts": {"8080/tcp": {}},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2017-05-29T21:29:21.715464885Z", "created_by": "stowage test"}],
        });
        let config = Blob::new(
            "application/vnd.oci.image.config.v1+json",
            serde_json::to_vec(&config).expect("config json"),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(
            OCI_MANIFEST,
            serde_json::to_vec(&manifest).expect("manifest json"),
        );
        Image {
            manifest,
            config,
            layers,
        }
    }

    /// An artifact: an image manifest with `artifactType`, the empty config and one
    /// layer of `payload`, referring to `subject` (a signature or an SBOM, say).
    pub fn artifact(
        subject: &Blob,
        artifact_type: &str,
        payload: &[u8],
        annotations: BTreeMap<&str, &str>,
    ) -> Image {
        let config = Blob::new(EMPTY_CONFIG, b"{}".to_vec());
        let layer = Blob::new("application/octet-stream", payload.to_vec());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject.descriptor(),
            "annotations": annotations,
        });
        Image {
            manifest: Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).expect("json")),
            config,
            layers: vec![layer],
        }
    }

    /// Every blob of the image, manifest included.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.manifest)
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter())
    }
}

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The empty config artifacts carry.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// An OCI index of images, each with its platform (`os`, `architecture`).
pub fn index(children: &[(&Image, &str, &str)]) -> Blob {
    let manifests: Vec<_> = children
        .iter()
        .map(|(image, os, arch)| {
            let mut d = image.manifest.descriptor();
            d["platform"] = serde_json::json!({ "os": os, "architecture": arch });
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    Blob::new(OCI_INDEX, serde_json::to_vec(&index).expect("index json"))
}

/// An OCI image layout directory being filled.
pub struct Layout {
    dir: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl Layout {
    /// An empty layout at `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }

    /// Adds an image's blobs and names its manifest `tag`.
    pub fn add_image(&mut self, image: &Image, tag: &str) -> &mut Self {
        self.add_blobs(image.blobs());
        self.add_ref(&image.manifest, tag)
    }

    /// Adds an index, the images it lists, and names the index `tag`.
    pub fn add_index(&mut self, index: &Blob, images: &[&Image], tag: &str) -> &mut Self {
        for image in images {
            self.add_blobs(image.blobs());
        }
        self.add_blobs([index]);
        self.add_ref(index, tag)
    }

    fn add_blobs<'b>(&self, blobs: impl IntoIterator<Item = &'b Blob>) {
        for blob in blobs {
            let path = self.dir.join("blobs/sha256").join(blob.digest.hex());
            std::fs::write(path, &blob.bytes).expect("blob");
        }
    }

    fn add_ref(&mut self, manifest: &Blob, tag: &str) -> &mut Self {
        let mut d = manifest.descriptor();
        d["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
        self.refs.push(d);
        self.write_index();
        self
    }

    fn write_index(&self) {
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": self.refs });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("index"),
        )
        .expect("index.json");
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
