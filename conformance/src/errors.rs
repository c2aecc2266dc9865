//! Error cases: each answer must carry the right status and a JSON body of the spec's
//! form (`{"errors":[{"code":..,"message":..}]}`) with a code from the spec's table.
//! Covers unknown blobs, manifests, repositories and upload sessions, invalid repository
//! names and tags, invalid manifests, and digests that do not match the content, for every
//! upload method (a registry that stores such content fails the most basic promise of
//! content addressing).

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use crate::Category;
use crate::client::Resp;
use crate::content::{
    Algorithm, Blob, Digest, MT_LAYER_GZ, MT_MANIFEST, Manifest, random_bytes, random_id,
    random_uuid,
};
use crate::push::setup;
use crate::suite::{Ctx, Recorder, empty_body, with_digest_text};
use crate::upload::{self, next_location, patch_chunk, post_blob, put_blob, put_bytes, put_final};

const E: Category = Category::Errors;

/// Content and a digest that is not its digest.
fn mismatched(len: usize) -> (Vec<u8>, Digest) {
    let bytes = random_bytes(len);
    let mut other = bytes.clone();
    other.extend_from_slice(b"oh no");
    (bytes, Digest::of(Algorithm::Sha256, &other))
}

/// Requires the upload answer `resp` to be `400 DIGEST_INVALID`, and the claimed digest
/// not to be pullable afterwards.
async fn digest_invalid(cx: &Ctx, resp: Resp, claimed: &Digest) -> Result<()> {
    resp.expect_error(&[400], &["DIGEST_INVALID"])?;
    cx.http
        .blob(Method::HEAD, &cx.repo, &claimed.to_string(), None)
        .await?
        .expect(&[404])?;
    Ok(())
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
    for (name, reference) in [
        (
            "GET manifest by a tag that does not exist: 404 MANIFEST_UNKNOWN",
            format!("missing-{}", random_id()),
        ),
        (
            "GET manifest by a digest that does not exist: 404 MANIFEST_UNKNOWN",
            missing.clone(),
        ),
    ] {
        rec.case(E, name, async {
            setup(cx.ensure_fixture()).await?;
            cx.http
                .manifest(Method::GET, repo, &reference)
                .await?
                .expect_error(&[404], &["MANIFEST_UNKNOWN"])
        })
        .await;
    }
    let no_repo = format!("{repo}/missing-{}", random_id());
    let session = format!("/v2/{repo}/blobs/uploads/{}", random_uuid());
    for (name, path, code) in [
        (
            "GET tags/list of a repository that does not exist: 404 NAME_UNKNOWN",
            format!("/v2/{no_repo}/tags/list"),
            "NAME_UNKNOWN",
        ),
        (
            "GET status of an upload session that never existed: 404 BLOB_UPLOAD_UNKNOWN",
            session.clone(),
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ] {
        rec.case(E, name, async {
            cx.http.get(&path).await?.expect_error(&[404], &[code])
        })
        .await;
    }
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
            put_blob(cx, &url, &d, &bytes)
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
            let resp = put_blob(cx, &loc, &claimed, &bytes).await?;
            digest_invalid(cx, resp, &claimed).await
        },
    )
    .await;

    rec.case(E, "single POST whose content does not match ?digest=: 400 DIGEST_INVALID (or 202, then the PUT gets it), nothing stored", async {
        let (bytes, claimed) = mismatched(1500);
        let mut resp = post_blob(cx, repo, &claimed, &bytes).await?;
        if resp.status.as_u16() == 202 {
            let loc = cx.http.resolve(resp.require_header("Location")?)?;
            resp = put_blob(cx, &loc, &claimed, &bytes).await?;
        }
        digest_invalid(cx, resp, &claimed).await
    })
    .await;

    for last_in_put in [false, true] {
        let how = if last_in_put {
            "with the last chunk in the closing PUT"
        } else {
            "closed by an empty PUT"
        };
        rec.case(E, format!("chunked upload {how} whose content does not match ?digest=: 400 DIGEST_INVALID, nothing stored"), async {
            let session = upload::open(cx, repo, None).await?;
            let size = session.chunk;
            let (bytes, claimed) = mismatched(size * 2 + 10);
            let (first, rest) = bytes.split_at(size);
            let mut loc = next_location(cx, &patch_chunk(cx, &session.url, first, 0).await?)?;
            let resp = if last_in_put {
                put_final(cx, &loc, &claimed, Some((rest, size))).await?
            } else {
                loc = next_location(cx, &patch_chunk(cx, &loc, rest, size).await?)?;
                put_final(cx, &loc, &claimed, None).await?
            };
            digest_invalid(cx, resp, &claimed).await
        })
        .await;
    }

    rec.case(
        E,
        "streamed upload whose content does not match ?digest=: 400 DIGEST_INVALID, nothing stored",
        async {
            let (bytes, claimed) = mismatched(2500);
            let loc = setup(cx.start_upload(repo)).await?;
            let (_, loc) = upload::stream(cx, &loc, &bytes).await?;
            let resp = put_final(cx, &loc, &claimed, None).await?;
            digest_invalid(cx, resp, &claimed).await
        },
    )
    .await;

    let bad_digests: [(&str, &str, &[&str]); 2] = [
        (
            "upload closed with a malformed digest (sha256:not-hex): 400 DIGEST_INVALID",
            "sha256:not-hex",
            &["DIGEST_INVALID"],
        ),
        (
            "upload closed with an unsupported algorithm (md5:…): 400 DIGEST_INVALID or UNSUPPORTED",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &["DIGEST_INVALID", "UNSUPPORTED"],
        ),
    ];
    for (name, digest, codes) in bad_digests {
        rec.case(E, name, async {
            let blob = Blob::random(100, Algorithm::Sha256, MT_LAYER_GZ);
            let loc = setup(cx.start_upload(repo)).await?;
            put_bytes(cx, &with_digest_text(&loc, digest), &blob.bytes)
                .await?
                .expect_error(&[400], codes)
        })
        .await;
    }
}
