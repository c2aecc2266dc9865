//! The real `stowage serve` binary on a loopback port, driven over HTTP: it starts with
//! no configuration but a store path, answers the API, logs one line per request, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use stowage_storage::Digest;

struct Server {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["serve", "--listen", "127.0.0.1:0", "--storage"])
        .arg(dir.path().join("store"))
        .env_remove("STOWAGE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    Server {
        child,
        base: format!("http://{addr}"),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_and_stops_on_sigterm() {
    let server = start();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v2/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let layer = b"layer bytes".to_vec();
    let d = Digest::sha256(&layer);
    let r = http
        .post(format!(
            "{}/v2/demo/app/blobs/uploads/?digest={d}",
            server.base
        ))
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!("{}/v2/demo/app/blobs/{d}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
    let r = http
        .get(format!("{}/v2/demo/app/blobs/sha256:zz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = server.child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.matches("served").count() >= 4,
        "one line per request:\n{log}"
    );
    assert!(log.contains("stowage stopped"));
}
