//! `stowage bench` against the real server: each workload's JSON report counts what
//! it did (requests, bytes, what Stowage stored), pulls verify digests, and a failed
//! request makes the command fail with the status in its report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use stowage_tests::server::Server;

fn bench(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[test]
fn push_pull_versions_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        &[],
    );
    let url = server.url();
    let mib = 1u64 << 20;

    // 3 blobs of 1 MiB, monolithic (POST + PUT each), then config and manifest.
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--count",
        "3",
        "--size",
        "1MiB",
        "--tag",
        "t",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}));
    assert_eq!(r["latency_ms"]["upload_start"]["count"], 4);
    assert_eq!(r["latency_ms"]["upload_finish"]["count"], 4);
    assert_eq!(r["latency_ms"]["manifest_put"]["count"], 1);
    let stored = r["stored_bytes"].as_u64().unwrap();
    assert!((3 * mib..4 * mib).contains(&stored), "stored {stored}");

    // Chunked: 2 blobs of 3 MiB in 1 MiB PATCHes. The same seed: nothing new stored.
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--repo",
        "bench/chunked",
        "--count",
        "2",
        "--size",
        "3MiB",
        "--chunk-size",
        "1MiB",
        "--seed",
        "9",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["latency_ms"]["upload_chunk"]["count"], 6);
    assert_eq!(r["bytes"], 6 * mib);
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--repo",
        "bench/again",
        "--count",
        "2",
        "--size",
        "3MiB",
        "--seed",
        "9",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["stored_bytes"], 0, "identical content is deduplicated");

    // Pull: every layer, digests verified.
    let (ok, r) = bench(&["pull", "--registry", &url, "--tag", "t"]);
    assert!(ok, "{r}");
    // The three layers and the manifest's few hundred bytes.
    let bytes = r["bytes"].as_u64().unwrap();
    assert!(
        (3 * mib + 100..3 * mib + 4096).contains(&bytes),
        "pulled {bytes}"
    );
    assert_eq!(r["latency_ms"]["blob_get"]["count"], 3);

    // Versions sharing most content store far less than their sum.
    let (ok, r) = bench(&[
        "versions",
        "--registry",
        &url,
        "--repo",
        "bench/v",
        "--versions",
        "4",
        "--size",
        "4MiB",
    ]);
    assert!(ok, "{r}");
    let stored = r["stored_bytes"].as_u64().unwrap();
    assert!(stored < 8 * mib, "4 versions of 4 MiB stored {stored}");

    let (ok, r) = bench(&[
        "manifests",
        "--registry",
        &url,
        "--tag",
        "t",
        "--seconds",
        "1",
        "--connections",
        "4",
    ]);
    assert!(ok, "{r}");
    assert!(r["latency_ms"]["manifest_head"]["count"].as_u64().unwrap() > 0);
    assert!(r["latency_ms"]["manifest_get"]["count"].as_u64().unwrap() > 0);

    // A failure is reported by status and fails the command.
    let (ok, r) = bench(&["pull", "--registry", &url, "--tag", "missing"]);
    assert!(!ok);
    assert_eq!(r["errors"]["404"], 1);
}
