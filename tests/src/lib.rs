//! Shared pieces of the end-to-end tests: the torture child's protocol (one line per
//! acknowledged operation on stdout) and the deterministic content it writes, so the
//! parent can regenerate every byte it expects to read back.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod oci;
pub mod server;

/// Content of blob `n` of writer `seed`: incompressible, `len` bytes, reproducible.
pub fn content(seed: u64, n: u64, len: usize) -> Vec<u8> {
    stowage_storage::testkit::random_bytes(len, seed.wrapping_mul(1_000_003).wrapping_add(n))
}

/// A line of the torture child's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A blob was committed: `put_blob` returned Ok.
    Blob {
        digest: String,
        seed: u64,
        n: u64,
        len: usize,
    },
    /// A write with this (wrong) digest is about to be attempted; it must never exist.
    BadDigest { claimed: String },
    /// A session was started for blob (seed, n, len).
    Session {
        id: String,
        seed: u64,
        n: u64,
        len: usize,
    },
    /// An append was acknowledged: the session holds at least `offset` bytes.
    Append { id: String, offset: u64 },
    /// A session was finished: its blob is committed.
    Finished { id: String },
    /// A tag update was acknowledged.
    Tagged { digest: String },
}

impl Event {
    pub fn to_line(&self) -> String {
        match self {
            Event::Blob {
                digest,
                seed,
                n,
                len,
            } => format!("BLOB {digest} {seed} {n} {len}"),
            Event::BadDigest { claimed } => format!("BAD {claimed}"),
            Event::Session { id, seed, n, len } => format!("SESSION {id} {seed} {n} {len}"),
            Event::Append { id, offset } => format!("APPEND {id} {offset}"),
            Event::Finished { id } => format!("FINISHED {id}"),
            Event::Tagged { digest } => format!("TAGGED {digest}"),
        }
    }

    /// Parses a line; a line cut short by the kill parses as `None`.
    pub fn parse(line: &str) -> Option<Event> {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f.get(i)?.parse::<u64>().ok();
        Some(match *f.first()? {
            "BLOB" if f.len() == 5 => Event::Blob {
                digest: f[1].into(),
                seed: num(2)?,
                n: num(3)?,
                len: num(4)? as usize,
            },
            "BAD" if f.len() == 2 => Event::BadDigest {
                claimed: f[1].into(),
            },
            "SESSION" if f.len() == 5 => Event::Session {
                id: f[1].into(),
                seed: num(2)?,
                n: num(3)?,
                len: num(4)? as usize,
            },
            "APPEND" if f.len() == 3 => Event::Append {
                id: f[1].into(),
                offset: num(2)?,
            },
            "FINISHED" if f.len() == 2 => Event::Finished { id: f[1].into() },
            "TAGGED" if f.len() == 2 => Event::Tagged {
                digest: f[1].into(),
            },
            _ => return None,
        })
    }
}
