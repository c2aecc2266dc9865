//! The read path: a recipe becomes a stream of verified bytes. Neighbouring chunks in one
//! pack are fetched with one ranged read; a few reads are in flight at once (bounded
//! read-ahead), so memory does not grow with the blob. Every chunk is checked before a
//! byte of it is returned: against its CRC32C (recipes since version 2), or its BLAKE3
//! id.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use crate::backend::Backend;
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::layout;
use crate::pack::PackId;
use crate::recipe::{Body, ChunkRef, Recipe};

/// Longest single ranged read.
const READ_MAX: u64 = 2 << 20;
/// Ranged reads in flight per blob stream.
const READ_AHEAD: usize = 4;

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// One ranged read of a pack and the chunks it covers.
struct Read {
    pack: PackId,
    range: Range<u64>,
    chunks: Vec<(ChunkId, u32, Option<u32>)>,
    /// Bytes to drop from the front of the first chunk and keep of the whole read.
    skip: u64,
    take: u64,
}

/// Streams `range` (already checked against the size) of the blob a recipe describes.
pub(crate) fn stream(backend: Backend, recipe: Recipe, range: Range<u64>) -> ByteStream {
    match recipe.body {
        Body::Inline(data) => {
            let part = data.slice(range.start as usize..range.end as usize);
            stream::once(async move { Ok(part) }).boxed()
        }
        Body::Chunks(refs) => {
            let reads = plan(&refs, range);
            stream::iter(reads)
                .map(move |r| fetch(backend.clone(), r))
                .buffered(READ_AHEAD)
                .try_filter(|b| futures::future::ready(!b.is_empty()))
                .boxed()
        }
    }
}

/// Groups the chunks overlapping `range` into contiguous reads.
fn plan(refs: &[ChunkRef], range: Range<u64>) -> Vec<Read> {
    let mut reads: Vec<Read> = Vec::new();
    let mut pos = 0u64;
    for c in refs {
        let start = pos;
        let end = pos + u64::from(c.at.len);
        pos = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = u64::from(c.at.offset);
        let to = from + u64::from(c.at.len);
        let keep_from = range.start.saturating_sub(start);
        let keep_to = (range.end.min(end)) - start;
        let kept = keep_to - keep_from;
        match reads.last_mut() {
            Some(r)
                if r.pack == c.at.pack
                    && r.range.end == from
                    && r.range.end - r.range.start + u64::from(c.at.len) <= READ_MAX =>
            {
                r.range.end = to;
                r.chunks.push((c.id, c.at.len, c.crc));
                r.take += kept;
            }
            _ => reads.push(Read {
                pack: c.at.pack,
                range: from..to,
                chunks: vec![(c.id, c.at.len, c.crc)],
                skip: keep_from,
                take: kept,
            }),
        }
    }
    reads
}

async fn fetch(backend: Backend, read: Read) -> Result<Bytes> {
    let key = layout::pack(&read.pack);
    let data = backend.get_range(&key, read.range.clone()).await?;
    let verify = move || -> Result<Bytes> {
        let mut at = 0usize;
        for (id, len, crc) in &read.chunks {
            let len = *len as usize;
            let bytes = &data[at..at + len];
            let intact = match crc {
                Some(crc) => crc32c::crc32c(bytes) == *crc,
                None => ChunkId::of(bytes) == *id,
            };
            if !intact {
                return Err(Error::corrupt(
                    key.as_ref(),
                    format!(
                        "chunk {id} at offset {} does not match its hash",
                        read.range.start as usize + at
                    ),
                ));
            }
            at += len;
        }
        let skip = read.skip as usize;
        Ok(data.slice(skip..skip + read.take as usize))
    };
    if read.range.end - read.range.start > 256 << 10 {
        tokio::task::spawn_blocking(verify).await?
    } else {
        verify()
    }
}

/// Validates a requested byte range (`end` exclusive) against a blob's size.
pub(crate) fn check_range(range: Option<Range<u64>>, size: u64) -> Result<Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(r) if r.start < r.end && r.end <= size => Ok(r),
        Some(r) => Err(Error::RangeNotSatisfiable {
            start: r.start,
            end: r.end.saturating_sub(1),
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Location;

    fn refs(lens: &[(u32, u8)]) -> Vec<ChunkRef> {
        let packs = [PackId::generate(), PackId::generate()];
        let mut offsets = [0u32; 2];
        lens.iter()
            .enumerate()
            .map(|(i, &(len, p))| {
                let at = Location {
                    pack: packs[p as usize],
                    offset: offsets[p as usize],
                    len,
                };
                offsets[p as usize] += len;
                ChunkRef {
                    id: ChunkId::of(&(i as u32).to_le_bytes()),
                    at,
                    crc: None,
                }
            })
            .collect()
    }

    #[test]
    fn plan_merges_neighbours_and_trims_to_the_range() {
        let r = refs(&[(100, 0), (100, 0), (100, 1), (100, 0)]);
        let whole = plan(&r, 0..400);
        assert_eq!(
            whole.len(),
            3,
            "same-pack neighbours merge, a pack switch splits"
        );
        assert_eq!(whole[0].range, 0..200);
        assert_eq!(whole[0].take, 200);
        assert_eq!(whole[2].range, 200..300);
        let part = plan(&r, 150..250);
        assert_eq!(part.len(), 2);
        assert_eq!((part[0].skip, part[0].take), (50, 50));
        assert_eq!(part[0].range, 100..200);
        assert_eq!((part[1].skip, part[1].take), (0, 50));
        assert!(plan(&r, 400..400).is_empty());
    }

    /// A pack of three 100-byte chunks in a memory backend, and a read of all three.
    async fn stored_read(crcs: bool) -> (Backend, Read, Vec<u8>) {
        let backend = Backend::open(&crate::BackendConfig {
            url: "memory://".into(),
            ..Default::default()
        })
        .unwrap();
        let pack = PackId::generate();
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks = data
            .chunks(100)
            .map(|c| {
                let crc = crcs.then(|| crc32c::crc32c(c));
                (ChunkId::of(c), 100, crc)
            })
            .collect();
        backend
            .put(&layout::pack(&pack), Bytes::from(data.clone()))
            .await
            .unwrap();
        let read = Read {
            pack,
            range: 0..300,
            chunks,
            skip: 0,
            take: 300,
        };
        (backend, read, data)
    }

    #[tokio::test]
    async fn reads_check_crcs_or_blake3_ids() {
        for crcs in [true, false] {
            let (backend, read, data) = stored_read(crcs).await;
            let got = fetch(
                backend.clone(),
                Read {
                    chunks: read.chunks.clone(),
                    ..read
                },
            )
            .await;
            assert_eq!(got.unwrap(), Bytes::from(data.clone()));
            // The same bytes on disk, but a chunk's expected value differs: refused.
            let (backend, mut read, _) = stored_read(crcs).await;
            match &mut read.chunks[1] {
                (_, _, Some(crc)) => *crc ^= 1,
                (id, _, None) => *id = ChunkId::of(b"something else"),
            }
            assert!(
                matches!(fetch(backend, read).await, Err(Error::Corrupt { .. })),
                "crcs={crcs}"
            );
        }
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(check_range(None, 10).unwrap(), 0..10);
        assert_eq!(check_range(Some(3..10), 10).unwrap(), 3..10);
        assert!(matches!(
            check_range(Some(5..11), 10),
            Err(Error::RangeNotSatisfiable {
                start: 5,
                end: 10,
                size: 10
            })
        ));
        assert!(check_range(Some(10..10), 10).is_err());
    }
}
