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
///
/// The cut points are exactly those of `fastcdc::v2020` (tests compare them), computed
/// faster: the gear hash at a position depends only on the 64 bytes before it (older
/// bytes are shifted out), so a window can be scanned as several independent lanes,
/// each warmed up on the 64 bytes before its start. The reference loop is bound by the
/// latency of one hash chain; four chains in lockstep keep the CPU's units busy.
#[derive(Debug, Clone)]
pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: &'static [u64; 256],
}

/// Hash chains scanned in lockstep.
const LANES: usize = 4;
/// Positions each lane scans per block.
const LANE_LEN: usize = 512;
/// Bytes that determine a gear hash: older ones are shifted out of the 64-bit state.
const WINDOW: usize = 64;

fn gear_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let (gear, _) = fastcdc::v2020::get_gear_with_seed(0);
        let mut t = [0u64; 256];
        t.copy_from_slice(&gear);
        t
    })
}

impl Chunker {
    pub(crate) fn new(params: &ChunkingParams) -> Self {
        let level = match params.normalization {
            0 => fastcdc::v2020::Normalization::Level0,
            1 => fastcdc::v2020::Normalization::Level1,
            2 => fastcdc::v2020::Normalization::Level2,
            _ => fastcdc::v2020::Normalization::Level3,
        };
        let (mask_s, mask_l) = fastcdc::v2020::select_masks(params.avg as usize, level);
        Chunker {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            mask_s,
            mask_l,
            gear: gear_table(),
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
        let mut lengths = Vec::with_capacity(data.len() / self.avg + 1);
        let mut start = 0;
        while start < data.len() {
            let window = &data[start..];
            let len = self.cut_point(window);
            if len == 0 || (len == window.len() && !eof) {
                break;
            }
            lengths.push(len);
            start += len;
        }
        lengths
    }

    /// Length of the first chunk of `src`: the `cut_gear` of fastcdc v2020. Positions
    /// before `center` are tested with the strict mask, later ones with the loose one;
    /// the first position whose hash has no mask bit set ends the chunk (exclusive).
    fn cut_point(&self, src: &[u8]) -> usize {
        let len = src.len();
        if len <= self.min {
            return len;
        }
        let (remaining, center) = if len > self.max {
            (self.max, self.avg)
        } else if len < self.avg {
            (len, len)
        } else {
            (len, self.avg)
        };
        // The reference tests positions in pairs: an odd last position is never tested.
        let strict_end = center & !1;
        let end = remaining & !1;
        let block_len = LANES * LANE_LEN;
        let mut block = self.min;
        while block + block_len <= end {
            // A block uses one mask throughout; the one that straddles the switch from
            // the strict to the loose mask goes position by position.
            let found = if block + block_len <= strict_end {
                self.scan_block(src, block, self.mask_s)
            } else if block >= strict_end {
                self.scan_block(src, block, self.mask_l)
            } else {
                self.scan(src, block, block + block_len, strict_end)
            };
            if found.is_some() {
                return found.unwrap_or(remaining);
            }
            block += block_len;
        }
        self.scan(src, block, end, strict_end).unwrap_or(remaining)
    }

    /// Gear hash state just before `at`, given that hashing starts at `min`.
    fn warm(&self, src: &[u8], at: usize) -> u64 {
        let from = at.saturating_sub(WINDOW).max(self.min);
        src[from..at]
            .iter()
            .fold(0u64, |h, &b| (h << 1).wrapping_add(self.gear[b as usize]))
    }

    /// One block of `LANES * LANE_LEN` positions starting at `block`, all tested with
    /// `mask`, as four hash chains in lockstep.
    fn scan_block(&self, src: &[u8], block: usize, mask: u64) -> Option<usize> {
        let lane = |k: usize| -> Option<&[u8; LANE_LEN]> {
            src.get(block + k * LANE_LEN..block + (k + 1) * LANE_LEN)?
                .try_into()
                .ok()
        };
        let (Some(l0), Some(l1), Some(l2), Some(l3)) = (lane(0), lane(1), lane(2), lane(3)) else {
            return self.scan(src, block, block + LANES * LANE_LEN, usize::MAX);
        };
        let mut h0 = self.warm(src, block);
        let mut h1 = self.warm(src, block + LANE_LEN);
        let mut h2 = self.warm(src, block + 2 * LANE_LEN);
        let mut h3 = self.warm(src, block + 3 * LANE_LEN);
        let g = self.gear;
        let mut found = [usize::MAX; LANES];
        for j in 0..LANE_LEN {
            h0 = (h0 << 1).wrapping_add(g[l0[j] as usize]);
            h1 = (h1 << 1).wrapping_add(g[l1[j] as usize]);
            h2 = (h2 << 1).wrapping_add(g[l2[j] as usize]);
            h3 = (h3 << 1).wrapping_add(g[l3[j] as usize]);
            let hits = [
                h0 & mask == 0,
                h1 & mask == 0,
                h2 & mask == 0,
                h3 & mask == 0,
            ];
            if hits.iter().any(|&x| x) {
                for k in 0..LANES {
                    if hits[k] && found[k] == usize::MAX {
                        found[k] = block + k * LANE_LEN + j;
                    }
                }
                // Lane 0 holds the earliest positions: nothing later can beat its hit.
                if hits[0] {
                    break;
                }
            }
        }
        found.into_iter().find(|&p| p != usize::MAX)
    }

    /// Positions `from..end` one at a time: the tail that does not fill a block.
    fn scan(&self, src: &[u8], from: usize, end: usize, strict_end: usize) -> Option<usize> {
        let mut h = self.warm(src, from);
        for (p, &b) in src.iter().enumerate().take(end).skip(from) {
            h = (h << 1).wrapping_add(self.gear[b as usize]);
            let mask = if p < strict_end {
                self.mask_s
            } else {
                self.mask_l
            };
            if h & mask == 0 {
                return Some(p);
            }
        }
        None
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

    /// The lane scanner must cut exactly where the reference does, for every window
    /// length (below min, below avg, above max, odd) and for data with no boundaries.
    #[test]
    fn cut_points_equal_the_reference_for_every_shape_of_window() {
        let configs = [
            ChunkingParams::default(),
            ChunkingParams {
                min: 64,
                avg: 256,
                max: 1024,
                normalization: 0,
            },
            ChunkingParams {
                min: 2048,
                avg: 8192,
                max: 65536,
                normalization: 3,
            },
            ChunkingParams {
                min: 16384,
                avg: 32768,
                max: 131072,
                normalization: 2,
            },
        ];
        let sources = [
            pseudo_random(1 << 20, 5),
            vec![0u8; 300_000],
            pseudo_random(4096, 9).repeat(80),
        ];
        for p in &configs {
            let c = Chunker::new(p);
            let (ms, ml) = (c.mask_s, c.mask_l);
            for src in &sources {
                let mut lens: Vec<usize> = (0..200).map(|i| (i * 7919) % src.len()).collect();
                lens.extend([
                    0,
                    1,
                    63,
                    64,
                    65,
                    p.min as usize,
                    p.min as usize + 1,
                    p.avg as usize - 1,
                    p.avg as usize,
                    p.avg as usize + 1,
                    p.max as usize - 1,
                    p.max as usize,
                    p.max as usize + 1,
                    src.len(),
                ]);
                for len in lens {
                    let window = &src[..len.min(src.len())];
                    let (_, want) = fastcdc::v2020::cut(
                        window,
                        p.min as usize,
                        p.avg as usize,
                        p.max as usize,
                        ms,
                        ml,
                        ms << 1,
                        ml << 1,
                    );
                    assert_eq!(c.cut_point(window), want, "{p:?} window {}", window.len());
                }
            }
        }
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
