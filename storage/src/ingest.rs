//! The write path: bytes in, verified chunks out.
//!
//! A stream is taken in batches of a few MiB and pushed through a three-step pipeline:
//! a batch is *cut* into content-defined chunks, then its chunks are *hashed* (BLAKE3),
//! then they are *stored*: looked up in the dedup index and, if new, appended to a pack.
//! Each step of the pipeline runs two blocking tasks side by side:
//!
//! ```text
//! task A:  SHA-256 of batch k  | then help hash the chunks of batch k-1
//! task B:  store batch k-2, cut batch k | then help hash the chunks of batch k-1
//! ```
//!
//! The stream's digest has to be computed serially and costs most of a core; the rest
//! (cutting, hashing chunks, copying, storing) is shared out so that both cores stay
//! busy. Packs are finished (made durable) in the background. Nothing here is visible to
//! readers: the caller commits a recipe (or an upload segment) only after
//! [`Ingest::flush`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::task::JoinHandle;

use crate::backend::{Backend, PackWriter};
use crate::chunk::{ChunkId, Chunker};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{BoxError, Error, Result};
use crate::index::{ChunkIndex, Location};
use crate::layout;
use crate::pack::{Footer, MAX_PACK_LEN, PackEntry, PackId};
use crate::recipe::ChunkRef;

/// Bytes gathered from the stream before a batch is hashed and chunked.
const BATCH: usize = 2 << 20;
/// Chunks a worker claims at a time when hashing a batch.
const HASH_CLAIM: usize = 4;
/// Packs being finished in the background at once, per writer.
const MAX_SEALING: usize = 2;

/// What every writer of a store shares.
pub(crate) struct WriteContext {
    pub(crate) backend: Backend,
    pub(crate) index: Arc<ChunkIndex>,
    pub(crate) chunker: Chunker,
    pub(crate) pack_size: u64,
    /// What every write of this process has stored and deduplicated so far.
    pub(crate) totals: Totals,
    /// Writes allowed to chunk and hash at once (each holds ~16 MiB of buffers).
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

/// Process-wide write counters, read by metrics.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) stored_bytes: std::sync::atomic::AtomicU64,
    pub(crate) deduplicated_bytes: std::sync::atomic::AtomicU64,
}

/// What this process's writes have stored since it opened the store: the physical
/// growth that deduplication did not avoid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteTotals {
    /// Bytes of new chunks written to packs.
    pub stored_bytes: u64,
    /// Bytes of chunks found already stored.
    pub deduplicated_bytes: u64,
}

/// Counters of one write, for statistics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks cut.
    pub chunks: u64,
    /// Bytes of chunks that were new and written to packs.
    pub stored_bytes: u64,
    /// Bytes of chunks already stored (deduplicated).
    pub deduplicated_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

struct OpenPack {
    id: PackId,
    writer: PackWriter,
    entries: Vec<PackEntry>,
}

/// A pack with its footer written, waiting to be made durable.
struct SealedPack {
    id: PackId,
    writer: PackWriter,
    footer: Arc<Footer>,
}

/// The chunks cut from one batch: the bytes, the chunk lengths, and (once hashed) ids.
struct Batch {
    data: Arc<Vec<u8>>,
    lens: Vec<usize>,
    ids: Vec<ChunkId>,
}

/// Hashing of one batch's chunks, shared by both tasks: each claims chunks until none
/// are left, so whichever finishes its own work first does more of this.
struct HashJob {
    data: Arc<Vec<u8>>,
    starts: Vec<usize>,
    lens: Vec<usize>,
    next: AtomicUsize,
}

impl HashJob {
    fn new(batch: &Batch) -> Self {
        let mut pos = 0;
        let starts = batch
            .lens
            .iter()
            .map(|&l| {
                let s = pos;
                pos += l;
                s
            })
            .collect();
        HashJob {
            data: batch.data.clone(),
            starts,
            lens: batch.lens.clone(),
            next: AtomicUsize::new(0),
        }
    }

    fn help(&self) -> Vec<(usize, ChunkId)> {
        let mut out = Vec::new();
        loop {
            let first = self.next.fetch_add(HASH_CLAIM, Ordering::Relaxed);
            if first >= self.lens.len() {
                return out;
            }
            for i in first..(first + HASH_CLAIM).min(self.lens.len()) {
                let s = self.starts[i];
                out.push((i, ChunkId::of(&self.data[s..s + self.lens[i]])));
            }
        }
    }
}

impl Drop for CutState {
    fn drop(&mut self) {
        for buf in self.spare.drain(..) {
            crate::buffers::give_back(buf);
        }
    }
}

/// Chunking and storing state, moved to a blocking thread for each step and back.
#[derive(Default)]
struct CutState {
    /// Received bytes after the last chunk boundary.
    pending: Vec<u8>,
    /// Emptied batch buffers, reused: a fresh multi-megabyte allocation costs a page
    /// fault and a page clear per 4 KiB.
    spare: Vec<Vec<u8>>,
    /// Cut in the last step, to be hashed in this one.
    cut: Option<Batch>,
    /// Hashed in the last step, to be stored in this one.
    hashed: Option<Batch>,
    pack: Option<OpenPack>,
    /// Chunks this writer stored, including in packs not yet durable: the recipe that
    /// points at them is only written after they are.
    own: HashMap<ChunkId, Location>,
    refs: Vec<ChunkRef>,
    sealed: Vec<SealedPack>,
    stats: WriteStats,
}

impl CutState {
    /// Cuts what is pending plus `frames` into a new batch; the uncut rest stays pending.
    fn cut(&mut self, chunker: &Chunker, frames: &[Bytes], eof: bool) {
        let mut buf = self.spare.pop().unwrap_or_else(crate::buffers::take);
        buf.clear();
        buf.reserve(self.pending.len() + frames.iter().map(Bytes::len).sum::<usize>());
        buf.extend_from_slice(&self.pending);
        for f in frames {
            buf.extend_from_slice(f);
        }
        let lens = chunker.cut(&buf, eof);
        let used: usize = lens.iter().sum();
        self.pending.clear();
        self.pending.extend_from_slice(&buf[used..]);
        buf.truncate(used);
        if lens.is_empty() {
            self.spare.push(buf);
        } else {
            self.cut = Some(Batch {
                data: Arc::new(buf),
                lens,
                ids: Vec::new(),
            });
        }
    }

    /// Stores a hashed batch: each chunk is found (in this write, or in the index) or
    /// appended to the open pack.
    fn store_batch(
        &mut self,
        ctx: &WriteContext,
        batch: Batch,
        rt: &tokio::runtime::Handle,
    ) -> Result<()> {
        let mut pos = 0;
        for (&len, &id) in batch.lens.iter().zip(&batch.ids) {
            let chunk = &batch.data[pos..pos + len];
            pos += len;
            self.stats.chunks += 1;
            let found = match self.own.get(&id) {
                Some(at) => Some(*at),
                None => ctx.index.find_blocking(&id, &ctx.backend, rt)?,
            };
            let at = match found {
                Some(at) => {
                    self.stats.deduplicated_bytes += len as u64;
                    at
                }
                None => self.store(ctx, id, chunk)?,
            };
            self.refs.push(ChunkRef {
                id,
                at,
                crc: Some(crc32c::crc32c(chunk)),
            });
        }
        if let Ok(buf) = Arc::try_unwrap(batch.data) {
            self.spare.push(buf);
        }
        Ok(())
    }

    fn store(&mut self, ctx: &WriteContext, id: ChunkId, chunk: &[u8]) -> Result<Location> {
        let pack = match &mut self.pack {
            Some(p) => p,
            None => {
                let pid = PackId::generate();
                let writer = ctx.backend.pack_writer(layout::pack(&pid), ctx.pack_size)?;
                self.stats.packs += 1;
                self.pack.insert(OpenPack {
                    id: pid,
                    writer,
                    entries: Vec::new(),
                })
            }
        };
        let offset = pack.writer.len();
        pack.writer.write(chunk)?;
        let at = Location {
            pack: pack.id,
            offset: offset as u32,
            len: chunk.len() as u32,
        };
        pack.entries.push(PackEntry {
            id,
            offset: at.offset,
            len: at.len,
        });
        self.own.insert(id, at);
        self.stats.stored_bytes += chunk.len() as u64;
        if pack.writer.len() >= ctx.pack_size.min(MAX_PACK_LEN / 2) {
            self.seal()?;
        }
        Ok(at)
    }

    /// Closes the open pack: writes its footer and queues it to be made durable.
    fn seal(&mut self) -> Result<()> {
        if let Some(mut p) = self.pack.take() {
            let footer = Footer::new(p.entries);
            p.writer.write(&footer.encode())?;
            self.sealed.push(SealedPack {
                id: p.id,
                writer: p.writer,
                footer: Arc::new(footer),
            });
        }
        Ok(())
    }

    fn in_flight(&self) -> bool {
        self.cut.is_some() || self.hashed.is_some()
    }
}

/// A stream being written: hash state, pipeline, and the chunks stored so far.
pub(crate) struct Ingest {
    ctx: Arc<WriteContext>,
    hasher: Option<Hasher>,
    received: u64,
    state: Option<CutState>,
    sealing: VecDeque<JoinHandle<Result<Arc<Footer>>>>,
    /// Stats already added to the process totals.
    reported: WriteStats,
    /// Held from the first byte fed to the end of the write.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn abandoned() -> Error {
    Error::Task("write abandoned after an earlier failure".into())
}

impl Ingest {
    pub(crate) fn new(ctx: Arc<WriteContext>, algorithm: Algorithm) -> Self {
        Self::resume(ctx, Hasher::new(algorithm), Bytes::new(), 0)
    }

    /// Continues a stream of which `received` bytes were hashed into `hasher` and whose
    /// uncut tail is `pending`.
    pub(crate) fn resume(
        ctx: Arc<WriteContext>,
        hasher: Hasher,
        pending: Bytes,
        received: u64,
    ) -> Self {
        Ingest {
            ctx,
            hasher: Some(hasher),
            received,
            state: Some({
                let mut state = CutState::default();
                state.pending = pending.to_vec();
                state
            }),
            sealing: VecDeque::new(),
            reported: WriteStats::default(),
            permit: None,
        }
    }

    /// Waits for a turn among the writes allowed at once, which bounds the memory
    /// of many concurrent uploads (and adds nothing on two cores: four writes keep
    /// them busy).
    async fn admit(&mut self) {
        if self.permit.is_none() {
            self.permit = self.ctx.permits.clone().acquire_owned().await.ok();
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    fn state(&mut self) -> Result<&mut CutState> {
        self.state.as_mut().ok_or_else(abandoned)
    }

    /// The received bytes not yet cut into chunks.
    pub(crate) fn pending(&self) -> Result<Bytes> {
        let state = self.state.as_ref().ok_or_else(abandoned)?;
        Ok(Bytes::copy_from_slice(&state.pending))
    }

    /// Takes in a whole stream, processing each batch while the next one is read.
    pub(crate) async fn feed<S, E>(&mut self, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.admit().await;
        // Fused: a batch ends at the stream's end and the next read must see it again.
        let mut body = std::pin::pin!(body.fuse());
        let mut next = read_batch(&mut body).await?;
        while !next.is_empty() {
            let batch = std::mem::take(&mut next);
            let (done, read) = tokio::join!(self.push(batch), read_batch(&mut body));
            done?;
            next = read?;
        }
        Ok(())
    }

    async fn push(&mut self, frames: Vec<Bytes>) -> Result<()> {
        let new_len: usize = frames.iter().map(Bytes::len).sum();
        self.received += new_len as u64;
        let state = self.state.as_mut().ok_or_else(abandoned)?;
        // Until a full chunk's worth is buffered, no boundary can be final (and a small
        // blob may yet be stored inline): hash and keep the bytes.
        if !state.in_flight() && state.pending.len() + new_len < self.ctx.chunker.max() {
            let hasher = self.hasher.as_mut().ok_or_else(abandoned)?;
            for f in &frames {
                hasher.update(f);
                state.pending.extend_from_slice(f);
            }
            return Ok(());
        }
        self.step(frames, false).await
    }

    /// One step of the pipeline: hash `frames` into the stream digest and cut them;
    /// hash the chunks cut last step; store those hashed last step.
    async fn step(&mut self, frames: Vec<Bytes>, eof: bool) -> Result<()> {
        let mut hasher = self.hasher.take().ok_or_else(abandoned)?;
        let mut state = self.state.take().ok_or_else(abandoned)?;
        let job = state.cut.take().map(|b| (Arc::new(HashJob::new(&b)), b));
        let job_a = job.as_ref().map(|(j, _)| j.clone());
        let job_b = job_a.clone();
        let ctx = self.ctx.clone();
        let rt = tokio::runtime::Handle::current();
        let hash_frames = frames.clone();
        let task_a = tokio::task::spawn_blocking(move || {
            for f in &hash_frames {
                hasher.update(f);
            }
            let ids = job_a.map(|j| j.help()).unwrap_or_default();
            (hasher, ids)
        });
        let task_b = tokio::task::spawn_blocking(move || {
            let stored = match state.hashed.take() {
                Some(batch) => state.store_batch(&ctx, batch, &rt),
                None => Ok(()),
            };
            if stored.is_ok() && (!frames.is_empty() || eof) {
                state.cut(&ctx.chunker, &frames, eof);
            }
            let ids = job_b.map(|j| j.help()).unwrap_or_default();
            (state, stored, ids)
        });
        let (a, b) = tokio::join!(task_a, task_b);
        let (hasher, ids_a) = a?;
        let (mut state, stored, ids_b) = b?;
        self.hasher = Some(hasher);
        if let Some((job, mut batch)) = job {
            drop(job);
            let mut ids = vec![ChunkId([0; 32]); batch.lens.len()];
            let mut filled = 0;
            for (i, id) in ids_a.into_iter().chain(ids_b) {
                ids[i] = id;
                filled += 1;
            }
            if filled != ids.len() {
                return Err(Error::Task("a chunk of the batch was not hashed".into()));
            }
            batch.ids = ids;
            state.hashed = Some(batch);
        }
        self.state = Some(state);
        stored?;
        self.start_sealing().await
    }

    /// Starts making sealed packs durable; waits only if too many are in flight.
    async fn start_sealing(&mut self) -> Result<()> {
        let sealed = std::mem::take(&mut self.state()?.sealed);
        for p in sealed {
            let index = self.ctx.index.clone();
            self.sealing.push_back(tokio::spawn(async move {
                p.writer.finish().await?;
                index.insert(p.id, p.footer.clone());
                Ok(p.footer)
            }));
        }
        while self.sealing.len() > MAX_SEALING
            || self.sealing.front().is_some_and(|h| h.is_finished())
        {
            if let Some(h) = self.sealing.pop_front() {
                let footer = h.await??;
                self.forget_indexed(&footer)?;
            }
        }
        Ok(())
    }

    /// Once a pack is durable and in the index, the index finds its chunks: this
    /// write's own map no longer needs them, which keeps memory flat for huge blobs.
    fn forget_indexed(&mut self, footer: &Footer) -> Result<()> {
        let own = &mut self.state()?.own;
        for e in footer.entries() {
            own.remove(&e.id);
        }
        Ok(())
    }

    /// Makes every chunk cut so far durable. The pending tail stays pending.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        while self.state()?.in_flight() {
            self.step(Vec::new(), false).await?;
        }
        if self.state()?.pack.is_some() {
            let mut state = self.state.take().ok_or_else(abandoned)?;
            let state = tokio::task::spawn_blocking(move || state.seal().map(|()| state)).await??;
            self.state = Some(state);
        }
        self.start_sealing().await?;
        while let Some(h) = self.sealing.pop_front() {
            let footer = h.await??;
            self.forget_indexed(&footer)?;
        }
        let now = self.stats();
        let totals = &self.ctx.totals;
        let add = |counter: &std::sync::atomic::AtomicU64, n: u64| {
            counter.fetch_add(n, Ordering::Relaxed);
        };
        add(
            &totals.stored_bytes,
            now.stored_bytes.saturating_sub(self.reported.stored_bytes),
        );
        add(
            &totals.deduplicated_bytes,
            now.deduplicated_bytes
                .saturating_sub(self.reported.deduplicated_bytes),
        );
        self.reported = now;
        Ok(())
    }

    /// Ends the stream: cuts the tail (unless the whole blob is small enough to store
    /// inline) and makes every chunk durable. Returns the digest of all bytes received.
    pub(crate) async fn finish(&mut self, inline_max: usize) -> Result<Digest> {
        self.admit().await;
        let state = self.state()?;
        let chunked = state.in_flight() || !state.refs.is_empty() || state.pack.is_some();
        if self.received > inline_max as u64 || chunked {
            self.step(Vec::new(), true).await?;
        }
        self.flush().await?;
        Ok(self.hasher.clone().ok_or_else(abandoned)?.finish())
    }

    /// Chunk refs stored since the last call, in stream order.
    pub(crate) fn take_refs(&mut self) -> Result<Vec<ChunkRef>> {
        Ok(std::mem::take(&mut self.state()?.refs))
    }

    /// The hash midstate, to persist with an upload session.
    pub(crate) fn hash_state(&self) -> Result<(Algorithm, Vec<u8>)> {
        let h = self.hasher.as_ref().ok_or_else(abandoned)?;
        Ok((h.algorithm(), h.save()))
    }

    pub(crate) fn stats(&self) -> WriteStats {
        self.state.as_ref().map(|s| s.stats).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // An abandoned write leaves its packs to the garbage collector, but stops
        // finishing them.
        for h in &self.sealing {
            h.abort();
        }
    }
}

/// Reads frames until a batch is full or the stream ends.
/// The most a body frame is expected to carry past a full batch (HTTP servers read
/// at most a few hundred KiB at a time).
const FRAME_SLACK: usize = 1 << 20;

async fn read_batch<S, E>(body: &mut std::pin::Pin<&mut S>) -> Result<Vec<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    // Frames are copied out at once: each is a slice of the HTTP server's read buffer
    // and holding it keeps that whole buffer allocated (measured: a third of the
    // memory of 16 concurrent pushes).
    let mut batch = crate::buffers::take();
    // Room for the frame that crosses the batch size, so the buffer never doubles.
    batch.reserve(BATCH + FRAME_SLACK);
    while batch.len() < BATCH {
        match body.next().await {
            Some(Ok(f)) => batch.extend_from_slice(&f),
            Some(Err(e)) => {
                crate::buffers::give_back(batch);
                return Err(Error::Body(e.into()));
            }
            None => break,
        }
    }
    if batch.is_empty() {
        crate::buffers::give_back(batch);
        return Ok(Vec::new());
    }
    Ok(vec![crate::buffers::into_bytes(batch)])
}
