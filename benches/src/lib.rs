//! Workloads shared by the benchmarks: fast incompressible data, frame streams shaped
//! like HTTP bodies, synthetic image layers whose versions change a fraction of their
//! files, and peak-memory measurement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
pub use stowage_loadgen::data::{FileSpec, Layer, random_data};

/// A body as a server receives one: a stream of frames (1 MiB each here).
pub fn frames(
    data: &Bytes,
    frame: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let data = data.clone();
    let n = data.len().div_ceil(frame.max(1));
    futures::stream::iter((0..n).map(move |i| {
        let start = i * frame;
        Ok(data.slice(start..(start + frame).min(data.len())))
    }))
}

/// The runtime the benchmarks drive the engine with: two workers, as on the build
/// machine's two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store URL: `memory://`, or a local store in `dir`.
pub fn store_url(memory: bool, dir: &tempfile::TempDir) -> String {
    if memory {
        "memory://".into()
    } else {
        format!("file://{}", dir.path().display())
    }
}

/// Opens a new store at `url` and times one write of `data` (in 1 MiB frames) into it.
pub fn timed_write(rt: &tokio::runtime::Runtime, url: &str, data: &Bytes) -> std::time::Duration {
    rt.block_on(async {
        let store = stowage_storage::Store::open(stowage_storage::StoreOptions::new(url))
            .await
            .unwrap();
        let start = std::time::Instant::now();
        store
            .put_blob_content(stowage_storage::Algorithm::Sha256, frames(data, 1 << 20))
            .await
            .unwrap();
        start.elapsed()
    })
}

/// Peak resident set size of this process so far, in bytes (Linux: `VmHWM`).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}
