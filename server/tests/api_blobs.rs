//! The blob half of the distribution API, driven through the router: pull (with
//! ranges), monolithic and chunked push, streamed PATCH, status, cancel, mount, and the
//! error paths with their spec codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{error_code, request, send};
use stowage_server::{AppState, router};
use stowage_storage::{Digest, Store, StoreOptions};

async fn app() -> axum::Router {
    let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
    router(AppState::new(store))
}

fn req(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    request(method, uri, None, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_answers_with_the_api_version() {
    let app = app().await;
    let (status, headers, _) = send(&app, req("GET", "/v2/", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["docker-distribution-api-version"], "registry/2.0");
    let (status, _, _) = send(&app, req("GET", "/healthz", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_push_then_pull_whole_and_by_range() {
    let app = app().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256(&data);
    let (status, headers, _) = send(
        &app,
        req(
            "POST",
            &format!("/v2/a/b/blobs/uploads/?digest={d}"),
            data.clone(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::LOCATION], format!("/v2/a/b/blobs/{d}"));
    assert_eq!(headers["docker-content-digest"], d.to_string());

    let (status, headers, body) = send(
        &app,
        req("GET", &format!("/v2/a/b/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, data);
    assert_eq!(headers[header::CONTENT_LENGTH], data.len().to_string());

    let (status, headers, body) = send(
        &app,
        req("HEAD", &format!("/v2/a/b/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(headers[header::CONTENT_LENGTH], data.len().to_string());

    let r = Request::builder()
        .uri(format!("/v2/a/b/blobs/{d}"))
        .header(header::RANGE, "bytes=100-199")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, r).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[100..200]);
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes 100-199/{}", data.len())
    );

    let r = Request::builder()
        .uri(format!("/v2/a/b/blobs/{d}"))
        .header(header::RANGE, "bytes=400000-")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, r).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes */{}", data.len())
    );
    assert_eq!(error_code(&body), "RANGE_INVALID");

    // Not linked in another repository.
    let (status, _, body) = send(
        &app,
        req("GET", &format!("/v2/other/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_push_with_content_range_status_and_out_of_order_chunks() {
    let app = app().await;
    let data: Vec<u8> = (0..250_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let d = Digest::sha256(&data);
    let (status, headers, _) = send(&app, req("POST", "/v2/x/blobs/uploads/", Body::empty())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    assert_eq!(headers[header::RANGE], "0-0");

    let patch = |start: usize, end: usize| {
        Request::builder()
            .method("PATCH")
            .uri(&location)
            .header(header::CONTENT_RANGE, format!("{start}-{}", end - 1))
            .header(header::CONTENT_LENGTH, (end - start).to_string())
            .body(Body::from(data[start..end].to_vec()))
            .unwrap()
    };
    let (status, headers, _) = send(&app, patch(0, 100_000)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers[header::RANGE], "0-99999");

    // Out of order: 416 with the current range.
    let (status, headers, body) = send(&app, patch(150_000, 200_000)).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::RANGE], "0-99999");
    assert_eq!(error_code(&body), "BLOB_UPLOAD_INVALID");

    // Status.
    let (status, headers, _) = send(&app, req("GET", &location, Body::empty())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers[header::RANGE], "0-99999");

    // A streamed PATCH without Content-Range continues at the end.
    let (status, headers, _) = send(
        &app,
        req("PATCH", &location, data[100_000..200_000].to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers[header::RANGE], "0-199999");

    // The last chunk goes with the PUT.
    let put = Request::builder()
        .method("PUT")
        .uri(format!("{location}?digest={d}"))
        .body(Body::from(data[200_000..].to_vec()))
        .unwrap();
    let (status, headers, _) = send(&app, put).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["docker-content-digest"], d.to_string());
    let (_, _, body) = send(&app, req("GET", &format!("/v2/x/blobs/{d}"), Body::empty())).await;
    assert_eq!(body, data);
    // The session is gone.
    let (status, _, body) = send(&app, req("GET", &location, Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_digests_cancel_and_mount() {
    let app = app().await;
    let (_, headers, _) = send(&app, req("POST", "/v2/x/blobs/uploads/", Body::empty())).await;
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    let wrong = Digest::sha256(b"not this");
    let (status, _, body) = send(
        &app,
        req(
            "PUT",
            &format!("{location}?digest={wrong}"),
            b"content".to_vec(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "DIGEST_INVALID");
    let (status, _, body) = send(
        &app,
        req(
            "PUT",
            &format!("{location}?digest=sha256:nothex"),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".to_string())
    );
    let (status, _, _) = send(&app, req("PUT", &location, Body::empty())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _, _) = send(&app, req("DELETE", &location, Body::empty())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&app, req("PATCH", &location, b"more".to_vec())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, body) = send(
        &app,
        req("POST", "/v2/Bad_Name/blobs/uploads/", Body::empty()),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "NAME_INVALID".to_string())
    );

    // Mount from a repository that has the blob; from one that does not, a session.
    let d = Digest::sha256(b"layer");
    send(
        &app,
        req(
            "POST",
            &format!("/v2/src/blobs/uploads/?digest={d}"),
            b"layer".to_vec(),
        ),
    )
    .await;
    let (status, headers, _) = send(
        &app,
        req(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::LOCATION], format!("/v2/dst/blobs/{d}"));
    let (status, _, _) = send(
        &app,
        req("HEAD", &format!("/v2/dst/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let other = Digest::sha256(b"missing");
    let (status, _, _) = send(
        &app,
        req(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={other}&from=src"),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_endpoint_and_status() {
    let app = app().await;
    let d = Digest::sha256(b"m");
    send(
        &app,
        req(
            "POST",
            &format!("/v2/m/blobs/uploads/?digest={d}"),
            b"m".to_vec(),
        ),
    )
    .await;
    send(&app, req("GET", &format!("/v2/m/blobs/{d}"), Body::empty())).await;
    send(
        &app,
        req(
            "GET",
            &format!("/v2/m/blobs/{}", Digest::sha256(b"none")),
            Body::empty(),
        ),
    )
    .await;
    let (status, headers, body) = send(&app, req("GET", "/metrics", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    for line in [
        r#"stowage_http_requests_total{endpoint="uploads",method="POST",status="201"} 1"#,
        r#"stowage_http_requests_total{endpoint="blobs",method="GET",status="200"} 1"#,
        r#"stowage_http_requests_total{endpoint="blobs",method="GET",status="404"} 1"#,
        "stowage_uploads_in_progress 0",
        r#"stowage_http_sent_bytes_total{endpoint="blobs"}"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    // Chunk bytes: a blob's chunks are stored, a near-copy's mostly deduplicated.
    let mut data: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for copy in [false, true] {
        if copy {
            data.extend_from_slice(b"one more line");
        }
        let d = Digest::sha256(&data);
        let (status, _, _) = send(
            &app,
            req(
                "POST",
                &format!("/v2/m/blobs/uploads/?digest={d}"),
                data.clone(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, _, body) = send(&app, req("GET", "/metrics", Body::empty())).await;
    let text = String::from_utf8(body).unwrap();
    let value = |outcome: &str| -> u64 {
        let key = format!(r#"stowage_store_chunk_bytes_total{{outcome="{outcome}"}} "#);
        let line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"));
        line[key.len()..].parse().unwrap()
    };
    let (stored, deduplicated) = (value("stored"), value("deduplicated"));
    assert!((400_000..600_000).contains(&stored), "stored {stored}");
    assert!(deduplicated >= 300_000, "deduplicated {deduplicated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_blobs_and_blob_deletes() {
    let app = app().await;
    let data = b"sha512 content".to_vec();
    let d = Digest::of(stowage_storage::Algorithm::Sha512, &data);
    // Chunked upload closed with a sha512 digest: the session hashed sha256 and re-hashes.
    let (_, headers, _) = send(&app, req("POST", "/v2/s/blobs/uploads/", Body::empty())).await;
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    send(&app, req("PATCH", &location, data.clone())).await;
    let (status, headers, _) = send(
        &app,
        req("PUT", &format!("{location}?digest={d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["docker-content-digest"], d.to_string());
    let (status, headers, body) =
        send(&app, req("GET", &format!("/v2/s/blobs/{d}"), Body::empty())).await;
    assert_eq!((status, body), (StatusCode::OK, data.clone()));
    assert_eq!(headers["docker-content-digest"], d.to_string());

    let (status, _, _) = send(
        &app,
        req("DELETE", &format!("/v2/s/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, body) =
        send(&app, req("GET", &format!("/v2/s/blobs/{d}"), Body::empty())).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );
    let (status, _, _) = send(
        &app,
        req("DELETE", &format!("/v2/s/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deletes can be turned off one kind at a time.
    let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
    let mut state = AppState::new(store);
    state.deletes.blobs = false;
    let strict = router(state);
    send(
        &strict,
        req("POST", &format!("/v2/s/blobs/uploads/?digest={d}"), data),
    )
    .await;
    let (status, _, body) = send(
        &strict,
        req("DELETE", &format!("/v2/s/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".into())
    );
    let (status, _, _) = send(
        &strict,
        req("GET", &format!("/v2/s/blobs/{d}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
