//! Recipes: how to rebuild a blob. Writing a blob's recipe is the commit point of the
//! blob: it is written last, after every pack it points into is durable, and a blob
//! without a recipe does not exist. Recipes are immutable and self-checking.
//!
//! ```text
//! recipe  = magic:"STWR" version:u8 kind:u8 digest_len:u8 digest:ascii size:u64 body checksum
//! body    = inline bytes                                   (kind 0, small blobs)
//!         | refs                                           (kind 1)
//! refs    = pack_count:u32 pack_id:[u8;16]* chunk_count:u32 ref*
//! ref     = chunk id:[u8;32] pack_index:u32 offset:u32 length:u32 crc:u32   (version 2)
//!         | chunk id:[u8;32] pack_index:u32 offset:u32 length:u32           (version 1)
//! checksum = BLAKE3 of everything before it
//! ```
//!
//! `crc` is the CRC32C of the chunk's bytes: reads check it (hardware CRC, >10 GB/s)
//! instead of re-hashing every chunk with BLAKE3, which was the difference between
//! Stowage's and Distribution's pull speed. The BLAKE3 id still names the chunk, and
//! `fsck` re-hashes. Version 1 recipes (no CRCs) are read and verified by BLAKE3.

use bytes::Bytes;

use crate::chunk::ChunkId;
use crate::codec::{self, Reader};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::Location;
use crate::pack::PackId;

const MAGIC: &[u8; 4] = b"STWR";
/// Written when every chunk has a CRC; version 1 (no CRCs) is still read.
const VERSION: u8 = 2;
const VERSION_NO_CRC: u8 = 1;
const KIND_INLINE: u8 = 0;
const KIND_CHUNKED: u8 = 1;
/// Long enough for the fixed header of any recipe (sha512 digests included).
pub(crate) const HEADER_MAX: u64 = 4 + 1 + 1 + 1 + 255 + 8;

/// One chunk of a blob and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub(crate) id: ChunkId,
    pub(crate) at: Location,
    /// CRC32C of the chunk's bytes, checked on reads; absent in version 1 refs.
    pub(crate) crc: Option<u32>,
}

/// Whether every ref carries a CRC (then refs are written with them).
pub(crate) fn all_have_crc(refs: &[ChunkRef]) -> bool {
    refs.iter().all(|c| c.crc.is_some())
}

/// A blob's content description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// The bytes themselves.
    Inline(Bytes),
    /// Chunks in blob order.
    Chunks(Vec<ChunkRef>),
}

/// What the first bytes of a recipe say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) inline: bool,
}

/// A decoded recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipe {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) body: Body,
}

impl Recipe {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let digest = self.digest.to_string();
        let mut out = Vec::with_capacity(64 + digest.len());
        out.extend_from_slice(MAGIC);
        let with_crc = match &self.body {
            Body::Chunks(refs) => all_have_crc(refs),
            Body::Inline(_) => true,
        };
        out.push(if with_crc { VERSION } else { VERSION_NO_CRC });
        out.push(match self.body {
            Body::Inline(_) => KIND_INLINE,
            Body::Chunks(_) => KIND_CHUNKED,
        });
        out.push(digest.len() as u8);
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        match &self.body {
            Body::Inline(data) => out.extend_from_slice(data),
            Body::Chunks(refs) => encode_refs(refs, with_crc, &mut out),
        }
        codec::seal(&mut out);
        out
    }

    pub(crate) fn decode(data: &[u8], key: &str) -> Result<Self> {
        let body = codec::unseal(data, key)?;
        let mut r = Reader::new(body, key);
        let (version, kind, digest, size) = read_header(&mut r)?;
        let body = match kind {
            KIND_INLINE => {
                let data = r.rest();
                if data.len() as u64 != size {
                    return Err(r.corrupt("inline data length differs from the blob size"));
                }
                Body::Inline(Bytes::copy_from_slice(data))
            }
            _ => {
                let refs = decode_refs(&mut r, version == VERSION)?;
                r.expect_end()?;
                let total: u64 = refs.iter().map(|c| u64::from(c.at.len)).sum();
                if total != size {
                    return Err(r.corrupt(format!(
                        "chunks add up to {total} bytes, the blob is {size}"
                    )));
                }
                Body::Chunks(refs)
            }
        };
        Ok(Recipe { digest, size, body })
    }

    /// The distinct packs the blob's chunks are in (none when inline).
    pub(crate) fn packs(&self) -> Vec<PackId> {
        match &self.body {
            Body::Inline(_) => Vec::new(),
            Body::Chunks(refs) => packs_of(refs),
        }
    }

    /// The packs a recipe names, from its first bytes; `None` if `prefix` is too short
    /// to hold the whole pack table (read the whole recipe then).
    pub(crate) fn decode_packs(prefix: &[u8], key: &str) -> Result<Option<Vec<PackId>>> {
        let mut r = Reader::new(prefix, key);
        let (_, kind, _, _) = read_header(&mut r)?;
        if kind == KIND_INLINE {
            return Ok(Some(Vec::new()));
        }
        let Ok(count) = r.u32() else {
            return Ok(None);
        };
        let mut packs = Vec::with_capacity((count as usize).min(1 << 16));
        for _ in 0..count {
            match r.array() {
                Ok(id) => packs.push(PackId(id)),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(packs))
    }

    /// The header from the first bytes of a recipe, without the body (for statistics
    /// and existence checks on large recipes).
    pub(crate) fn decode_header(prefix: &[u8], key: &str) -> Result<Header> {
        let mut r = Reader::new(prefix, key);
        let (_, kind, digest, size) = read_header(&mut r)?;
        Ok(Header {
            digest,
            size,
            inline: kind == KIND_INLINE,
        })
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<(u8, u8, Digest, u64)> {
    if r.take(4)? != MAGIC {
        return Err(r.corrupt("not a recipe (no STWR magic)"));
    }
    let version = r.u8()?;
    if version != VERSION && version != VERSION_NO_CRC {
        return Err(r.corrupt(format!("recipe version {version} is not {VERSION}")));
    }
    let kind = r.u8()?;
    if kind != KIND_INLINE && kind != KIND_CHUNKED {
        return Err(r.corrupt(format!("unknown recipe kind {kind}")));
    }
    let dlen = r.u8()? as usize;
    let digest = std::str::from_utf8(r.take(dlen)?)
        .map_err(|_| r.corrupt("digest is not ASCII"))
        .and_then(|s| Digest::parse(s).map_err(|e| r.corrupt(e.to_string())))?;
    let size = r.u64()?;
    Ok((version, kind, digest, size))
}

/// Chunk refs with a table of the packs they point into (16 bytes each, once), with
/// their CRCs if `with_crc` (then every ref must have one: see [`all_have_crc`]).
pub(crate) fn encode_refs(refs: &[ChunkRef], with_crc: bool, out: &mut Vec<u8>) {
    let mut packs: Vec<PackId> = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    let pack_index: Vec<u32> = refs
        .iter()
        .map(|c| {
            *index_of.entry(c.at.pack).or_insert_with(|| {
                packs.push(c.at.pack);
                (packs.len() - 1) as u32
            })
        })
        .collect();
    out.reserve(8 + packs.len() * 16 + refs.len() * 48);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in &packs {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    for (c, &pi) in refs.iter().zip(&pack_index) {
        out.extend_from_slice(c.id.as_bytes());
        out.extend_from_slice(&pi.to_le_bytes());
        out.extend_from_slice(&c.at.offset.to_le_bytes());
        out.extend_from_slice(&c.at.len.to_le_bytes());
        if with_crc {
            out.extend_from_slice(&c.crc.unwrap_or_default().to_le_bytes());
        }
    }
}

/// The distinct packs of `refs`, in first-use order.
pub(crate) fn packs_of(refs: &[ChunkRef]) -> Vec<PackId> {
    let mut seen = std::collections::HashSet::new();
    refs.iter()
        .map(|c| c.at.pack)
        .filter(|p| seen.insert(*p))
        .collect()
}

/// Refs as [`encode_refs`] wrote them (`with_crc` as it was given).
pub(crate) fn decode_refs(r: &mut Reader<'_>, with_crc: bool) -> Result<Vec<ChunkRef>> {
    let pack_count = r.u32()? as usize;
    let mut packs = Vec::with_capacity(pack_count.min(1 << 16));
    for _ in 0..pack_count {
        packs.push(PackId(r.array()?));
    }
    let count = r.u32()? as usize;
    let mut refs = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let id = ChunkId(r.array()?);
        let pi = r.u32()? as usize;
        let offset = r.u32()?;
        let len = r.u32()?;
        let crc = if with_crc { Some(r.u32()?) } else { None };
        let pack = *packs
            .get(pi)
            .ok_or_else(|| r.corrupt(format!("chunk {id} names pack #{pi} of {pack_count}")))?;
        refs.push(ChunkRef {
            id,
            at: Location { pack, offset, len },
            crc,
        });
    }
    Ok(refs)
}

/// Checks that a stored key holds the recipe of the digest it is filed under.
pub(crate) fn check_digest(recipe: &Recipe, expected: &Digest, key: &str) -> Result<()> {
    if &recipe.digest == expected {
        Ok(())
    } else {
        Err(Error::corrupt(
            key,
            format!("recipe describes {}, not {expected}", recipe.digest),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_refs() -> Vec<ChunkRef> {
        let packs = [PackId::generate(), PackId::generate()];
        (0..5u32)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                at: Location {
                    pack: packs[(i % 2) as usize],
                    offset: i * 10,
                    len: 10,
                },
                crc: Some(i * 7),
            })
            .collect()
    }

    #[test]
    fn refs_without_crcs_are_written_and_read_as_version_1() {
        let mut refs = sample_refs();
        refs[2].crc = None;
        let recipe = Recipe {
            digest: Digest::sha256(b"x"),
            size: 50,
            body: Body::Chunks(refs.clone()),
        };
        let enc = recipe.encode();
        assert_eq!(enc[4], VERSION_NO_CRC);
        let Body::Chunks(back) = Recipe::decode(&enc, "k").unwrap().body else {
            panic!("chunked");
        };
        assert!(back.iter().all(|c| c.crc.is_none()));
        let full = Recipe {
            body: Body::Chunks(sample_refs()),
            ..recipe
        };
        assert_eq!(full.encode()[4], VERSION);
    }

    #[test]
    fn recipes_round_trip_and_reject_damage() {
        let chunked = Recipe {
            digest: Digest::sha256(b"x"),
            size: 50,
            body: Body::Chunks(sample_refs()),
        };
        let inline = Recipe {
            digest: Digest::of(crate::Algorithm::Sha512, b"abc"),
            size: 3,
            body: Body::Inline(Bytes::from_static(b"abc")),
        };
        for recipe in [chunked, inline] {
            let enc = recipe.encode();
            assert_eq!(Recipe::decode(&enc, "k").unwrap(), recipe);
            let h = Recipe::decode_header(&enc, "k").unwrap();
            assert_eq!((h.digest, h.size), (recipe.digest.clone(), recipe.size));
            assert_eq!(h.inline, matches!(recipe.body, Body::Inline(_)));
            for i in [0, 5, enc.len() / 2, enc.len() - 1] {
                let mut bad = enc.clone();
                bad[i] ^= 0x40;
                assert!(Recipe::decode(&bad, "k").is_err(), "flip at {i}");
            }
            assert!(Recipe::decode(&enc[..enc.len() - 1], "k").is_err());
        }
    }

    #[test]
    fn a_recipe_whose_chunks_do_not_add_up_is_corrupt() {
        let bad = Recipe {
            digest: Digest::sha256(b"x"),
            size: 51,
            body: Body::Chunks(sample_refs()),
        };
        assert!(matches!(
            Recipe::decode(&bad.encode(), "k"),
            Err(Error::Corrupt { .. })
        ));
    }
}
