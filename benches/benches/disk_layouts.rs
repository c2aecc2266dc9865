//! Why chunks are stored in packs: the cost on this machine's disk of the ways a store
//! could lay chunks out. Writes 1 GiB as (a) one file per 32 KiB chunk, each synced and
//! renamed into place as LocalFileSystem does with fsync on; (b) 32 MiB files, buffered
//! and synced; (c) 32 MiB files written with O_DIRECT, as Stowage writes packs.
//!
//! `cargo bench --bench disk_layouts`   (uses TMPDIR, which must be on the disk)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

const TOTAL: usize = 1 << 30;

fn per_file(dir: &std::path::Path, size: usize, threads: usize, direct: bool, sync: bool) -> f64 {
    let n = TOTAL / size;
    // An aligned copy of the data for O_DIRECT: over-allocate and start at a 4 KiB boundary.
    let raw = stowage_benches::random_data(size + 4096, 1);
    let off = raw.as_ptr().align_offset(4096);
    let data = &raw[off..off + size];
    for s in 0..256 {
        std::fs::create_dir_all(dir.join(format!("{s:02x}"))).unwrap();
    }
    let start = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..threads {
            sc.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let sub = dir.join(format!("{:02x}", i % 256));
                    let tmp = sub.join(format!("{i}.tmp"));
                    let mut o = std::fs::OpenOptions::new();
                    o.write(true).create(true).truncate(true);
                    if direct {
                        o.custom_flags(libc_o_direct());
                    }
                    let mut f = o.open(&tmp).unwrap();
                    if direct {
                        f.write_all_at(data, 0).unwrap();
                    } else {
                        f.write_all(data).unwrap();
                    }
                    if sync {
                        f.sync_data().unwrap();
                    }
                    drop(f);
                    std::fs::rename(&tmp, sub.join(format!("{i}"))).unwrap();
                    if sync {
                        std::fs::File::open(&sub).unwrap().sync_all().unwrap();
                    }
                }
            });
        }
    });
    TOTAL as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64
}

/// O_DIRECT's value on Linux x86-64 (the libc crate is not a dependency here).
fn libc_o_direct() -> i32 {
    0o40000
}

fn main() {
    let cases: [(&str, usize, usize, bool, bool); 4] = [
        (
            "one file per 32 KiB chunk, fsync each, 1 thread",
            32 << 10,
            1,
            false,
            true,
        ),
        (
            "one file per 32 KiB chunk, fsync each, 8 threads",
            32 << 10,
            8,
            false,
            true,
        ),
        (
            "32 MiB files, buffered, fsync each, 2 threads",
            32 << 20,
            2,
            false,
            true,
        ),
        (
            "32 MiB files, O_DIRECT, fdatasync each, 2 threads",
            32 << 20,
            2,
            true,
            true,
        ),
    ];
    for (name, size, threads, direct, sync) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mibs = per_file(dir.path(), size, threads, direct, sync);
        println!("{name:<52} {mibs:>6.0} MiB/s");
    }
}
