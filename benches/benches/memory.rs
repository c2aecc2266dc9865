//! Peak memory while writing one 4 GiB blob to a local-disk store. The data is generated
//! frame by frame as it is sent, as a client would stream it, so the process's peak RSS
//! is the engine's working set: batches, pack buffers, recipe and index entries.
//!
//! `cargo bench --bench memory [-- SIZE_GIB]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use stowage_benches::peak_rss;
use stowage_storage::{Algorithm, Store, StoreOptions};

fn main() {
    let gib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4);
    let total = gib << 30;
    let frame = 1usize << 20;
    let rt = stowage_benches::runtime();
    let dir = tempfile::tempdir().unwrap();
    let before = peak_rss();
    let (elapsed, size) = rt.block_on(async {
        let store = Store::open(StoreOptions::new(format!(
            "file://{}",
            dir.path().display()
        )))
        .await
        .unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
        let frames = (0..total / frame as u64).map(move |_| {
            let mut buf = vec![0u8; frame];
            rng.fill_bytes(&mut buf);
            Ok::<_, std::io::Error>(Bytes::from(buf))
        });
        let start = Instant::now();
        let (info, _) = store
            .put_blob_content(Algorithm::Sha256, futures::stream::iter(frames))
            .await
            .unwrap();
        (start.elapsed(), info.size)
    });
    let peak = peak_rss();
    println!(
        "wrote {} GiB in {:.1} s ({:.0} MB/s including data generation); \
         peak RSS {:.1} MiB (before the write: {:.1} MiB)",
        size >> 30,
        elapsed.as_secs_f64(),
        size as f64 / elapsed.as_secs_f64() / 1e6,
        peak as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
    );
}
