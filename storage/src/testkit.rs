//! Test support, for this crate's tests and the end-to-end tests (feature `testkit`).
//! Opens the backends the engine suite runs against. Every test gets a store of its own:
//! a fresh in-memory store, a fresh temporary directory, or a fresh prefix in the S3
//! bucket of the moto server that the test command (`scripts/test`) starts and names in
//! `STOWAGE_TEST_S3_ENDPOINT` and `STOWAGE_TEST_S3_BUCKET`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::{ChunkingParams, Digest, S3Options, Store, StoreOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Local,
    S3,
}

/// A store and whatever must live as long as it (a temporary directory).
pub struct TestStore {
    pub store: Store,
    pub options: StoreOptions,
    pub dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// Opens the same store again, as another process would.
    pub async fn reopen(&self) -> Store {
        Store::open(self.options.clone())
            .await
            .expect("reopen store")
    }
}

/// Small chunks, so that kilobytes of test data make many chunks and several packs.
pub fn small_chunks() -> ChunkingParams {
    ChunkingParams {
        min: 1024,
        avg: 4096,
        max: 16 * 1024,
        normalization: 1,
    }
}

pub fn options(kind: Kind) -> (StoreOptions, Option<tempfile::TempDir>) {
    match kind {
        Kind::Memory => (StoreOptions::new("memory://"), None),
        Kind::Local => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("file://{}", dir.path().display());
            (StoreOptions::new(url), Some(dir))
        }
        Kind::S3 => {
            let bucket =
                std::env::var("STOWAGE_TEST_S3_BUCKET").unwrap_or_else(|_| "stowage-test".into());
            let prefix = uuid::Uuid::new_v4().simple().to_string();
            (options_for_url(&format!("s3://{bucket}/{prefix}")), None)
        }
    }
}

/// Options for a store URL; for `s3://` URLs, pointed at the test S3 server.
pub fn options_for_url(url: &str) -> StoreOptions {
    let mut o = StoreOptions::new(url);
    if url.starts_with("s3://") {
        let endpoint = std::env::var("STOWAGE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "S3 tests need an S3-compatible server: run scripts/test, which starts \
                 moto and sets STOWAGE_TEST_S3_ENDPOINT and STOWAGE_TEST_S3_BUCKET"
            )
        });
        o.backend.s3 = S3Options {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..Default::default()
        };
    }
    o
}

/// A URL for a new, empty store of the given kind (memory stores cannot be shared
/// between processes; this is for disk and S3). Keep the returned directory alive.
pub fn fresh_url(kind: Kind) -> (String, Option<tempfile::TempDir>) {
    let (o, dir) = options(kind);
    (o.backend.url, dir)
}

pub async fn open_with(kind: Kind, tweak: impl FnOnce(&mut StoreOptions)) -> TestStore {
    let (mut options, dir) = options(kind);
    tweak(&mut options);
    let store = Store::open(options.clone()).await.expect("open store");
    TestStore {
        store,
        options,
        dir,
    }
}

pub async fn open(kind: Kind) -> TestStore {
    open_with(kind, |_| {}).await
}

/// A store with small chunks and small packs, to exercise many of both.
pub async fn open_small(kind: Kind) -> TestStore {
    open_with(kind, |o| {
        o.chunking = Some(small_chunks());
        o.pack_size = Some(64 * 1024);
        o.inline_max = 512;
    })
    .await
}

/// Deterministic incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A byte stream that delivers `data` in pieces of the given sizes (cycled).
pub fn stream_of(
    data: Vec<u8>,
    pieces: Vec<usize>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let data = bytes::Bytes::from(data);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = pieces
            .get(i % pieces.len().max(1))
            .copied()
            .unwrap_or(data.len())
            .max(1);
        let end = (pos + n).min(data.len());
        out.push(Ok(data.slice(pos..end)));
        pos = end;
        i += 1;
    }
    futures::stream::iter(out)
}

pub async fn read_all(store: &Store, digest: &Digest) -> Vec<u8> {
    read_range(store, digest, None).await
}

pub async fn read_range(
    store: &Store,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    use futures::TryStreamExt;
    let read = store.read_blob(digest, range).await.expect("read_blob");
    let parts: Vec<bytes::Bytes> = read.stream.try_collect().await.expect("read stream");
    parts.concat()
}

/// A runtime for tests that drive their own (property tests).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs each named `async fn case(kind: Kind)` of the calling module as a test on every
/// backend: `mod memory`, `mod local`, `mod s3` (the caller imports `Kind`).
#[macro_export]
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::Memory).await }
        )* }
        mod local { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::Local).await }
        )* }
        mod s3 { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::S3).await }
        )* }
    };
}
