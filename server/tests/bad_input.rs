//! Bad input never gets a 500: arbitrary paths, methods, queries and header values
//! (Range, Content-Range, Accept, Content-Type) thrown at the router, each answered
//! with a 2xx-4xx status and, for errors, the spec's JSON error body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use stowage_server::{AppState, router};
use stowage_storage::{Digest, Store, StoreOptions};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v2".to_string()),
        Just("blobs".to_string()),
        Just("uploads".to_string()),
        Just("manifests".to_string()),
        Just("tags".to_string()),
        Just("list".to_string()),
        Just("referrers".to_string()),
        Just("_catalog".to_string()),
        Just("repo".to_string()),
        Just("SESSION".to_string()),
        Just(Digest::sha256(b"x").to_string()),
        Just("sha256:zz".to_string()),
        Just("sha512:".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9._:%-]{0,12}",
        Just("x".repeat(300)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(segment(), 0..7),
        "(\\?[a-z]{1,6}=[a-zA-Z0-9:%&=-]{0,12})?",
    )
        .prop_map(|(segs, q)| format!("/v2/{}{q}", segs.join("/")))
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("bytes=0-".to_string()),
        Just("bytes=5-2".to_string()),
        Just("bytes=-0".to_string()),
        Just("0-99999999999999999999".to_string()),
        // end = u64::MAX: `end + 1 - start` overflowed before checked arithmetic.
        Just("0-18446744073709551615".to_string()),
        Just("bytes 1-18446744073709551615/*".to_string()),
        Just("application/vnd.oci.image.manifest.v1+json".to_string()),
        Just("*/*;q=x".to_string()),
        "[ -~]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn no_request_gets_a_server_error(
        method in prop_oneof![Just("GET"), Just("HEAD"), Just("PUT"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("OPTIONS")],
        uri in path(),
        range in proptest::option::of(header_value()),
        content_range in proptest::option::of(header_value()),
        accept in proptest::option::of(header_value()),
        content_type in proptest::option::of(header_value()),
        content_length in proptest::option::of(prop_oneof![Just("0".to_string()), Just("1".to_string()), Just("18446744073709551615".to_string()), "[0-9]{1,20}"]),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
            let app = router(AppState::new(store));
            // Something to hit: a blob in `repo` (the digest of "x") and an open session.
            let (s, _, _) = common::send(&app, common::request("POST", &format!("/v2/repo/blobs/uploads/?digest={}", Digest::sha256(b"x")), None, "x")).await;
            prop_assert_eq!(s.as_u16(), 201);
            let (_, h, _) = common::send(&app, common::request("POST", "/v2/repo/blobs/uploads/", None, Body::empty())).await;
            let session = h["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
            let uri = uri.replace("SESSION", &session);
            let mut b = Request::builder().method(method).uri(uri.as_str());
            for (name, value) in [("range", &range), ("content-range", &content_range), ("accept", &accept), ("content-type", &content_type), ("content-length", &content_length)] {
                if let Some(v) = value {
                    b = b.header(name, v.as_str());
                }
            }
            let (status, _, bytes) = common::send(&app, b.body(Body::from(body)).unwrap()).await;
            prop_assert!(status.as_u16() < 500, "{method} {uri} -> {status}: {}", String::from_utf8_lossy(&bytes));
            if status.is_client_error() && method != "HEAD" {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("{method} {uri} -> {status}, body not JSON: {e}")))?;
                prop_assert!(v["errors"][0]["code"].is_string(), "{method} {uri}: {v}");
            }
            Ok(())
        })?;
    }
}

/// A Content-Range ending at u64::MAX once overflowed `end + 1 - start` (a panic in debug
/// builds, a wrapped length in release): now a 416 like any other mismatch.
#[tokio::test]
async fn content_range_at_the_end_of_u64_is_refused_cleanly() {
    let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
    let app = router(AppState::new(store));
    let (_, h, _) = common::send(
        &app,
        common::request("POST", "/v2/repo/blobs/uploads/", None, Body::empty()),
    )
    .await;
    let location = h["location"].to_str().unwrap().to_string();
    for range in ["0-18446744073709551615", "1-18446744073709551615"] {
        let req = Request::builder()
            .method("PATCH")
            .uri(location.as_str())
            .header("content-range", range)
            .header("content-length", "1")
            .body(Body::from("x"))
            .unwrap();
        let (status, _, body) = common::send(&app, req).await;
        assert_eq!(
            status.as_u16(),
            416,
            "{range}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}
