//! Throughput through the engine: a 256 MiB blob written (streamed in 1 MiB frames,
//! hashed, chunked, deduplicated against the index, packed, made durable, committed)
//! and read back (chunks fetched with read-ahead and verified), on memory and on local
//! disk. Every write is new content, so nothing is deduplicated away; the local store
//! lives on the machine's disk (TMPDIR) and every write is fsynced.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use stowage_benches::{frames, random_data, runtime, store_url, timed_write};
use stowage_storage::{Algorithm, Store, StoreOptions};

const LEN: usize = 256 << 20;

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    for backend in ["memory", "local"] {
        g.bench_function(format!("write/{backend}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let data = Bytes::from(random_data(LEN, i + 1000));
                    let dir = tempfile::tempdir().unwrap();
                    total += timed_write(&rt, &store_url(backend == "memory", &dir), &data);
                }
                total
            })
        });
        let dir = tempfile::tempdir().unwrap();
        let url = store_url(backend == "memory", &dir);
        let data = Bytes::from(random_data(LEN, 7));
        let (store, digest) = rt.block_on(async {
            let store = Store::open(StoreOptions::new(url)).await.unwrap();
            let (info, _) = store
                .put_blob_content(Algorithm::Sha256, frames(&data, 1 << 20))
                .await
                .unwrap();
            (store, info.digest)
        });
        g.bench_function(format!("read/{backend}"), |b| {
            b.to_async(&rt).iter(|| async {
                let read = store.read_blob(&digest, None).await.unwrap();
                read.stream
                    .try_fold(0usize, |n, b| async move { Ok(n + b.len()) })
                    .await
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
