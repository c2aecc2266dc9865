//! Stowage's storage engine: content-addressed blobs, cut into content-defined chunks so
//! that equal content is stored once, verified by streaming SHA-256 as it arrives, over
//! local disk, S3 or memory. It knows nothing of HTTP.
//!
//! The pieces, in the order data flows through them:
//! - [`Store`] opens a backend ([`BackendConfig`]) and is the API;
//! - `ingest` hashes and chunks a stream, `index` finds chunks already stored, `pack`
//!   groups new chunks into large immutable objects;
//! - `recipe` records how to rebuild a blob; writing it is the blob's commit point;
//! - `upload` keeps resumable sessions in the store, so any replica can continue one;
//! - [`Repository`] holds links, manifests, tags with history and referrers;
//! - `layout` is the only place object keys are made;
//! - `fsck` reads all of it and reports what does not fit together ([`Store::fsck`]).
//!
//! docs/storage.md describes the formats and the reasons for them.

mod backend;
mod buffers;
mod chunk;
mod codec;
pub mod collection;
mod config;
mod digest;
mod error;
mod fsck;
mod index;
mod ingest;
mod inventory;
mod layout;
pub mod manifest;
mod names;
mod pack;
mod reader;
mod recipe;
mod records;
mod repo;
mod store;
mod upload;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::{BackendConfig, BackendKind, S3Options};
pub use chunk::ChunkId;
pub use config::{CHUNK_HASH, CHUNKER, ChunkingParams, STORE_FORMAT, StoreIdentity};
pub use digest::{Algorithm, Digest, Hasher};
pub use error::{BoxError, Error, Result};
pub use fsck::{
    Finding, FindingKind, FsckCounts, FsckOptions, FsckPhase, FsckProgress, FsckReport, Severity,
};
pub use index::IndexStats;
pub use ingest::{WriteStats, WriteTotals};
pub use inventory::{
    Listed, PackInfo, PendingDeletes, RecipeShard, RepoInventory, SessionInfo, namespaces,
};
pub use names::{MAX_REPO_NAME_LEN, Reference, RepoName, Tag};
pub use pack::PackId;
pub use reader::ByteStream;
pub use records::{RecordEntry, RecordVersion, Records};
pub use repo::{Descriptor, Manifest, ManifestLink, References, Repository, TagEvent, TagRecord};
pub use store::{BlobInfo, BlobRead, BlobReader, Stats, Store, StoreOptions};
pub use upload::{UploadId, UploadStatus};
