//! Filling the two stores with the same content: Stowage's through its storage API, in
//! this process; Distribution's by writing its 2.8 storage layout directly (the files
//! its filesystem and S3 drivers read), which is much faster than pushing over HTTP.
//! And counting what Distribution's store holds, before and after its collection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use stowage_storage::{Digest, References, RepoName, S3Options, Store, StoreOptions, Tag};

use super::content::{MANIFEST_TYPE, Params, Pool};

/// Writes (blob, link, manifest or tag) in flight at once while filling a store.
pub const CONCURRENCY: usize = 16;

/// Credentials and region moto accepts.
const S3_KEY: &str = "testing";
const S3_REGION: &str = "us-east-1";

/// What filling a store took.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Filled {
    /// Seconds.
    pub seconds: f64,
    /// Distinct blobs written (the pool counted once).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Options for a Stowage store at `url`: a directory, or `s3://bucket/prefix` on the
/// S3-compatible server at `endpoint`.
pub fn stowage_options(url: &str, endpoint: Option<&str>) -> StoreOptions {
    let mut o = StoreOptions::new(url);
    if let Some(endpoint) = endpoint {
        o.backend.s3 = S3Options {
            endpoint: Some(endpoint.to_owned()),
            region: Some(S3_REGION.into()),
            access_key_id: Some(S3_KEY.into()),
            secret_access_key: Some(S3_KEY.into()),
            ..Default::default()
        };
    }
    o
}

/// Prints a line at every tenth of `total`.
struct Ticker {
    what: &'static str,
    total: usize,
    done: AtomicUsize,
    start: Instant,
}

impl Ticker {
    fn new(what: &'static str, total: usize) -> Ticker {
        Ticker {
            what,
            total,
            done: AtomicUsize::new(0),
            start: Instant::now(),
        }
    }

    fn tick(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let step = (self.total / 10).max(1);
        if n.is_multiple_of(step) || n == self.total {
            eprintln!(
                "    {}: {n}/{} images, {:.1} s",
                self.what,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

fn body(bytes: Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::once(async move { Ok(bytes) })
}

/// Fills the Stowage store `options` opens: the used pool layers first (written once,
/// as the base images a registry already holds), then image by image, `CONCURRENCY`
/// images at a time: its layers and config with `Repository::put_blob`, its shared
/// layers linked with `Repository::link_blob` (a client that finds them present skips
/// the upload and mounts them), the manifest with `put_manifest`, the tag if it has one.
pub async fn fill_stowage(params: &Params, pool: &Pool, options: StoreOptions) -> Result<Filled> {
    let start = Instant::now();
    let store = Store::open(options)
        .await
        .context("opening the Stowage store")?;
    let store = &store;
    let used: Vec<(Digest, Bytes)> = pool.used().map(|(d, b)| (d.clone(), b.clone())).collect();
    let mut blobs = used.len() as u64;
    let mut bytes: u64 = used.iter().map(|(_, b)| b.len() as u64).sum();
    futures::stream::iter(used)
        .map(|(d, b)| async move { store.put_blob(&d, body(b)).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("writing the shared layers")?;
    let ticker = Ticker::new("stowage", params.manifests());
    let ticker = &ticker;
    let written: Vec<(u64, u64)> = futures::stream::iter(params.all_images())
        .map(|(r, i)| async move {
            let img = params.image(pool, r, i);
            let repo = store.repository(&RepoName::parse(&img.repo)?);
            for (d, b) in &img.layers {
                repo.put_blob(d, body(b.clone())).await?;
            }
            repo.put_blob(&img.config.0, body(img.config.1.clone()))
                .await?;
            for &k in &img.shared {
                repo.link_blob(pool.get(k).0).await?;
            }
            let (md, mb) = &img.manifest;
            repo.put_manifest(md, MANIFEST_TYPE, mb.clone(), None, &References::default())
                .await?;
            if let Some(tag) = &img.tag {
                repo.set_tag(&Tag::parse(tag)?, md).await?;
            }
            ticker.tick();
            Ok::<_, anyhow::Error>((2 + img.layers.len() as u64, img.own_bytes()))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (n, b) in written {
        blobs += n;
        bytes += b;
    }
    // Like a server shut down: the collections measured next find no writer to wait for.
    store.retire_writer().await?;
    Ok(Filled {
        seconds: start.elapsed().as_secs_f64(),
        blobs,
        bytes,
    })
}

/// Where a Distribution store is written: a directory (its filesystem driver's
/// `rootdirectory`), or a prefix of an S3 bucket (its S3 driver's).
#[derive(Clone)]
pub enum DistTarget {
    /// A local directory.
    Dir(PathBuf),
    /// A bucket on the S3-compatible server, under `prefix`.
    S3 {
        /// The bucket.
        store: Arc<dyn ObjectStore>,
        /// The `rootdirectory`, without slashes.
        prefix: String,
    },
}

impl DistTarget {
    /// The bucket `bucket` at `endpoint`, under `prefix`.
    pub fn s3(endpoint: &str, bucket: &str, prefix: &str) -> Result<DistTarget> {
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region(S3_REGION)
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_KEY)
            .build()?;
        Ok(DistTarget::S3 {
            store: Arc::new(store),
            prefix: prefix.to_owned(),
        })
    }

    /// Writes `objects` (keys relative to the root directory).
    async fn put(&self, objects: Vec<(String, Bytes)>) -> Result<()> {
        match self {
            DistTarget::Dir(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    for (key, data) in objects {
                        let path = root.join(&key);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::fs::write(&path, &data)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    Ok(())
                })
                .await?
            }
            DistTarget::S3 { store, prefix } => {
                for (key, data) in objects {
                    let path = ObjectPath::from(format!("{prefix}/{key}"));
                    store
                        .put(&path, PutPayload::from(data))
                        .await
                        .with_context(|| format!("writing {path}"))?;
                }
                Ok(())
            }
        }
    }

    /// Every key under the root directory, relative to it.
    async fn keys(&self) -> Result<Vec<String>> {
        match self {
            DistTarget::Dir(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    walk(&root, &root, &mut out)?;
                    Ok(out)
                })
                .await?
            }
            DistTarget::S3 { store, prefix } => {
                let base = ObjectPath::from(prefix.as_str());
                let skip = prefix.len() + 1;
                store
                    .list(Some(&base))
                    .map_ok(|m| m.location.as_ref()[skip..].to_owned())
                    .try_collect()
                    .await
                    .map_err(Into::into)
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &entry.path(), out)?;
        } else if kind.is_file() {
            let path = entry.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

const V2: &str = "docker/registry/v2";

fn blob_data(d: &Digest) -> String {
    let hex = d.hex();
    format!("{V2}/blobs/sha256/{}/{hex}/data", &hex[..2])
}

fn link(d: &Digest) -> Bytes {
    Bytes::from(d.to_string())
}

/// Writes Distribution 2.8's layout: every blob (manifests too) once under
/// `blobs/sha256/<xx>/<hex>/data`; per repository a `_layers` link per blob it uses, a
/// revision link per manifest and, for a tag, `current/link` and the tag's index entry.
pub async fn fill_distribution(
    params: &Params,
    pool: &Pool,
    target: &DistTarget,
) -> Result<Filled> {
    let start = Instant::now();
    let used: Vec<(String, Bytes)> = pool
        .used()
        .map(|(d, b)| (blob_data(d), b.clone()))
        .collect();
    let mut blobs = used.len() as u64;
    let mut bytes: u64 = used.iter().map(|(_, b)| b.len() as u64).sum();
    futures::stream::iter(used)
        .map(|o| target.put(vec![o]))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .context("writing the shared layers")?;
    let ticker = Ticker::new("distribution", params.manifests());
    let ticker = &ticker;
    let written: Vec<(u64, u64)> = futures::stream::iter(params.all_images())
        .map(|(r, i)| async move {
            let img = params.image(pool, r, i);
            let repo = format!("{V2}/repositories/{}", img.repo);
            let mut objects = Vec::new();
            let md = &img.manifest.0;
            for (d, b) in img.layers.iter().chain([&img.config, &img.manifest]) {
                objects.push((blob_data(d), b.clone()));
            }
            let layer_digests = img
                .layers
                .iter()
                .map(|(d, _)| d)
                .chain([&img.config.0])
                .chain(img.shared.iter().map(|&k| pool.get(k).0));
            for d in layer_digests {
                objects.push((format!("{repo}/_layers/sha256/{}/link", d.hex()), link(d)));
            }
            objects.push((
                format!("{repo}/_manifests/revisions/sha256/{}/link", md.hex()),
                link(md),
            ));
            if let Some(tag) = &img.tag {
                let t = format!("{repo}/_manifests/tags/{tag}");
                objects.push((format!("{t}/current/link"), link(md)));
                objects.push((format!("{t}/index/sha256/{}/link", md.hex()), link(md)));
            }
            let own = (2 + img.layers.len() as u64, img.own_bytes());
            target.put(objects).await?;
            ticker.tick();
            Ok::<_, anyhow::Error>(own)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (n, b) in written {
        blobs += n;
        bytes += b;
    }
    Ok(Filled {
        seconds: start.elapsed().as_secs_f64(),
        blobs,
        bytes,
    })
}

/// What a Distribution store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DistCounts {
    /// Blob data files (layers, configs, manifests).
    pub blobs: u64,
    /// Manifest revision links.
    pub revisions: u64,
    /// Tag index entries.
    pub tag_index_entries: u64,
    /// `_layers` links.
    pub layer_links: u64,
}

/// Counts the blobs, revisions and links of a Distribution store.
pub async fn count_distribution(target: &DistTarget) -> Result<DistCounts> {
    let mut c = DistCounts::default();
    for key in target.keys().await? {
        let Some(rest) = key.strip_prefix(V2) else {
            continue;
        };
        if rest.starts_with("/blobs/sha256/") && rest.ends_with("/data") {
            c.blobs += 1;
        } else if !rest.ends_with("/link") {
            continue;
        } else if rest.contains("/_manifests/revisions/sha256/") {
            c.revisions += 1;
        } else if rest.contains("/_manifests/tags/") && rest.contains("/index/sha256/") {
            c.tag_index_entries += 1;
        } else if rest.contains("/_layers/sha256/") {
            c.layer_links += 1;
        }
    }
    if c.blobs == 0 {
        bail!("no Distribution blobs found: wrong root directory?");
    }
    Ok(c)
}
