//! Resumable upload sessions. After every append the session's state is in the store:
//! offset, hash midstate, the uncut tail and the list of segments (write-once objects
//! holding the chunk refs of each append). The state is replaced by compare-and-swap, so
//! two replicas appending to one session cannot both succeed, and any replica can
//! continue a session another one started. An append is acknowledged only after its
//! packs, its segment and the new state are durable.
//!
//! ```text
//! state   = magic:"STWU" version:u8 header_len:u32 header:json tail:bytes checksum
//! segment = magic:"STWS" version:u8 refs checksum        (refs as in a recipe)
//! ```

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Reader};
use crate::digest::Algorithm;
use crate::error::{Error, Result};
use crate::names::RepoName;
use crate::recipe::{self, ChunkRef};

const STATE_MAGIC: &[u8; 4] = b"STWU";
const SEGMENT_MAGIC: &[u8; 4] = b"STWS";
const VERSION: u8 = 1;
/// Segments whose refs carry CRCs (see the recipe format); version 1 is still read.
const SEGMENT_VERSION: u8 = 2;
const SEGMENT_VERSION_NO_CRC: u8 = 1;

/// An upload session id: a random UUID, so ids cannot be guessed or collide between
/// replicas.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(Box<str>);

impl UploadId {
    pub(crate) fn generate() -> Self {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string().into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match uuid::Uuid::try_parse(s) {
            Ok(u) if u.hyphenated().to_string() == s => Ok(UploadId(s.into())),
            _ => Err(Error::InvalidUploadId(s.to_owned())),
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

/// What a client (or an operator) can know about a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadStatus {
    /// Session id.
    pub id: UploadId,
    /// Repository the upload was started in.
    pub repo: RepoName,
    /// Bytes received and acknowledged: the next append starts here.
    pub offset: u64,
    /// When the session was started.
    pub created: DateTime<Utc>,
    /// When it last received bytes.
    pub updated: DateTime<Utc>,
}

impl Serialize for UploadId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    repo: RepoName,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    offset: u64,
    algorithm: Algorithm,
    /// Hash midstate, hex.
    hash_state: String,
    /// Nonces of the segments, in order.
    segments: Vec<String>,
}

/// The persisted state of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionState {
    pub(crate) repo: RepoName,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    pub(crate) offset: u64,
    pub(crate) algorithm: Algorithm,
    pub(crate) hash_state: Vec<u8>,
    pub(crate) segments: Vec<String>,
    pub(crate) tail: Bytes,
}

impl SessionState {
    pub(crate) fn status(&self, id: &UploadId) -> UploadStatus {
        UploadStatus {
            id: id.clone(),
            repo: self.repo.clone(),
            offset: self.offset,
            created: self.created,
            updated: self.updated,
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let header = Header {
            repo: self.repo.clone(),
            created: self.created,
            updated: self.updated,
            offset: self.offset,
            algorithm: self.algorithm,
            hash_state: hex::encode(&self.hash_state),
            segments: self.segments.clone(),
        };
        let json = serde_json::to_vec(&header)
            .map_err(|e| Error::Task(format!("encoding upload state: {e}")))?;
        let mut out = Vec::with_capacity(9 + json.len() + self.tail.len() + 32);
        out.extend_from_slice(STATE_MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.tail);
        codec::seal(&mut out);
        Ok(out)
    }

    pub(crate) fn decode(data: &[u8], key: &str) -> Result<Self> {
        let body = codec::unseal(data, key)?;
        let mut r = Reader::new(body, key);
        if r.take(4)? != STATE_MAGIC {
            return Err(r.corrupt("not an upload state (no STWU magic)"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(r.corrupt(format!("upload state version {version} is not {VERSION}")));
        }
        let len = r.u32()? as usize;
        let header: Header = serde_json::from_slice(r.take(len)?)
            .map_err(|e| r.corrupt(format!("upload state header: {e}")))?;
        let tail = Bytes::copy_from_slice(r.rest());
        let hash_state = hex::decode(&header.hash_state)
            .map_err(|_| Error::corrupt(key, "hash state is not hex"))?;
        Ok(SessionState {
            repo: header.repo,
            created: header.created,
            updated: header.updated,
            offset: header.offset,
            algorithm: header.algorithm,
            hash_state,
            segments: header.segments,
            tail,
        })
    }
}

pub(crate) fn encode_segment(refs: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SEGMENT_MAGIC);
    let with_crc = recipe::all_have_crc(refs);
    out.push(if with_crc {
        SEGMENT_VERSION
    } else {
        SEGMENT_VERSION_NO_CRC
    });
    recipe::encode_refs(refs, with_crc, &mut out);
    codec::seal(&mut out);
    out
}

pub(crate) fn decode_segment(data: &[u8], key: &str) -> Result<Vec<ChunkRef>> {
    let body = codec::unseal(data, key)?;
    let mut r = Reader::new(body, key);
    if r.take(4)? != SEGMENT_MAGIC {
        return Err(r.corrupt("not an upload segment"));
    }
    let with_crc = match r.u8()? {
        SEGMENT_VERSION => true,
        SEGMENT_VERSION_NO_CRC => false,
        v => return Err(r.corrupt(format!("upload segment version {v}"))),
    };
    let refs = recipe::decode_refs(&mut r, with_crc)?;
    r.expect_end()?;
    Ok(refs)
}

/// A fresh nonce naming one append's segment.
pub(crate) fn segment_nonce() -> String {
    let u = uuid::Uuid::new_v4();
    hex::encode(&u.as_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_canonical_uuids() {
        let id = UploadId::generate();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        for bad in ["", "abc", "../../x", "6F9619FF-8B86-D011-B42D-00C04FC964FF"] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn state_round_trips_and_rejects_damage() {
        let s = SessionState {
            repo: RepoName::parse("a/b").unwrap(),
            created: Utc::now(),
            updated: Utc::now(),
            offset: 12345,
            algorithm: Algorithm::Sha256,
            hash_state: vec![1, 2, 3],
            segments: vec!["00ff".into()],
            tail: Bytes::from_static(b"tail bytes"),
        };
        let enc = s.encode().unwrap();
        assert_eq!(SessionState::decode(&enc, "k").unwrap(), s);
        let mut bad = enc.clone();
        bad[12] ^= 1;
        assert!(SessionState::decode(&bad, "k").is_err());
    }
}
