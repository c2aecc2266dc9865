//! [`Store`]: the engine's front door. Blobs, upload sessions, repositories and
//! statistics over one backend.
//!
//! The contract, for every method that writes: when it returns `Ok`, what it wrote is
//! durable in the backend; when it returns `Err`, nothing it wrote is visible (a blob's
//! recipe, a manifest link, a tag and an upload state are each replaced atomically).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{Backend, BackendConfig, BackendKind};
use crate::chunk::Chunker;
use crate::collection::{CollectionView, ObjectRef};
use crate::config::{ChunkingParams, StoreIdentity};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{BoxError, Error, Result};
use crate::index::{ChunkIndex, IndexStats};
use crate::ingest::{Ingest, WriteContext, WriteStats};
use crate::layout;
use crate::names::RepoName;
use crate::reader::{self, ByteStream};
use crate::recipe::{self, Body, ChunkRef, Recipe};
use crate::repo::Repository;
use crate::upload::{self, SessionState, UploadId, UploadStatus};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The backend.
    pub backend: BackendConfig,
    /// Chunking for a new store. For an existing store, `Some` must match what the store
    /// was created with; `None` accepts it.
    pub chunking: Option<ChunkingParams>,
    /// Target size of packs; default 32 MiB on local disk, 8 MiB elsewhere.
    pub pack_size: Option<u64>,
    /// Blobs up to this size are stored inside their recipe.
    pub inline_max: usize,
    /// Pack footers kept in memory to confirm dedup hits.
    pub footer_cache: usize,
    /// Load the dedup index from every pack footer when opening. Tools that only read
    /// and delete (`gc`, `fsck`) turn it off: on a large store it is a read per pack.
    pub dedup_index: bool,
    /// Writes (blob pushes, upload appends) that run at once; the others wait their
    /// turn. Each holds about 16 MiB of buffers while it runs, so this bounds memory.
    pub max_concurrent_writes: usize,
}

impl StoreOptions {
    /// Defaults for a backend URL.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            backend: BackendConfig {
                url: url.into(),
                ..Default::default()
            },
            chunking: None,
            pack_size: None,
            inline_max: 16 * 1024,
            footer_cache: 64,
            dedup_index: true,
            max_concurrent_writes: 4,
        }
    }
}

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
}

/// A blob being read: its size, the part being returned, and the bytes.
pub struct BlobRead {
    /// The whole blob's size.
    pub size: u64,
    /// The byte range being streamed (end exclusive).
    pub range: Range<u64>,
    /// The bytes of `range`, verified chunk by chunk.
    pub stream: ByteStream,
}

/// A blob whose recipe has been read: its size, and its bytes on demand.
#[derive(Debug)]
pub struct BlobReader {
    backend: Backend,
    recipe: Recipe,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.recipe.size
    }

    /// Streams the blob, or the byte range `range` of it (end exclusive).
    pub fn read(self, range: Option<Range<u64>>) -> Result<BlobRead> {
        let size = self.recipe.size;
        let range = reader::check_range(range, size)?;
        let stream = reader::stream(self.backend, self.recipe, range.clone());
        Ok(BlobRead {
            size,
            range,
            stream,
        })
    }
}

/// What is stored and what it costs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Committed blobs (layers, configs and manifests).
    pub blobs: u64,
    /// Sum of their sizes: what a store without deduplication would hold.
    pub logical_bytes: u64,
    /// Bytes of small blobs stored inside recipes.
    pub inline_bytes: u64,
    /// Pack objects.
    pub packs: u64,
    /// Bytes of pack objects: chunk data plus footers.
    pub pack_bytes: u64,
    /// `inline_bytes + pack_bytes`: what the blobs occupy.
    pub physical_bytes: u64,
    /// Chunks in the dedup index of this process.
    pub indexed_chunks: u64,
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) identity: StoreIdentity,
    pub(crate) write: Arc<WriteContext>,
    pub(crate) inline_max: usize,
    pub(crate) known_repos: Mutex<HashSet<RepoName>>,
    pub(crate) collection: CollectionView,
}

/// A handle on an opened store; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("chunking", &self.inner.identity.chunking)
            .finish()
    }
}

impl Store {
    /// Opens a store, creating its identity file if the store is new, and loads the
    /// dedup index from the pack footers.
    pub async fn open(options: StoreOptions) -> Result<Store> {
        let backend = Backend::open(&options.backend)?;
        if let Some(c) = &options.chunking {
            c.validate()?;
        }
        let identity = load_or_create_identity(&backend, options.chunking).await?;
        identity.check_compatible(options.chunking)?;
        let chunker = Chunker::new(&identity.chunking);
        if options.inline_max >= chunker.max() {
            return Err(Error::InvalidConfig(format!(
                "inline_max ({}) must be below the largest chunk ({})",
                options.inline_max,
                chunker.max()
            )));
        }
        let pack_size = options.pack_size.unwrap_or(match backend.kind() {
            BackendKind::Local => 32 << 20,
            _ => 8 << 20,
        });
        let index = Arc::new(ChunkIndex::new(options.footer_cache));
        let loaded = if options.dedup_index {
            index.refresh(&backend).await?
        } else {
            0
        };
        tracing::info!(
            backend = backend.description(),
            packs = loaded,
            chunks = index.stats().chunks,
            "store opened"
        );
        let collection = CollectionView::new(backend.clone(), index.clone());
        collection.refresh().await?;
        Ok(Store {
            inner: Arc::new(Inner {
                collection,
                write: Arc::new(WriteContext {
                    backend: backend.clone(),
                    index,
                    chunker,
                    pack_size,
                    totals: Default::default(),
                    permits: Arc::new(tokio::sync::Semaphore::new(
                        options.max_concurrent_writes.max(1),
                    )),
                }),
                backend,
                identity,
                inline_max: options.inline_max,
                known_repos: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// What this process has written since it opened the store.
    pub fn write_totals(&self) -> crate::WriteTotals {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.inner.write.totals;
        crate::WriteTotals {
            stored_bytes: t.stored_bytes.load(Relaxed),
            deduplicated_bytes: t.deduplicated_bytes.load(Relaxed),
        }
    }

    /// The store's identity (format and chunking).
    pub fn identity(&self) -> &StoreIdentity {
        &self.inner.identity
    }

    /// Which kind of backend this store is on.
    pub fn backend_kind(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// The backend, for logs.
    pub fn description(&self) -> &str {
        self.inner.backend.description()
    }

    /// Learns packs written by other processes since the last refresh, so their chunks
    /// deduplicate here too. Returns how many packs were new.
    pub async fn refresh_index(&self) -> Result<usize> {
        self.inner.write.index.refresh(&self.inner.backend).await
    }

    /// Reads the garbage collector's state now (servers also call this periodically, so
    /// sealed content disappears from existence checks promptly) and renews this
    /// process's presence record if it is writing.
    pub async fn refresh_collection_view(&self) -> Result<()> {
        self.inner.collection.refresh().await?;
        self.inner.collection.renew_presence().await
    }

    /// Tells collectors this process has stopped writing (they need not wait for it). Call
    /// it only when no write of this process is in flight; writing later is still safe.
    pub async fn retire_writer(&self) -> Result<()> {
        self.inner.collection.retire().await
    }

    /// The garbage collector's run and phase as this process last saw them.
    pub async fn collection_phase(&self) -> Result<Option<(String, crate::collection::Phase)>> {
        self.inner.collection.refresh().await?;
        Ok(self.inner.collection.run_phase())
    }

    /// Whether a collection run has sealed `r` for deletion: existence checks say no.
    pub(crate) fn hidden(&self, r: &ObjectRef) -> bool {
        self.inner.collection.hides(r)
    }

    /// Size of the in-memory dedup index.
    pub fn index_stats(&self) -> IndexStats {
        self.inner.write.index.stats()
    }

    /// A handle on one area of small records kept beside the images (`"auth"`).
    pub fn records(&self, area: &str) -> Result<crate::Records> {
        crate::Records::new(self.inner.backend.clone(), area)
    }

    /// A handle on one repository's metadata.
    pub fn repository(&self, name: &RepoName) -> Repository {
        Repository::new(self.clone(), name.clone())
    }

    // ----- blobs -----

    /// Size of a committed blob, or `None`.
    pub async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        if self.hidden(&ObjectRef::Recipe(digest.clone())) {
            return Ok(None);
        }
        let key = layout::recipe(digest);
        let Some(meta) = self.inner.backend.head(&key).await? else {
            return Ok(None);
        };
        let header = read_recipe_header(&self.inner.backend, &key, meta.size).await?;
        if &header.digest != digest {
            return Err(Error::corrupt(
                key.as_ref(),
                format!("recipe describes {}", header.digest),
            ));
        }
        Ok(Some(BlobInfo {
            digest: digest.clone(),
            size: header.size,
        }))
    }

    pub(crate) async fn recipe(&self, digest: &Digest) -> Result<Recipe> {
        let key = layout::recipe(digest);
        let data = self
            .inner
            .backend
            .get(&key)
            .await?
            .ok_or_else(|| Error::BlobNotFound(digest.clone()))?;
        let recipe = Recipe::decode(&data, key.as_ref())?;
        recipe::check_digest(&recipe, digest, key.as_ref())?;
        Ok(recipe)
    }

    /// Streams a blob, or the byte range `range` of it (end exclusive).
    pub async fn read_blob(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobRead> {
        let recipe = self.recipe(digest).await?;
        self.reader(recipe).read(range)
    }

    /// Opens a blob for reading: one read of its recipe gives its size and where its
    /// chunks are, so a server can answer headers before choosing a range. `None` if
    /// there is no such blob.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        match self.recipe(digest).await {
            Ok(recipe) => Ok(Some(self.reader(recipe))),
            Err(Error::BlobNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn reader(&self, recipe: Recipe) -> BlobReader {
        BlobReader {
            backend: self.inner.backend.clone(),
            recipe,
        }
    }

    /// A whole blob in memory, however large: prefer [`Store::blob_bytes_limited`]
    /// for anything a client pushed (manifests, configs), so a huge one cannot
    /// exhaust memory.
    pub async fn blob_bytes(&self, digest: &Digest) -> Result<Bytes> {
        let recipe = self.recipe(digest).await?;
        self.read_whole(recipe).await
    }

    /// A whole blob in memory if it is at most `max` bytes; `Ok(None)` if it is larger.
    /// The size comes from the blob's recipe, so a blob over the limit costs one small
    /// read and none of its data. A missing blob is [`Error::BlobNotFound`], as for
    /// [`Store::blob_bytes`].
    pub async fn blob_bytes_limited(&self, digest: &Digest, max: u64) -> Result<Option<Bytes>> {
        let recipe = self.recipe(digest).await?;
        if recipe.size > max {
            return Ok(None);
        }
        self.read_whole(recipe).await.map(Some)
    }

    /// Reads all of a blob, never more than its recipe's size (the reader keeps to it;
    /// chunks that add up to more would be a corrupt recipe, refused, not buffered).
    async fn read_whole(&self, recipe: Recipe) -> Result<Bytes> {
        let size = recipe.size;
        let key = layout::recipe(&recipe.digest);
        let mut stream = self.reader(recipe).read(None)?.stream;
        let mut parts: Vec<Bytes> = Vec::new();
        let mut total = 0u64;
        while let Some(part) = stream.try_next().await? {
            total += part.len() as u64;
            if total > size {
                return Err(Error::corrupt(
                    key.as_ref(),
                    format!("chunks hold more than the recipe's {size} bytes"),
                ));
            }
            parts.push(part);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().unwrap_or_default());
        }
        Ok(Bytes::from(parts.concat()))
    }

    /// Digests of every committed blob, in no particular order.
    pub async fn blobs(&self) -> Result<Vec<Digest>> {
        Ok(self
            .inner
            .backend
            .list_all(&layout::blobs_prefix())
            .await?
            .iter()
            .filter_map(|m| layout::parse_recipe(&m.location))
            .collect())
    }

    /// Writes a blob from a stream and commits it if it hashes to `expected`.
    pub async fn put_blob<S, E>(&self, expected: &Digest, body: S) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.put_blob_with_stats(expected, body)
            .await
            .map(|(b, _)| b)
    }

    /// [`Store::put_blob`], also reporting how much was deduplicated.
    pub async fn put_blob_with_stats<S, E>(
        &self,
        expected: &Digest,
        body: S,
    ) -> Result<(BlobInfo, WriteStats)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.write_blob(expected.algorithm(), Some(expected), body)
            .await
    }

    /// Writes a blob whose digest is not known in advance (a local file, a benchmark's
    /// data) and commits it under the digest its bytes hash to.
    pub async fn put_blob_content<S, E>(
        &self,
        algorithm: Algorithm,
        body: S,
    ) -> Result<(BlobInfo, WriteStats)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.write_blob(algorithm, None, body).await
    }

    async fn write_blob<S, E>(
        &self,
        algorithm: Algorithm,
        expected: Option<&Digest>,
        body: S,
    ) -> Result<(BlobInfo, WriteStats)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let mut ingest = Ingest::new(self.inner.write.clone(), algorithm);
        ingest.feed(body).await?;
        let actual = ingest.finish(self.inner.inline_max).await?;
        if let Some(expected) = expected
            && &actual != expected
        {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let refs = ingest.take_refs()?;
        let size = ingest.received();
        let inline = refs.is_empty();
        let (info, created) = self.commit(&actual, size, refs, ingest.pending()?).await?;
        let mut stats = ingest.stats();
        // A small blob's bytes live in its recipe: new if the recipe is.
        if inline && created {
            stats.stored_bytes += size;
        } else if inline {
            stats.deduplicated_bytes += size;
        }
        Ok((info, stats))
    }

    /// Writes a blob held in memory.
    pub async fn put_blob_bytes(&self, expected: &Digest, data: Bytes) -> Result<BlobInfo> {
        self.put_blob(
            expected,
            futures::stream::once(async move { Ok::<_, Error>(data) }),
        )
        .await
    }

    /// Writes the recipe: the commit point. Every ref must already be durable.
    async fn commit(
        &self,
        digest: &Digest,
        size: u64,
        refs: Vec<ChunkRef>,
        tail: Bytes,
    ) -> Result<(BlobInfo, bool)> {
        let body = if refs.is_empty() && size as usize <= self.inner.inline_max {
            Body::Inline(tail)
        } else {
            if !tail.is_empty() {
                return Err(Error::Task("uncut bytes left at commit".into()));
            }
            Body::Chunks(refs)
        };
        let recipe = Recipe {
            digest: digest.clone(),
            size,
            body,
        };
        let packs: Vec<ObjectRef> = recipe.packs().into_iter().map(ObjectRef::Pack).collect();
        self.inner
            .collection
            .protect_recreating(&[ObjectRef::Recipe(digest.clone())], &packs)
            .await?;
        let key = layout::recipe(digest);
        // Already committed by someone else: same digest, same content.
        let created = self.inner.backend.create(&key, recipe.encode()).await?;
        let info = BlobInfo {
            digest: digest.clone(),
            size,
        };
        Ok((info, created))
    }

    // ----- upload sessions -----

    /// Starts an upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        let id = UploadId::generate();
        let now = Utc::now();
        let state = SessionState {
            repo: repo.clone(),
            created: now,
            updated: now,
            offset: 0,
            algorithm: Algorithm::Sha256,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            segments: Vec::new(),
            tail: Bytes::new(),
        };
        let key = layout::upload_state(&id);
        if !self.inner.backend.create(&key, state.encode()?).await? {
            return Err(Error::Conflict {
                what: format!("upload {id}"),
            });
        }
        Ok(state.status(&id))
    }

    async fn load_session(
        &self,
        id: &UploadId,
        repo: Option<&RepoName>,
    ) -> Result<(SessionState, crate::backend::Version)> {
        let key = layout::upload_state(id);
        let (data, version) = self
            .inner
            .backend
            .get_versioned(&key)
            .await?
            .ok_or_else(|| Error::UploadNotFound(id.to_string()))?;
        let state = SessionState::decode(&data, key.as_ref())?;
        if let Some(repo) = repo
            && &state.repo != repo
        {
            return Err(Error::UploadRepositoryMismatch {
                id: id.to_string(),
                actual: state.repo.to_string(),
                requested: repo.to_string(),
            });
        }
        Ok((state, version))
    }

    fn resume_ingest(&self, id: &UploadId, state: &SessionState) -> Result<Ingest> {
        let hasher = Hasher::restore(state.algorithm, &state.hash_state).ok_or_else(|| {
            Error::corrupt(
                layout::upload_state(id).as_ref(),
                "hash midstate cannot be restored",
            )
        })?;
        Ok(Ingest::resume(
            self.inner.write.clone(),
            hasher,
            state.tail.clone(),
            state.offset,
        ))
    }

    /// A session's progress.
    pub async fn upload_status(&self, id: &UploadId, repo: &RepoName) -> Result<UploadStatus> {
        Ok(self.load_session(id, Some(repo)).await?.0.status(id))
    }

    /// Appends a stream at `offset`, which must be where the session ends. Returns once
    /// the bytes are durable and the new state is committed.
    pub async fn append_upload<S, E>(
        &self,
        id: &UploadId,
        repo: &RepoName,
        offset: u64,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let (mut state, version) = self.load_session(id, Some(repo)).await?;
        if offset != state.offset {
            return Err(Error::OffsetMismatch {
                id: id.to_string(),
                current: state.offset,
                requested: offset,
            });
        }
        let mut ingest = self.resume_ingest(id, &state)?;
        ingest.feed(body).await?;
        if ingest.received() == state.offset {
            return Ok(state.status(id));
        }
        ingest.flush().await?;
        let refs = ingest.take_refs()?;
        // The session and the packs this append deduplicated into must outlive any
        // collection run: checked right before the segment and state are written.
        let mut reuse: Vec<ObjectRef> = recipe::packs_of(&refs)
            .into_iter()
            .map(ObjectRef::Pack)
            .collect();
        reuse.push(ObjectRef::Upload(id.clone()));
        self.protect_session(id, &reuse).await?;
        let mut segment = None;
        if !refs.is_empty() {
            let nonce = upload::segment_nonce();
            let key = layout::upload_segment(id, state.segments.len() as u32, &nonce);
            self.inner
                .backend
                .put(&key, upload::encode_segment(&refs))
                .await?;
            state.segments.push(nonce);
            segment = Some(key);
        }
        let (algorithm, hash_state) = ingest.hash_state()?;
        state.offset = ingest.received();
        state.algorithm = algorithm;
        state.hash_state = hash_state;
        state.tail = ingest.pending()?;
        state.updated = Utc::now();
        let key = layout::upload_state(id);
        if !self
            .inner
            .backend
            .compare_and_swap(&key, Some(&version), state.encode()?)
            .await?
        {
            // Another append won. Its segment has another name; ours is unreachable.
            if let Some(segment) = segment {
                let _ = self.inner.backend.delete(&segment).await;
            }
            return Err(Error::Conflict {
                what: format!("upload {id}"),
            });
        }
        Ok(state.status(id))
    }

    /// Appends a final stream (possibly empty) and commits the blob if everything
    /// received hashes to `expected`; the blob is linked into the session's repository
    /// and the session ends. On a digest mismatch the session stays as it was.
    pub async fn finish_upload<S, E>(
        &self,
        id: &UploadId,
        repo: &RepoName,
        offset: Option<u64>,
        body: S,
        expected: &Digest,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.protect_session(id, &[ObjectRef::Upload(id.clone())])
            .await?;
        let (state, _version) = self.load_session(id, Some(repo)).await?;
        if let Some(offset) = offset
            && offset != state.offset
        {
            return Err(Error::OffsetMismatch {
                id: id.to_string(),
                current: state.offset,
                requested: offset,
            });
        }
        let mut ingest = self.resume_ingest(id, &state)?;
        ingest.feed(body).await?;
        let streamed = ingest.finish(self.inner.inline_max).await?;
        let mut refs = self.session_refs(id, &state).await?;
        refs.extend(ingest.take_refs()?);
        let size = ingest.received();
        let tail = ingest.pending()?;
        let actual = if streamed.algorithm() == expected.algorithm() {
            streamed
        } else {
            // The session hashed SHA-256 as bytes arrived; the client named another
            // algorithm only now. Hash the stored bytes again.
            self.rehash(expected.algorithm(), &refs, &tail).await?
        };
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let (info, _) = self.commit(expected, size, refs, tail).await?;
        self.repository(repo).link_committed(expected).await?;
        self.remove_session(id).await?;
        Ok(info)
    }

    /// A session being expired by a collection run is gone for its clients.
    async fn protect_session(&self, id: &UploadId, reuse: &[ObjectRef]) -> Result<()> {
        match self.inner.collection.protect(reuse).await {
            Err(Error::Collected(what)) if what == ObjectRef::Upload(id.clone()).to_string() => {
                Err(Error::UploadNotFound(id.to_string()))
            }
            other => other,
        }
    }

    async fn session_refs(&self, id: &UploadId, state: &SessionState) -> Result<Vec<ChunkRef>> {
        let keys: Vec<_> = state
            .segments
            .iter()
            .enumerate()
            .map(|(i, nonce)| layout::upload_segment(id, i as u32, nonce))
            .collect();
        let backend = self.inner.backend.clone();
        let segments: Vec<Vec<ChunkRef>> = futures::stream::iter(keys)
            .map(move |key| {
                let backend = backend.clone();
                async move {
                    let data = backend.get(&key).await?.ok_or_else(|| {
                        Error::corrupt(key.as_ref(), "segment named by the upload state is missing")
                    })?;
                    upload::decode_segment(&data, key.as_ref())
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(segments.concat())
    }

    async fn rehash(
        &self,
        algorithm: Algorithm,
        refs: &[ChunkRef],
        tail: &Bytes,
    ) -> Result<Digest> {
        let size: u64 = refs.iter().map(|c| u64::from(c.at.len)).sum();
        let recipe = Recipe {
            digest: Digest::sha256(b""),
            size,
            body: Body::Chunks(refs.to_vec()),
        };
        let mut stream = reader::stream(self.inner.backend.clone(), recipe, 0..size);
        let mut hasher = Hasher::new(algorithm);
        while let Some(part) = stream.next().await {
            hasher.update(&part?);
        }
        hasher.update(tail);
        Ok(hasher.finish())
    }

    /// Cancels a session. Its chunks are left to the garbage collector.
    pub async fn cancel_upload(&self, id: &UploadId, repo: &RepoName) -> Result<()> {
        self.load_session(id, Some(repo)).await?;
        self.remove_session(id).await
    }

    pub(crate) async fn remove_session(&self, id: &UploadId) -> Result<()> {
        let backend = &self.inner.backend;
        // The state goes first: once it is gone no append can commit, and leftover
        // segments are unreachable.
        backend.delete_swapped(&layout::upload_state(id)).await?;
        let rest = backend.list_all(&layout::upload_prefix(id)).await?;
        for meta in rest {
            backend.delete(&meta.location).await?;
        }
        Ok(())
    }

    /// Every open session with its age, oldest first.
    pub async fn list_uploads(&self) -> Result<Vec<UploadStatus>> {
        let backend = &self.inner.backend;
        let (_, dirs) = backend.list_dir(&layout::uploads_prefix()).await?;
        let ids: Vec<UploadId> = dirs
            .iter()
            .filter_map(|p| p.filename()?.parse().ok())
            .collect();
        let mut out: Vec<UploadStatus> = futures::stream::iter(ids)
            .map(|id| {
                let store = self.clone();
                async move {
                    match store.load_session(&id, None).await {
                        Ok((s, _)) => Ok(Some(s.status(&id))),
                        // Removed between listing and reading.
                        Err(Error::UploadNotFound(_)) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|s| async move { Ok(s) })
            .try_collect()
            .await?;
        out.sort_by_key(|s| s.created);
        Ok(out)
    }

    // ----- catalog -----

    pub(crate) async fn ensure_repository(&self, repo: &RepoName) -> Result<()> {
        if self
            .inner
            .known_repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(repo)
        {
            return Ok(());
        }
        let entry = serde_json::json!({ "created": Utc::now() }).to_string();
        self.inner
            .backend
            .create(&layout::repository_entry(repo), Bytes::from(entry))
            .await?;
        self.inner
            .known_repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.clone());
        Ok(())
    }

    /// Repository names in lexical order: all of them, or those of one namespace
    /// (`namespace/...`); only names after `after`, at most `limit`. Reads the backend's
    /// listing from `after` on and no further than `limit` names take.
    pub async fn repositories(
        &self,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RepoName>> {
        let mut names = Vec::new();
        if limit == Some(0) {
            return Ok(names);
        }
        let mut stream = std::pin::pin!(self.repositories_stream(namespace, after));
        while let Some(name) = stream.try_next().await? {
            names.push(name);
            if limit.is_some_and(|l| names.len() >= l) {
                break;
            }
        }
        Ok(names)
    }

    /// Repository names in lexical order, all of them or those of one namespace, after
    /// `after`, read from the backend as the stream is consumed: a caller may filter
    /// them (by access, say) and stop once it has enough. The backend lists catalog
    /// keys (`<name>/_repo`), whose order differs from the names' (`a-b/_repo` sorts
    /// before `a/_repo`, yet `a` before `a-b`); a name is held back only while a name
    /// that is a prefix of it may still be listed.
    pub fn repositories_stream(
        &self,
        namespace: Option<&str>,
        after: Option<&str>,
    ) -> impl Stream<Item = Result<RepoName>> + Send + use<> {
        let prefix = layout::repositories_prefix(namespace);
        let head = format!("{}/", layout::repositories_prefix(None));
        let offset = after.and_then(|a| catalog_offset(&head, a));
        let walk = CatalogWalk {
            listing: self.inner.backend.list_ordered(&prefix, offset.as_ref()),
            head,
            after: after.map(str::to_owned),
            pending: std::collections::BTreeSet::new(),
            last_key: String::new(),
            done: false,
        };
        futures::stream::unfold(walk, |mut walk| async move {
            let next = walk.next().await?;
            Some((next, walk))
        })
    }

    // ----- statistics -----

    /// Counts blobs and bytes: logical (what clients pushed) against physical (what the
    /// backend holds), so an operator can see what deduplication saves.
    pub async fn stats(&self) -> Result<Stats> {
        let backend = &self.inner.backend;
        let mut stats = Stats::default();
        let packs = backend.list_all(&layout::packs_prefix()).await?;
        for p in &packs {
            if layout::parse_pack(&p.location).is_some() {
                stats.packs += 1;
                stats.pack_bytes += p.size;
            }
        }
        let recipes = backend.list_all(&layout::blobs_prefix()).await?;
        let headers: Vec<(u64, u64)> = futures::stream::iter(recipes)
            .filter(|m| futures::future::ready(layout::parse_recipe(&m.location).is_some()))
            .map(|m| {
                let backend = backend.clone();
                async move {
                    let h = read_recipe_header(&backend, &m.location, m.size).await?;
                    Ok::<_, Error>((h.size, if h.inline { h.size } else { 0 }))
                }
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        for (size, inline) in headers {
            stats.blobs += 1;
            stats.logical_bytes += size;
            stats.inline_bytes += inline;
        }
        stats.physical_bytes = stats.pack_bytes + stats.inline_bytes;
        stats.indexed_chunks = self.index_stats().chunks as u64;
        Ok(stats)
    }
}

/// A recipe's header without its (possibly large) body: one short ranged read of an
/// object known to be `size` bytes.
async fn read_recipe_header(
    backend: &Backend,
    key: &object_store::path::Path,
    size: u64,
) -> Result<recipe::Header> {
    let head = backend
        .get_range(key, 0..size.min(recipe::HEADER_MAX))
        .await?;
    Recipe::decode_header(&head, key.as_ref())
}

async fn load_or_create_identity(
    backend: &Backend,
    requested: Option<ChunkingParams>,
) -> Result<StoreIdentity> {
    let key = layout::config();
    for _ in 0..2 {
        if let Some(data) = backend.get(&key).await? {
            return serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt(key.as_ref(), format!("store identity: {e}")));
        }
        // A store that holds content but lost its identity is damaged: a new identity
        // could name other chunking parameters than its packs were cut with.
        let mut holds = false;
        for prefix in ["packs", "blobs", "repos"] {
            let mut listing = backend.list(&object_store::path::Path::from(prefix));
            if futures::StreamExt::next(&mut listing)
                .await
                .transpose()?
                .is_some()
            {
                holds = true;
                break;
            }
        }
        if holds {
            return Err(Error::corrupt(
                key.as_ref(),
                "the store identity is missing but the store holds content; restore it from a \
                 backup (its chunking parameters must match the packs') instead of creating a \
                 new one",
            ));
        }
        let identity = StoreIdentity::new(requested.unwrap_or_default());
        let json = serde_json::to_vec_pretty(&identity)
            .map_err(|e| Error::Task(format!("encoding identity: {e}")))?;
        if backend.create(&key, json).await? {
            tracing::info!(backend = backend.description(), chunking = ?identity.chunking, "created store");
            return Ok(identity);
        }
        // Another process created it first: read theirs.
    }
    Err(Error::Conflict {
        what: "store identity".into(),
    })
}

/// What follows a name in its catalog key (`index/repositories/<name>/_repo`).
const CATALOG_ENTRY_TAIL: &str = "/_repo";

/// The listing offset for names after `after`: a key that every catalog key of a name
/// greater than `after` sorts after. `head` + `after` is one (a greater name differs
/// at a greater byte or extends `after`); so is anything before it, and `after` is cut
/// to its longest prefix that spells a valid key as it is.
fn catalog_offset(head: &str, after: &str) -> Option<object_store::path::Path> {
    let mut end = after.len();
    loop {
        let cut = after[..end].trim_end_matches('/');
        if cut.is_empty() {
            return None;
        }
        let key = format!("{head}{cut}");
        if let Ok(p) = object_store::path::Path::parse(&key)
            && p.as_ref() == key
        {
            return Some(p);
        }
        end = cut.char_indices().last().map_or(0, |(i, _)| i);
    }
}

/// [`Store::repositories_stream`]'s state: the key-ordered listing, and names read but
/// not yet safe to hand out in name order.
struct CatalogWalk {
    listing: futures::stream::BoxStream<'static, Result<object_store::path::Path>>,
    /// `index/repositories/`.
    head: String,
    after: Option<String>,
    pending: std::collections::BTreeSet<RepoName>,
    /// The last key listed.
    last_key: String,
    done: bool,
}

impl CatalogWalk {
    async fn next(&mut self) -> Option<Result<RepoName>> {
        loop {
            if let Some(first) = self.pending.first()
                && (self.done || self.settled(first))
            {
                return self.pending.pop_first().map(Ok);
            }
            if self.done {
                return None;
            }
            match self.listing.next().await {
                Some(Ok(key)) => {
                    self.last_key = key.to_string();
                    if let Some(name) = layout::parse_repository_entry(&key)
                        && self.after.as_deref().is_none_or(|a| name.as_str() > a)
                    {
                        self.pending.insert(name);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.pending.clear();
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
    }

    /// Whether no name before `name` can still be listed. One listed later but smaller
    /// is a proper prefix `p` of `name` whose key sorts after `name`'s: `name` goes on
    /// with `-` or `.` (which sort before `/`), or with `/` and a digit (which sort
    /// before `_repo`'s `_`). Such a `p` is still to come only if its key is after the
    /// last one listed.
    fn settled(&self, name: &RepoName) -> bool {
        let name = name.as_str();
        let bytes = name.as_bytes();
        bytes.iter().enumerate().all(|(i, &c)| {
            let inverted = match c {
                b'-' | b'.' => true,
                b'/' => bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
                _ => false,
            };
            !inverted || {
                let key = format!("{}{}{CATALOG_ENTRY_TAIL}", self.head, &name[..i]);
                key <= self.last_key
            }
        })
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;

    fn walk(keys: Vec<String>, pulled: Arc<std::sync::atomic::AtomicUsize>) -> CatalogWalk {
        let listing = futures::stream::iter(keys)
            .map(move |k| {
                pulled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(object_store::path::Path::from(k))
            })
            .boxed();
        CatalogWalk {
            listing,
            head: format!("{}/", layout::repositories_prefix(None)),
            after: None,
            pending: Default::default(),
            last_key: String::new(),
            done: false,
        }
    }

    #[test]
    fn catalog_keys_are_head_name_tail() {
        let head = format!("{}/", layout::repositories_prefix(None));
        for n in ["a", "a/b-c", "x.y/0"] {
            assert_eq!(
                layout::repository_entry(&RepoName::parse(n).unwrap()).to_string(),
                format!("{head}{n}{CATALOG_ENTRY_TAIL}")
            );
        }
    }

    #[test]
    fn the_offset_is_a_valid_key_at_or_before_after() {
        let head = "index/repositories/";
        let off = |a: &str| catalog_offset(head, a).map(|p| p.to_string());
        assert_eq!(off("a/b").as_deref(), Some("index/repositories/a/b"));
        assert_eq!(off("a/").as_deref(), Some("index/repositories/a"));
        assert_eq!(off("a//b").as_deref(), Some("index/repositories/a"));
        assert_eq!(off("/"), None);
        assert_eq!(off(""), None);
    }

    #[tokio::test]
    async fn a_consumer_that_stops_early_reads_little_of_the_listing() {
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("index/repositories/r{i:04}/_repo"))
            .collect();
        let mut w = walk(keys, pulled.clone());
        for i in 0..10 {
            let n = w.next().await.unwrap().unwrap();
            assert_eq!(n.as_str(), format!("r{i:04}"));
        }
        assert!(pulled.load(std::sync::atomic::Ordering::SeqCst) <= 11);
    }

    #[tokio::test]
    async fn names_come_out_in_name_order_from_key_order() {
        let mut names = vec!["a", "a-b", "a.b", "a/0", "a/0/1", "a/b", "a0", "a-b/c"];
        let mut keys: Vec<String> = names
            .iter()
            .map(|n| format!("index/repositories/{n}/_repo"))
            .collect();
        keys.sort();
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut w = walk(keys, pulled);
        let mut out = Vec::new();
        while let Some(n) = w.next().await {
            out.push(n.unwrap().to_string());
        }
        names.sort();
        assert_eq!(out, names);
    }
}
