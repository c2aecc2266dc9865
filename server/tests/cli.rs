//! The `stowage` binary's engine commands, run as an operator would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn stowage(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
        .current_dir(dir)
        .args(args)
        .env_remove("STOWAGE_STORAGE")
        .output()
        .expect("run stowage")
}

#[test]
fn put_get_and_stats_on_the_default_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut b = a.clone();
    b.extend_from_slice(b"one more line\n");
    std::fs::write(dir.path().join("a"), &a).unwrap();
    std::fs::write(dir.path().join("b"), &b).unwrap();

    let out = stowage(dir.path(), &["put", "--json", "a", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["size"], b.len() as u64);
    assert!(lines[1]["deduplicated_bytes"].as_u64().unwrap() > 2_500_000);
    assert!(
        dir.path().join("data/stowage.json").exists(),
        "default store is ./data"
    );

    let digest = lines[1]["digest"].as_str().unwrap();
    let out = stowage(dir.path(), &["get", digest, "-o", "b.out"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(dir.path().join("b.out")).unwrap(), b);

    let out = stowage(dir.path(), &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["blobs"], 2);
    assert_eq!(stats["logical_bytes"], (a.len() + b.len()) as u64);
    assert!(stats["physical_bytes"].as_u64().unwrap() < (a.len() + 300_000) as u64);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["get", "sha256:abc"][..],
        &["get", "md5:d41d8cd98f00b204e9800998ecf8427e"],
        &[
            "get",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
        &["put", "does-not-exist"],
        &["--storage", "ftp://x", "stats"],
    ] {
        let out = stowage(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("stowage: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `stowage fsck` on a store holding a pushed image: clean (exit 0); with a pack file
/// deleted underneath, the recipes that need it are reported missing-pack (exit 1).
#[tokio::test]
async fn fsck_reports_a_clean_store_and_a_missing_pack() {
    use stowage_storage::{RepoName, Store, StoreOptions, Tag};
    use stowage_tests::oci::{Image, ImageSpec, tar};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layer: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let image = Image::build(&ImageSpec {
        layers: vec![(tar(&[("app/data.bin", &layer)]), false)],
        labels: Default::default(),
        env: vec![],
        cmd: vec!["/app"],
        architecture: "amd64",
    });
    {
        let store = Store::open(StoreOptions::new(data.display().to_string()))
            .await
            .unwrap();
        let repo = store.repository(&RepoName::parse("fsck/app").unwrap());
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            let bytes = bytes::Bytes::from(blob.bytes.clone());
            let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
            repo.put_blob(&blob.digest, body).await.unwrap();
        }
        let m = &image.manifest;
        repo.put_manifest(
            &m.digest,
            &m.media_type,
            m.bytes.clone().into(),
            None,
            &Default::default(),
        )
        .await
        .unwrap();
        repo.set_tag(&Tag::parse("latest").unwrap(), &m.digest)
            .await
            .unwrap();
    }

    let out = stowage(dir.path(), &["fsck", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["examined"]["manifests"], 1);
    assert_eq!(report["examined"]["tags"], 1);
    assert_eq!(report["examined"]["recipes"], 3);

    let packs: Vec<_> = std::fs::read_dir(data.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!packs.is_empty());
    for pack in &packs {
        std::fs::remove_file(pack).unwrap();
    }
    let layer_recipe = format!(
        "blobs/sha256/{}/{}",
        &image.layers[0].digest.hex()[..2],
        image.layers[0].digest.hex()
    );
    for args in [&["fsck", "--json"][..], &["fsck", "--json", "--rehash"]] {
        let out = stowage(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["clean"], false);
        let findings = report["findings"].as_array().unwrap();
        assert!(
            findings.iter().any(|f| f["kind"] == "missing-pack"
                && f["severity"] == "error"
                && f["key"] == layer_recipe.as_str()),
            "{args:?}: {report:#}"
        );
    }
    // The table says the same to a person.
    let out = stowage(dir.path(), &["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("missing-pack") && text.contains(&layer_recipe),
        "{text}"
    );
}

/// `stowage gc` as an operator runs it: a dry run reports and keeps everything; a
/// configuration file's `[gc]` section applies, and flags override it; a real run
/// deletes blobs no manifest names and leaves a store `fsck` finds clean.
#[test]
fn gc_dry_run_then_collect_with_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), vec![7u8; 200_000]).unwrap();
    std::fs::write(dir.path().join("b"), b"small blob").unwrap();
    assert!(stowage(dir.path(), &["put", "a", "b"]).status.success());
    // The file's grace period protects the fresh blobs ...
    std::fs::write(
        dir.path().join("stowage.toml"),
        "[storage]\nurl = \"./data\"\n[gc]\ngrace = \"1h\"\nwrite_deadline = \"0s\"\nkeep_tag_revisions = 2\n",
    )
    .unwrap();
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let kept = json(stowage(
        dir.path(),
        &["gc", "--config", "stowage.toml", "--json"],
    ));
    assert_eq!(kept["blobs"]["examined"], 2);
    assert_eq!(kept["blobs"]["deleted"], 0);
    // ... the flag overrides it; a dry run reports and deletes nothing ...
    let dry = json(stowage(
        dir.path(),
        &[
            "gc",
            "--config",
            "stowage.toml",
            "--grace",
            "0s",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs"]["deleted"], 2);
    let stats = json(stowage(dir.path(), &["stats", "--json"]));
    assert_eq!(stats["blobs"], 2);
    // ... and the real run deletes what it predicted.
    let real = json(stowage(
        dir.path(),
        &["gc", "--config", "stowage.toml", "--grace", "0s", "--json"],
    ));
    assert_eq!(real["blobs"]["deleted"], 2);
    assert!(real["packs"]["deleted"].as_u64().unwrap() >= 1);
    assert!(real["reclaimed_bytes"].as_u64().unwrap() > 0);
    let stats = json(stowage(dir.path(), &["stats", "--json"]));
    assert_eq!(stats["blobs"], 0);
    assert_eq!(stats["packs"], 0);
    let fsck = stowage(dir.path(), &["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // A bad duration is a clear error.
    let bad = stowage(dir.path(), &["gc", "--grace", "soon"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("soon"));
    // Niceness is 0 (unchanged) to 19.
    let bad = stowage(dir.path(), &["gc", "--nice", "25"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--nice"));
}
