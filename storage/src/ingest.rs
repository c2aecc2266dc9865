//! The write path: bytes in, verified chunks out. A stream is taken in batches of a few
//! MiB; for each batch one thread updates the SHA-256 (or -512) of the stream while
//! another cuts it into content-defined chunks, hashes each with BLAKE3, looks it up in
//! the dedup index and appends the new ones to a pack. Packs are finished (made durable)
//! in the background while the next batch is read. Nothing here is visible to readers:
//! the caller commits a recipe (or an upload segment) only after [`Ingest::flush`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
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
const BATCH: usize = 4 << 20;
/// Batches smaller than this are hashed on the calling task: a thread hop would cost
/// more than hashing a manifest.
const INLINE_WORK: usize = 64 << 10;
/// Packs being finished in the background at once, per writer.
const MAX_SEALING: usize = 2;

/// What every writer of a store shares.
pub(crate) struct WriteContext {
    pub(crate) backend: Backend,
    pub(crate) index: Arc<ChunkIndex>,
    pub(crate) chunker: Chunker,
    pub(crate) pack_size: u64,
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

/// Chunking state, moved to a blocking thread for each batch and back.
#[derive(Default)]
struct CutState {
    pack: Option<OpenPack>,
    /// Chunks this writer stored, including in packs not yet durable: the recipe that
    /// points at them is only written after they are.
    own: HashMap<ChunkId, Location>,
    refs: Vec<ChunkRef>,
    sealed: Vec<SealedPack>,
    stats: WriteStats,
}

impl CutState {
    /// Cuts `data`, records a ref per chunk, returns the uncut tail.
    fn cut(
        &mut self,
        ctx: &WriteContext,
        data: Bytes,
        eof: bool,
        rt: &tokio::runtime::Handle,
    ) -> Result<Bytes> {
        let mut pos = 0;
        for len in ctx.chunker.cut(&data, eof) {
            let chunk = &data[pos..pos + len];
            pos += len;
            let id = ChunkId::of(chunk);
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
            self.refs.push(ChunkRef { id, at });
        }
        Ok(data.slice(pos..))
    }

    fn store(&mut self, ctx: &WriteContext, id: ChunkId, chunk: &[u8]) -> Result<Location> {
        let pack = match &mut self.pack {
            Some(p) => p,
            None => {
                let pid = PackId::generate();
                let writer = ctx.backend.pack_writer(layout::pack(&pid))?;
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
}

/// A stream being written: hash state, pending tail and the chunks cut so far.
pub(crate) struct Ingest {
    ctx: Arc<WriteContext>,
    hasher: Option<Hasher>,
    /// Received bytes after the last chunk boundary (already hashed).
    pending: Bytes,
    received: u64,
    state: Option<CutState>,
    sealing: VecDeque<JoinHandle<Result<()>>>,
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
            pending,
            received,
            state: Some(CutState::default()),
            sealing: VecDeque::new(),
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn pending(&self) -> &Bytes {
        &self.pending
    }

    fn state(&mut self) -> Result<&mut CutState> {
        self.state
            .as_mut()
            .ok_or_else(|| Error::Task("write abandoned after an earlier failure".into()))
    }

    fn hasher(&self) -> Result<&Hasher> {
        self.hasher
            .as_ref()
            .ok_or_else(|| Error::Task("write abandoned after an earlier failure".into()))
    }

    /// Takes in a whole stream, processing each batch while the next one is read.
    pub(crate) async fn feed<S, E>(&mut self, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut next = read_batch(&mut body).await?;
        while !next.is_empty() {
            let batch = std::mem::take(&mut next);
            let (done, read) = tokio::join!(self.process(batch, false), read_batch(&mut body));
            done?;
            next = read?;
        }
        Ok(())
    }

    async fn process(&mut self, frames: Vec<Bytes>, eof: bool) -> Result<()> {
        let new_len: usize = frames.iter().map(Bytes::len).sum();
        self.received += new_len as u64;
        let total = self.pending.len() + new_len;
        // Until a full chunk's worth is buffered, no boundary can be final (and a small
        // blob may yet be stored inline): just hash and keep the bytes.
        if !eof && total < self.ctx.chunker.max() {
            let hasher = self
                .hasher
                .as_mut()
                .ok_or_else(|| Error::Task("abandoned".into()))?;
            let mut buf = BytesMut::with_capacity(total);
            buf.extend_from_slice(&self.pending);
            for f in &frames {
                hasher.update(f);
                buf.extend_from_slice(f);
            }
            self.pending = buf.freeze();
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut hasher = self
            .hasher
            .take()
            .ok_or_else(|| Error::Task("abandoned".into()))?;
        let mut state = self
            .state
            .take()
            .ok_or_else(|| Error::Task("abandoned".into()))?;
        let ctx = self.ctx.clone();
        let rt = tokio::runtime::Handle::current();
        let cut = move |frames: Vec<Bytes>| -> Result<(CutState, Bytes)> {
            let data = assemble(pending, &frames);
            let tail = state.cut(&ctx, data, eof, &rt)?;
            Ok((state, tail))
        };
        // Cutting always runs on a blocking thread: a dedup hit may wait there for a
        // pack footer. Hashing gets its own thread when the batch is worth it.
        let (hasher, cut_result) = if total <= INLINE_WORK {
            for f in &frames {
                hasher.update(f);
            }
            (
                hasher,
                tokio::task::spawn_blocking(move || cut(frames)).await?,
            )
        } else {
            let hash_frames = frames.clone();
            let hash_task = tokio::task::spawn_blocking(move || {
                for f in &hash_frames {
                    hasher.update(f);
                }
                hasher
            });
            let cut_task = tokio::task::spawn_blocking(move || cut(frames));
            let (h, c) = tokio::join!(hash_task, cut_task);
            (h?, c?)
        };
        self.hasher = Some(hasher);
        let (state, tail) = cut_result?;
        self.state = Some(state);
        self.pending = tail;
        self.start_sealing().await
    }

    /// Starts making sealed packs durable; waits only if too many are in flight.
    async fn start_sealing(&mut self) -> Result<()> {
        let sealed = std::mem::take(&mut self.state()?.sealed);
        for p in sealed {
            let index = self.ctx.index.clone();
            self.sealing.push_back(tokio::spawn(async move {
                p.writer.finish().await?;
                index.insert(p.id, p.footer);
                Ok(())
            }));
        }
        while self.sealing.len() > MAX_SEALING {
            if let Some(h) = self.sealing.pop_front() {
                h.await??;
            }
        }
        Ok(())
    }

    /// Makes every chunk cut so far durable. The pending tail stays pending.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        let open = self.state()?.pack.is_some();
        if open {
            let mut state = self
                .state
                .take()
                .ok_or_else(|| Error::Task("abandoned".into()))?;
            let state = tokio::task::spawn_blocking(move || state.seal().map(|()| state)).await??;
            self.state = Some(state);
        }
        self.start_sealing().await?;
        while let Some(h) = self.sealing.pop_front() {
            h.await??;
        }
        Ok(())
    }

    /// Ends the stream: cuts the tail (unless the whole blob is small enough to store
    /// inline) and makes every chunk durable. Returns the digest of all bytes received.
    pub(crate) async fn finish(&mut self, inline_max: usize) -> Result<Digest> {
        if self.received > inline_max as u64 || !self.state()?.refs.is_empty() {
            self.process(Vec::new(), true).await?;
        }
        self.flush().await?;
        Ok(self.hasher()?.clone().finish())
    }

    /// Chunk refs cut since the last call, in stream order.
    pub(crate) fn take_refs(&mut self) -> Result<Vec<ChunkRef>> {
        Ok(std::mem::take(&mut self.state()?.refs))
    }

    /// The hash midstate, to persist with an upload session.
    pub(crate) fn hash_state(&self) -> Result<(Algorithm, Vec<u8>)> {
        let h = self.hasher()?;
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
async fn read_batch<S, E>(body: &mut std::pin::Pin<&mut S>) -> Result<Vec<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    let mut frames = Vec::new();
    let mut len = 0;
    while len < BATCH {
        match body.next().await {
            Some(Ok(f)) => {
                if !f.is_empty() {
                    len += f.len();
                    frames.push(f);
                }
            }
            Some(Err(e)) => return Err(Error::Body(e.into())),
            None => break,
        }
    }
    Ok(frames)
}

/// The pending tail followed by new frames, as one contiguous buffer (one copy).
fn assemble(pending: Bytes, frames: &[Bytes]) -> Bytes {
    if pending.is_empty() && frames.len() == 1 {
        return frames[0].clone();
    }
    if frames.is_empty() {
        return pending;
    }
    let len = pending.len() + frames.iter().map(Bytes::len).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    buf.extend_from_slice(&pending);
    for f in frames {
        buf.extend_from_slice(f);
    }
    buf.freeze()
}
