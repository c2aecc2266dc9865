//! sha512 cases: blobs uploaded by every method under sha512 digests (chunked and
//! streamed sessions opened with `digest-algorithm=sha512`), pulled back by those digests,
//! an image manifest and an index addressed by sha512, and a mismatching sha512 digest.

use anyhow::{Result, bail};
use reqwest::Method;

use crate::Category;
use crate::client::Resp;
use crate::content::{self, Algorithm, Blob, Digest, Extra, Image, MT_LAYER_GZ};
use crate::pull::check_manifest;
use crate::push::{
    chunk_size, chunked_upload, put_final, setup, streamed, verify_blob_location,
    verify_manifest_push,
};
use crate::suite::{Ctx, Recorder, empty_body, with_digest};

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
    let d = blob.digest.to_string();
    let head = cx.http.blob(Method::HEAD, &cx.repo, &d, None).await?;
    head.expect(&[200])?
        .expect_header("Content-Length", &blob.bytes.len().to_string())?;
    digest_header_matches(&head, &blob.bytes)?;
    let get = cx.http.blob(Method::GET, &cx.repo, &d, None).await?;
    get.expect(&[200])?.expect_body(&blob.bytes)?;
    digest_header_matches(&get, &blob.bytes)
}

/// Runs the sha512 cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let alg = [("digest-algorithm", "sha512")];

    let mono = Blob::random(1024, Algorithm::Sha512, MT_LAYER_GZ);
    rec.case(C, "sha512 blob by POST then PUT ?digest=sha512:…: 201, then HEAD/GET by that digest return it", async {
        let loc = cx.start_upload(repo).await?;
        let bytes = mono.bytes.clone();
        let resp = cx
            .http
            .call(Method::PUT, &with_digest(&loc, &mono.digest), |r| {
                r.header("Content-Type", "application/octet-stream").body(bytes)
            })
            .await?;
        resp.expect(&[201])?;
        cx.created_blob(repo, &mono.digest);
        verify_blob_location(cx, resp.require_header("Location")?, &mono.bytes).await?;
        check_sha512_blob(cx, &mono).await
    })
    .await;

    let single = Blob::random(900, Algorithm::Sha512, MT_LAYER_GZ);
    rec.case(
        C,
        "sha512 blob by single POST ?digest=sha512:…: 201 (or 202, then PUT completes it)",
        async {
            let mut url = cx.uploads_url(repo)?;
            crate::client::add_query(&mut url, "digest", &single.digest.to_string());
            let bytes = single.bytes.clone();
            let resp = cx
                .http
                .call(Method::POST, &url, |r| {
                    r.header("Content-Type", "application/octet-stream")
                        .body(bytes)
                })
                .await?;
            resp.expect(&[201, 202])?;
            if resp.status.as_u16() == 202 {
                let loc = cx.http.resolve(resp.require_header("Location")?)?;
                let bytes = single.bytes.clone();
                cx.http
                    .call(Method::PUT, &with_digest(&loc, &single.digest), |r| {
                        r.header("Content-Type", "application/octet-stream")
                            .body(bytes)
                    })
                    .await?
                    .expect(&[201])?;
            }
            cx.created_blob(repo, &single.digest);
            check_sha512_blob(cx, &single).await
        },
    )
    .await;

    rec.case(C, "sha512 blob by chunked upload opened with ?digest-algorithm=sha512: 201, then HEAD/GET return it", async {
        let mut url = cx.uploads_url(repo)?;
        crate::client::add_query(&mut url, alg[0].0, alg[0].1);
        let resp = cx.http.call(Method::POST, &url, empty_body).await?;
        resp.expect(&[202])?;
        let size = chunk_size(&resp);
        let loc = cx.http.resolve(resp.require_header("Location")?)?;
        let blob = Blob::random(size * 3 - 5, Algorithm::Sha512, MT_LAYER_GZ);
        let location = chunked_upload(cx, loc, &blob, size, true).await?;
        cx.created_blob(repo, &blob.digest);
        verify_blob_location(cx, &location, &blob.bytes).await?;
        check_sha512_blob(cx, &blob).await
    })
    .await;

    rec.case(
        C,
        "sha512 blob by streamed PATCH in a session opened with ?digest-algorithm=sha512: 201",
        async {
            let blob = Blob::random(2500, Algorithm::Sha512, MT_LAYER_GZ);
            let loc = setup(cx.start_upload_with(repo, &alg)).await?;
            let body = streamed(blob.bytes.clone());
            let resp = cx
                .http
                .call(Method::PATCH, &loc, |r| {
                    r.header("Content-Type", "application/octet-stream")
                        .body(body)
                })
                .await?;
            resp.expect(&[202])?;
            let loc = cx.http.resolve(resp.require_header("Location")?)?;
            let put = put_final(cx, &loc, &blob.digest, None).await?;
            put.expect(&[201])?;
            cx.created_blob(repo, &blob.digest);
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
        let resp = cx
            .http
            .call(Method::PUT, &with_digest(&loc, &blob.digest), |r| {
                r.header("Content-Type", "application/octet-stream").body(bytes)
            })
            .await?;
        resp.expect_error(&[400], &["DIGEST_INVALID"])?;
        cx.http
            .blob(Method::GET, repo, &blob.digest.to_string(), None)
            .await?
            .expect(&[404])?;
        Ok(())
    })
    .await;
}
