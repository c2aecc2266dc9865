//! The storage backends, behind one type: object_store's S3, in-memory and local-disk
//! stores, opened from a URL. This is the only module that touches object_store, so the
//! next change of its API touches one file.
//!
//! Two things object_store cannot do well on local disk are done here instead:
//! - compare-and-swap: LocalFileSystem has no `PutMode::Update`, so a swap takes an
//!   advisory lock (`flock`) on a per-key lock file, which holds between processes;
//! - large pack writes: they go through `O_DIRECT` to a staging file that is synced and
//!   renamed into place, because buffered writes of many megabytes are slower than the
//!   disk on the machines we measured (docs/storage.md).

use std::fmt;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, mpsc};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where and how to reach the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// `file:///path` (or a plain path), `s3://bucket[/prefix]` or `memory://`.
    pub url: String,
    /// S3 settings; unset fields fall back to the usual `AWS_*` environment variables.
    pub s3: S3Options,
}

/// S3 connection settings.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL for S3-compatible servers, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when neither this nor `AWS_REGION` is set.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Allow a plain-http endpoint (default: allowed only when the endpoint is http://).
    pub allow_http: Option<bool>,
    /// Address buckets as `bucket.host` instead of the default path style `host/bucket`.
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

/// Which kind of backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Process memory; gone when the process ends.
    Memory,
    /// A local directory.
    Local,
    /// Amazon S3 or a compatible server.
    S3,
}

/// Opaque version of an object read for a later compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Version {
    /// The backend's own entity tag or version id.
    Tag(UpdateVersion),
    /// Hash of the content, compared under the local key lock.
    Content([u8; 32]),
}

/// Unlinks files, two threads side by side, and notes the directories they were in;
/// [`sync_dirs`] makes the deletions durable later, once per directory for a whole batch
/// of batches rather than once per file.
/// Unlinks in flight at once when deleting many local files.
const UNLINK_THREADS: usize = 16;

async fn delete_local(
    local: &LocalDirs,
    keys: Vec<Path>,
    pending: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let files: Vec<PathBuf> = keys
        .iter()
        .map(|k| local.fs.path_to_filesystem(k).map_err(backend_err(k)))
        .collect::<Result<_>>()?;
    // An unlink waits on the file system's journal (and on discard, where mounted so)
    // far more than on a core: many in flight at once go several times faster.
    let part = files.len().div_ceil(UNLINK_THREADS).max(64);
    let parts: Vec<Vec<PathBuf>> = files.chunks(part).map(<[PathBuf]>::to_vec).collect();
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|part| {
            tokio::task::spawn_blocking(move || {
                let mut dirs = std::collections::HashSet::new();
                for f in &part {
                    match std::fs::remove_file(f) {
                        Ok(()) => {
                            if let Some(d) = f.parent() {
                                dirs.insert(d.to_path_buf());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(f, e)),
                    }
                }
                Ok(dirs)
            })
        })
        .collect();
    for t in tasks {
        pending.extend(t.await??);
    }
    Ok(())
}

/// Syncs directories whose entries were removed.
pub(crate) async fn sync_dirs(dirs: std::collections::HashSet<PathBuf>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        for d in dirs {
            match std::fs::File::open(&d).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&d, e)),
            }
        }
        Ok(())
    })
    .await?
}

/// Local-disk specifics: the root, and where lock and staging files live.
#[derive(Debug)]
struct LocalDirs {
    fs: Arc<LocalFileSystem>,
    locks: PathBuf,
    staging: PathBuf,
}

/// An opened backend.
#[derive(Clone)]
pub(crate) struct Backend {
    store: Arc<dyn ObjectStore>,
    kind: BackendKind,
    local: Option<Arc<LocalDirs>>,
    description: Arc<str>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

fn backend_err(key: &Path) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |source| Error::Backend {
        key: key.to_string(),
        source,
    }
}

/// Whether an error of a read says the object is not there (deleted since it was listed,
/// or never written), as opposed to a failure of the backend.
pub(crate) fn is_not_found(e: &Error) -> bool {
    match e {
        Error::Backend { source, .. } => matches!(source, object_store::Error::NotFound { .. }),
        Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

impl Backend {
    /// Opens the backend a URL names.
    pub(crate) fn open(config: &BackendConfig) -> Result<Self> {
        let url = config.url.trim();
        if url == "memory://" || url == "memory:" || url == "memory" {
            return Ok(Backend {
                store: Arc::new(InMemory::new()),
                kind: BackendKind::Memory,
                local: None,
                description: "memory://".into(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::open_s3(rest, &config.s3);
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => p,
            None if url.contains("://") => {
                return Err(Error::InvalidConfig(format!(
                    "storage URL {url:?}: scheme must be file://, s3:// or memory://"
                )));
            }
            None => url,
        };
        if path.is_empty() {
            return Err(Error::InvalidConfig("storage path is empty".into()));
        }
        Self::open_local(FsPath::new(path))
    }

    fn open_local(path: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let root = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let locks = root.join(".locks");
        let staging = root.join(".staging");
        for dir in [&locks, &staging, &root.join("packs")] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        remove_stale_staging(&staging, STALE_STAGING)?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::InvalidConfig(format!("{}: {e}", root.display())))?
            .with_fsync(true);
        let fs = Arc::new(fs);
        Ok(Backend {
            store: fs.clone(),
            kind: BackendKind::Local,
            local: Some(Arc::new(LocalDirs { fs, locks, staging })),
            description: format!("file://{}", root.display()).into(),
        })
    }

    fn open_s3(rest: &str, opts: &S3Options) -> Result<Self> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err(Error::InvalidConfig("s3 URL has no bucket".into()));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &opts.endpoint {
            b = b.with_endpoint(endpoint);
            let plain = endpoint.starts_with("http://");
            b = b.with_allow_http(opts.allow_http.unwrap_or(plain));
        } else if let Some(allow) = opts.allow_http {
            b = b.with_allow_http(allow);
        }
        if let Some(region) = &opts.region {
            b = b.with_region(region);
        }
        if let Some(v) = &opts.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &opts.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = &opts.session_token {
            b = b.with_token(v);
        }
        b = b.with_virtual_hosted_style_request(opts.virtual_hosted_style);
        let s3 = b
            .build()
            .map_err(|e| Error::InvalidConfig(format!("s3://{rest}: {e}")))?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Backend {
            store,
            kind: BackendKind::S3,
            local: None,
            description: format!("s3://{rest}").into(),
        })
    }

    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    /// Whole object, or `None` if absent.
    pub(crate) async fn get(&self, key: &Path) -> Result<Option<Bytes>> {
        match self.store.get(key).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(backend_err(key))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Whole object with the version a later [`Backend::compare_and_swap`] expects.
    pub(crate) async fn get_versioned(&self, key: &Path) -> Result<Option<(Bytes, Version)>> {
        if self.local.is_some() {
            return Ok(self.get(key).await?.map(|b| {
                let v = Version::Content(*blake3::hash(&b).as_bytes());
                (b, v)
            }));
        }
        match self.store.get(key).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(backend_err(key))?;
                Ok(Some((bytes, Version::Tag(version))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// A byte range of an object that must exist.
    pub(crate) async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        if let Some(local) = &self.local {
            // Local files: one positioned read into a reused buffer. object_store's
            // read allocates afresh each time, and a fresh multi-megabyte buffer costs
            // a page fault and a page clear per 4 KiB: a tenth of a pull's CPU.
            let file = local.fs.path_to_filesystem(key).map_err(backend_err(key))?;
            let key_text = key.to_string();
            return tokio::task::spawn_blocking(move || read_pooled(&file, range))
                .await?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        Error::corrupt(&key_text, format!("short read: wanted {want} bytes"))
                    }
                    _ => Error::io(&key_text, e),
                });
        }
        let bytes = self
            .store
            .get_range(key, range)
            .await
            .map_err(backend_err(key))?;
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                key.as_ref(),
                format!("short read: wanted {want} bytes, got {}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// The last `n` bytes of an object (all of it if shorter), with its total size.
    pub(crate) async fn get_suffix(&self, key: &Path, n: u64) -> Result<(Bytes, u64)> {
        let opts = GetOptions::new().with_range(Some(GetRange::Suffix(n)));
        let r = self
            .store
            .get_opts(key, opts)
            .await
            .map_err(backend_err(key))?;
        let size = r.meta.size;
        let bytes = r.bytes().await.map_err(backend_err(key))?;
        Ok((bytes, size))
    }

    /// The first `n` bytes of an object (all of it if shorter), with its total size;
    /// `None` if it does not exist.
    pub(crate) async fn get_opts_prefix(&self, key: &Path, n: u64) -> Result<Option<(Bytes, u64)>> {
        let opts = GetOptions::new().with_range(Some(GetRange::Bounded(0..n)));
        match self.store.get_opts(key, opts).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok(Some((r.bytes().await.map_err(backend_err(key))?, size)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Metadata, or `None` if absent.
    pub(crate) async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Atomically writes (or replaces) an object; durable when this returns.
    pub(crate) async fn put(&self, key: &Path, data: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(key, data.into())
            .await
            .map(drop)
            .map_err(backend_err(key))
    }

    /// Writes an object only if it does not exist. `Ok(false)` if it already did.
    pub(crate) async fn create(&self, key: &Path, data: impl Into<PutPayload>) -> Result<bool> {
        let opts = PutOptions::from(PutMode::Create);
        match self.store.put_opts(key, data.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Replaces an object only if it is still at `expected` (`None`: still absent).
    /// `Ok(false)` if another writer got there first.
    pub(crate) async fn compare_and_swap(
        &self,
        key: &Path,
        expected: Option<&Version>,
        data: impl Into<PutPayload>,
    ) -> Result<bool> {
        let data = data.into();
        if self.local.is_some() {
            let _lock = self.lock(key).await?;
            let current = self
                .get(key)
                .await?
                .map(|b| Version::Content(*blake3::hash(&b).as_bytes()));
            if current.as_ref() != expected {
                return Ok(false);
            }
            self.put(key, data).await?;
            return Ok(true);
        }
        let mode = match expected {
            None => PutMode::Create,
            Some(Version::Tag(v)) => PutMode::Update(v.clone()),
            Some(Version::Content(_)) => {
                return Err(Error::Task(
                    "content version used on a remote backend".into(),
                ));
            }
        };
        match self.store.put_opts(key, data, PutOptions::from(mode)).await {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Deletes an object; deleting an absent one is not an error.
    pub(crate) async fn delete(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_err(key)(e)),
        }
    }

    /// Deletes many objects; absent ones are not an error. On S3 this is one request per
    /// thousand keys; on local disk the deletions are durable only once the directories
    /// added to `pending` are synced ([`sync_dirs`]).
    pub(crate) async fn delete_many(
        &self,
        keys: Vec<Path>,
        pending: &mut std::collections::HashSet<PathBuf>,
    ) -> Result<()> {
        if let Some(local) = &self.local {
            return delete_local(local, keys, pending).await;
        }
        let first = keys.first().map(|k| k.to_string()).unwrap_or_default();
        let mut results = self
            .store
            .delete_stream(futures::stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(Error::Backend {
                        key: first.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes an object that is updated by compare-and-swap, serialised with swaps.
    pub(crate) async fn delete_swapped(&self, key: &Path) -> Result<()> {
        let _lock = match self.local {
            Some(_) => Some(self.lock(key).await?),
            None => None,
        };
        self.delete(key).await
    }

    /// Every object under `prefix`, recursively, in no particular order.
    pub(crate) fn list(&self, prefix: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix_str = prefix.to_string();
        self.store
            .list(Some(prefix))
            .map_err(move |source| Error::Backend {
                key: prefix_str.clone(),
                source,
            })
            .boxed()
    }

    /// Collects a listing.
    pub(crate) async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        self.list(prefix).try_collect().await
    }

    /// Direct children of `prefix`: (objects, sub-prefixes).
    pub(crate) async fn list_dir(&self, prefix: &Path) -> Result<(Vec<ObjectMeta>, Vec<Path>)> {
        let r = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(backend_err(prefix))?;
        Ok((r.objects, r.common_prefixes))
    }

    async fn lock(&self, key: &Path) -> Result<KeyLock> {
        let Some(local) = &self.local else {
            return Ok(KeyLock(None));
        };
        let name = &blake3::hash(key.as_ref().as_bytes()).to_hex()[..32];
        let path = local.locks.join(name);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.lock().map_err(|e| Error::io(&path, e))?;
            Ok(KeyLock(Some(file)))
        })
        .await?
    }

    /// Starts writing a pack of about `size` bytes to `key`. Nothing is visible at
    /// `key` until [`PackWriter::finish`] returns.
    pub(crate) fn pack_writer(&self, key: Path, size: u64) -> Result<PackWriter> {
        match &self.local {
            Some(local) => {
                let target = local
                    .fs
                    .path_to_filesystem(&key)
                    .map_err(backend_err(&key))?;
                let name = target
                    .file_name()
                    .map(|n| n.to_owned())
                    .ok_or_else(|| Error::Task(format!("pack key {key} has no file name")))?;
                let staging = local.staging.join(name);
                Ok(PackWriter::Direct(DirectWriter::create(staging, target)?))
            }
            None => Ok(PackWriter::Buffered {
                backend: self.clone(),
                key,
                // Sized up front: grown by doubling, an 8 MiB pack held 16 MiB.
                buf: BytesMut::with_capacity(size as usize + PACK_SLACK),
            }),
        }
    }
}

/// Room past the target pack size: the chunk that crosses it (at most the largest
/// chunk) and the footer.
const PACK_SLACK: usize = 512 << 10;

/// A staging file this old belongs to a pack write that died with its process (a live
/// one finishes a pack in seconds); another process may be writing younger ones.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes staging files left by writes that were killed before they finished.
fn remove_stale_staging(dir: &FsPath, older_than: std::time::Duration) -> Result<usize> {
    let mut removed = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= older_than);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed staging files of interrupted pack writes");
    }
    Ok(removed)
}

/// Holds an advisory lock until dropped (closing the file releases it).
struct KeyLock(#[allow(dead_code)] Option<std::fs::File>);

/// Streams one pack to the backend.
pub(crate) enum PackWriter {
    /// Local disk: O_DIRECT writes to a staging file.
    Direct(DirectWriter),
    /// Object stores: buffered, then one PUT.
    Buffered {
        /// Where to put it.
        backend: Backend,
        /// Its key.
        key: Path,
        /// Everything written so far.
        buf: BytesMut,
    },
}

impl PackWriter {
    /// Appends bytes. May block while a previous block is written (back-pressure), so
    /// call it from a blocking context.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        match self {
            PackWriter::Direct(w) => w.write(data),
            PackWriter::Buffered { buf, .. } => {
                buf.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        match self {
            PackWriter::Direct(w) => w.len,
            PackWriter::Buffered { buf, .. } => buf.len() as u64,
        }
    }

    /// Makes the pack durable and visible at its key.
    pub(crate) async fn finish(self) -> Result<()> {
        match self {
            PackWriter::Direct(w) => tokio::task::spawn_blocking(move || w.finish()).await?,
            PackWriter::Buffered { backend, key, buf } => backend.put(&key, buf.freeze()).await,
        }
    }
}

/// Size of each O_DIRECT write.
const DIRECT_BLOCK: usize = 2 << 20;
/// O_DIRECT needs buffers, offsets and lengths aligned to the device's logical block.
const ALIGN: usize = 4096;
/// Threads writing one pack's blocks.
const WRITE_THREADS: usize = 2;

/// A heap buffer whose usable part starts on an [`ALIGN`] boundary (without unsafe code:
/// over-allocate and skip to the boundary).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    filled: usize,
}

/// Buffers kept for reuse: a fresh multi-megabyte allocation costs a page fault and a
/// page clear per 4 KiB, which measured as a fifth of a write's CPU time.
static BUFFER_POOL: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 8;

impl AlignedBuf {
    fn new() -> Self {
        if let Some(b) = BUFFER_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return b;
        }
        let raw = vec![0u8; DIRECT_BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            raw,
            start,
            filled: 0,
        }
    }

    fn recycle(mut self) {
        self.filled = 0;
        let mut pool = BUFFER_POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }

    fn spare(&mut self) -> &mut [u8] {
        &mut self.raw[self.start + self.filled..self.start + DIRECT_BLOCK]
    }

    /// The filled part, padded with zeros to the next alignment boundary.
    fn padded(&mut self) -> &[u8] {
        let len = self.filled.div_ceil(ALIGN) * ALIGN;
        self.raw[self.start + self.filled..self.start + len].fill(0);
        &self.raw[self.start..self.start + len]
    }
}

/// Writes a pack with O_DIRECT (falling back to buffered I/O where the file system
/// refuses it, e.g. tmpfs), on a helper thread so hashing and chunking continue while
/// the disk works. The staging file is removed if the writer is dropped unfinished.
pub(crate) struct DirectWriter {
    staging: PathBuf,
    target: PathBuf,
    file: Arc<std::fs::File>,
    buf: Option<AlignedBuf>,
    /// Bytes written by the caller.
    len: u64,
    /// Bytes handed to the thread: whole blocks, then the padded tail.
    submitted: u64,
    allocated: usize,
    to_thread: Option<mpsc::SyncSender<(AlignedBuf, u64)>>,
    from_thread: mpsc::Receiver<AlignedBuf>,
    threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
    finished: bool,
}

impl DirectWriter {
    fn create(staging: PathBuf, target: PathBuf) -> Result<Self> {
        let open = |direct: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(&staging)
        };
        let file = match open(true) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(&staging);
                open(false).map_err(|e| Error::io(&staging, e))?
            }
            Err(e) => return Err(Error::io(&staging, e)),
        };
        let file = Arc::new(file);
        let (to_thread, thread_rx) = mpsc::sync_channel::<(AlignedBuf, u64)>(0);
        let thread_rx = Arc::new(Mutex::new(thread_rx));
        let (thread_tx, from_thread) = mpsc::channel();
        // Two writers keep two blocks in flight: a disk at queue depth one idles
        // between requests.
        let mut threads = Vec::with_capacity(WRITE_THREADS);
        for _ in 0..WRITE_THREADS {
            let file = file.clone();
            let rx = thread_rx.clone();
            let tx = thread_tx.clone();
            let t = std::thread::Builder::new()
                .name("stowage-pack-writer".into())
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((mut buf, offset)) = next else {
                            return Ok(());
                        };
                        file.write_all_at(buf.padded(), offset)?;
                        buf.filled = 0;
                        let _ = tx.send(buf);
                    }
                })
                .map_err(|e| Error::io(&staging, e))?;
            threads.push(t);
        }
        Ok(DirectWriter {
            staging,
            target,
            file,
            buf: None,
            len: 0,
            submitted: 0,
            allocated: 0,
            to_thread: Some(to_thread),
            from_thread,
            threads,
            finished: false,
        })
    }

    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let mut buf = match self.buf.take() {
                Some(b) => b,
                None => self.next_buffer()?,
            };
            let spare = buf.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            buf.filled += n;
            self.len += n as u64;
            data = &data[n..];
            if buf.filled == DIRECT_BLOCK {
                self.submit(buf)?;
            } else {
                self.buf = Some(buf);
            }
        }
        Ok(())
    }

    /// A free buffer: one a thread has finished with, or a new one while fewer than
    /// one per thread plus one exist.
    fn next_buffer(&mut self) -> Result<AlignedBuf> {
        if let Ok(b) = self.from_thread.try_recv() {
            return Ok(b);
        }
        if self.allocated < WRITE_THREADS + 1 {
            self.allocated += 1;
            return Ok(AlignedBuf::new());
        }
        match self.from_thread.recv() {
            Ok(b) => Ok(b),
            Err(_) => Err(self.thread_failed()),
        }
    }

    /// Hands a buffer to the writer thread, to be written at the next block offset.
    fn submit(&mut self, buf: AlignedBuf) -> Result<()> {
        let offset = self.submitted;
        self.submitted += DIRECT_BLOCK as u64;
        let sent = self
            .to_thread
            .as_ref()
            .is_some_and(|tx| tx.send((buf, offset)).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.thread_failed())
        }
    }

    fn thread_failed(&mut self) -> Error {
        drop(self.to_thread.take());
        let err = self
            .join_threads()
            .err()
            .unwrap_or_else(|| io::Error::other("pack writer thread stopped"));
        Error::io(&self.staging, err)
    }

    /// Waits for the writer threads; the first error any of them hit.
    fn join_threads(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("pack writer thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn finish(mut self) -> Result<()> {
        if let Some(tail) = self.buf.take()
            && tail.filled > 0
        {
            self.submit(tail)?;
        }
        drop(self.to_thread.take());
        self.join_threads()
            .map_err(|e| Error::io(&self.staging, e))?;
        self.recycle_buffers();
        let io = |e| Error::io(&self.staging, e);
        // The tail block was padded to the alignment; cut the file to its real length.
        self.file.set_len(self.len).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.finished = true;
        if let Some(dir) = self.target.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(dir, e))?;
        }
        Ok(())
    }
}

impl DirectWriter {
    /// Returns this writer's buffers to the pool once the thread is done with them.
    fn recycle_buffers(&mut self) {
        if let Some(b) = self.buf.take() {
            b.recycle();
        }
        while let Ok(b) = self.from_thread.try_recv() {
            b.recycle();
        }
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.to_thread.take());
            let _ = self.join_threads();
            self.recycle_buffers();
            let _ = std::fs::remove_file(&self.staging);
        }
    }
}

/// `range` of the file at `path`, read into a pooled buffer.
fn read_pooled(path: &std::path::Path, range: Range<u64>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    let len = (range.end - range.start) as usize;
    let mut buf = crate::buffers::take();
    // Reused buffers keep their (initialised) contents; only growth is zeroed.
    buf.resize(len, 0);
    let file = std::fs::File::open(path)?;
    if let Err(e) = file.read_exact_at(&mut buf, range.start) {
        crate::buffers::give_back(buf);
        return Err(e);
    }
    Ok(crate::buffers::into_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_staging_files_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        assert_eq!(remove_stale_staging(dir.path(), STALE_STAGING).unwrap(), 0);
        assert!(
            dir.path().join("a").exists(),
            "a write in progress keeps its file"
        );
        let removed = remove_stale_staging(dir.path(), std::time::Duration::ZERO).unwrap();
        assert_eq!(removed, 1);
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn a_pack_writer_dropped_unfinished_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(&BackendConfig {
            url: dir.path().display().to_string(),
            ..Default::default()
        })
        .unwrap();
        let key = Path::from("packs/0123456789abcdef0123456789abcdef");
        let mut w = backend.pack_writer(key.clone(), 1 << 20).unwrap();
        w.write(&vec![7u8; 5 << 20]).unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join(".staging"))
                .unwrap()
                .count(),
            0
        );
        assert!(
            !dir.path()
                .join("packs/0123456789abcdef0123456789abcdef")
                .exists()
        );
    }
}
