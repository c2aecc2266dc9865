//! Thirty-two clients push images that share their base layer, all at once, through
//! chunked uploads; then every image is pulled back and compared byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_storage::Digest;
use stowage_tests::oci::{Blob, Image, ImageSpec, tar};
use stowage_tests::server::{Server, fresh_storage};

async fn push_blob(http: &reqwest::Client, base: &str, repo: &str, blob: &Blob) {
    // A chunked upload: POST, two PATCHes, PUT.
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = format!("{base}{}", r.headers()["location"].to_str().unwrap());
    let half = blob.bytes.len() / 2;
    for (start, end) in [(0, half), (half, blob.bytes.len())] {
        if start == end {
            continue;
        }
        let r = http
            .patch(&location)
            .header("Content-Range", format!("{start}-{}", end - 1))
            .body(blob.bytes[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        location = format!("{base}{}", r.headers()["location"].to_str().unwrap());
    }
    let r = http
        .put(format!("{location}?digest={}", blob.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn clients_push_and_pull(s3: bool) {
    let (storage, _guard) = fresh_storage(s3);
    let server = Server::start(env!("CARGO_BIN_EXE_stowage").as_ref(), &storage, &[]);
    let base = server.url();
    let shared = tar(&[("usr/lib/base.so", &stowage_tests::content(1, 1, 1 << 20))]);
    let images: Vec<Image> = (0..32u64)
        .map(|i| {
            let own = tar(&[("srv/app", &stowage_tests::content(2, i, 200_000))]);
            Image::build(&ImageSpec {
                layers: vec![(shared.clone(), true), (own, i % 2 == 0)],
                labels: Default::default(),
                env: vec![],
                cmd: vec!["app"],
                architecture: "amd64",
            })
        })
        .collect();
    let http = reqwest::Client::new();
    let pushes = images.iter().enumerate().map(|(i, image)| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let repo = format!("team{}/app", i % 4);
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                push_blob(&http, &base, &repo, blob).await;
            }
            let r = http
                .put(format!("{base}/v2/{repo}/manifests/v{i}"))
                .header("Content-Type", &image.manifest.media_type)
                .body(image.manifest.bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        }
    });
    futures::future::join_all(pushes).await;
    for (i, image) in images.iter().enumerate() {
        let repo = format!("team{}/app", i % 4);
        let r = http
            .get(format!("{base}/v2/{repo}/manifests/v{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().to_vec(), image.manifest.bytes);
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            let r = http
                .get(format!("{base}/v2/{repo}/blobs/{}", blob.digest))
                .send()
                .await
                .unwrap();
            let got = r.bytes().await.unwrap();
            assert_eq!(Digest::sha256(&got), blob.digest);
            assert!(got == blob.bytes);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_on_local_disk() {
    clients_push_and_pull(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_on_s3() {
    clients_push_and_pull(true).await;
}
