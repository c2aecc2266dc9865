//! CPU cost of what a write does per byte, on one buffer: SHA-256 (the physical limit a
//! single upload stream cannot beat: the OCI digest must be computed serially), BLAKE3,
//! content-defined cutting, cutting + BLAKE3 per chunk, and both halves of the engine's
//! pipeline run side by side on two threads, as the engine runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest as _;
use stowage_storage::ChunkingParams;

const LEN: usize = 64 << 20;

fn cut_and_hash(params: &ChunkingParams, data: &[u8]) -> usize {
    let mut pos = 0;
    let mut n = 0;
    for len in params.cut(data) {
        let id = blake3::hash(&data[pos..pos + len]);
        n += id.as_bytes()[0] as usize;
        pos += len;
    }
    n
}

fn bench(c: &mut Criterion) {
    let data = stowage_benches::random_data(LEN, 1);
    let params = ChunkingParams::default();
    let mut g = c.benchmark_group("per_byte");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(20);
    g.bench_function("sha256", |b| b.iter(|| sha2::Sha256::digest(&data)));
    g.bench_function("sha512", |b| b.iter(|| sha2::Sha512::digest(&data)));
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&data)));
    g.bench_function("cut_fastcdc_crate", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::new(
                &data,
                params.min as usize,
                params.avg as usize,
                params.max as usize,
            )
            .count()
        })
    });
    g.bench_function("cut_stowage", |b| b.iter(|| params.cut(&data).len()));
    for (min, n) in [(16u32, 1u8), (16, 2)] {
        let p = ChunkingParams {
            min: min << 10,
            normalization: n,
            ..params
        };
        g.bench_function(format!("cut_stowage_min{min}k_n{n}"), |b| {
            b.iter(|| p.cut(&data).len())
        });
    }
    g.bench_function("cut_and_blake3", |b| {
        b.iter(|| cut_and_hash(&params, &data))
    });
    g.bench_function("sha256_parallel_with_cut_and_blake3", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let h = s.spawn(|| sha2::Sha256::digest(&data));
                let n = cut_and_hash(&params, &data);
                (h.join().unwrap(), n)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
