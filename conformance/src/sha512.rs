//! sha512 cases: blobs uploaded by every method under sha512 digests (chunked and
//! streamed sessions opened with `digest-algorithm=sha512`), pulled back by those digests,
//! an image manifest and an index addressed by sha512, and a mismatching sha512 digest.

use anyhow::{Result, bail};
use reqwest::Method;

use crate::Category;
use crate::client::Resp;
use crate::content::{self, Algorithm, Blob, Digest, Extra, Image, MT_LAYER_GZ};
use crate::pull::{check_manifest, head_and_get_blob};
use crate::push::{setup, verify_manifest_push};
use crate::suite::{Ctx, Recorder};
use crate::upload::{self, verify_blob_location};

const C: Category = Category::Sha512;

/// `Docker-Content-Digest` must be present and be a digest of `bytes` (the spec allows a
/// registry to answer with another algorithm than the one asked for).
fn digest_header_matches(resp: &Resp, bytes: &[u8]) -> Result<()> {
    let h = resp.require_header("Docker-Content-Digest")?;
    match Digest::parse(h) {
        Some(d) if d.matches(bytes) => Ok(()),
        _ => bail!(
            "{}: Docker-Content-Digest {h:?} is not a digest of the content",
            resp.what
        ),
    }
}

/// HEAD and GET of a sha512 blob.
async fn check_sha512_blob(cx: &Ctx, blob: &Blob) -> Result<()> {
    head_and_get_blob(cx, &cx.repo, blob, |r, b| {
        digest_header_matches(r, &b.bytes)
    })
    .await
}

/// Runs the sha512 cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;

    let mono = Blob::random(1024, Algorithm::Sha512, MT_LAYER_GZ);
    rec.case(C, "sha512 blob by POST then PUT ?digest=sha512:…: 201, then HEAD/GET by that digest return it", async {
        let resp = cx.push_blob(repo, &mono).await?;
        verify_blob_location(cx, resp.require_header("Location")?, &mono.bytes).await?;
        check_sha512_blob(cx, &mono).await
    })
    .await;

    let single = Blob::random(900, Algorithm::Sha512, MT_LAYER_GZ);
    rec.case(
        C,
        "sha512 blob by single POST ?digest=sha512:…: 201 (or 202, then PUT completes it)",
        async {
            upload::single_post(cx, repo, &single).await?;
            check_sha512_blob(cx, &single).await
        },
    )
    .await;

    rec.case(C, "sha512 blob by chunked upload opened with ?digest-algorithm=sha512: 201, then HEAD/GET return it", async {
        let (blob, location) = upload::chunked(cx, repo, Algorithm::Sha512, true).await?;
        verify_blob_location(cx, &location, &blob.bytes).await?;
        check_sha512_blob(cx, &blob).await
    })
    .await;

    rec.case(
        C,
        "sha512 blob by streamed PATCH in a session opened with ?digest-algorithm=sha512: 201",
        async {
            let blob = Blob::random(2500, Algorithm::Sha512, MT_LAYER_GZ);
            let session = setup(upload::open(cx, repo, Some(Algorithm::Sha512))).await?;
            let (_, loc) = upload::stream(cx, &session.url, &blob.bytes).await?;
            upload::close(cx, repo, &loc, &blob, None).await?;
            check_sha512_blob(cx, &blob).await
        },
    )
    .await;

    let mut image: Option<Image> = None;
    rec.case(C, "PUT image manifest of sha512 blobs by its sha512 digest: 201, Docker-Content-Digest equals that digest", async {
        let img = Image::random(Algorithm::Sha512, &[700, 300], Extra::default())?;
        setup(cx.push_blobs(repo, &img.blobs())).await?;
        let reference = img.manifest.digest.to_string();
        let resp = cx.push_manifest(repo, &reference, &img.manifest).await?;
        verify_manifest_push(cx, &resp, &img.manifest).await?;
        image = Some(img);
        Ok(())
    })
    .await;

    rec.case(
        C,
        "GET and HEAD the sha512 manifest by digest: exact bytes, Docker-Content-Digest sha512",
        async {
            let img = crate::suite::need(&image, "push the sha512 manifest")?;
            let d = img.manifest.digest.to_string();
            check_manifest(cx, Method::HEAD, repo, &d, &img.manifest).await?;
            check_manifest(cx, Method::GET, repo, &d, &img.manifest).await
        },
    )
    .await;

    rec.case(C, "PUT image index by sha512 digest listing a sha512 manifest: 201, served back byte for byte", async {
        let img = crate::suite::need(&image, "push the sha512 manifest")?;
        let idx = content::index(
            vec![img.manifest.platform_descriptor("amd64")],
            Extra::default(),
            Algorithm::Sha512,
        )?;
        let resp = cx.push_manifest(repo, &idx.digest.to_string(), &idx).await?;
        verify_manifest_push(cx, &resp, &idx).await?;
        check_manifest(cx, Method::GET, repo, &idx.digest.to_string(), &idx).await
    })
    .await;

    rec.case(C, "sha512 blob upload whose content does not match the sha512 digest: 400 DIGEST_INVALID, nothing stored", async {
        let blob = Blob::random(1000, Algorithm::Sha512, MT_LAYER_GZ);
        let loc = cx.start_upload(repo).await?;
        let mut bytes = blob.bytes.clone();
        bytes.extend_from_slice(b"oh no");
        let resp = upload::put_blob(cx, &loc, &blob.digest, &bytes).await?;
        resp.expect_error(&[400], &["DIGEST_INVALID"])?;
        cx.http
            .blob(Method::GET, repo, &blob.digest.to_string(), None)
            .await?
            .expect(&[404])?;
        Ok(())
    })
    .await;
}
