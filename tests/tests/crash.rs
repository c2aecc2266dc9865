//! Invariants 1 and 3 under SIGKILL: a child writes blobs and upload sessions (several at
//! once) and is killed at random moments, many times, on one store. Afterwards every
//! acknowledged blob reads back intact, no blob with a wrong digest exists, every
//! visible blob hashes to its name, and every interrupted session either resumes to a
//! correct blob or is cleanly cancelled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::TryStreamExt;
use rand::{RngExt, SeedableRng};
use stowage_storage::testkit::{Kind, fresh_url, options_for_url, stream_of};
use stowage_storage::{Digest, Error, RepoName, Store, UploadId};
use stowage_tests::{Event, content};

/// Runs the child `iterations` times, killing each run after a random delay.
fn collect_events(url: &str, iterations: usize, seed: u64) -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for i in 0..iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stowage-torture"))
            .args(["write", url, &(seed * 1000 + i as u64).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn torture");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // S3 (moto) is slower to open and to write: give its runs longer, so that
        // enough is acknowledged before the kill to test something.
        let ms = if url.starts_with("s3://") {
            rng.random_range(100..1500)
        } else {
            rng.random_range(20..700)
        };
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            !stderr.contains("panicked"),
            "the writer failed before it was killed:\n{stderr}"
        );
        // The last line may have been cut by the kill; it does not parse and is ignored
        // (it was not acknowledged as far as the parent knows).
        events.extend(
            reader
                .join()
                .unwrap()
                .iter()
                .filter_map(|l| Event::parse(l)),
        );
    }
    events
}

async fn verify(store: &Store, events: &[Event]) {
    let repo = RepoName::parse("torture/repo").unwrap();
    let mut sessions: HashMap<String, (u64, u64, usize, u64, bool)> = HashMap::new();
    let mut acked_blobs = 0;
    for e in events {
        match e {
            Event::Blob {
                digest,
                seed,
                n,
                len,
            } => {
                let d = Digest::parse(digest).unwrap();
                let got = read(store, &d).await;
                assert!(
                    got == content(*seed, *n, *len),
                    "acknowledged blob {d} is damaged"
                );
                acked_blobs += 1;
            }
            Event::BadDigest { claimed } => {
                let d = Digest::parse(claimed).unwrap();
                assert!(
                    store.blob(&d).await.unwrap().is_none(),
                    "{d} was never valid"
                );
            }
            Event::Session { id, seed, n, len } => {
                sessions.insert(id.clone(), (*seed, *n, *len, 0, false));
            }
            Event::Append { id, offset } => sessions.get_mut(id).unwrap().3 = *offset,
            Event::Finished { id } => sessions.get_mut(id).unwrap().4 = true,
            Event::Tagged { .. } => {}
        }
    }
    // Nothing visible is unverified: every committed blob hashes to its name.
    let all = store.blobs().await.unwrap();
    for d in &all {
        let bytes = read(store, d).await;
        assert_eq!(
            &Digest::of(d.algorithm(), &bytes),
            d,
            "visible blob does not match its digest"
        );
    }
    let (mut resumed, mut cancelled, mut finished) = (0, 0, 0);
    for (i, (id, (seed, n, len, acked, done))) in sessions.iter().enumerate() {
        let data = content(*seed, *n, *len);
        let digest = Digest::sha256(&data);
        let id: UploadId = id.parse().unwrap();
        if *done {
            assert_eq!(read(store, &digest).await, data);
            finished += 1;
            continue;
        }
        match store.upload_status(&id, &repo).await {
            Ok(st) => {
                assert!(st.offset >= *acked, "session {id} lost acknowledged bytes");
                assert!(st.offset <= *len as u64);
                if i % 2 == 0 {
                    let rest = data[st.offset as usize..].to_vec();
                    store
                        .finish_upload(
                            &id,
                            &repo,
                            Some(st.offset),
                            stream_of(rest, vec![100_000]),
                            &digest,
                        )
                        .await
                        .unwrap();
                    assert_eq!(read(store, &digest).await, data);
                    resumed += 1;
                } else {
                    store.cancel_upload(&id, &repo).await.unwrap();
                    assert!(matches!(
                        store.upload_status(&id, &repo).await,
                        Err(Error::UploadNotFound(_))
                    ));
                    cancelled += 1;
                }
            }
            // Finished, but killed before it could say so: the blob must be complete.
            Err(Error::UploadNotFound(_)) => {
                assert_eq!(read(store, &digest).await, data);
                finished += 1;
            }
            Err(e) => panic!("session {id}: {e}"),
        }
    }
    eprintln!(
        "verified {acked_blobs} acknowledged blobs, {} visible blobs, sessions: {finished} finished, {resumed} resumed, {cancelled} cancelled",
        all.len()
    );
    assert!(
        acked_blobs > 0 && !sessions.is_empty(),
        "the writer made too little progress to test anything"
    );
}

async fn read(store: &Store, d: &Digest) -> Vec<u8> {
    let r = store
        .read_blob(d, None)
        .await
        .unwrap_or_else(|e| panic!("{d}: {e}"));
    let parts: Vec<bytes::Bytes> = r
        .stream
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{d}: {e}"));
    parts.concat()
}

fn crash_test(kind: Kind, iterations: usize) {
    let (url, _dir) = fresh_url(kind);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("crash test on {url}, seed {seed}");
    let events = collect_events(&url, iterations, seed);
    let rt = stowage_storage::testkit::runtime();
    rt.block_on(async {
        let store = Store::open(options_for_url(&url)).await.unwrap();
        verify(&store, &events).await;
    });
}

#[test]
fn local_disk_survives_sigkill() {
    crash_test(Kind::Local, 40);
}

#[test]
fn s3_survives_sigkill() {
    crash_test(Kind::S3, 12);
}
