//! Packs: the objects chunks are stored in. A pack is the new chunks of one upload, in
//! stream order, followed by a footer listing each chunk's id, offset and length. Packs
//! are immutable; they make a few large writes out of many small chunks, which is what
//! both local disks and object stores reward (see docs/storage.md for the measurements).
//!
//! ```text
//! pack    = chunk bytes* footer
//! footer  = entry* count:u32 checksum:[u8;32] version:u8 reserved:[u8;3] magic:"STWP"
//! entry   = chunk id:[u8;32] offset:u32 length:u32
//! ```
//! The checksum is BLAKE3 over the entries and count. Chunk bytes are verified against
//! their ids on every read.

use std::fmt;
use std::str::FromStr;

use crate::chunk::ChunkId;
use crate::codec::Reader;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"STWP";
const VERSION: u8 = 1;
/// count + checksum + version + reserved + magic.
pub(crate) const TRAILER_LEN: usize = 4 + 32 + 1 + 3 + 4;
pub(crate) const ENTRY_LEN: usize = 32 + 4 + 4;
/// Packs stay below 4 GiB so offsets fit in the footer's u32.
pub(crate) const MAX_PACK_LEN: u64 = u32::MAX as u64;

/// A pack's name: a UUIDv7, so names sort by creation time and a replica can list only
/// the packs written since it last looked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub(crate) [u8; 16]);

impl PackId {
    pub(crate) fn generate() -> Self {
        PackId(*uuid::Uuid::now_v7().as_bytes())
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({self})")
    }
}

impl FromStr for PackId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut id = [0u8; 16];
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::corrupt(s, "not a pack id"));
        }
        hex::decode_to_slice(s, &mut id).map_err(|_| Error::corrupt(s, "not a pack id"))?;
        Ok(PackId(id))
    }
}

/// One chunk's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackEntry {
    pub(crate) id: ChunkId,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// A pack's table of contents, sorted by chunk id for lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Footer {
    entries: Vec<PackEntry>,
}

impl Footer {
    /// Builds the footer for entries in pack order.
    pub(crate) fn new(mut entries: Vec<PackEntry>) -> Self {
        entries.sort_unstable_by_key(|e| e.id);
        Footer { entries }
    }

    pub(crate) fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    pub(crate) fn find(&self, id: &ChunkId) -> Option<&PackEntry> {
        self.entries
            .binary_search_by_key(id, |e| e.id)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Bytes of chunk data the pack holds (the pack minus its footer).
    #[cfg(test)]
    pub(crate) fn data_len(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.len)).sum()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.entries.len() * ENTRY_LEN + TRAILER_LEN
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for e in &self.entries {
            out.extend_from_slice(e.id.as_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(MAGIC);
        out
    }

    /// How many bytes the footer occupies, from the last [`TRAILER_LEN`] bytes of a pack.
    pub(crate) fn len_from_trailer(trailer: &[u8], key: &str) -> Result<usize> {
        let mut r = Reader::new(trailer, key);
        let count = r.u32()? as usize;
        let _sum: [u8; 32] = r.array()?;
        let version = r.u8()?;
        let _reserved: [u8; 3] = r.array()?;
        if r.take(4)? != MAGIC {
            return Err(r.corrupt("pack trailer has no STWP magic"));
        }
        if version != VERSION {
            return Err(r.corrupt(format!("pack version {version} is not {VERSION}")));
        }
        Ok(count * ENTRY_LEN + TRAILER_LEN)
    }

    /// Parses a footer: exactly the last `len_from_trailer` bytes of a pack of `pack_len`.
    pub(crate) fn decode(data: &[u8], pack_len: u64, key: &str) -> Result<Self> {
        if data.len() < TRAILER_LEN {
            return Err(Error::corrupt(key, "pack is shorter than its trailer"));
        }
        let expected = Self::len_from_trailer(&data[data.len() - TRAILER_LEN..], key)?;
        if expected != data.len() {
            return Err(Error::corrupt(
                key,
                "pack footer length does not match its count",
            ));
        }
        let body_len = data.len() - TRAILER_LEN + 4;
        let (body, rest) = data.split_at(body_len);
        if blake3::hash(body).as_bytes()[..] != rest[..32] {
            return Err(Error::corrupt(key, "pack footer checksum mismatch"));
        }
        let data_end = pack_len
            .checked_sub(data.len() as u64)
            .ok_or_else(|| Error::corrupt(key, "pack footer longer than the pack"))?;
        let mut r = Reader::new(&body[..body_len - 4], key);
        let mut entries = Vec::with_capacity(expected / ENTRY_LEN);
        while r.position() < body_len - 4 {
            let id = ChunkId(r.array()?);
            let offset = r.u32()?;
            let len = r.u32()?;
            if u64::from(offset) + u64::from(len) > data_end {
                return Err(r.corrupt(format!("chunk {id} extends past the pack's data")));
            }
            entries.push(PackEntry { id, offset, len });
        }
        Ok(Footer::new(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_detects_damage() {
        let entries: Vec<_> = (0..10u32)
            .map(|i| PackEntry {
                id: ChunkId::of(&i.to_le_bytes()),
                offset: i * 100,
                len: 100,
            })
            .collect();
        let footer = Footer::new(entries.clone());
        let enc = footer.encode();
        assert_eq!(enc.len(), footer.encoded_len());
        let pack_len = 1000 + enc.len() as u64;
        assert_eq!(
            Footer::len_from_trailer(&enc[enc.len() - TRAILER_LEN..], "p").unwrap(),
            enc.len()
        );
        let back = Footer::decode(&enc, pack_len, "p").unwrap();
        assert_eq!(back, footer);
        assert_eq!(back.find(&entries[3].id), Some(&entries[3]));
        assert_eq!(back.data_len(), 1000);
        let mut bad = enc.clone();
        bad[5] ^= 1;
        assert!(Footer::decode(&bad, pack_len, "p").is_err());
        assert!(Footer::decode(&enc, 10, "p").is_err());
        assert!(Footer::decode(&enc[1..], pack_len, "p").is_err());
    }

    #[test]
    fn pack_ids_sort_by_creation_and_parse_back() {
        let a = PackId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = PackId::generate();
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(b.to_string().parse::<PackId>().unwrap(), b);
        assert!("xyz".parse::<PackId>().is_err());
    }
}
