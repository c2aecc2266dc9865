//! The store's identity (`stowage.json`): format version and chunking parameters. They
//! are written once when a store is created and never changed silently, because a
//! different chunker would cut the same content differently and stop deduplicating it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Format version of the store layout this build writes and reads.
pub const STORE_FORMAT: u32 = 1;

/// The content-defined chunking algorithm: FastCDC as published in 2020, gear table
/// unseeded, as implemented by the `fastcdc` crate's `v2020` module.
pub const CHUNKER: &str = "fastcdc-2020";

/// The hash that names chunks.
pub const CHUNK_HASH: &str = "blake3";

/// Bounds of content-defined chunks. Part of the store's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingParams {
    /// No chunk is shorter, except the last of a blob.
    pub min: u32,
    /// Expected chunk size; a power of two.
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
    /// FastCDC normalization level (0-3): higher keeps sizes closer to `avg`.
    pub normalization: u8,
}

impl Default for ChunkingParams {
    /// Chosen by measurement: see docs/storage.md ("Chunking parameters").
    fn default() -> Self {
        ChunkingParams {
            min: 16 * 1024,
            avg: 32 * 1024,
            max: 128 * 1024,
            normalization: 2,
        }
    }
}

impl ChunkingParams {
    /// Chunk lengths these parameters cut `data` into, treating it as a whole blob (for
    /// tools and benchmarks; the engine cuts streams incrementally, to the same result).
    pub fn cut(&self, data: &[u8]) -> Vec<usize> {
        crate::chunk::Chunker::new(self).cut(data, true)
    }

    /// Checks the bounds the chunker supports.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX};
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let problem = if !(64..=MINIMUM_MAX).contains(&min) {
            Some("min must be between 64 bytes and 1 MiB")
        } else if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg) || !avg.is_power_of_two() {
            Some("avg must be a power of two between 256 bytes and 4 MiB")
        } else if !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max) {
            Some("max must be between 1 KiB and 16 MiB")
        } else if !(min < avg && avg < max) {
            Some("bounds must satisfy min < avg < max")
        } else if min % 2 != 0 || max % 2 != 0 {
            Some("min and max must be even")
        } else if self.normalization > 3 {
            Some("normalization must be 0, 1, 2 or 3")
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::InvalidConfig(format!("chunking {self:?}: {p}"))),
            None => Ok(()),
        }
    }
}

/// The contents of `stowage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// Layout format version.
    pub format: u32,
    /// When the store was created.
    pub created: DateTime<Utc>,
    /// Chunking algorithm name ([`CHUNKER`]).
    pub chunker: String,
    /// Chunking bounds.
    pub chunking: ChunkingParams,
    /// Chunk hash name ([`CHUNK_HASH`]).
    pub chunk_hash: String,
}

impl StoreIdentity {
    pub(crate) fn new(chunking: ChunkingParams) -> Self {
        StoreIdentity {
            format: STORE_FORMAT,
            created: Utc::now(),
            chunker: CHUNKER.to_owned(),
            chunking,
            chunk_hash: CHUNK_HASH.to_owned(),
        }
    }

    /// Refuses stores this build cannot read correctly.
    pub(crate) fn check_compatible(&self, requested: Option<ChunkingParams>) -> Result<()> {
        if self.format != STORE_FORMAT {
            return Err(Error::IncompatibleStore(format!(
                "store format {} is not the format {STORE_FORMAT} this build reads",
                self.format
            )));
        }
        if self.chunker != CHUNKER || self.chunk_hash != CHUNK_HASH {
            return Err(Error::IncompatibleStore(format!(
                "store uses chunker {} with {} chunk ids; this build has {CHUNKER} with {CHUNK_HASH}",
                self.chunker, self.chunk_hash
            )));
        }
        self.chunking.validate()?;
        if let Some(requested) = requested
            && requested != self.chunking
        {
            return Err(Error::IncompatibleStore(format!(
                "store was created with chunking {:?}; the configuration asks for {requested:?}. \
                 Chunking parameters cannot change once a store exists: remove the setting \
                 or point at a new store",
                self.chunking
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_bounds_are_rejected() {
        ChunkingParams::default().validate().unwrap();
        let bad = [
            ChunkingParams {
                min: 10,
                ..Default::default()
            },
            ChunkingParams {
                avg: 60_000,
                ..Default::default()
            },
            ChunkingParams {
                max: 16 * 1024,
                ..Default::default()
            },
            ChunkingParams {
                normalization: 4,
                ..Default::default()
            },
            ChunkingParams {
                min: 16 * 1024 + 1,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

    #[test]
    fn changing_chunking_of_an_existing_store_is_refused() {
        let id = StoreIdentity::new(ChunkingParams::default());
        id.check_compatible(None).unwrap();
        id.check_compatible(Some(ChunkingParams::default()))
            .unwrap();
        let other = ChunkingParams {
            avg: 64 * 1024,
            ..Default::default()
        };
        assert!(matches!(
            id.check_compatible(Some(other)),
            Err(Error::IncompatibleStore(_))
        ));
        let future = StoreIdentity {
            format: STORE_FORMAT + 1,
            ..id
        };
        assert!(future.check_compatible(None).is_err());
    }
}
