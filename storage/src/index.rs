//! The dedup index: which pack holds a chunk with a given id. It lives in memory (about
//! 28 bytes a chunk), is rebuilt from pack footers when a store opens, and learns every
//! pack this process writes the moment the pack is durable. Packs written by other
//! processes are picked up by [`ChunkIndex::refresh`]. It is a hint for deduplication
//! only: a miss stores a chunk again, which costs space, never correctness; a hit is
//! confirmed against the pack's footer before a recipe may point at it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use futures::{StreamExt, TryStreamExt};

use crate::backend::Backend;
use crate::chunk::ChunkId;
use crate::collection::ObjectSet;
use crate::error::{Error, Result};
use crate::layout;
use crate::pack::{Footer, PackEntry, PackId, TRAILER_LEN};

/// Keys are already uniformly random (hash prefixes): hashing them again is waste.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type PrefixMap = HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>;

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) pack: PackId,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

#[derive(Default)]
struct Tables {
    /// First 8 bytes of a chunk id -> pack number.
    by_prefix: PrefixMap,
    /// Pack number -> pack id.
    packs: Vec<PackId>,
    known: HashSet<PackId>,
    /// Pack numbers forgotten because a collection run sealed them for deletion.
    retired: HashSet<u32>,
}

/// Footers recently used to confirm hits, kept because a duplicate run of chunks
/// usually comes from one pack: one footer read confirms hundreds of chunks.
struct FooterCache {
    entries: HashMap<u32, (Arc<Footer>, u64)>,
    tick: u64,
    capacity: usize,
}

impl FooterCache {
    fn get(&mut self, pack: u32) -> Option<Arc<Footer>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&pack).map(|(f, t)| {
            *t = tick;
            f.clone()
        })
    }

    fn insert(&mut self, pack: u32, footer: Arc<Footer>) {
        if self.entries.len() >= self.capacity
            && let Some((&oldest, _)) = self.entries.iter().min_by_key(|(_, (_, t))| *t)
        {
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.entries.insert(pack, (footer, self.tick));
    }
}

/// Statistics of the index, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Packs known.
    pub packs: usize,
    /// Chunk ids known.
    pub chunks: usize,
}

/// See the module documentation.
pub(crate) struct ChunkIndex {
    tables: RwLock<Tables>,
    footers: Mutex<FooterCache>,
    /// Packs a collection run has proposed or sealed: not a dedup source while it runs.
    avoid: RwLock<Option<Arc<ObjectSet>>>,
}

impl ChunkIndex {
    pub(crate) fn new(footer_cache: usize) -> Self {
        ChunkIndex {
            tables: RwLock::new(Tables::default()),
            footers: Mutex::new(FooterCache {
                entries: HashMap::new(),
                tick: 0,
                capacity: footer_cache.max(1),
            }),
            avoid: RwLock::new(None),
        }
    }

    /// Stops offering the packs of `set` while a collection run holds them.
    pub(crate) fn avoid(&self, set: Option<Arc<ObjectSet>>) {
        *self.avoid.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    /// Forgets packs for good: a sweep may delete them. They stay "known", so a refresh
    /// does not learn them again while they still exist.
    pub(crate) fn forget(&self, packs: &HashSet<PackId>) {
        if packs.is_empty() {
            return;
        }
        let numbers: HashSet<u32> = {
            let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
            let numbers: HashSet<u32> = t
                .packs
                .iter()
                .enumerate()
                .filter(|(_, p)| packs.contains(p))
                .map(|(n, _)| n as u32)
                .collect();
            t.by_prefix.retain(|_, n| !numbers.contains(n));
            t.retired.extend(numbers.iter().copied());
            numbers
        };
        let mut cache = self.footers.lock().unwrap_or_else(|e| e.into_inner());
        cache.entries.retain(|n, _| !numbers.contains(n));
    }

    /// Forgets everything, for a rebuild from the packs listed now.
    pub(crate) fn clear(&self) {
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Tables::default();
        self.footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .clear();
    }

    pub(crate) fn stats(&self) -> IndexStats {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        IndexStats {
            packs: t.packs.len(),
            chunks: t.by_prefix.len(),
        }
    }

    /// Records a durable pack.
    pub(crate) fn insert(&self, id: PackId, footer: Arc<Footer>) {
        let number = {
            let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
            if !t.known.insert(id) {
                return;
            }
            let number = t.packs.len() as u32;
            t.packs.push(id);
            t.by_prefix.reserve(footer.entries().len());
            for e in footer.entries() {
                t.by_prefix.insert(e.id.prefix(), number);
            }
            number
        };
        self.footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number, footer);
    }

    /// Finds a stored copy of `id`, reading at most one footer. Runs on a blocking
    /// thread: a footer miss waits for the read through `rt`.
    pub(crate) fn find_blocking(
        &self,
        id: &ChunkId,
        backend: &Backend,
        rt: &tokio::runtime::Handle,
    ) -> Result<Option<Location>> {
        let (number, pack) = {
            let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
            match t.by_prefix.get(&id.prefix()) {
                Some(&n) if !t.retired.contains(&n) => (n, t.packs[n as usize]),
                _ => return Ok(None),
            }
        };
        if let Some(set) = &*self.avoid.read().unwrap_or_else(|e| e.into_inner())
            && set.packs().contains(&pack)
        {
            return Ok(None);
        }
        let cached = self
            .footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(number);
        let footer = match cached {
            Some(f) => f,
            None => {
                let f = match rt.block_on(read_footer(backend, &pack)) {
                    Ok(f) => Arc::new(f),
                    // A pack that vanished (collected) or is damaged simply is not a
                    // dedup source; the chunk is stored again.
                    Err(e) => {
                        tracing::warn!(%pack, error = %e, "dedup index: pack footer unreadable");
                        return Ok(None);
                    }
                };
                self.footers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(number, f.clone());
                f
            }
        };
        Ok(footer.find(id).map(|e: &PackEntry| Location {
            pack,
            offset: e.offset,
            len: e.len,
        }))
    }

    /// Learns every pack in the store not yet known: at open, and periodically on a
    /// store shared with other processes.
    pub(crate) async fn refresh(&self, backend: &Backend) -> Result<usize> {
        let listed = backend.list_all(&layout::packs_prefix()).await?;
        let unknown: Vec<PackId> = {
            let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
            listed
                .iter()
                .filter_map(|m| layout::parse_pack(&m.location))
                .filter(|id| !t.known.contains(id))
                .collect()
        };
        let count = unknown.len();
        futures::stream::iter(unknown)
            .map(|id| {
                let backend = backend.clone();
                async move { (id, read_footer(&backend, &id).await) }
            })
            .buffer_unordered(32)
            .map(Ok::<_, Error>)
            .try_for_each(|(id, footer)| async move {
                match footer {
                    Ok(f) => self.insert(id, Arc::new(f)),
                    Err(e) => tracing::warn!(pack = %id, error = %e, "skipping unreadable pack"),
                }
                Ok(())
            })
            .await?;
        Ok(count)
    }
}

/// Reads and checks a pack's footer: one suffix read in the common case.
pub(crate) async fn read_footer(backend: &Backend, id: &PackId) -> Result<Footer> {
    let key = layout::pack(id);
    // Enough for the footer of a full local pack (32 MiB of ~39 KiB chunks: ~850 entries
    // of 40 bytes) in one request; larger footers take a second.
    let (tail, size) = backend.get_suffix(&key, 48 * 1024).await?;
    if tail.len() < TRAILER_LEN {
        return Err(Error::corrupt(
            key.as_ref(),
            "pack shorter than its trailer",
        ));
    }
    let need = Footer::len_from_trailer(&tail[tail.len() - TRAILER_LEN..], key.as_ref())?;
    let footer_bytes = if need <= tail.len() {
        tail.slice(tail.len() - need..)
    } else {
        let start = size
            .checked_sub(need as u64)
            .ok_or_else(|| Error::corrupt(key.as_ref(), "footer longer than the pack"))?;
        backend.get_range(&key, start..size).await?
    };
    Footer::decode(&footer_bytes, size, key.as_ref())
}
