//! The real `stowage serve` binary on a loopback port, driven over HTTP: it starts with
//! no configuration but a store path, answers the API, logs one line per request, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_storage::Digest;
use stowage_tests::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        &[],
    );
    let base = server.url();
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let layer = b"layer bytes".to_vec();
    let d = Digest::sha256(&layer);
    let r = http
        .post(format!("{base}/v2/demo/app/blobs/uploads/?digest={d}"))
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!("{base}/v2/demo/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
    let r = http
        .get(format!("{base}/v2/demo/app/blobs/sha256:zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");

    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}");
    assert!(
        log.matches("served").count() >= 4,
        "one line per request:\n{log}"
    );
    assert!(log.contains("stowage stopped"));
}
