//! Multi-megabyte buffers kept for reuse. A fresh one costs a page fault and a page
//! clear per 4 KiB (a fifth of a write's CPU, a tenth of a read's, as measured), and
//! glibc keeps freed ones in the arena of whichever thread freed them.

use std::sync::Mutex;

use bytes::Bytes;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most this many idle buffers are kept.
const KEPT: usize = 8;

/// A buffer from the pool (empty, with whatever capacity it had), or a new one.
pub(crate) fn take() -> Vec<u8> {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default()
}

/// Returns a buffer to the pool (dropped if the pool is full).
pub(crate) fn give_back(mut buf: Vec<u8>) {
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < KEPT {
        pool.push(buf);
    }
}

/// `buf` as `Bytes`; it goes back to the pool when the last clone is dropped.
pub(crate) fn into_bytes(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buf))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}
