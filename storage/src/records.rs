//! Small records that other parts of Stowage keep in the store beside the images (the
//! access policy, tokens, signing keys), so that every replica on one store reads the
//! same ones with no database: read, created once, replaced by compare-and-swap, listed
//! and deleted, under one top-level area of keys each.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::backend::{Backend, Version};
use crate::error::{Error, Result};
use crate::layout;

/// Areas records may live in; each is a top-level prefix no other part of the layout uses.
const AREAS: &[&str] = &["auth"];

/// A handle on one area of records.
#[derive(Clone, Debug)]
pub struct Records {
    backend: Backend,
    area: &'static str,
}

/// The version of a record as read, for a later [`Records::swap`]; opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordVersion(Version);

/// One listed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    /// Its name within the area.
    pub name: String,
    /// When it was last written, by the backend's clock.
    pub modified: DateTime<Utc>,
}

/// Checks a record name: `/`-separated segments of `[A-Za-z0-9._-]`, none empty or
/// starting with a dot, so a name can never escape its area.
fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidRecordName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 512 {
        return Err(bad("must be 1 to 512 bytes"));
    }
    for seg in name.split('/') {
        if seg.is_empty() || seg.starts_with('.') {
            return Err(bad("empty segment or one starting with a dot"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("only ASCII letters, digits, '.', '_' and '-'"));
        }
    }
    Ok(())
}

impl Records {
    pub(crate) fn new(backend: Backend, area: &str) -> Result<Self> {
        let area = AREAS
            .iter()
            .find(|a| **a == area)
            .ok_or_else(|| Error::InvalidRecordName {
                name: area.to_string(),
                reason: format!("not a record area (one of {AREAS:?})"),
            })?;
        Ok(Records { backend, area })
    }

    fn key(&self, name: &str) -> Result<object_store::path::Path> {
        check_name(name)?;
        Ok(layout::record(self.area, name))
    }

    /// A record's content and version, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<(Bytes, RecordVersion)>> {
        let key = self.key(name)?;
        Ok(self
            .backend
            .get_versioned(&key)
            .await?
            .map(|(b, v)| (b, RecordVersion(v))))
    }

    /// Writes a record only if it does not exist; `Ok(false)` if it did. Durable when
    /// this returns.
    pub async fn create(&self, name: &str, data: Bytes) -> Result<bool> {
        let key = self.key(name)?;
        self.backend.create(&key, data).await
    }

    /// Replaces a record only if it is still at `expected` (`None`: only if absent).
    /// `Ok(false)` if another writer changed it first; atomic and durable otherwise.
    pub async fn swap(
        &self,
        name: &str,
        expected: Option<&RecordVersion>,
        data: Bytes,
    ) -> Result<bool> {
        let key = self.key(name)?;
        self.backend
            .compare_and_swap(&key, expected.map(|v| &v.0), data)
            .await
    }

    /// Deletes a record (absent is not an error), serialised with swaps of it.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name)?;
        self.backend.delete_swapped(&key).await
    }

    /// Every record under `dir` (a name prefix ending at a `/`), in no particular order.
    pub async fn list(&self, dir: &str) -> Result<Vec<RecordEntry>> {
        let prefix = self.key(dir)?;
        let area = self.area;
        self.backend
            .list(&prefix)
            .try_filter_map(|m| async move {
                let key = m.location.as_ref();
                let name = key
                    .strip_prefix(area)
                    .and_then(|k| k.strip_prefix('/'))
                    .filter(|n| check_name(n).is_ok());
                Ok(name.map(|n| RecordEntry {
                    name: n.to_string(),
                    modified: m.last_modified,
                }))
            })
            .try_collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_their_area() {
        for good in ["policy", "tokens/abc-1", "keys/k.20", "a_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "../x", "a/../b", ".hidden", "a//b", "/a", "a/", "ü", "a b", "a\0b", "a%2fb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
