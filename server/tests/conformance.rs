//! The black-box conformance run (crate `stowage-conformance`, HTTP only, written
//! from the OCI Distribution Specification and the official suite's catalogue) against
//! the real `stowage serve`, with every category on: on local disk and on S3, with
//! sparse manifests allowed and refused. Every case must pass; none may be skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_conformance::{Config, Outcome};
use stowage_tests::server::{Server, fresh_storage};

async fn conformance(s3: bool, sparse: bool) {
    let (storage, _guard) = fresh_storage(s3);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(&config, format!("allow_sparse_manifests = {sparse}\n")).unwrap();
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        &storage,
        &["--config", config.to_str().unwrap()],
    );
    let mut cfg = Config::new(server.url());
    // "sparse" on: the registry must accept sparse manifests; off: it must refuse them.
    cfg.categories.sparse = sparse;
    let report = stowage_conformance::run(&cfg).await;
    let mut problems = Vec::new();
    for case in &report.cases {
        match &case.outcome {
            Outcome::Passed => {}
            other => problems.push(format!("[{}] {}: {other:?}", case.category, case.name)),
        }
    }
    assert!(
        report.cases.len() > 100,
        "only {} cases ran",
        report.cases.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {} cases did not pass:\n{}",
        problems.len(),
        report.cases.len(),
        problems.join("\n")
    );
    println!("{} passed, 0 failed", report.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_sparse_allowed() {
    conformance(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_sparse_refused() {
    conformance(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3_sparse_allowed() {
    conformance(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3_sparse_refused() {
    conformance(true, false).await;
}
