//! Test-support child process. It writes to a store and prints one line per
//! acknowledged operation (see `stowage_tests::Event`), flushing after each, so that a
//! parent that kills it at any moment knows exactly what was acknowledged.
//!
//! ```text
//! stowage-torture write <store-url> <seed>                       until killed
//! stowage-torture tag <store-url> <repo> <tag> <writer> <count>  then exits
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use rand::{RngExt, SeedableRng};
use stowage_storage::testkit::{options_for_url, stream_of};
use stowage_storage::{Digest, RepoName, Store, Tag};
use stowage_tests::{Event, content};

fn report(event: Event) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", event.to_line()).unwrap();
    out.flush().unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store = Store::open(options_for_url(&args[1])).await.unwrap();
    match args[0].as_str() {
        "write" => write_forever(store, args[2].parse().unwrap()).await,
        "tag" => {
            let repo = store.repository(&RepoName::parse(&args[2]).unwrap());
            let tag = Tag::parse(&args[3]).unwrap();
            let count: u32 = args[5].parse().unwrap();
            for i in 0..count {
                let d = Digest::sha256(format!("{}-{i}", args[4]).as_bytes());
                repo.set_tag(&tag, &d).await.unwrap();
                report(Event::Tagged {
                    digest: d.to_string(),
                });
            }
        }
        other => panic!("unknown command {other}"),
    }
}

/// Writes blobs, wrong-digest blobs and upload sessions, in a random mix, with several
/// operations in flight at once, until killed.
async fn write_forever(store: Store, seed: u64) {
    let repo = RepoName::parse("torture/repo").unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..3u64 {
        let store = store.clone();
        let repo = repo.clone();
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (lane << 32));
            let mut n = lane << 40;
            loop {
                n += 1;
                let len = match rng.random_range(0..10) {
                    0 => rng.random_range(0..2_000),
                    1..=6 => rng.random_range(2_000..400_000),
                    _ => rng.random_range(400_000..3_000_000),
                };
                let data = content(seed, n, len);
                let digest = Digest::sha256(&data);
                match rng.random_range(0..10) {
                    0..=3 => {
                        store
                            .put_blob(&digest, stream_of(data, vec![65_536]))
                            .await
                            .unwrap();
                        report(Event::Blob {
                            digest: digest.to_string(),
                            seed,
                            n,
                            len,
                        });
                    }
                    4 => {
                        let claimed = Digest::sha256(format!("wrong {seed} {n}").as_bytes());
                        report(Event::BadDigest {
                            claimed: claimed.to_string(),
                        });
                        let r = store
                            .put_blob(&claimed, stream_of(data, vec![65_536]))
                            .await;
                        assert!(r.is_err(), "a wrong digest was accepted");
                    }
                    _ => {
                        let s = store.start_upload(&repo).await.unwrap();
                        report(Event::Session {
                            id: s.id.to_string(),
                            seed,
                            n,
                            len,
                        });
                        let mut offset = 0;
                        while offset < len {
                            let end = (offset + rng.random_range(1..600_000)).min(len);
                            let st = store
                                .append_upload(
                                    &s.id,
                                    &repo,
                                    offset as u64,
                                    stream_of(data[offset..end].to_vec(), vec![32_768]),
                                )
                                .await
                                .unwrap();
                            offset = end;
                            report(Event::Append {
                                id: s.id.to_string(),
                                offset: st.offset,
                            });
                            // Some sessions are left open, as clients that go away do.
                            if rng.random_range(0..8) == 0 {
                                break;
                            }
                        }
                        if offset == len && rng.random_range(0..4) != 0 {
                            store
                                .finish_upload(
                                    &s.id,
                                    &repo,
                                    Some(len as u64),
                                    stream_of(Vec::new(), vec![]),
                                    &digest,
                                )
                                .await
                                .unwrap();
                            report(Event::Finished {
                                id: s.id.to_string(),
                            });
                        }
                    }
                }
            }
        });
    }
    // The lanes never finish; one that fails ends the process with its panic.
    if let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}
