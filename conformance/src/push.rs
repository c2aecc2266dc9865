//! Push cases: every blob upload method (POST+PUT, single POST, chunked, streamed),
//! out-of-order chunks and upload status, cancelling an upload, cross-repository mounts,
//! zero-byte and `{}` blobs, and manifest pushes of every kind this suite builds (image,
//! index, nested and empty index, Docker schema 2, artifacts, `data` fields, custom
//! fields, a large manifest, tag overwrite).

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

use crate::Category;
use crate::content::{
    self, AT_EXAMPLE_A, Algorithm, Blob, Digest, Extra, Image, MT_CONFIG, MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER, MT_LAYER_GZ, Manifest, random_bytes,
};
use crate::pull::head_and_get_blob;
use crate::suite::{Ctx, Recorder, check_digest_header, empty_body, need, skip};
use crate::upload::{
    self, expect_range, next_location, out_of_order_range, patch_chunk, verify_blob_location,
    verify_blob_push,
};

const P: Category = Category::Push;

/// Turns a setup failure into a skip of the case that needed it.
pub(crate) async fn setup<T>(step: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    step.await.map_err(|e| skip(format!("setup failed: {e:#}")))
}

/// Checks a successful manifest push: `Docker-Content-Digest` (if sent) equals the
/// digest, and the `Location` serves the exact bytes with the pushed media type.
pub(crate) async fn verify_manifest_push(
    cx: &Ctx,
    resp: &crate::client::Resp,
    m: &Manifest,
) -> Result<()> {
    check_digest_header(resp, &m.digest)?;
    let loc = resp.require_header("Location")?;
    let url = cx.http.resolve(loc)?;
    let got = cx
        .http
        .call(Method::GET, &url, |r| {
            r.header("Accept", m.media_type.clone())
        })
        .await?;
    got.expect(&[200])?.expect_body(&m.bytes)?;
    match got.media_type() {
        Some(mt) if mt == m.media_type => Ok(()),
        other => bail!(
            "{}: Content-Type {other:?}, expected {:?}",
            got.what,
            m.media_type
        ),
    }
}

/// Runs the push cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    monolithic(cx, rec).await;
    chunked(cx, rec).await;
    streamed_and_cancel(cx, rec).await;
    mounts(cx, rec).await;
    well_known_blobs(cx, rec).await;
    manifests(cx, rec).await;
}

async fn monolithic(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let blob = Blob::random(1024, Algorithm::Sha256, MT_LAYER_GZ);
    let mut session: Option<Url> = None;
    rec.case(
        P,
        "POST /blobs/uploads/ opens an upload session: 202 with Location",
        async {
            session = Some(upload::open(cx, repo, None).await?.url);
            Ok(())
        },
    )
    .await;
    rec.case(
        P,
        "monolithic PUT <location>?digest= with the whole blob: 201 with a pullable Location",
        async {
            let loc = need(&session, "open an upload session")?;
            let resp = upload::monolithic(cx, repo, loc, &blob).await?;
            verify_blob_push(cx, &resp, &blob).await
        },
    )
    .await;

    let single = Blob::random(1024, Algorithm::Sha256, MT_LAYER_GZ);
    rec.case(
        P,
        "single POST ?digest= with the blob: 201 with Location (or 202, then PUT completes it)",
        async {
            let (resp, by_post) = upload::single_post(cx, repo, &single).await?;
            let loc = resp.require_header("Location")?;
            if by_post {
                check_digest_header(&resp, &single.digest)?;
            }
            verify_blob_location(cx, loc, &single.bytes).await
        },
    )
    .await;
}

async fn chunked(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let mut loc: Option<Url> = None;
    let mut blob: Option<Blob> = None;
    let mut chunk = upload::CHUNK;
    rec.case(
        P,
        "chunked: POST with Content-Length: 0 opens a session: 202 with Location",
        async {
            let session = upload::open(cx, repo, None).await?;
            chunk = session.chunk;
            loc = Some(session.url);
            blob = Some(Blob::random(chunk * 3 - 5, Algorithm::Sha256, MT_LAYER_GZ));
            Ok(())
        },
    )
    .await;

    rec.case(P, "chunked: PATCH first chunk with Content-Range and Content-Length: 202 with Location and Range 0-<end>", async {
        let (l, b) = (need(&loc, "open a chunked session")?, need(&blob, "open a chunked session")?);
        let resp = patch_chunk(cx, l, &b.bytes[..chunk], 0).await?;
        resp.expect(&[202])?;
        expect_range(&resp, chunk - 1)?;
        loc = Some(next_location(cx, &resp)?);
        Ok(())
    })
    .await;
    let after_first = loc.clone();

    // The first chunk again, then the rest of the blob while the second chunk is missing
    // (bytes `from` up to `to`, or to the end).
    for (name, from, to) in [
        (
            "chunked: re-sending the first chunk (out of order): 416",
            0,
            Some(chunk),
        ),
        (
            "chunked: chunk starting past the uploaded end (out of order): 416",
            chunk * 2,
            None,
        ),
    ] {
        rec.case(P, name, async {
            let (l, b) = (
                need(&after_first, "first chunk")?,
                need(&blob, "open a chunked session")?,
            );
            let bytes = &b.bytes[from..to.unwrap_or(b.bytes.len())];
            let resp = patch_chunk(cx, l, bytes, from).await?;
            resp.expect(&[416])?;
            out_of_order_range(&resp, chunk - 1)
        })
        .await;
    }

    let mut status_loc: Option<Url> = None;
    rec.case(
        P,
        "chunked: GET upload status: 204 with Location and Range 0-<end of first chunk>",
        async {
            let l = need(&after_first, "first chunk")?;
            let resp = cx.http.call(Method::GET, l, |r| r).await?;
            resp.expect(&[204])?;
            expect_range(&resp, chunk - 1)?;
            status_loc = Some(cx.http.resolve(resp.require_header("Location")?)?);
            Ok(())
        },
    )
    .await;

    let mut second_loc: Option<Url> = None;
    rec.case(
        P,
        "chunked: PATCH second chunk at the status location: 202 with Range 0-<end>",
        async {
            let (l, b) = (
                need(&status_loc, "upload status")?,
                need(&blob, "open a chunked session")?,
            );
            let resp = patch_chunk(cx, l, &b.bytes[chunk..chunk * 2], chunk).await?;
            resp.expect(&[202])?;
            expect_range(&resp, chunk * 2 - 1)?;
            second_loc = Some(next_location(cx, &resp)?);
            Ok(())
        },
    )
    .await;

    rec.case(P, "chunked: closing PUT ?digest= carrying the last chunk (Content-Range): 201 with a pullable Location", async {
        let (l, b) = (need(&second_loc, "second chunk")?, need(&blob, "open a chunked session")?);
        let resp = upload::close(cx, repo, l, b, Some((&b.bytes[chunk * 2..], chunk * 2))).await?;
        verify_blob_push(cx, &resp, b).await
    })
    .await;

    rec.case(P, "chunked: three PATCH chunks, then PUT ?digest= with an empty body: 201 with a pullable Location", async {
        let (b, location) = upload::chunked(cx, repo, Algorithm::Sha256, false).await?;
        verify_blob_location(cx, &location, &b.bytes).await
    })
    .await;
}

async fn streamed_and_cancel(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let blob = Blob::random(3000, Algorithm::Sha256, MT_LAYER_GZ);
    let mut loc: Option<Url> = None;
    rec.case(
        P,
        "streamed: PATCH with no Content-Length and no Content-Range: 202 with Location and Range",
        async {
            let l = setup(cx.start_upload(repo)).await?;
            let (resp, next) = upload::stream(cx, &l, &blob.bytes).await?;
            expect_range(&resp, blob.bytes.len() - 1)?;
            loc = Some(next);
            Ok(())
        },
    )
    .await;
    rec.case(
        P,
        "streamed: closing PUT ?digest= with an empty body: 201 with a pullable Location",
        async {
            let l = need(&loc, "streamed PATCH")?;
            let resp = upload::close(cx, repo, l, &blob, None).await?;
            verify_blob_push(cx, &resp, &blob).await
        },
    )
    .await;

    let mut cancelled: Option<Url> = None;
    let partial = Blob::random(2000, Algorithm::Sha256, MT_LAYER_GZ);
    rec.case(
        P,
        "cancel: DELETE on an upload session (after one chunk): 204",
        async {
            let l = setup(cx.start_upload(repo)).await?;
            let resp = patch_chunk(cx, &l, &partial.bytes[..1000], 0).await?;
            let l = next_location(cx, &resp)?;
            let del = cx.http.call(Method::DELETE, &l, empty_body).await?;
            del.expect(&[204])?;
            cancelled = Some(l);
            Ok(())
        },
    )
    .await;
    rec.case(
        P,
        "cancel: GET status of the cancelled session: 404 BLOB_UPLOAD_UNKNOWN",
        async {
            let l = need(&cancelled, "cancel the upload")?;
            let resp = cx.http.call(Method::GET, l, |r| r).await?;
            resp.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        P,
        "cancel: PATCH to the cancelled session: 404 BLOB_UPLOAD_UNKNOWN",
        async {
            let l = need(&cancelled, "cancel the upload")?;
            let resp = patch_chunk(cx, l, &partial.bytes[1000..], 1000).await?;
            resp.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        P,
        "cancel: the cancelled blob was not stored (GET blob: 404)",
        async {
            need(&cancelled, "cancel the upload")?;
            let resp = cx
                .http
                .blob(Method::GET, repo, &partial.digest.to_string(), None)
                .await?;
            resp.expect(&[404])?;
            Ok(())
        },
    )
    .await;
}

/// POSTs a mount request to `target`.
async fn mount(
    cx: &Ctx,
    target: &str,
    digest: &Digest,
    from: Option<&str>,
) -> Result<crate::client::Resp> {
    let mut url = cx.uploads_url(target)?;
    crate::client::add_query(&mut url, "mount", &digest.to_string());
    if let Some(from) = from {
        crate::client::add_query(&mut url, "from", from);
    }
    cx.http.call(Method::POST, &url, empty_body).await
}

/// Cancels an upload session a mount answer opened; failures are ignored, as the spec
/// tells clients to do.
async fn cancel_quietly(cx: &Ctx, resp: &crate::client::Resp) {
    if let Some(Ok(url)) = resp.header("Location").map(|l| cx.http.resolve(l)) {
        let _ = cx.http.call(Method::DELETE, &url, empty_body).await;
    }
}

async fn mounts(cx: &Ctx, rec: &mut Recorder<'_>) {
    let (repo, other) = (&cx.repo, &cx.other);
    let source = Blob::random(1200, Algorithm::Sha256, MT_LAYER_GZ);
    let mut mounted = false;
    rec.case(
        P,
        "cross-repository mount with from: 201 with Location of the blob in the target repository",
        async {
            setup(cx.push_blob(repo, &source)).await?;
            let resp = mount(cx, other, &source.digest, Some(repo)).await?;
            if resp.status.as_u16() == 202 {
                cancel_quietly(cx, &resp).await;
            }
            resp.expect(&[201])?;
            cx.created_blob(other, &source.digest);
            mounted = true;
            verify_blob_push(cx, &resp, &source).await
        },
    )
    .await;
    rec.case(
        P,
        "cross-repository mount: the blob is pullable from the target repository",
        async {
            if !mounted {
                return Err(skip("the mount did not succeed"));
            }
            let resp = cx
                .http
                .blob(Method::GET, other, &source.digest.to_string(), None)
                .await?;
            resp.expect(&[200])?.expect_body(&source.bytes)?;
            Ok(())
        },
    )
    .await;

    let anon = Blob::random(1300, Algorithm::Sha256, MT_LAYER_GZ);
    rec.case(
        P,
        "cross-repository mount without from: 201 (mounted) or 202 (upload session with Location)",
        async {
            setup(cx.push_blob(repo, &anon)).await?;
            let resp = mount(cx, other, &anon.digest, None).await?;
            resp.expect(&[201, 202])?;
            let loc = resp.require_header("Location")?;
            if resp.status.as_u16() == 201 {
                cx.created_blob(other, &anon.digest);
                verify_blob_location(cx, loc, &anon.bytes).await?;
            } else {
                cancel_quietly(cx, &resp).await;
            }
            Ok(())
        },
    )
    .await;

    let absent = Digest::of(Algorithm::Sha256, &random_bytes(64));
    rec.case(
        P,
        "cross-repository mount of a blob absent from 'from': 202 with an upload Location",
        async {
            let resp = mount(cx, other, &absent, Some(repo)).await?;
            resp.expect(&[202])?;
            resp.require_header("Location")?;
            cancel_quietly(cx, &resp).await;
            Ok(())
        },
    )
    .await;
    rec.case(
        P,
        "cross-repository mount without from of an unknown digest: 202 with an upload Location",
        async {
            let resp = mount(cx, other, &absent, None).await?;
            resp.expect(&[202])?;
            resp.require_header("Location")?;
            cancel_quietly(cx, &resp).await;
            Ok(())
        },
    )
    .await;
}

async fn well_known_blobs(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    for (label, blob) in [
        (
            "zero-byte blob",
            Blob::new(Vec::new(), Algorithm::Sha256, MT_LAYER_GZ),
        ),
        ("empty JSON blob {}", Blob::empty_json(Algorithm::Sha256)),
    ] {
        rec.case(
            P,
            format!(
                "{label}: POST+PUT upload, then HEAD and GET return 200 with its length and content"
            ),
            async {
                cx.push_blob(repo, &blob).await?;
                head_and_get_blob(cx, repo, &blob, |r, b| check_digest_header(r, &b.digest)).await
            },
        )
        .await;
    }
}

/// Pushes `m` to the test repository under `reference`, checks the push answer, and
/// notes it for the pull cases under `label`.
async fn push_and_verify(cx: &Ctx, reference: &str, m: &Manifest, label: &str) -> Result<()> {
    let resp = cx.push_manifest(&cx.repo, reference, m).await?;
    cx.pushed(label, &cx.repo, m);
    verify_manifest_push(cx, &resp, m).await
}

async fn manifests(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let fixture = &cx.fixture;
    rec.case(P, "PUT image manifest by tag: 201, Location serves the exact bytes, Docker-Content-Digest matches", async {
        setup(cx.push_blobs(repo, &fixture.blobs())).await?;
        push_and_verify(cx, &cx.fixture_tag, &fixture.manifest, "image manifest (tagged)").await?;
        cx.fixture_done();
        Ok(())
    })
    .await;

    rec.case(
        P,
        "PUT image manifest by digest: 201 with Location",
        async {
            let img = Image::random(Algorithm::Sha256, &[700], Extra::default())?;
            setup(cx.push_blobs(repo, &img.blobs())).await?;
            push_and_verify(
                cx,
                &img.manifest.digest.to_string(),
                &img.manifest,
                "image manifest (by digest)",
            )
            .await
        },
    )
    .await;

    rec.case(P, "PUT image manifest with no layers: 201", async {
        let img = Image::random(Algorithm::Sha256, &[], Extra::default())?;
        setup(cx.push_blobs(repo, &img.blobs())).await?;
        push_and_verify(
            cx,
            &cx.tag("no-layers"),
            &img.manifest,
            "image manifest without layers",
        )
        .await
    })
    .await;

    let mut index_manifest: Option<Manifest> = None;
    rec.case(
        P,
        "PUT OCI image index of two pushed platform manifests: 201",
        async {
            let mut entries = Vec::new();
            for arch in ["amd64", "arm64"] {
                let img = Image::random(Algorithm::Sha256, &[600], Extra::default())?;
                setup(cx.push_blobs(repo, &img.blobs())).await?;
                setup(cx.push_manifest(repo, &img.manifest.digest.to_string(), &img.manifest))
                    .await?;
                entries.push(img.manifest.platform_descriptor(arch));
            }
            let idx = content::index(entries, Extra::default(), Algorithm::Sha256)?;
            push_and_verify(cx, &cx.tag("index"), &idx, "image index").await?;
            index_manifest = Some(idx);
            Ok(())
        },
    )
    .await;

    rec.case(P, "PUT index of indexes (nested index): 201", async {
        let inner = need(&index_manifest, "push an image index")?;
        let outer = content::index(
            vec![inner.descriptor()],
            Extra::default(),
            Algorithm::Sha256,
        )?;
        push_and_verify(cx, &cx.tag("nested-index"), &outer, "nested image index").await
    })
    .await;

    rec.case(P, "PUT empty image index (no manifests): 201", async {
        let idx = content::index(Vec::new(), Extra::default(), Algorithm::Sha256)?;
        push_and_verify(cx, &cx.tag("empty-index"), &idx, "empty image index").await
    })
    .await;

    rec.case(
        P,
        "PUT Docker schema 2 manifest: 201, served back with its Docker media type",
        async {
            let layer = Blob::random(800, Algorithm::Sha256, MT_DOCKER_LAYER);
            let config = Blob::config(Algorithm::Sha256, MT_DOCKER_CONFIG, &[&layer])?;
            setup(cx.push_blobs(repo, &[&config, &layer])).await?;
            let m = content::docker_manifest(&config, &[&layer])?;
            push_and_verify(cx, &cx.tag("docker"), &m, "Docker schema 2 manifest").await
        },
    )
    .await;

    rec.case(P, "PUT artifact manifest (artifactType, empty config {} of application/vnd.oci.empty.v1+json): 201", async {
        let layer = Blob::random(500, Algorithm::Sha256, AT_EXAMPLE_A);
        setup(cx.push_blobs(repo, &[&Blob::empty_json(Algorithm::Sha256), &layer])).await?;
        let m = content::artifact(AT_EXAMPLE_A, &layer, Extra::default())?;
        push_and_verify(cx, &cx.tag("artifact"), &m, "artifact manifest").await
    })
    .await;

    rec.case(
        P,
        "PUT artifact manifest whose only layer is the empty descriptor: 201",
        async {
            let empty = Blob::empty_json(Algorithm::Sha256);
            setup(cx.push_blob(repo, &empty)).await?;
            let m = content::artifact(AT_EXAMPLE_A, &empty, Extra::default())?;
            push_and_verify(
                cx,
                &cx.tag("artifact-no-layers"),
                &m,
                "artifact manifest without layers",
            )
            .await
        },
    )
    .await;

    rec.case(
        P,
        "PUT manifest whose descriptors carry the data field: 201",
        async {
            let layer = Blob::random(300, Algorithm::Sha256, MT_LAYER_GZ);
            let config = Blob::config(Algorithm::Sha256, MT_CONFIG, &[&layer])?;
            setup(cx.push_blobs(repo, &[&config, &layer])).await?;
            let m = content::image(
                config.descriptor_with_data(),
                vec![layer.descriptor_with_data()],
                Extra::default(),
                Algorithm::Sha256,
            )?;
            push_and_verify(cx, &cx.tag("data-field"), &m, "manifest with data fields").await
        },
    )
    .await;

    rec.case(
        P,
        "PUT manifest with fields outside the schema: 201, stored byte for byte",
        async {
            let mut custom = Map::new();
            custom.insert(
                format!("org.example.custom-{}", cx.run_id),
                Value::String("kept as pushed".into()),
            );
            let img = Image::random(
                Algorithm::Sha256,
                &[400],
                Extra {
                    custom: Some(custom),
                    ..Extra::default()
                },
            )?;
            setup(cx.push_blobs(repo, &img.blobs())).await?;
            push_and_verify(
                cx,
                &cx.tag("custom-fields"),
                &img.manifest,
                "manifest with custom fields",
            )
            .await
        },
    )
    .await;

    rec.case(
        P,
        "PUT a manifest of about 3.9 MB (the spec asks registries to accept at least 4 MB): 201",
        async {
            let big = "A".repeat(10_000);
            let mut ann = Map::new();
            for i in 0..390 {
                ann.insert(format!("org.example.large-{i}"), Value::String(big.clone()));
            }
            let img = Image::random(
                Algorithm::Sha256,
                &[200],
                Extra {
                    annotations: Some(ann),
                    ..Extra::default()
                },
            )?;
            setup(cx.push_blobs(repo, &img.blobs())).await?;
            let resp = cx
                .push_manifest(repo, &cx.tag("large"), &img.manifest)
                .await?;
            verify_manifest_push(cx, &resp, &img.manifest).await
        },
    )
    .await;

    rec.case(
        P,
        "PUT a different manifest to an existing tag moves the tag",
        async {
            let tag = cx.tag("moved");
            let first = Image::random(Algorithm::Sha256, &[100], Extra::default())?;
            let second = Image::random(Algorithm::Sha256, &[100], Extra::default())?;
            let mut both = first.blobs();
            both.extend(second.blobs());
            setup(cx.push_blobs(repo, &both)).await?;
            cx.push_manifest(repo, &tag, &first.manifest).await?;
            cx.push_manifest(repo, &tag, &second.manifest).await?;
            let got = cx.http.manifest(Method::GET, repo, &tag).await?;
            got.expect(&[200])?.expect_body(&second.manifest.bytes)?;
            Ok(())
        },
    )
    .await;
}
