//! Chunks: content-defined pieces of blobs, named by the BLAKE3 hash of their bytes, and
//! the streaming chunker that cuts them so that boundaries depend only on content, never
//! on how the bytes arrived (one PUT or a thousand PATCHes give the same chunks).

use std::fmt;

use crate::config::ChunkingParams;

/// BLAKE3 hash of a chunk's bytes: its identity for deduplication.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub(crate) [u8; 32]);

impl ChunkId {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight bytes, the key of the in-memory dedup index.
    pub(crate) fn prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(self.0)[..16])
    }
}

/// FastCDC (2020) with a store's parameters, applied to a sliding window.
#[derive(Debug, Clone)]
pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    level: fastcdc::v2020::Normalization,
}

impl Chunker {
    pub(crate) fn new(params: &ChunkingParams) -> Self {
        let level = match params.normalization {
            0 => fastcdc::v2020::Normalization::Level0,
            1 => fastcdc::v2020::Normalization::Level1,
            2 => fastcdc::v2020::Normalization::Level2,
            _ => fastcdc::v2020::Normalization::Level3,
        };
        Chunker {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            level,
        }
    }

    /// The longest chunk this chunker cuts.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Lengths of the chunks that can be cut from the front of `data`. Without `eof`, a
    /// chunk is only cut where its boundary is certain: FastCDC decides a boundary by
    /// looking at the byte after it, so a chunk that runs into the end of `data` might
    /// still grow; those bytes stay pending. With `eof`, everything is cut.
    pub(crate) fn cut(&self, data: &[u8], eof: bool) -> Vec<usize> {
        let cdc =
            fastcdc::v2020::FastCDC::with_level(data, self.min, self.avg, self.max, self.level);
        let mut lengths = Vec::with_capacity(data.len() / self.avg + 1);
        let mut start = 0;
        while start < data.len() {
            let (_, end) = cdc.cut(start, data.len() - start);
            let len = end - start;
            if len == 0 || (end == data.len() && !eof) {
                break;
            }
            lengths.push(len);
            start = end;
        }
        lengths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn stream_cut(chunker: &Chunker, data: &[u8], pieces: &[usize]) -> Vec<usize> {
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut pos = 0;
        for &p in pieces {
            let end = (pos + p).min(data.len());
            pending.extend_from_slice(&data[pos..end]);
            pos = end;
            let lens = chunker.cut(&pending, false);
            let used: usize = lens.iter().sum();
            out.extend(lens);
            pending.drain(..used);
        }
        pending.extend_from_slice(&data[pos..]);
        out.extend(chunker.cut(&pending, true));
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_how_bytes_arrive() {
        let chunker = Chunker::new(&ChunkingParams::default());
        let data = pseudo_random(3 << 20, 7);
        let whole = chunker.cut(&data, true);
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        for pieces in [
            vec![1usize; 0],
            vec![1, 2, 3],
            vec![65_536; 48],
            vec![1_000_003; 3],
            vec![17; 5000],
        ] {
            assert_eq!(
                stream_cut(&chunker, &data, &pieces),
                whole,
                "{:?}",
                &pieces[..pieces.len().min(3)]
            );
        }
    }

    #[test]
    fn chunk_sizes_respect_bounds() {
        let p = ChunkingParams::default();
        let chunker = Chunker::new(&p);
        let data = pseudo_random(8 << 20, 11);
        let lens = chunker.cut(&data, true);
        let (last, body) = lens.split_last().unwrap();
        assert!(*last <= p.max as usize);
        for &l in body {
            assert!(l >= p.min as usize && l <= p.max as usize, "{l}");
        }
        let mean = data.len() / lens.len();
        assert!(mean > 20 * 1024 && mean < 50 * 1024, "mean chunk {mean}");
        // All-zero input has no boundaries: it is cut at max.
        let zeros = vec![0u8; 1 << 20];
        assert!(
            chunker
                .cut(&zeros, true)
                .iter()
                .all(|&l| l == p.max as usize)
        );
    }

    #[test]
    fn agrees_with_the_reference_iterator() {
        let p = ChunkingParams::default();
        assert_eq!(
            p.normalization, 2,
            "the reference below is built for level 2"
        );
        let data = pseudo_random(2 << 20, 3);
        let reference: Vec<usize> = fastcdc::v2020::FastCDC::with_level(
            &data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            fastcdc::v2020::Normalization::Level2,
        )
        .map(|c| c.length)
        .collect();
        assert_eq!(Chunker::new(&p).cut(&data, true), reference);
    }

    /// Chunk boundaries are part of a store's identity: if an upgrade of the fastcdc
    /// crate ever moved them, existing stores would silently stop deduplicating. These
    /// lengths were recorded with fastcdc 5.0.0's tables and must never change.
    #[test]
    fn boundaries_are_pinned_for_the_default_parameters() {
        let chunker = Chunker::new(&ChunkingParams::default());
        let data = pseudo_random(1 << 20, 42);
        let lens = chunker.cut(&data, true);
        assert_eq!(lens, PINNED);
    }

    const PINNED: &[usize] = &[
        40186, 46173, 42033, 37814, 34657, 34436, 22492, 42446, 39297, 35273, 34384, 35693, 20351,
        35477, 44475, 22747, 36072, 41883, 45358, 32977, 47311, 37206, 23889, 41368, 20364, 32974,
        42577, 36188, 42216, 259,
    ];
}
