//! Deduplication across versions of an image: a 256 MiB uncompressed layer (a tar of
//! files with realistic sizes) and 9 successors, each changing 1% of the files. Prints
//! what the store holds after all ten against one version.
//!
//! `cargo bench --bench dedup`                one run with the default chunking
//! `cargo bench --bench dedup -- --sweep`     the same series for several chunk sizes

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use stowage_benches::{Layer, frames};
use stowage_storage::{Algorithm, ChunkingParams, Store, StoreOptions};

const LAYER: usize = 256 << 20;
const VERSIONS: usize = 10;

fn run(rt: &tokio::runtime::Runtime, layers: &[Bytes], chunking: ChunkingParams) {
    let (stats, secs) = rt.block_on(async {
        let mut o = StoreOptions::new("memory://");
        o.chunking = Some(chunking);
        let store = Store::open(o).await.unwrap();
        let start = Instant::now();
        for l in layers {
            store
                .put_blob_content(Algorithm::Sha256, frames(l, 1 << 20))
                .await
                .unwrap();
        }
        (store.stats().await.unwrap(), start.elapsed().as_secs_f64())
    });
    let one = layers[0].len() as f64;
    println!(
        "chunks {:>3}/{:>3}/{:>4} KiB n{}: {} versions, logical {:.0} MiB, stored {:.1} MiB = {:.3}x one version; \
         {} chunks indexed; {:.0} MB/s",
        chunking.min >> 10,
        chunking.avg >> 10,
        chunking.max >> 10,
        chunking.normalization,
        layers.len(),
        stats.logical_bytes as f64 / (1 << 20) as f64,
        stats.physical_bytes as f64 / (1 << 20) as f64,
        stats.physical_bytes as f64 / one,
        stats.indexed_chunks,
        stats.logical_bytes as f64 / secs / 1e6,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sweep = args.iter().any(|a| a == "--sweep");
    // `--params min,avg,max,normalization` (KiB, KiB, KiB, level), repeatable.
    let explicit: Vec<ChunkingParams> = args
        .windows(2)
        .filter(|w| w[0] == "--params")
        .map(|w| {
            let v: Vec<u32> = w[1].split(',').map(|x| x.parse().unwrap()).collect();
            ChunkingParams {
                min: v[0] << 10,
                avg: v[1] << 10,
                max: v[2] << 10,
                normalization: v[3] as u8,
            }
        })
        .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
    let mut layer = Layer::generate(LAYER, 1);
    println!(
        "layer: {} files, mean {:.1} KiB; each version changes 1% of them",
        layer.files.len(),
        LAYER as f64 / layer.files.len() as f64 / 1024.0
    );
    let mut layers = Vec::new();
    for _ in 0..VERSIONS {
        layers.push(Bytes::from(layer.to_tar().unwrap()));
        layer = layer.next_version(0.01, &mut rng);
    }
    let rt = stowage_benches::runtime();
    if !explicit.is_empty() {
        for p in explicit {
            run(&rt, &layers, p);
        }
    } else if sweep {
        for avg_kib in [16u32, 32, 64, 128, 256] {
            let avg = avg_kib << 10;
            run(
                &rt,
                &layers,
                ChunkingParams {
                    min: avg / 4,
                    avg,
                    max: avg * 4,
                    normalization: 1,
                },
            );
        }
    } else {
        run(&rt, &layers, ChunkingParams::default());
    }
}
