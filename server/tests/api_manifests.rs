//! The manifest half of the distribution API through the router: push by tag and by
//! digest, pull and HEAD, validation (JSON, media type, missing blobs and children,
//! digest, size), tag listing with pagination, the catalog, referrers, deletes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{StatusCode, header};
use common::{error_code as code, request as req, send};
use stowage_server::{AppState, router};
use stowage_storage::manifest::{OCI_INDEX, OCI_MANIFEST};
use stowage_storage::{Digest, Store, StoreOptions};

async fn app(sparse: bool) -> axum::Router {
    let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
    let mut state = AppState::new(store);
    state.allow_sparse = sparse;
    router(state)
}

async fn push_blob(app: &axum::Router, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256(data);
    let (s, _, _) = send(
        app,
        req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            None,
            data.to_vec(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    d
}

/// An image's config and layer pushed to `repo`, and its (unpushed) manifest.
async fn pushed_image(app: &axum::Router, repo: &str) -> (Digest, Digest, Vec<u8>) {
    let config = push_blob(app, repo, b"{}").await;
    let layer = push_blob(app, repo, b"layer").await;
    let m = image(
        &config,
        &layer,
        None,
        "application/vnd.oci.image.config.v1+json",
    );
    (config, layer, m)
}

fn image(config: &Digest, layer: &Digest, subject: Option<&Digest>, config_type: &str) -> Vec<u8> {
    let subject = subject
        .map(|s| {
            format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":100}}"#)
        })
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":5}}]{subject}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_and_validate_manifests() {
    let app = app(false).await;
    let (config, _, m) = pushed_image(&app, "lib/app").await;
    let md = Digest::sha256(&m);

    let (s, h, _) = send(
        &app,
        req(
            "PUT",
            "/v2/lib/app/manifests/v1",
            Some(OCI_MANIFEST),
            m.clone(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["docker-content-digest"], md.to_string());
    assert_eq!(h[header::LOCATION], format!("/v2/lib/app/manifests/{md}"));

    for uri in [
        "/v2/lib/app/manifests/v1".to_string(),
        format!("/v2/lib/app/manifests/{md}"),
    ] {
        let (s, h, body) = send(&app, req("GET", &uri, None, Body::empty())).await;
        assert_eq!((s, body.as_slice()), (StatusCode::OK, m.as_slice()));
        assert_eq!(h[header::CONTENT_TYPE], OCI_MANIFEST);
        assert_eq!(h["docker-content-digest"], md.to_string());
        let (s, h, body) = send(&app, req("HEAD", &uri, None, Body::empty())).await;
        assert_eq!((s, body.len()), (StatusCode::OK, 0));
        assert_eq!(h[header::CONTENT_LENGTH], m.len().to_string());
    }

    // A layer that is not in the repository.
    let missing = Digest::sha256(b"never pushed");
    let bad = image(
        &config,
        &missing,
        None,
        "application/vnd.oci.image.config.v1+json",
    );
    let (s, _, body) = send(
        &app,
        req("PUT", "/v2/lib/app/manifests/v2", Some(OCI_MANIFEST), bad),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    // Invalid JSON, unknown media type, wrong digest, too large.
    let (s, _, body) = send(
        &app,
        req(
            "PUT",
            "/v2/lib/app/manifests/v2",
            Some(OCI_MANIFEST),
            "{nope",
        ),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );
    let (s, _, body) = send(
        &app,
        req(
            "PUT",
            "/v2/lib/app/manifests/v2",
            Some("text/plain"),
            m.clone(),
        ),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );
    let wrong = Digest::sha256(b"other");
    let (s, _, body) = send(
        &app,
        req(
            "PUT",
            &format!("/v2/lib/app/manifests/{wrong}"),
            Some(OCI_MANIFEST),
            m.clone(),
        ),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let huge = vec![b' '; (4 << 20) + 1];
    let (s, _, _) = send(
        &app,
        req("PUT", "/v2/lib/app/manifests/v2", Some(OCI_MANIFEST), huge),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Unknown manifests.
    let (s, _, body) = send(
        &app,
        req("GET", "/v2/lib/app/manifests/nope", None, Body::empty()),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );

    // An index needs its children here, unless sparse manifests are allowed.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{md}","size":{}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":3}}]}}"#,
        m.len()
    );
    let (s, _, body) = send(
        &app,
        req(
            "PUT",
            "/v2/lib/app/manifests/multi",
            Some(OCI_INDEX),
            index.clone(),
        ),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let sparse = crate::app(true).await;
    let (s, _, _) = send(
        &sparse,
        req(
            "PUT",
            "/v2/mirror/x/manifests/multi",
            Some(OCI_INDEX),
            index,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Delete by tag, then by digest.
    let (s, _, _) = send(
        &app,
        req("DELETE", "/v2/lib/app/manifests/v1", None, Body::empty()),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _, _) = send(
        &app,
        req("GET", "/v2/lib/app/manifests/v1", None, Body::empty()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = send(
        &app,
        req(
            "DELETE",
            &format!("/v2/lib/app/manifests/{md}"),
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _, _) = send(
        &app,
        req(
            "DELETE",
            &format!("/v2/lib/app/manifests/{md}"),
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_catalog_and_referrers() {
    let app = app(false).await;
    let (_, layer, m) = pushed_image(&app, "ns/app").await;
    let md = Digest::sha256(&m);
    for t in ["c", "a", "b", "d"] {
        let (s, _, _) = send(
            &app,
            req(
                "PUT",
                &format!("/v2/ns/app/manifests/{t}"),
                Some(OCI_MANIFEST),
                m.clone(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, h, body) = send(
        &app,
        req("GET", "/v2/ns/app/tags/list?n=2", None, Body::empty()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        h[header::LINK],
        "</v2/ns/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let (_, h, body) = send(
        &app,
        req(
            "GET",
            "/v2/ns/app/tags/list?n=2&last=b",
            None,
            Body::empty(),
        ),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c", "d"]));
    assert!(h.get(header::LINK).is_none());
    let (s, _, body) = send(
        &app,
        req("GET", "/v2/nobody/tags/list", None, Body::empty()),
    )
    .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into())
    );

    let (_, _, body) = send(&app, req("GET", "/v2/_catalog", None, Body::empty())).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["ns/app"]));

    // Two artifacts refer to the image; the referrers API lists and filters them.
    let sig_cfg = push_blob(&app, "ns/app", b"{\"sig\":1}").await;
    for (i, t) in ["application/vnd.example.sig+json", "application/spdx+json"]
        .iter()
        .enumerate()
    {
        let a = image(&sig_cfg, &layer, Some(&md), t);
        let a = String::from_utf8(a)
            .unwrap()
            .replace("\"size\":2", &format!("\"size\":{}", 9 + i));
        let (s, h, _) = send(
            &app,
            req(
                "PUT",
                &format!("/v2/ns/app/manifests/{}", Digest::sha256(a.as_bytes())),
                Some(OCI_MANIFEST),
                a,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(h["oci-subject"], md.to_string());
    }
    let (s, h, body) = send(
        &app,
        req(
            "GET",
            &format!("/v2/ns/app/referrers/{md}"),
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], OCI_INDEX);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let (_, h, body) = send(
        &app,
        req(
            "GET",
            &format!("/v2/ns/app/referrers/{md}?artifactType=application/spdx%2Bjson"),
            None,
            Body::empty(),
        ),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["artifactType"], "application/spdx+json");
    assert_eq!(h["oci-filters-applied"], "artifactType");
}

/// A GET with these `Accept` headers: status, `Content-Type`, `Docker-Content-Digest`.
async fn get_accepting(
    app: &axum::Router,
    uri: &str,
    accept: &[&str],
) -> (StatusCode, String, String) {
    let mut b = axum::http::Request::builder().uri(uri);
    for a in accept {
        b = b.header(header::ACCEPT, *a);
    }
    let (s, h, body) = send(app, b.body(Body::empty()).unwrap()).await;
    let get = |k: &str| {
        h.get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    if s == StatusCode::OK {
        assert_eq!(
            Digest::sha256(&body).to_string(),
            get("docker-content-digest")
        );
    } else {
        assert_eq!(code(&body), "MANIFEST_UNKNOWN");
    }
    (s, get("content-type"), get("docker-content-digest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_negotiation() {
    use stowage_storage::manifest::{DOCKER_LIST, DOCKER_MANIFEST};
    let app = app(false).await;
    let (_, _, img) = pushed_image(&app, "neg").await;
    let img_digest = Digest::sha256(&img);
    let (s, _, _) = send(
        &app,
        req("PUT", "/v2/neg/manifests/img", Some(OCI_MANIFEST), img),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{img_digest}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
    );
    let index_digest = Digest::sha256(index.as_bytes());
    let (s, _, _) = send(
        &app,
        req("PUT", "/v2/neg/manifests/multi", Some(OCI_INDEX), index),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (img, index) = (img_digest.to_string(), index_digest.to_string());

    // No Accept, or one naming no manifest type: served as stored.
    for accept in [&[][..], &["application/json"], &["*/*"]] {
        let got = get_accepting(&app, "/v2/neg/manifests/multi", accept).await;
        assert_eq!(got, (StatusCode::OK, OCI_INDEX.into(), index.clone()));
    }
    // The stored type among several headers and lists, with parameters.
    let got = get_accepting(
        &app,
        "/v2/neg/manifests/multi",
        &[
            DOCKER_MANIFEST,
            &format!("{DOCKER_LIST}, {OCI_INDEX};q=0.9"),
        ],
    )
    .await;
    assert_eq!(got, (StatusCode::OK, OCI_INDEX.into(), index.clone()));
    // A client that reads OCI images but not indexes gets the linux/amd64 child.
    let got = get_accepting(&app, "/v2/neg/manifests/multi", &[OCI_MANIFEST]).await;
    assert_eq!(got, (StatusCode::OK, OCI_MANIFEST.into(), img.clone()));
    // A Docker-only client gets a clear MANIFEST_UNKNOWN, for images and indexes.
    for tag in ["multi", "img"] {
        let got = get_accepting(
            &app,
            &format!("/v2/neg/manifests/{tag}"),
            &[DOCKER_MANIFEST, DOCKER_LIST],
        )
        .await;
        assert_eq!(got.0, StatusCode::NOT_FOUND);
    }
    // Explicitly refused with q=0.
    let got = get_accepting(
        &app,
        "/v2/neg/manifests/img",
        &[&format!("*/*, {OCI_MANIFEST};q=0")],
    )
    .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_by_digest_with_tag_parameters() {
    let app = app(false).await;
    let (_, _, m) = pushed_image(&app, "multi/tag").await;
    let d = Digest::sha256(&m);

    // One bad tag refuses the whole push: nothing is stored.
    let (s, _, body) = send(
        &app,
        req(
            "PUT",
            &format!("/v2/multi/tag/manifests/{d}?tag=ok&tag=-bad"),
            Some(OCI_MANIFEST),
            m.clone(),
        ),
    )
    .await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );
    let (s, _, _) = send(
        &app,
        req(
            "HEAD",
            &format!("/v2/multi/tag/manifests/{d}"),
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, h, _) = send(
        &app,
        req(
            "PUT",
            &format!("/v2/multi/tag/manifests/{d}?tag=1.2.3&tag=1.2&tag=latest"),
            Some(OCI_MANIFEST),
            m,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["oci-tag"], "1.2.3, 1.2, latest");
    let (_, _, body) = send(
        &app,
        req("GET", "/v2/multi/tag/tags/list", None, Body::empty()),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.2", "1.2.3", "latest"]));
    for tag in ["1.2", "1.2.3", "latest"] {
        let (s, h, _) = send(
            &app,
            req(
                "HEAD",
                &format!("/v2/multi/tag/manifests/{tag}"),
                None,
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(
            (s, h["docker-content-digest"].to_str().unwrap()),
            (StatusCode::OK, d.to_string().as_str())
        );
    }
}
