//! Timed writes of pre-generated data to a local-disk store, against SHA-256 of the same
//! bytes on one core, in one process: `cargo bench --bench write_once -- [MIB] [REPS]
//! [--memory]`. Also the target for `perf record`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use sha2::Digest as _;
use stowage_benches::{random_data, runtime, store_url, timed_write};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mib = nums.first().copied().unwrap_or(1024);
    let reps = nums.get(1).copied().unwrap_or(3);
    let memory = args.iter().any(|a| a == "--memory");
    let rt = runtime();
    let (mut engine, mut sha) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let data = Bytes::from(random_data(mib << 20, 99 + rep as u64));
        let start = Instant::now();
        std::hint::black_box(sha2::Sha256::digest(&data));
        sha.push(mib as f64 / start.elapsed().as_secs_f64());
        let dir = tempfile::tempdir().unwrap();
        let secs = timed_write(&rt, &store_url(memory, &dir), &data).as_secs_f64();
        engine.push(mib as f64 / secs);
    }
    let (e, s) = (median(engine.clone()), median(sha.clone()));
    println!(
        "engine write ({}): median {e:.0} MiB/s of {engine:.0?}; sha256 one core: median {s:.0} MiB/s; ratio {:.2}",
        if memory { "memory" } else { "local disk" },
        e / s
    );
}
