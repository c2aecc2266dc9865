//! The workloads: what is pushed or pulled, how many at once, and the report of each.
//! Content is generated before the clock starts, so the client is never what is
//! measured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use rand::SeedableRng;
use sha2::Digest as _;

use crate::client::{Error, Registry, Result};
use crate::data::{Layer, random_data};
use crate::measure::{Recorder, Report};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Reports progress: called with each increment of work (bytes or requests).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// `count` blobs of `size` random bytes, `concurrency` uploads at a time.
#[derive(Debug, Clone)]
pub struct Push {
    /// Repository to push to.
    pub repo: String,
    /// Blobs to push.
    pub count: usize,
    /// Bytes per blob.
    pub size: usize,
    /// Uploads at once.
    pub concurrency: usize,
    /// PATCH chunk size; `None` pushes each blob in one PUT.
    pub chunk_size: Option<usize>,
    /// Then push a manifest listing the blobs as layers, under this tag.
    pub tag: Option<String>,
    /// Seed of the content: the same seed makes the same blobs.
    pub seed: u64,
}

/// Pulls every layer of the manifest `tag` and checks each digest.
#[derive(Debug, Clone)]
pub struct Pull {
    /// Repository.
    pub repo: String,
    /// Tag (or digest) of the manifest whose layers are pulled.
    pub tag: String,
    /// Downloads at once.
    pub concurrency: usize,
}

/// Image versions sharing most of their content: each version's one layer is an
/// uncompressed tar in which `change` of the files differ from the version before.
#[derive(Debug, Clone)]
pub struct Versions {
    /// Repository; versions are tagged `v1`, `v2`, ….
    pub repo: String,
    /// How many versions.
    pub versions: usize,
    /// Bytes per layer.
    pub size: usize,
    /// Fraction of files changed between versions.
    pub change: f64,
    /// PATCH chunk size; `None` is monolithic.
    pub chunk_size: Option<usize>,
    /// Seed of the content.
    pub seed: u64,
}

/// Manifest HEAD and GET by tag, alternating, from many connections.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// Repository.
    pub repo: String,
    /// Tag to request.
    pub tag: String,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
}

/// A blob with its sha256 digest.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Content.
    pub data: Bytes,
    /// `sha256:…`.
    pub digest: String,
}

impl Blob {
    /// Hashes `data`.
    pub fn new(data: impl Into<Bytes>) -> Blob {
        let data = data.into();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        Blob { data, digest }
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

/// The blobs of a push, generated on all cores before the clock starts.
pub async fn generate(count: usize, size: usize, seed: u64) -> Vec<Blob> {
    let tasks: Vec<_> = (0..count as u64)
        .map(|i| {
            tokio::task::spawn_blocking(move || Blob::new(random_data(size, seed.wrapping_add(i))))
        })
        .collect();
    let mut blobs = Vec::with_capacity(count);
    for t in tasks {
        if let Ok(b) = t.await {
            blobs.push(b);
        }
    }
    blobs
}

/// An image of `layers` with a minimal config: its config blob and manifest.
fn image(layers: &[&Blob]) -> (Blob, Bytes) {
    let diff_ids: Vec<&str> = layers.iter().map(|b| b.digest.as_str()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Blob::new(config.to_string().into_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG),
        "layers": layers.iter().map(|b| b.descriptor(OCI_LAYER)).collect::<Vec<_>>(),
    });
    (config, Bytes::from(manifest.to_string().into_bytes()))
}

/// Pushes `blobs` with `concurrency` uploads at once; failures are counted, not fatal.
async fn push_all(
    reg: &Registry,
    rec: &Recorder,
    repo: &str,
    blobs: &[Blob],
    concurrency: usize,
    chunk: Option<usize>,
    progress: Progress<'_>,
) {
    futures::stream::iter(blobs)
        .for_each_concurrent(concurrency.max(1), |b| async move {
            let _ = reg
                .push_blob(rec, repo, &b.data, &b.digest, chunk, progress)
                .await;
        })
        .await;
}

/// Pushes an image of `layers` (already pushed) under `tag`.
async fn push_image(
    reg: &Registry,
    rec: &Recorder,
    repo: &str,
    tag: &str,
    layers: &[&Blob],
) -> Result<()> {
    let (config, manifest) = image(layers);
    reg.push_blob(rec, repo, &config.data, &config.digest, None, &|_| {})
        .await?;
    reg.put_manifest(rec, repo, tag, OCI_MANIFEST, &manifest)
        .await
}

/// Runs a [`Push`] of already generated `blobs` (see [`generate`]).
pub async fn push(reg: &Registry, p: &Push, blobs: &[Blob], progress: Progress<'_>) -> Report {
    let before = reg.stored_bytes().await;
    let rec = Recorder::new();
    push_all(
        reg,
        &rec,
        &p.repo,
        blobs,
        p.concurrency,
        p.chunk_size,
        progress,
    )
    .await;
    if let Some(tag) = &p.tag {
        let layers: Vec<&Blob> = blobs.iter().collect();
        let _ = push_image(reg, &rec, &p.repo, tag, &layers).await;
    }
    let mut report = rec.report("push", None);
    report.stored_bytes = stored_since(reg, before).await;
    report
}

async fn stored_since(reg: &Registry, before: Option<u64>) -> Option<u64> {
    Some(reg.stored_bytes().await?.saturating_sub(before?))
}

/// Runs a [`Pull`]: the manifest, then every layer, verified.
pub async fn pull(
    reg: &Registry,
    p: &Pull,
    progress: Progress<'_>,
    total: &(dyn Fn(u64) + Sync),
) -> Report {
    let rec = Recorder::new();
    let layers = match reg.get_manifest(&rec, &p.repo, &p.tag, false).await {
        Ok(body) => layers_of(&body).unwrap_or_else(|e| {
            rec.error(e.label());
            Vec::new()
        }),
        // Already counted by get_manifest.
        Err(_) => Vec::new(),
    };
    total(layers.iter().map(|(_, size)| size).sum());
    let rec_ref = &rec;
    futures::stream::iter(&layers)
        .for_each_concurrent(p.concurrency.max(1), |(digest, _)| async move {
            let _ = reg.pull_blob(rec_ref, &p.repo, digest, progress).await;
        })
        .await;
    rec.report("pull", None)
}

/// Layer digests and sizes of an image manifest.
fn layers_of(manifest: &[u8]) -> Result<Vec<(String, u64)>> {
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| Error::Protocol(format!("manifest: {e}")))?;
    let layers = v["layers"]
        .as_array()
        .ok_or_else(|| Error::Protocol("the manifest has no layers (an index?)".into()))?;
    layers
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap_or("").to_string();
            let size = l["size"].as_u64().unwrap_or(0);
            if digest.is_empty() {
                return Err(Error::Protocol("a layer without a digest".into()));
            }
            Ok((digest, size))
        })
        .collect()
}

/// The layers of a [`Versions`] run, generated before the clock starts.
pub async fn generate_versions(v: &Versions) -> Vec<Blob> {
    let v = v.clone();
    tokio::task::spawn_blocking(move || {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(v.seed);
        let mut layer = Layer::generate(v.size, v.seed);
        let mut out = Vec::with_capacity(v.versions);
        for _ in 0..v.versions {
            match layer.to_tar() {
                Ok(tar) => out.push(Blob::new(tar)),
                Err(_) => break,
            }
            layer = layer.next_version(v.change, &mut rng);
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// Runs a [`Versions`] push of already generated `layers`, one image per version.
pub async fn versions(
    reg: &Registry,
    v: &Versions,
    layers: &[Blob],
    progress: Progress<'_>,
) -> Report {
    let before = reg.stored_bytes().await;
    let rec = Recorder::new();
    for (i, layer) in layers.iter().enumerate() {
        let pushed = reg
            .push_blob(
                &rec,
                &v.repo,
                &layer.data,
                &layer.digest,
                v.chunk_size,
                progress,
            )
            .await;
        if pushed.is_ok() {
            let _ = push_image(reg, &rec, &v.repo, &format!("v{}", i + 1), &[layer]).await;
        }
    }
    let mut report = rec.report("versions", None);
    report.stored_bytes = stored_since(reg, before).await;
    report
}

/// Runs [`Manifests`]: each connection alternates HEAD and GET until the time is up.
pub async fn manifests(reg: &Registry, m: &Manifests, progress: Progress<'_>) -> Report {
    let rec = Recorder::new();
    let deadline = Instant::now() + m.duration;
    let rec_ref = &rec;
    futures::stream::iter(0..m.connections.max(1))
        .for_each_concurrent(None, |c| async move {
            let mut head = c % 2 == 0;
            while Instant::now() < deadline {
                let _ = reg.get_manifest(rec_ref, &m.repo, &m.tag, head).await;
                head = !head;
                progress(1);
            }
        })
        .await;
    rec.report("manifests", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_list_their_layers_and_config() {
        let a = Blob::new(b"a".to_vec());
        let b = Blob::new(b"b".to_vec());
        let (config, manifest) = image(&[&a, &b]);
        let layers = layers_of(&manifest).unwrap();
        assert_eq!(layers, vec![(a.digest.clone(), 1), (b.digest.clone(), 1)]);
        let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(v["config"]["digest"], config.digest);
        assert!(layers_of(br#"{"manifests":[]}"#).is_err());
    }

    #[tokio::test]
    async fn generated_blobs_are_seeded_and_distinct() {
        let one = generate(3, 1000, 7).await;
        let again = generate(3, 1000, 7).await;
        assert_eq!(one.len(), 3);
        assert_eq!(one[2].digest, again[2].digest);
        assert_ne!(one[0].digest, one[1].digest);
    }
}
