//! Error cases: each answer must carry the right status and a JSON body of the spec's
//! form (`{"errors":[{"code":..,"message":..}]}`) with a code from the spec's table.
//! Covers unknown blobs, manifests, repositories and upload sessions, invalid repository
//! names and tags, invalid manifests, and digests that do not match the content, for every
//! upload method (a registry that stores such content fails the most basic promise of
//! content addressing).

use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use url::Url;

use crate::Category;
use crate::client::Resp;
use crate::content::{
    Algorithm, Blob, Digest, MT_LAYER_GZ, MT_MANIFEST, Manifest, random_bytes, random_id,
    random_uuid,
};
use crate::push::{chunk_size, patch_chunk, put_final, setup, streamed};
use crate::suite::{Ctx, Recorder, empty_body, with_digest, with_digest_text};

const E: Category = Category::Errors;

/// Content and a digest that is not its digest.
fn mismatched(len: usize) -> (Vec<u8>, Digest) {
    let bytes = random_bytes(len);
    let mut other = bytes.clone();
    other.extend_from_slice(b"oh no");
    (bytes, Digest::of(Algorithm::Sha256, &other))
}

/// After a rejected upload, the claimed digest must not be pullable.
async fn not_stored(cx: &Ctx, digest: &str) -> Result<()> {
    cx.http
        .blob(Method::HEAD, &cx.repo, digest, None)
        .await?
        .expect(&[404])?;
    Ok(())
}

/// PUT of `bytes` to an upload session with `?digest=<claimed>`.
async fn put_whole(cx: &Ctx, loc: &Url, bytes: &[u8]) -> Result<Resp> {
    let body = bytes.to_vec();
    cx.http
        .call(Method::PUT, loc, |r| {
            r.header("Content-Type", "application/octet-stream")
                .body(body)
        })
        .await
}

/// Runs the error cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    unknown(cx, rec).await;
    names_and_tags(cx, rec).await;
    manifests(cx, rec).await;
    blob_digests(cx, rec).await;
}

async fn unknown(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let missing = Digest::of(Algorithm::Sha256, &random_bytes(32)).to_string();
    rec.case(E, "GET blob that does not exist: 404 BLOB_UNKNOWN", async {
        cx.http
            .blob(Method::GET, repo, &missing, None)
            .await?
            .expect_error(&[404], &["BLOB_UNKNOWN"])
    })
    .await;
    rec.case(
        E,
        "GET manifest by a tag that does not exist: 404 MANIFEST_UNKNOWN",
        async {
            setup(cx.ensure_fixture()).await?;
            cx.http
                .manifest(Method::GET, repo, &format!("missing-{}", random_id()))
                .await?
                .expect_error(&[404], &["MANIFEST_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        E,
        "GET manifest by a digest that does not exist: 404 MANIFEST_UNKNOWN",
        async {
            setup(cx.ensure_fixture()).await?;
            cx.http
                .manifest(Method::GET, repo, &missing)
                .await?
                .expect_error(&[404], &["MANIFEST_UNKNOWN"])
        },
    )
    .await;
    let no_repo = format!("{repo}/missing-{}", random_id());
    rec.case(
        E,
        "GET tags/list of a repository that does not exist: 404 NAME_UNKNOWN",
        async {
            cx.http
                .get(&format!("/v2/{no_repo}/tags/list"))
                .await?
                .expect_error(&[404], &["NAME_UNKNOWN"])
        },
    )
    .await;
    let session = format!("/v2/{repo}/blobs/uploads/{}", random_uuid());
    rec.case(
        E,
        "GET status of an upload session that never existed: 404 BLOB_UPLOAD_UNKNOWN",
        async {
            cx.http
                .get(&session)
                .await?
                .expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        E,
        "PATCH to an upload session that never existed: 404 BLOB_UPLOAD_UNKNOWN",
        async {
            let url = cx.http.url(&session)?;
            patch_chunk(cx, &url, b"0123456789", 0)
                .await?
                .expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        E,
        "PUT closing an upload session that never existed: 404 BLOB_UPLOAD_UNKNOWN",
        async {
            let url = cx.http.url(&session)?;
            let (bytes, _) = mismatched(10);
            let d = Digest::of(Algorithm::Sha256, &bytes);
            put_whole(cx, &with_digest(&url, &d), &bytes)
                .await?
                .expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
        },
    )
    .await;
}

async fn names_and_tags(cx: &Ctx, rec: &mut Recorder<'_>) {
    let id = random_id();
    for name in [
        format!("conformance/Upper-{id}"),
        format!("conformance/-lead-{id}"),
        format!("conformance/trail-{id}-"),
        format!("conformance/dots..{id}"),
    ] {
        rec.case(
            E,
            format!("POST upload to invalid repository name {name:?}: NAME_INVALID"),
            async {
                let url = cx.uploads_url(&name)?;
                cx.http
                    .call(Method::POST, &url, empty_body)
                    .await?
                    .expect_error(&[400, 404], &["NAME_INVALID"])
            },
        )
        .await;
    }
    for (label, tag) in [
        ("starting with '.'", format!(".tag-{id}")),
        ("of 129 characters", format!("t{}", "x".repeat(128))),
        (
            "with a character outside [a-zA-Z0-9._-]",
            format!("tag+{id}"),
        ),
    ] {
        rec.case(
            E,
            format!(
                "PUT manifest to an invalid tag ({label}): 400 MANIFEST_INVALID or TAG_INVALID"
            ),
            async {
                setup(cx.ensure_fixture()).await?;
                let resp = cx
                    .put_manifest(&cx.repo, &tag, &cx.fixture.manifest)
                    .await?;
                resp.expect_error(&[400], &["MANIFEST_INVALID", "TAG_INVALID"])
            },
        )
        .await;
    }
}

async fn manifests(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    rec.case(
        E,
        "PUT manifest whose body is not JSON: 400 MANIFEST_INVALID",
        async {
            let doc = json!({});
            let m = Manifest::from_bytes(
                b"{\"schemaVersion\": 2, not json".to_vec(),
                &doc,
                MT_MANIFEST,
                Algorithm::Sha256,
            );
            cx.put_manifest(repo, &cx.tag("not-json"), &m)
                .await?
                .expect_error(&[400], &["MANIFEST_INVALID"])
        },
    )
    .await;
    rec.case(
        E,
        "PUT image manifest without its required config: 400 MANIFEST_INVALID",
        async {
            let doc = json!({"schemaVersion": 2, "mediaType": MT_MANIFEST, "layers": []});
            let m = Manifest::from_json(&doc, MT_MANIFEST, Algorithm::Sha256)?;
            cx.put_manifest(repo, &cx.tag("no-config"), &m)
                .await?
                .expect_error(&[400], &["MANIFEST_INVALID"])
        },
    )
    .await;
    rec.case(
        E,
        "PUT manifest to a digest reference that does not match the body: 400 DIGEST_INVALID",
        async {
            setup(cx.ensure_fixture()).await?;
            let wrong = Digest::of(Algorithm::Sha256, &random_bytes(32));
            let resp = cx
                .put_manifest(repo, &wrong.to_string(), &cx.fixture.manifest)
                .await?;
            resp.expect_error(&[400], &["DIGEST_INVALID"])?;
            cx.http
                .manifest(Method::GET, repo, &wrong.to_string())
                .await?
                .expect(&[404])?;
            Ok(())
        },
    )
    .await;
    rec.case(E, "PUT manifest to a malformed digest reference (sha256:baddigeststring): 400 with a spec error code", async {
        setup(cx.ensure_fixture()).await?;
        cx.put_manifest(repo, "sha256:baddigeststring", &cx.fixture.manifest)
            .await?
            .expect_error(&[400], &[])
    })
    .await;
    rec.case(
        E,
        "GET manifest by a malformed digest (sha256:baddigeststring): 400 or 404",
        async {
            cx.http
                .manifest(Method::GET, repo, "sha256:baddigeststring")
                .await?
                .expect(&[400, 404])?;
            Ok(())
        },
    )
    .await;
}

async fn blob_digests(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    rec.case(
        E,
        "monolithic PUT whose content does not match ?digest=: 400 DIGEST_INVALID, nothing stored",
        async {
            let (bytes, claimed) = mismatched(1500);
            let loc = setup(cx.start_upload(repo)).await?;
            put_whole(cx, &with_digest(&loc, &claimed), &bytes)
                .await?
                .expect_error(&[400], &["DIGEST_INVALID"])?;
            not_stored(cx, &claimed.to_string()).await
        },
    )
    .await;

    rec.case(E, "single POST whose content does not match ?digest=: 400 DIGEST_INVALID (or 202, then the PUT gets it), nothing stored", async {
        let (bytes, claimed) = mismatched(1500);
        let mut url = cx.uploads_url(repo)?;
        crate::client::add_query(&mut url, "digest", &claimed.to_string());
        let resp = put_or_post(cx, Method::POST, &url, &bytes).await?;
        if resp.status.as_u16() == 202 {
            let loc = cx.http.resolve(resp.require_header("Location")?)?;
            put_whole(cx, &with_digest(&loc, &claimed), &bytes)
                .await?
                .expect_error(&[400], &["DIGEST_INVALID"])?;
        } else {
            resp.expect_error(&[400], &["DIGEST_INVALID"])?;
        }
        not_stored(cx, &claimed.to_string()).await
    })
    .await;

    for last_in_put in [false, true] {
        let how = if last_in_put {
            "with the last chunk in the closing PUT"
        } else {
            "closed by an empty PUT"
        };
        rec.case(E, format!("chunked upload {how} whose content does not match ?digest=: 400 DIGEST_INVALID, nothing stored"), async {
            let url = cx.uploads_url(repo)?;
            let resp = cx.http.call(Method::POST, &url, empty_body).await?;
            resp.expect(&[202])?;
            let size = chunk_size(&resp);
            let mut loc = cx.http.resolve(resp.require_header("Location")?)?;
            let (bytes, claimed) = mismatched(size * 2 + 10);
            let (first, rest) = bytes.split_at(size);
            let p = patch_chunk(cx, &loc, first, 0).await?;
            p.expect(&[202])?;
            loc = cx.http.resolve(p.require_header("Location")?)?;
            let resp = if last_in_put {
                put_final(cx, &loc, &claimed, Some((rest, size))).await?
            } else {
                let p = patch_chunk(cx, &loc, rest, size).await?;
                p.expect(&[202])?;
                loc = cx.http.resolve(p.require_header("Location")?)?;
                put_final(cx, &loc, &claimed, None).await?
            };
            resp.expect_error(&[400], &["DIGEST_INVALID"])?;
            not_stored(cx, &claimed.to_string()).await
        })
        .await;
    }

    rec.case(
        E,
        "streamed upload whose content does not match ?digest=: 400 DIGEST_INVALID, nothing stored",
        async {
            let (bytes, claimed) = mismatched(2500);
            let loc = setup(cx.start_upload(repo)).await?;
            let body = streamed(bytes);
            let p = cx
                .http
                .call(Method::PATCH, &loc, |r| {
                    r.header("Content-Type", "application/octet-stream")
                        .body(body)
                })
                .await?;
            p.expect(&[202])?;
            let loc = cx.http.resolve(p.require_header("Location")?)?;
            put_final(cx, &loc, &claimed, None)
                .await?
                .expect_error(&[400], &["DIGEST_INVALID"])?;
            not_stored(cx, &claimed.to_string()).await
        },
    )
    .await;

    rec.case(
        E,
        "upload closed with a malformed digest (sha256:not-hex): 400 DIGEST_INVALID",
        async {
            let blob = Blob::random(100, Algorithm::Sha256, MT_LAYER_GZ);
            let loc = setup(cx.start_upload(repo)).await?;
            put_whole(cx, &with_digest_text(&loc, "sha256:not-hex"), &blob.bytes)
                .await?
                .expect_error(&[400], &["DIGEST_INVALID"])
        },
    )
    .await;

    rec.case(
        E,
        "upload closed with an unsupported algorithm (md5:…): 400 DIGEST_INVALID or UNSUPPORTED",
        async {
            let blob = Blob::random(100, Algorithm::Sha256, MT_LAYER_GZ);
            let loc = setup(cx.start_upload(repo)).await?;
            put_whole(
                cx,
                &with_digest_text(&loc, "md5:d41d8cd98f00b204e9800998ecf8427e"),
                &blob.bytes,
            )
            .await?
            .expect_error(&[400], &["DIGEST_INVALID", "UNSUPPORTED"])
        },
    )
    .await;
}

/// Sends `bytes` with `method` to `url` as an octet stream.
async fn put_or_post(cx: &Ctx, method: Method, url: &Url, bytes: &[u8]) -> Result<Resp> {
    let body = bytes.to_vec();
    cx.http
        .call(method, url, |r| {
            r.header("Content-Type", "application/octet-stream")
                .body(body)
        })
        .await
}
