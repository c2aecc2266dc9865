//! The `oci-client` crate (the ORAS project's Rust client) against `stowage serve`:
//! images pushed blob by blob (monolithic and chunked) and through its own `push`,
//! pulled back whole and by range, a cross-repository mount, an index resolved to a
//! platform, artifacts found through the referrers API, tags and the catalog — on
//! local disk and on S3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;
use stowage_tests::oci::{self, Blob, Image, ImageSpec, gzip, tar};
use stowage_tests::server::{Server, fresh_storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_client_on_local_disk() {
    push_pull_index_referrers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_client_on_s3() {
    push_pull_index_referrers(true).await;
}

fn image(base: &[u8], app: &[u8], arch: &str) -> Image {
    Image::build(&ImageSpec {
        layers: vec![(base.to_vec(), true), (app.to_vec(), false)],
        labels: BTreeMap::from([("org.example.arch", arch)]),
        env: vec!["PATH=/usr/bin"],
        cmd: vec!["/app"],
        architecture: arch,
    })
}

/// Pushes an image's config and layers, the first layer in 3 chunked PATCHes, the
/// rest monolithic, then its manifest under `tag` exactly as built.
async fn push_image(client: &Client, at: &Reference, tag: &str, image: &Image) {
    let mut blobs = std::iter::once(&image.config).chain(&image.layers);
    let first = blobs.next().unwrap();
    let chunks: Vec<oci_client::errors::Result<bytes::Bytes>> = first
        .bytes
        .chunks(first.bytes.len().div_ceil(3))
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let pushed = client
        .push_blob_stream_chunked(at, futures::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(pushed.blob_digest, first.digest.to_string());
    assert_eq!(pushed.size, first.bytes.len() as u64);
    for blob in blobs {
        client
            .push_blob(at, blob.bytes.clone(), &blob.digest.to_string())
            .await
            .unwrap();
    }
    push_manifest(client, &retag(at, tag), &image.manifest).await;
}

async fn push_manifest(client: &Client, at: &Reference, manifest: &Blob) {
    client
        .push_manifest_raw(
            at,
            manifest.bytes.clone(),
            HeaderValue::from_str(&manifest.media_type).unwrap(),
        )
        .await
        .unwrap();
}

/// Layer contents in a fixed order, for comparing regardless of download order.
fn sorted(layers: &[ImageLayer]) -> Vec<&[u8]> {
    sorted_slices(layers.iter().map(|l| l.data.as_ref()).collect())
}

fn sorted_slices(mut v: Vec<&[u8]>) -> Vec<&[u8]> {
    v.sort();
    v
}

fn retag(r: &Reference, tag: &str) -> Reference {
    Reference::with_tag(r.registry().into(), r.repository().into(), tag.into())
}

fn at_digest(r: &Reference, blob: &Blob) -> Reference {
    Reference::with_digest(
        r.registry().into(),
        r.repository().into(),
        blob.digest.to_string(),
    )
}

async fn push_pull_index_referrers(s3: bool) {
    let (storage, _guard) = fresh_storage(s3);
    let server = Server::start(env!("CARGO_BIN_EXE_stowage").as_ref(), &storage, &[]);
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    let repo = Reference::with_tag(server.addr.clone(), "team/app".into(), "latest".into());

    // Two images sharing a gzip base layer, each with an uncompressed app layer.
    let base = tar(&[("etc/os-release", b"ID=stowage\n".as_slice())]);
    let amd64 = image(&base, &tar(&[("app", b"amd64 build".as_slice())]), "amd64");
    let arm64 = image(&base, &tar(&[("app", b"arm64 build".as_slice())]), "arm64");
    push_image(&client, &repo, "amd64", &amd64).await;
    push_image(&client, &repo, "arm64", &arm64).await;

    // Pulled back whole: same digest, config and layers byte for byte.
    let accepted = vec![IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE];
    let pulled = client
        .pull(&retag(&repo, "amd64"), &auth, accepted.clone())
        .await
        .unwrap();
    assert_eq!(pulled.digest, Some(amd64.manifest.digest.to_string()));
    assert_eq!(pulled.config.data.as_ref(), amd64.config.bytes.as_slice());
    // oci-client downloads layers concurrently and lists them as they finish.
    let built: Vec<&[u8]> = amd64.layers.iter().map(|l| l.bytes.as_slice()).collect();
    assert_eq!(sorted(&pulled.layers), sorted_slices(built));
    assert_eq!(
        client
            .fetch_manifest_digest(&retag(&repo, "arm64"), &auth)
            .await
            .unwrap(),
        arm64.manifest.digest.to_string()
    );

    // Blob existence and a ranged read.
    let layer = &amd64.layers[0];
    assert!(
        client
            .blob_exists(&repo, &layer.digest.to_string())
            .await
            .unwrap()
    );
    let absent = stowage_storage::Digest::sha256(b"never pushed").to_string();
    assert!(!client.blob_exists(&repo, &absent).await.unwrap());
    let descriptor = oci_client::manifest::OciDescriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.to_string(),
        size: layer.bytes.len() as i64,
        ..Default::default()
    };
    let part = client
        .pull_blob_stream_partial(&repo, &descriptor, 5, Some(10))
        .await
        .unwrap();
    let oci_client::client::BlobResponse::Partial(part) = part else {
        panic!("the registry ignored the Range header");
    };
    let mut got = Vec::new();
    use futures::TryStreamExt as _;
    let mut stream = part.stream;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, layer.bytes[5..15]);

    // The client's own push (it writes the manifest), sharing the base layer.
    let other = Reference::with_tag(server.addr.clone(), "team/other".into(), "v1".into());
    client
        .mount_blob(&other, &repo, &layer.digest.to_string())
        .await
        .unwrap();
    assert!(
        client
            .blob_exists(&other, &layer.digest.to_string())
            .await
            .unwrap()
    );
    let extra = gzip(&tar(&[("extra", b"more".as_slice())]));
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    client
        .push(
            &other,
            &[
                ImageLayer::oci_v1_gzip(layer.bytes.clone(), None),
                ImageLayer::oci_v1_gzip(extra.clone(), None),
            ],
            Config::oci_v1(config.to_vec(), None),
            &auth,
            None,
        )
        .await
        .unwrap();
    let pulled = client.pull(&other, &auth, accepted.clone()).await.unwrap();
    assert_eq!(
        sorted(&pulled.layers),
        sorted_slices(vec![layer.bytes.as_slice(), extra.as_slice()])
    );

    // An index over both images: read as an index, and pulled for linux/amd64.
    let index = oci::index(&[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")]);
    push_manifest(&client, &retag(&repo, "multi"), &index).await;
    let (manifest, digest) = client
        .pull_manifest(&retag(&repo, "multi"), &auth)
        .await
        .unwrap();
    assert_eq!(digest, index.digest.to_string());
    let OciManifest::ImageIndex(listed) = manifest else {
        panic!("expected an index");
    };
    assert_eq!(listed.media_type.as_deref(), Some(oci::OCI_INDEX));
    let children: Vec<&str> = listed.manifests.iter().map(|m| m.digest.as_str()).collect();
    assert_eq!(
        children,
        [
            amd64.manifest.digest.to_string(),
            arm64.manifest.digest.to_string()
        ]
    );
    let pulled = client
        .pull(&retag(&repo, "multi"), &auth, accepted.clone())
        .await
        .unwrap();
    assert_eq!(pulled.config.data.as_ref(), amd64.config.bytes.as_slice());

    // Artifacts referring to the amd64 image, pushed by digest, found as referrers.
    let sbom = Image::artifact(
        &amd64.manifest,
        "application/vnd.example.sbom.v1+json",
        br#"{"packages":[]}"#,
        BTreeMap::from([("org.example.kind", "sbom")]),
    );
    let signature = Image::artifact(
        &amd64.manifest,
        "application/vnd.example.signature.v1",
        b"signed",
        BTreeMap::new(),
    );
    for artifact in [&sbom, &signature] {
        for blob in std::iter::once(&artifact.config).chain(&artifact.layers) {
            client
                .push_blob(&repo, blob.bytes.clone(), &blob.digest.to_string())
                .await
                .unwrap();
        }
        push_manifest(
            &client,
            &at_digest(&repo, &artifact.manifest),
            &artifact.manifest,
        )
        .await;
    }
    let subject = at_digest(&repo, &amd64.manifest);
    let all = client.pull_referrers(&subject, None).await.unwrap();
    let mut found: Vec<(String, Option<String>)> = all
        .manifests
        .iter()
        .map(|m| (m.digest.clone(), m.artifact_type.clone()))
        .collect();
    found.sort();
    let mut expected = vec![
        (
            sbom.manifest.digest.to_string(),
            Some("application/vnd.example.sbom.v1+json".to_string()),
        ),
        (
            signature.manifest.digest.to_string(),
            Some("application/vnd.example.signature.v1".to_string()),
        ),
    ];
    expected.sort();
    assert_eq!(found, expected);
    let sboms = client
        .pull_referrers(&subject, Some("application/vnd.example.sbom.v1+json"))
        .await
        .unwrap();
    assert_eq!(sboms.manifests.len(), 1);
    assert_eq!(sboms.manifests[0].digest, sbom.manifest.digest.to_string());
    let annotations = sboms.manifests[0].annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("org.example.kind").map(String::as_str),
        Some("sbom")
    );
    let (manifest, _) = client
        .pull_manifest(&at_digest(&repo, &sbom.manifest), &auth)
        .await
        .unwrap();
    let OciManifest::Image(m) = manifest else {
        panic!("an artifact is an image manifest");
    };
    assert_eq!(m.media_type.as_deref(), Some(oci::OCI_MANIFEST));
    assert_eq!(
        m.subject.map(|s| s.digest),
        Some(amd64.manifest.digest.to_string())
    );

    // Tags, paginated, and the catalog.
    let tags = client.list_tags(&repo, &auth, None, None).await.unwrap();
    assert_eq!(tags.tags, ["amd64", "arm64", "multi"]);
    let page = client
        .list_tags(&repo, &auth, Some(1), Some("amd64"))
        .await
        .unwrap();
    assert_eq!(page.tags, ["arm64"]);
    let catalog = client.catalog(&repo, &auth, None, None).await.unwrap();
    assert_eq!(catalog.repositories, ["team/app", "team/other"]);
}
