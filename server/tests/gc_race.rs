//! The collector's race test: a push storm from several clients through two `stowage
//! serve` processes sharing one store (local disk, and S3 on moto), with tags moved and
//! deleted and blobs skipped because a HEAD said they exist, while `stowage gc` runs
//! again and again with no grace period. Afterwards every tag still present names an
//! image whose manifest PUT was acknowledged, and that image pulls byte for byte from
//! both servers; every tag never deleted is still there; `stowage fsck` is clean; and a
//! final collection leaves nothing unreferenced behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_tests::server::{Server, fresh_storage};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REPOS: [&str; 3] = ["storm/a", "storm/b", "other/c"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_stowage").as_ref()
}

/// `stowage <args> --storage <storage>`, pointed at moto for S3 stores.
fn stowage(storage: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).args(["--storage", storage]);
    if storage.starts_with("s3://") {
        cmd.args([
            "--s3-endpoint",
            &std::env::var("STOWAGE_TEST_S3_ENDPOINT").expect("run scripts/test"),
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1");
    }
    cmd.env_remove("STOWAGE_CONFIG")
        .output()
        .expect("run stowage")
}

/// A small deterministic generator, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

fn sha256(data: &[u8]) -> String {
    stowage_storage::Digest::sha256(data).to_string()
}

/// Everything clients were told was stored: blobs by digest, manifests by digest.
#[derive(Default)]
struct Acked {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// (repo, tag) that some client deleted at least once.
    deleted_tags: HashSet<(String, String)>,
    /// (repo, tag) some PUT was acknowledged for.
    tagged: HashSet<(String, String)>,
    pushes: u64,
    retries: u64,
}

struct Client {
    http: reqwest::Client,
    servers: Vec<String>,
}

impl Client {
    fn pick<'a>(&'a self, rng: &mut Rng) -> &'a str {
        &self.servers[rng.below(self.servers.len() as u64) as usize]
    }

    /// Pushes a blob unless a HEAD says the repository has it (the dangerous path: the
    /// client then relies on content the collector may have judged dead).
    async fn ensure_blob(&self, rng: &mut Rng, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let server = self.pick(rng);
        let head = self
            .http
            .head(format!("{server}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        if head.status() == 200 {
            return digest;
        }
        assert_eq!(head.status(), 404, "HEAD blob");
        let server = self.pick(rng);
        let post = self
            .http
            .post(format!("{server}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            post.status(),
            202,
            "POST upload: {}",
            post.text().await.unwrap()
        );
        let mut location = post.headers()["location"].to_str().unwrap().to_string();
        let url = |loc: &str, server: &str| {
            if loc.starts_with("http") {
                loc.to_string()
            } else {
                format!("{server}{loc}")
            }
        };
        let mut body: &[u8] = data;
        if rng.below(2) == 0 && data.len() > 1000 {
            // Chunked, each PATCH through either server.
            let half = data.len() / 2;
            let server = self.pick(rng);
            let patch = self
                .http
                .patch(url(&location, server))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("0-{}", half - 1))
                .body(data[..half].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                patch.status(),
                202,
                "PATCH: {}",
                patch.text().await.unwrap()
            );
            location = patch.headers()["location"].to_str().unwrap().to_string();
            body = &data[half..];
        }
        let server = self.pick(rng);
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{}{sep}digest={digest}", url(&location, server)))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "PUT blob: {}", put.text().await.unwrap());
        digest
    }
}

async fn storm_client(
    client: Arc<Client>,
    acked: Arc<Mutex<Acked>>,
    seed: u64,
    until: Instant,
    bases: Arc<Vec<Vec<u8>>>,
) {
    let mut rng = Rng(seed | 1);
    while Instant::now() < until {
        let repo = REPOS[rng.below(REPOS.len() as u64) as usize];
        let tag = TAGS[rng.below(TAGS.len() as u64) as usize];
        let server = client.pick(&mut rng).to_string();
        if rng.below(10) == 0 {
            let resp = client
                .http
                .delete(format!("{server}/v2/{repo}/manifests/{tag}"))
                .send()
                .await
                .unwrap();
            assert!(
                matches!(resp.status().as_u16(), 202 | 404),
                "DELETE tag: {}",
                resp.status()
            );
            acked
                .lock()
                .unwrap()
                .deleted_tags
                .insert((repo.to_string(), tag.to_string()));
            continue;
        }
        // A shared base layer (so HEADs find it, and it lives and dies with tags), a
        // unique layer, a unique config.
        let base = bases[rng.below(bases.len() as u64) as usize].clone();
        let unique_len = 2_000 + rng.below(150_000) as usize;
        let unique = rng.bytes(unique_len);
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{}}}",
            rng.next()
        )
        .into_bytes();
        let untagged = rng.below(8) == 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut layers = Vec::new();
            for l in [&base, &unique] {
                layers.push((client.ensure_blob(&mut rng, repo, l).await, l.len()));
            }
            let config_d = client.ensure_blob(&mut rng, repo, &config).await;
            let layer_json: Vec<String> = layers
                .iter()
                .map(|(d, n)| format!("{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{n}}}"))
                .collect();
            let manifest = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\"layers\":[{}]}}",
                config.len(),
                layer_json.join(",")
            )
            .into_bytes();
            let digest = sha256(&manifest);
            let reference = if untagged {
                digest.clone()
            } else {
                tag.to_string()
            };
            let server = client.pick(&mut rng);
            let resp = client
                .http
                .put(format!("{server}/v2/{repo}/manifests/{reference}"))
                .header("content-type", MANIFEST)
                .body(manifest.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            if status == 201 {
                let mut a = acked.lock().unwrap();
                a.pushes += 1;
                a.blobs.insert(layers[0].0.clone(), base.clone());
                a.blobs.insert(layers[1].0.clone(), unique.clone());
                a.blobs.insert(config_d.clone(), config.clone());
                let mut refs: Vec<String> = layers.into_iter().map(|(d, _)| d).collect();
                refs.push(config_d);
                a.manifests.insert(digest, (manifest, refs));
                if !untagged {
                    a.tagged.insert((repo.to_string(), tag.to_string()));
                }
                break;
            }
            // A blob the HEAD found was swept before the manifest came: what a client
            // sees from any registry whose content was deleted, and pushes again.
            assert!(
                status == 400 && text.contains("MANIFEST_BLOB_UNKNOWN") && attempt < 5,
                "manifest PUT: {status} {text}"
            );
            acked.lock().unwrap().retries += 1;
        }
    }
}

async fn storm(s3: bool) {
    let (storage, _guard) = fresh_storage(s3);
    let a = Server::start(bin(), &storage, &[]);
    let b = Server::start(bin(), &storage, &[]);
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        servers: vec![a.url(), b.url()],
    });
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut seed_rng = Rng(0x5eed_0000 + u64::from(s3));
    let bases: Arc<Vec<Vec<u8>>> = Arc::new((0..4).map(|_| seed_rng.bytes(120_000)).collect());
    let storm_for = Duration::from_secs(30);
    let until = Instant::now() + storm_for;
    let clients: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(storm_client(
                client.clone(),
                acked.clone(),
                seed_rng.next() + i,
                until,
                bases.clone(),
            ))
        })
        .collect();
    // Collections, one after another, for as long as the storm lasts.
    let gc_storage = storage.clone();
    let collector = tokio::task::spawn_blocking(move || {
        let mut reports = Vec::new();
        while Instant::now() < until {
            let out = stowage(
                &gc_storage,
                &[
                    "gc",
                    "--grace",
                    "0s",
                    "--write-deadline",
                    "1s",
                    "--keep-tag-revisions",
                    "1",
                    "--json",
                ],
            );
            assert!(
                out.status.success(),
                "gc: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            reports.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
        }
        reports
    });
    for c in clients {
        c.await.unwrap();
    }
    let reports = collector.await.unwrap();
    let deleted: u64 = reports
        .iter()
        .map(|r| {
            r["manifests"]["deleted"].as_u64().unwrap() + r["blobs"]["deleted"].as_u64().unwrap()
        })
        .sum();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "{} pushes acknowledged, {} manifest retries, {} collections deleting {deleted} manifests and blobs, {} rescued",
        acked.pushes,
        acked.retries,
        reports.len(),
        reports
            .iter()
            .map(|r| r["rescued"].as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(
        reports.len() >= 2,
        "the collector ran {} times",
        reports.len()
    );
    assert!(
        deleted > 0,
        "the collections deleted nothing: the test proves nothing"
    );
    assert!(acked.pushes >= 10, "only {} pushes", acked.pushes);

    // Every tag present names an acknowledged image, whole, from both servers.
    let http = reqwest::Client::new();
    let mut checked = 0;
    for repo in REPOS {
        let list: serde_json::Value = http
            .get(format!("{}/v2/{repo}/tags/list", a.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let present: HashSet<String> = list["tags"]
            .as_array()
            .map(|t| t.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        for tag in TAGS {
            let key = (repo.to_string(), tag.to_string());
            if acked.tagged.contains(&key) && !acked.deleted_tags.contains(&key) {
                assert!(
                    present.contains(tag),
                    "{repo}:{tag} was pushed, never deleted, and is gone"
                );
            }
        }
        for tag in &present {
            for server in [a.url(), b.url()] {
                let resp = http
                    .get(format!("{server}/v2/{repo}/manifests/{tag}"))
                    .header("accept", MANIFEST)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "{repo}:{tag}");
                let bytes = resp.bytes().await.unwrap();
                let digest = sha256(&bytes);
                let (expected, refs) = acked
                    .manifests
                    .get(&digest)
                    .unwrap_or_else(|| panic!("{repo}:{tag} names {digest}, never acknowledged"));
                assert_eq!(&bytes[..], &expected[..]);
                for d in refs {
                    let blob = http
                        .get(format!("{server}/v2/{repo}/blobs/{d}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(blob.status(), 200, "{repo}:{tag} blob {d} via {server}");
                    assert!(
                        blob.bytes().await.unwrap()[..] == acked.blobs[d][..],
                        "{repo}:{tag} blob {d} differs"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no tag survived to check");

    // The store is consistent, and once quiet, one collection leaves no garbage.
    let fsck = stowage(&storage, &["fsck", "--json"]);
    assert!(
        fsck.status.success(),
        "fsck after the storm:\n{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let last = stowage(
        &storage,
        &[
            "gc",
            "--grace",
            "0s",
            "--write-deadline",
            "0s",
            "--keep-tag-revisions",
            "1",
            "--json",
        ],
    );
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let fsck: serde_json::Value =
        serde_json::from_slice(&stowage(&storage, &["fsck", "--json"]).stdout).unwrap();
    assert_eq!(fsck["clean"], true, "{fsck}");
    assert_eq!(fsck["unreferenced_packs"], 0, "{fsck}");
    let dry: serde_json::Value = serde_json::from_slice(
        &stowage(
            &storage,
            &[
                "gc",
                "--grace",
                "0s",
                "--keep-tag-revisions",
                "1",
                "--dry-run",
                "--json",
            ],
        )
        .stdout,
    )
    .unwrap();
    for kind in ["manifests", "blob_links", "blobs", "packs", "uploads"] {
        assert_eq!(dry[kind]["deleted"], 0, "{kind} left behind: {dry}");
    }
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_storm_through_two_servers_survives_repeated_collection_on_local_disk() {
    storm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_storm_through_two_servers_survives_repeated_collection_on_s3() {
    storm(true).await;
}
