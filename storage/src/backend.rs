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
use object_store::aws::AmazonS3;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion,
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
    /// S3: what a conditional delete needs, which object_store does not offer.
    s3: Option<Arc<S3Direct>>,
    /// Memory: serialises compare-and-swap with conditional deletes (InMemory has no
    /// conditional delete; the store lives in this process, so a mutex is enough).
    memory_swaps: Option<Arc<tokio::sync::Mutex<()>>>,
    description: Arc<str>,
}

/// Requests object_store cannot make: S3's conditional `DeleteObject` (`If-Match`),
/// sent to a URL object_store signs, through the HTTP client it built for this store
/// (the same TLS, proxy and timeout settings).
#[derive(Debug)]
struct S3Direct {
    s3: AmazonS3,
    /// The key prefix of `s3://bucket/prefix`.
    prefix: Path,
    http: HttpClient,
}

/// Creates HTTP clients as object_store does and keeps the last one: the S3 client's,
/// which `AmazonS3Builder::build` connects last.
#[derive(Debug, Default, Clone)]
struct KeepingConnector(Arc<Mutex<Option<HttpClient>>>);

impl HttpConnector for KeepingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = ReqwestConnector::default().connect(options)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }
}

/// How long a signed conditional delete URL is valid: it is used at once.
const SIGNED_URL_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Tries of a conditional delete on S3 when the server fails (5xx) or the connection does.
const S3_DELETE_TRIES: u32 = 3;

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
                s3: None,
                memory_swaps: Some(Arc::new(tokio::sync::Mutex::new(()))),
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
            s3: None,
            memory_swaps: None,
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
        let connector = KeepingConnector::default();
        b = b.with_http_connector(connector.clone());
        let s3 = b
            .build()
            .map_err(|e| Error::InvalidConfig(format!("s3://{rest}: {e}")))?;
        let http = connector
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::InvalidConfig(format!("s3://{rest}: no HTTP client")))?;
        let direct = S3Direct {
            s3: s3.clone(),
            prefix: Path::from(prefix),
            http,
        };
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Backend {
            store,
            kind: BackendKind::S3,
            local: None,
            s3: Some(Arc::new(direct)),
            memory_swaps: None,
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

    /// The content version of a local object (callers hold its lock), or `None`.
    async fn local_version(&self, key: &Path) -> Result<Option<Version>> {
        Ok(self
            .get(key)
            .await?
            .map(|b| Version::Content(*blake3::hash(&b).as_bytes())))
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
        let _memory = self.memory_guard().await;
        if self.local.is_some() {
            let _lock = self.lock(key).await?;
            let current = self.local_version(key).await?;
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
        let _memory = self.memory_guard().await;
        let _lock = match self.local {
            Some(_) => Some(self.lock(key).await?),
            None => None,
        };
        self.delete(key).await
    }

    /// Deletes an object only if it is still at `expected` (as read by
    /// [`Backend::get_versioned`]): the delete of a compare-and-swap. `Ok(false)` if it
    /// changed or went meanwhile. Local disk: under the key's lock, like a swap; memory:
    /// under the store's swap mutex; S3: `DeleteObject` with `If-Match` (S3 has honoured
    /// it on general purpose buckets since 2025; a server that ignores the header deletes
    /// unconditionally, as [`Backend::delete_swapped`] does).
    pub(crate) async fn delete_if_version(&self, key: &Path, expected: &Version) -> Result<bool> {
        if self.local.is_some() {
            let _lock = self.lock(key).await?;
            let current = self.local_version(key).await?;
            if current.as_ref() != Some(expected) {
                return Ok(false);
            }
            self.delete(key).await?;
            return Ok(true);
        }
        let Version::Tag(expected) = expected else {
            return Err(Error::Task(
                "content version used on a remote backend".into(),
            ));
        };
        if let Some(s3) = &self.s3 {
            let e_tag = expected.e_tag.as_deref().ok_or_else(|| {
                Error::Task(format!("{key}: no entity tag to delete conditionally"))
            })?;
            return s3.delete_if_match(key, e_tag).await;
        }
        let _memory = self.memory_guard().await;
        let Some(meta) = self.head(key).await? else {
            return Ok(false);
        };
        if meta.e_tag != expected.e_tag || meta.version != expected.version {
            return Ok(false);
        }
        self.delete(key).await?;
        Ok(true)
    }

    /// Memory: the mutex serialising swaps and conditional deletes.
    async fn memory_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.memory_swaps {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    /// Keys under `prefix` (recursively) that sort after `offset`, in lexical order
    /// on every backend: S3 and memory list in that order; a local directory is walked
    /// in it, level by level. A reader may stop early: nothing more is read than it
    /// takes.
    pub(crate) fn list_ordered(
        &self,
        prefix: &Path,
        offset: Option<&Path>,
    ) -> BoxStream<'static, Result<Path>> {
        if let Some(local) = &self.local {
            return ordered_walk(local.fs.clone(), prefix.clone(), offset.cloned());
        }
        let prefix_str = prefix.to_string();
        let listing = match offset {
            Some(offset) => self.store.list_with_offset(Some(prefix), offset),
            None => self.store.list(Some(prefix)),
        };
        listing
            .map_ok(|m| m.location)
            .map_err(move |source| Error::Backend {
                key: prefix_str.clone(),
                source,
            })
            .boxed()
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

impl S3Direct {
    /// `DeleteObject` with `If-Match: e_tag`: `Ok(false)` if the object changed (412)
    /// or is gone (404).
    async fn delete_if_match(&self, key: &Path, e_tag: &str) -> Result<bool> {
        let full: Path = self.prefix.parts().chain(key.parts()).collect();
        let failed = |message: String| Error::Backend {
            key: key.to_string(),
            source: object_store::Error::Generic {
                store: "S3",
                source: message.into(),
            },
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let url = self
                .s3
                .signed_url(http::Method::DELETE, &full, SIGNED_URL_TTL)
                .await
                .map_err(backend_err(key))?;
            let request = http::Request::builder()
                .method(http::Method::DELETE)
                .uri(url.as_str())
                .header(http::header::IF_MATCH, e_tag)
                .body(HttpRequestBody::empty())
                .map_err(|e| failed(format!("conditional delete: {e}")))?;
            let message = match self.http.execute(request).await {
                Ok(resp) => {
                    let status = resp.status();
                    match status.as_u16() {
                        200..=299 => return Ok(true),
                        404 | 412 => return Ok(false),
                        500..=599 => format!("conditional delete: HTTP {status}"),
                        _ => {
                            let body = resp
                                .into_body()
                                .bytes()
                                .await
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                                .unwrap_or_default();
                            return Err(failed(format!(
                                "conditional delete: HTTP {status}: {body}"
                            )));
                        }
                    }
                }
                Err(e) => format!("conditional delete: {e}"),
            };
            if tries >= S3_DELETE_TRIES {
                return Err(failed(message));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
        }
    }
}

/// Entries read from disk per blocking task of an ordered walk.
const WALK_BATCH: usize = 256;

/// [`Backend::list_ordered`] on local disk: a depth-first walk that reads each directory
/// and visits its entries in key order, in batches on the blocking pool.
fn ordered_walk(
    fs: Arc<LocalFileSystem>,
    prefix: Path,
    offset: Option<Path>,
) -> BoxStream<'static, Result<Path>> {
    let root = match fs.path_to_filesystem(&prefix) {
        Ok(root) => root,
        Err(e) => {
            let err = backend_err(&prefix)(e);
            return futures::stream::once(async move { Err(err) }).boxed();
        }
    };
    let walk = OrderedWalk {
        stack: vec![WalkEntry {
            key: prefix.to_string(),
            file: root,
            dir: true,
        }],
        offset: offset.map(|o| o.to_string()),
    };
    futures::stream::try_unfold(
        (walk, std::collections::VecDeque::new()),
        |(mut walk, mut batch)| async move {
            if batch.is_empty() {
                (walk, batch) = tokio::task::spawn_blocking(move || {
                    let mut batch = std::collections::VecDeque::with_capacity(WALK_BATCH);
                    while batch.len() < WALK_BATCH {
                        match walk.next() {
                            Some(r) => batch.push_back(r),
                            None => break,
                        }
                    }
                    (walk, batch)
                })
                .await?;
            }
            match batch.pop_front() {
                Some(Ok(key)) => Ok(Some((key, (walk, batch)))),
                Some(Err(e)) => Err(e),
                None => Ok(None),
            }
        },
    )
    .boxed()
}

struct WalkEntry {
    /// The object key (files) or key prefix (directories).
    key: String,
    file: PathBuf,
    dir: bool,
}

/// The state of an [`ordered_walk`]: entries still to visit, smallest last.
struct OrderedWalk {
    stack: Vec<WalkEntry>,
    offset: Option<String>,
}

impl OrderedWalk {
    fn next(&mut self) -> Option<Result<Path>> {
        while let Some(entry) = self.stack.pop() {
            if !entry.dir {
                if self.offset.as_ref().is_some_and(|o| entry.key <= *o) {
                    continue;
                }
                // Other keys cannot be object_store paths; skip them as it does.
                match Path::parse(&entry.key) {
                    Ok(p) if p.as_ref() == entry.key => return Some(Ok(p)),
                    _ => continue,
                }
            }
            // Every key below `d/` sorts before `d0` ('/' + 1 = '0'): a subtree wholly at
            // or before the offset is not read.
            if let Some(o) = &self.offset
                && format!("{}0", entry.key) <= *o
            {
                continue;
            }
            let children = match std::fs::read_dir(&entry.file) {
                Ok(children) => children,
                // Removed meanwhile, or (the walk's root) never made.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Some(Err(Error::io(&entry.file, e))),
            };
            let mut found = Vec::new();
            for child in children {
                let child = match child {
                    Ok(c) => c,
                    Err(e) => return Some(Err(Error::io(&entry.file, e))),
                };
                // Names object_store would not list: not UTF-8, or its temporary files
                // (`name#n`) of writes in progress.
                let Some(name) = child.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.contains('#') || name.starts_with('.') {
                    continue;
                }
                let file = child.path();
                let dir = match child.file_type() {
                    Ok(t) if t.is_symlink() => file.is_dir(),
                    Ok(t) => t.is_dir(),
                    Err(_) => continue,
                };
                let key = if entry.key.is_empty() {
                    name
                } else {
                    format!("{}/{name}", entry.key)
                };
                found.push(WalkEntry { key, file, dir });
            }
            // A directory's keys all start with `key/`: it sorts among its siblings as
            // `key/` does, which is where all of its keys fall.
            let order = |e: &WalkEntry| {
                if e.dir {
                    format!("{}/", e.key)
                } else {
                    e.key.clone()
                }
            };
            found.sort_by_cached_key(|e| std::cmp::Reverse(order(e)));
            self.stack.extend(found);
        }
        None
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
    use crate::testkit::Kind;

    /// A fresh backend of each kind (S3: a fresh prefix in the test bucket).
    fn backend(kind: Kind) -> (Backend, Option<tempfile::TempDir>) {
        let (options, dir) = crate::testkit::options(kind);
        (Backend::open(&options.backend).unwrap(), dir)
    }

    /// The delete of a compare-and-swap: an object changed since it was read stays; one
    /// still at the version read goes; an absent one is "changed".
    async fn a_conditional_delete_keeps_what_changed_since_it_was_read(kind: Kind) {
        let (b, _dir) = backend(kind);
        let key = Path::from("repos/x/_tags/latest");
        assert!(
            b.compare_and_swap(&key, None, Bytes::from("one"))
                .await
                .unwrap()
        );
        let (_, v1) = b.get_versioned(&key).await.unwrap().unwrap();
        // Another writer swaps it after our read.
        assert!(
            b.compare_and_swap(&key, Some(&v1), Bytes::from("two"))
                .await
                .unwrap()
        );
        assert!(!b.delete_if_version(&key, &v1).await.unwrap());
        assert_eq!(b.get(&key).await.unwrap().unwrap(), Bytes::from("two"));
        let (_, v2) = b.get_versioned(&key).await.unwrap().unwrap();
        assert!(b.delete_if_version(&key, &v2).await.unwrap());
        assert!(b.get(&key).await.unwrap().is_none());
        assert!(!b.delete_if_version(&key, &v2).await.unwrap());
        // Created again after the delete: the old version does not match the new object.
        assert!(
            b.compare_and_swap(&key, None, Bytes::from("two"))
                .await
                .unwrap()
        );
        let (_, v3) = b.get_versioned(&key).await.unwrap().unwrap();
        if kind != Kind::Local {
            // Local versions are content hashes: equal content, equal version.
            assert!(!b.delete_if_version(&key, &v1).await.unwrap());
        }
        assert!(b.delete_if_version(&key, &v3).await.unwrap());
    }

    /// Conditional deletes racing swaps on one key. A delete wins only over the version
    /// it read: a value some swap replaced was never deleted (the swap would have found
    /// nothing), and the last value written is there at the end unless a delete of
    /// exactly it succeeded.
    async fn conditional_deletes_and_swaps_race_safely(kind: Kind) {
        let (b, _dir) = backend(kind);
        let key = Path::from("repos/race/_tags/t");
        let writer = {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move {
                let mut replaced = Vec::new();
                let mut last = None;
                for i in 0..40u32 {
                    let current = b.get_versioned(&key).await.unwrap();
                    let data = Bytes::from(format!("w{i}"));
                    let expected = current.as_ref().map(|(_, v)| v);
                    if b.compare_and_swap(&key, expected, data.clone())
                        .await
                        .unwrap()
                    {
                        replaced.extend(current.map(|(old, _)| old));
                        last = Some(data);
                    }
                }
                (replaced, last)
            })
        };
        let deleter = {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move {
                let mut deleted = Vec::new();
                for _ in 0..40 {
                    if let Some((data, v)) = b.get_versioned(&key).await.unwrap()
                        && b.delete_if_version(&key, &v).await.unwrap()
                    {
                        deleted.push(data);
                    }
                }
                deleted
            })
        };
        let (replaced, last) = writer.await.unwrap();
        let deleted = deleter.await.unwrap();
        for d in &deleted {
            assert!(
                !replaced.contains(d),
                "{d:?} was deleted, yet a swap replaced it"
            );
        }
        let last = last.expect("some write succeeded");
        match b.get(&key).await.unwrap() {
            Some(now) => {
                assert_eq!(now, last);
                assert!(!deleted.contains(&now));
            }
            None => assert!(deleted.contains(&last), "{last:?} lost"),
        }
    }

    /// Keys in lexical order from every backend, from an offset, including the orders a
    /// directory walk gets wrong (`a-b` before `a/x`, `a/0` before `a/_x`).
    async fn listings_are_ordered_and_start_after_the_offset(kind: Kind) {
        let (b, _dir) = backend(kind);
        let names = [
            "p/a/_repo",
            "p/a-b/_repo",
            "p/a.b/_repo",
            "p/a/0/_repo",
            "p/a/b/_repo",
            "p/a0/_repo",
            "p/b/c/d/_repo",
            "p/z/_repo",
            "q/outside",
        ];
        for n in names {
            b.put(&Path::from(n), Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let mut expected: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with("p/"))
            .map(|n| n.to_string())
            .collect();
        expected.sort();
        let listed = |offset: Option<&str>| {
            let b = b.clone();
            let offset = offset.map(Path::from);
            async move {
                b.list_ordered(&Path::from("p"), offset.as_ref())
                    .map_ok(|p| p.to_string())
                    .try_collect::<Vec<String>>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(listed(None).await, expected);
        for offset in [
            "p/a",
            "p/a-b/_repo",
            "p/a.",
            "p/a/_repo",
            "p/a0",
            "p/b",
            "p/zz",
        ] {
            let want: Vec<String> = expected
                .iter()
                .filter(|k| k.as_str() > offset)
                .cloned()
                .collect();
            assert_eq!(listed(Some(offset)).await, want, "after {offset}");
        }
        // An absent prefix lists nothing.
        let none: Vec<Path> = b
            .list_ordered(&Path::from("nothing/here"), None)
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    crate::on_every_backend!(
        a_conditional_delete_keeps_what_changed_since_it_was_read,
        conditional_deletes_and_swaps_race_safely,
        listings_are_ordered_and_start_after_the_offset,
    );

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
