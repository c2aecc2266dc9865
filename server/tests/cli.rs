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
