//! The real `stowage serve` binary on a loopback port, driven over HTTP: it starts with
//! no configuration but a store path, answers the API, logs one line per request, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_storage::Digest;
use stowage_tests::server::Server;

/// `stowage serve` on a store in `dir`, with `extra` arguments.
fn start(dir: &tempfile::TempDir, extra: &[&str]) -> Server {
    let store = dir.path().join("store");
    Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        extra,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &[]);
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

/// A request in flight when SIGTERM arrives still completes; then the server exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &[]);
    let data = b"0123456789".to_vec();
    let d = Digest::sha256(&data);
    let mut conn = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /v2/demo/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data[..5]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = server.child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    conn.write_all(&data[5..]).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("stowage stopped"), "{log}");
}

/// HTTPS from a PEM certificate and key, and absolute links with `--public-url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = stowage_tests::server::self_signed_cert(dir.path());
    let server = start(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--public-url",
            "https://registry.example.com/",
        ],
    );
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let base = format!("https://{}", server.addr);
    let r = https.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = https
        .post(format!("{base}/v2/demo/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://registry.example.com/v2/demo/app/blobs/uploads/"),
        "{location}"
    );
    // Plain HTTP on the TLS port is refused, not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v2/", server.addr))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    let (status, _) = server.stop();
    assert!(status.success());
}

/// `max_blob_bytes` refuses larger blobs with 413 SIZE_INVALID, whether the size is
/// declared up front or only discovered while streaming, and keeps nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(&config, "max_blob_bytes = 1000\n").unwrap();
    let server = start(&dir, &["--config", config.to_str().unwrap()]);
    let base = server.url();
    let http = reqwest::Client::new();
    let code = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_string()
    };

    let big = vec![7u8; 1500];
    let d = Digest::sha256(&big);
    let r = http
        .post(format!("{base}/v2/lim/blobs/uploads/?digest={d}"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.text().await.unwrap()), "SIZE_INVALID");

    // Chunks that pass the limit together: the second PATCH is refused and the
    // session keeps only the first.
    let r = http
        .post(format!("{base}/v2/lim/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let session = format!("{base}{}", r.headers()["location"].to_str().unwrap());
    let r = http
        .patch(&session)
        .body(big[..800].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Streamed (chunked transfer encoding, no Content-Length): found while reading.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    tokio::spawn(async move {
        for _ in 0..7 {
            if tx.send(Ok(vec![7u8; 100])).await.is_err() {
                break;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let r = http
        .patch(&session)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.text().await.unwrap()), "SIZE_INVALID");
    let r = http.get(&session).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["range"].to_str().unwrap()),
        (204, "0-799")
    );

    // Within the limit, the upload completes.
    let small = &big[..1000];
    let d = Digest::sha256(small);
    let r = http
        .put(format!("{session}?digest={d}"))
        .body(small[800..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// `gc.every` makes the server collect in-process: a blob no manifest names disappears
/// without anyone running `stowage gc`, and `/metrics` counts the runs and deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_collection_runs_in_the_server_and_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        "[gc]\nevery = \"1s\"\ngrace = \"0s\"\nwrite_deadline = \"0s\"\n",
    )
    .unwrap();
    let server = start(&dir, &["--config", config.to_str().unwrap()]);
    let base = server.url();
    let http = reqwest::Client::new();
    let stray = vec![9u8; 50_000];
    let d = Digest::sha256(&stray);
    let r = http
        .post(format!("{base}/v2/sched/blobs/uploads/?digest={d}"))
        .body(stray)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // Sealed blobs vanish from HEAD before the sweep ends: wait for a run that deleted.
    let mut text = String::new();
    for _ in 0..120 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&text, "stowage_gc_deleted_total{kind=\"blobs\"}") >= 1.0 {
            break;
        }
    }
    let head = http
        .head(format!("{base}/v2/sched/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        404,
        "the scheduled collection kept the stray blob"
    );
    assert!(
        metric(&text, "stowage_gc_runs_total{outcome=\"success\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "stowage_gc_deleted_total{kind=\"blobs\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "stowage_gc_reclaimed_bytes_total") > 0.0,
        "{text}"
    );
    assert!(metric(&text, "stowage_gc_last_success_timestamp_seconds") > 0.0);
}
