//! Test content: incompressible bytes, and synthetic image layers (tars of many files)
//! whose versions change a fraction of their files, as real image updates do.

use rand::{Rng, RngExt, SeedableRng};

/// `len` incompressible bytes from `seed`, generated fast (benchmarks make gigabytes).
pub fn random_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// One file of a synthetic layer.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Path in the tar.
    pub path: String,
    /// Size in bytes.
    pub size: usize,
    /// Seed of its content; a changed file gets a new one.
    pub seed: u64,
    /// Modification time written to its tar header.
    pub mtime: u64,
}

/// A layer: files in a fixed order, as a tar of a root file system.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The files, sorted by path.
    pub files: Vec<FileSpec>,
}

impl Layer {
    /// About `total` bytes of files whose sizes follow a log-normal distribution with a
    /// median of 4 KiB and a mean near 30 KiB (typical of /usr in distribution images),
    /// capped at 8 MiB.
    pub fn generate(total: usize, seed: u64) -> Layer {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut files = Vec::new();
        let mut sum = 0;
        let mut i = 0u64;
        while sum < total {
            let size = lognormal(&mut rng, (4096f64).ln(), 2.0).min(8.0 * 1024.0 * 1024.0) as usize;
            let size = size.min(total - sum).max(1);
            files.push(FileSpec {
                path: format!("usr/lib/pkg{:03}/file{:06}", i % 500, i),
                size,
                seed: rng.random(),
                mtime: 1_700_000_000,
            });
            sum += size;
            i += 1;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Layer { files }
    }

    /// The next version: `fraction` of the files get new content, with sizes within
    /// 10% of the old ones, and a new modification time.
    pub fn next_version(&self, fraction: f64, rng: &mut impl Rng) -> Layer {
        let mut files = self.files.clone();
        let changes = ((files.len() as f64 * fraction).round() as usize).max(1);
        for _ in 0..changes {
            let i = rng.random_range(0..files.len());
            let f = &mut files[i];
            let factor: f64 = rng.random_range(0.9..1.1);
            f.size = ((f.size as f64 * factor) as usize).max(1);
            f.seed = rng.random();
            f.mtime += 86_400;
        }
        Layer { files }
    }

    /// The layer as an uncompressed tar.
    pub fn to_tar(&self) -> std::io::Result<Vec<u8>> {
        let total: usize = self.files.iter().map(|f| f.size + 1024).sum();
        let mut builder = tar::Builder::new(Vec::with_capacity(total + 10_240));
        for f in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(f.size as u64);
            header.set_mode(0o644);
            header.set_mtime(f.mtime);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, &f.path, &random_data(f.size, f.seed)[..])?;
        }
        builder.into_inner()
    }
}

fn lognormal(rng: &mut impl Rng, mu: f64, sigma: f64) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mu + sigma * z).exp()
}
