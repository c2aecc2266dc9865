//! Bounds-checked little-endian reading for the engine's binary formats (packs, recipes,
//! upload state): a truncated or garbled object becomes [`Error::Corrupt`], never a panic.

use crate::error::{Error, Result};

pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    key: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], key: &'a str) -> Self {
        Reader { data, pos: 0, key }
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.key, reason)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "truncated: needed {n} bytes at offset {}, object has {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn expect_end(&self) -> Result<()> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(self.corrupt(format!(
                "{} unexpected trailing bytes",
                self.data.len() - self.pos
            )))
        }
    }
}

/// Appends a BLAKE3 checksum of everything in `buf`.
pub(crate) fn seal(buf: &mut Vec<u8>) {
    let sum = blake3::hash(buf);
    buf.extend_from_slice(sum.as_bytes());
}

/// Verifies and strips the checksum appended by [`seal`].
pub(crate) fn unseal<'a>(data: &'a [u8], key: &str) -> Result<&'a [u8]> {
    if data.len() < 32 {
        return Err(Error::corrupt(key, "too short to hold its checksum"));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(Error::corrupt(key, "checksum mismatch"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_and_tampering_are_errors_not_panics() {
        let mut r = Reader::new(&[1, 2, 3], "k");
        assert_eq!(r.u8().unwrap(), 1);
        assert!(matches!(r.u32(), Err(Error::Corrupt { .. })));
        let mut sealed = b"hello".to_vec();
        seal(&mut sealed);
        assert_eq!(unseal(&sealed, "k").unwrap(), b"hello");
        sealed[0] ^= 1;
        assert!(unseal(&sealed, "k").is_err());
        assert!(unseal(b"short", "k").is_err());
    }
}
