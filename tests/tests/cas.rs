//! Tag updates are compare-and-swap between processes: several processes move one tag
//! at once, and afterwards its history holds every acknowledged update exactly once.
//! On local disk this is what the per-key lock file is for (LocalFileSystem has no
//! conditional update); on S3 it is If-Match.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use stowage_storage::testkit::{Kind, fresh_url, options_for_url, runtime};
use stowage_storage::{RepoName, Store, Tag};
use stowage_tests::Event;

fn processes_race_on_one_tag(kind: Kind, processes: usize, updates: usize) {
    let (url, _dir) = fresh_url(kind);
    let children: Vec<_> = (0..processes)
        .map(|w| {
            Command::new(env!("CARGO_BIN_EXE_stowage-torture"))
                .args([
                    "tag",
                    &url,
                    "cas/repo",
                    "latest",
                    &format!("w{w}"),
                    &updates.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn torture")
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    for mut child in children {
        let out = child.stdout.take().unwrap();
        for line in BufReader::new(out).lines() {
            if let Some(Event::Tagged { digest }) = Event::parse(&line.unwrap()) {
                acknowledged.insert(digest);
            }
        }
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(acknowledged.len(), processes * updates);
    runtime().block_on(async {
        let store = Store::open(options_for_url(&url)).await.unwrap();
        let repo = store.repository(&RepoName::parse("cas/repo").unwrap());
        let record = repo
            .tag(&Tag::parse("latest").unwrap())
            .await
            .unwrap()
            .unwrap();
        let history: Vec<String> = record
            .history
            .iter()
            .map(|e| e.digest.to_string())
            .collect();
        let distinct: BTreeSet<String> = history.iter().cloned().collect();
        assert_eq!(
            history.len(),
            processes * updates,
            "an update was lost or doubled"
        );
        assert_eq!(distinct, acknowledged);
        assert_eq!(record.generation as usize, processes * updates);
    });
}

#[test]
fn local_disk_tag_updates_from_many_processes() {
    processes_race_on_one_tag(Kind::Local, 4, 25);
}

#[test]
fn s3_tag_updates_from_many_processes() {
    processes_race_on_one_tag(Kind::S3, 4, 10);
}
