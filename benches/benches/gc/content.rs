//! The synthetic registry both stores are filled with: deterministic from a seed and
//! generated image by image, so that only the pool of shared base layers is held in
//! memory. Also what a correct collection must leave of it.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use stowage_storage::Digest;

/// Media type of the image manifests (OCI, with `mediaType` set, which Distribution 2.8
/// needs to pick its OCI handler).
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Repositories per namespace.
const REPOS_PER_NAMESPACE: usize = 20;

/// The shape of the content. Scale 1: 2,000 repositories of 10 images, each with 6
/// unique layers of 20 KiB (above Stowage's 16 KiB inline limit, so they go to packs)
/// and 2 layers from a pool of 500 shared 64 KiB base layers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Params {
    /// The factor on repositories and the pool.
    pub scale: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// Repositories.
    pub repos: usize,
    /// Images per repository; the even ones are tagged.
    pub images: usize,
    /// Unique layers per image.
    pub unique: usize,
    /// Shared layers per image, drawn from the pool.
    pub shared: usize,
    /// Shared base layers to draw from.
    pub pool: usize,
    /// Bytes of a unique layer.
    pub layer_size: usize,
    /// Bytes of a shared layer.
    pub shared_size: usize,
}

impl Params {
    /// The default content at `scale`.
    pub fn at_scale(scale: f64, seed: u64) -> Params {
        let shared = 2;
        Params {
            scale,
            seed,
            repos: ((2000.0 * scale).round() as usize).max(1),
            images: 10,
            unique: 6,
            shared,
            pool: ((500.0 * scale).round() as usize).max(shared),
            layer_size: 20 << 10,
            shared_size: 64 << 10,
        }
    }

    /// Namespaces the repositories are spread over.
    pub fn namespaces(&self) -> usize {
        self.repos.div_ceil(REPOS_PER_NAMESPACE)
    }

    /// Every image (manifest) of every repository.
    pub fn manifests(&self) -> usize {
        self.repos * self.images
    }

    /// The images that are tagged.
    pub fn tagged(&self) -> usize {
        self.repos * self.images.div_ceil(2)
    }

    /// The name of repository `r`.
    pub fn repo_name(&self, r: usize) -> String {
        format!("ns{:03}/repo{r:05}", r / REPOS_PER_NAMESPACE)
    }

    /// The tag of image `i` of a repository, if it has one: even images are tagged
    /// `t0`, `t1`, ..., odd ones are pushed by digest only.
    pub fn tag(i: usize) -> Option<String> {
        i.is_multiple_of(2).then(|| format!("t{}", i / 2))
    }

    /// Every (repository, image) pair, repository by repository.
    pub fn all_images(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let images = self.images;
        (0..self.repos).flat_map(move |r| (0..images).map(move |i| (r, i)))
    }

    /// The pool layers image `i` of repository `r` uses: `shared` distinct indices.
    pub fn shared_of(&self, r: usize, i: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(mix(&[self.seed, 1, r as u64, i as u64]));
        let mut picked = Vec::with_capacity(self.shared);
        while picked.len() < self.shared.min(self.pool) {
            let k = rng.random_range(0..self.pool);
            if !picked.contains(&k) {
                picked.push(k);
            }
        }
        picked
    }

    /// The pool layers some image uses, in order: only these are written.
    pub fn used_pool(&self) -> Vec<usize> {
        let used: BTreeSet<usize> = self
            .all_images()
            .flat_map(|(r, i)| self.shared_of(r, i))
            .collect();
        used.into_iter().collect()
    }

    /// The shared base layers (only those some image uses hold bytes).
    pub fn pool_layers(&self) -> Pool {
        let mut layers = vec![None; self.pool];
        for k in self.used_pool() {
            let bytes = random_bytes(self.shared_size, mix(&[self.seed, 2, k as u64]));
            layers[k] = Some((Digest::sha256(&bytes), bytes));
        }
        Pool { layers }
    }

    /// Image `i` of repository `r`, bytes and all.
    pub fn image(&self, pool: &Pool, r: usize, i: usize) -> Image {
        let repo = self.repo_name(r);
        let config = Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2026-01-01T00:00:00Z\",\
             \"config\":{{\"Env\":[\"PATH=/usr/bin\"],\"Labels\":{{\"bench.repo\":\"{repo}\",\
             \"bench.image\":\"{i}\",\"bench.seed\":\"{}\"}}}},\"rootfs\":{{\"type\":\"layers\"}}}}",
            self.seed
        ));
        let config = (Digest::sha256(&config), config);
        let layers: Vec<(Digest, Bytes)> = (0..self.unique)
            .map(|u| {
                let seed = mix(&[self.seed, 3, r as u64, i as u64, u as u64]);
                let bytes = random_bytes(self.layer_size, seed);
                (Digest::sha256(&bytes), bytes)
            })
            .collect();
        let shared = self.shared_of(r, i);
        let descriptor = |media: &str, d: &Digest, size: usize| {
            format!("{{\"mediaType\":\"{media}\",\"digest\":\"{d}\",\"size\":{size}}}")
        };
        let mut layer_descriptors: Vec<String> = shared
            .iter()
            .map(|&k| {
                let (d, b) = pool.get(k);
                descriptor(LAYER_TYPE, d, b.len())
            })
            .collect();
        layer_descriptors.extend(
            layers
                .iter()
                .map(|(d, b)| descriptor(LAYER_TYPE, d, b.len())),
        );
        let manifest = Bytes::from(format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{},\"layers\":[{}]}}",
            descriptor(CONFIG_TYPE, &config.0, config.1.len()),
            layer_descriptors.join(",")
        ));
        Image {
            repo,
            tag: Params::tag(i),
            config,
            layers,
            shared,
            manifest: (Digest::sha256(&manifest), manifest),
        }
    }

    /// What a collection that deletes every untagged manifest must leave and delete.
    pub fn expected(&self) -> Expected {
        let used = self.used_pool();
        let mut by_tagged: HashSet<usize> = HashSet::new();
        let mut links_deleted = 0u64;
        for r in 0..self.repos {
            let mut all: HashSet<usize> = HashSet::new();
            let mut tagged: HashSet<usize> = HashSet::new();
            for i in 0..self.images {
                let shared = self.shared_of(r, i);
                if Params::tag(i).is_some() {
                    tagged.extend(shared.iter().copied());
                }
                all.extend(shared);
            }
            links_deleted += all.difference(&tagged).count() as u64;
            by_tagged.extend(tagged);
        }
        let manifests = self.manifests() as u64;
        let tagged = self.tagged() as u64;
        let untagged = manifests - tagged;
        let per_image = 2 + self.unique as u64; // manifest, config, unique layers
        let pool_dead = (used.len() - by_tagged.len()) as u64;
        Expected {
            manifests,
            tagged,
            blobs: manifests * per_image + used.len() as u64,
            layer_bytes: manifests * (self.unique * self.layer_size) as u64
                + (used.len() * self.shared_size) as u64,
            pool_used: used.len() as u64,
            manifests_deleted: untagged,
            blobs_deleted: untagged * per_image + pool_dead,
            blob_links_deleted: untagged * (1 + self.unique as u64) + links_deleted,
            packs_deleted: untagged * self.unique as u64 + pool_dead,
        }
    }
}

/// What the content holds, and what collecting it must delete.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Expected {
    /// Manifests (images).
    pub manifests: u64,
    /// Tagged manifests: what a collection keeps.
    pub tagged: u64,
    /// Distinct blobs: manifests, configs, unique layers, used pool layers.
    pub blobs: u64,
    /// Bytes of the layers (unique and used shared).
    pub layer_bytes: u64,
    /// Pool layers some image uses.
    pub pool_used: u64,
    /// Manifests a collection deletes: the untagged ones.
    pub manifests_deleted: u64,
    /// Blobs it deletes: the untagged images' manifests, configs and unique layers, and
    /// pool layers no tagged image uses.
    pub blobs_deleted: u64,
    /// Blob links (Stowage) it deletes: configs and unique layers of untagged images,
    /// and shared layers that only untagged images of the repository use.
    pub blob_links_deleted: u64,
    /// Packs (Stowage, one per layer blob written) it deletes.
    pub packs_deleted: u64,
}

/// The shared base layers, by index (`None`: used by no image, never written).
pub struct Pool {
    layers: Vec<Option<(Digest, Bytes)>>,
}

impl Pool {
    /// Layer `k`, which some image uses.
    pub fn get(&self, k: usize) -> (&Digest, &Bytes) {
        let (d, b) = self.layers[k]
            .as_ref()
            .expect("only used pool layers are asked for");
        (d, b)
    }

    /// The layers some image uses.
    pub fn used(&self) -> impl Iterator<Item = (&Digest, &Bytes)> {
        self.layers.iter().flatten().map(|(d, b)| (d, b))
    }
}

/// One image: its config, unique layers, shared layers (pool indices) and manifest.
pub struct Image {
    /// Its repository.
    pub repo: String,
    /// Its tag, if it has one.
    pub tag: Option<String>,
    /// The config blob.
    pub config: (Digest, Bytes),
    /// Its own layers.
    pub layers: Vec<(Digest, Bytes)>,
    /// The pool layers it uses.
    pub shared: Vec<usize>,
    /// The manifest.
    pub manifest: (Digest, Bytes),
}

impl Image {
    /// Bytes of its config, unique layers and manifest (the shared layers are counted
    /// once, with the pool).
    pub fn own_bytes(&self) -> u64 {
        (self.config.1.len()
            + self.manifest.1.len()
            + self.layers.iter().map(|(_, b)| b.len()).sum::<usize>()) as u64
    }
}

/// splitmix64 over the parts: independent seeds for every piece of content.
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        let mut z = h ^ p.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}
