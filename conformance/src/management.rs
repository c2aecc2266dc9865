//! Content management cases: deleting a tag (the manifest stays), a manifest by digest
//! (its tags go with it), a blob, a referrer (the referrers list drops it), deletes of
//! things that do not exist, and finally the cleanup of everything the run pushed.

use anyhow::{Result, bail};
use reqwest::Method;

use crate::Category;
use crate::client::Resp;
use crate::content::{Algorithm, Digest, Extra, Image, random_bytes, random_id};
use crate::discovery::all_tags;
use crate::push::setup;
use crate::referrers::check_removed;
use crate::suite::{Created, Ctx, Recorder, skip};

const M: Category = Category::Management;

async fn delete_manifest(cx: &Ctx, repo: &str, reference: &str) -> Result<Resp> {
    let url = cx.http.url(&format!("/v2/{repo}/manifests/{reference}"))?;
    cx.http.call(Method::DELETE, &url, |r| r).await
}

async fn delete_blob(cx: &Ctx, repo: &str, digest: &str) -> Result<Resp> {
    let url = cx.http.url(&format!("/v2/{repo}/blobs/{digest}"))?;
    cx.http.call(Method::DELETE, &url, |r| r).await
}

/// The image the setup pushed, or a skip if the setup failed.
fn ready(image: &Option<Image>) -> Result<Image> {
    image.clone().ok_or_else(|| skip("setup failed"))
}

/// The image the setup pushed, once the delete step `done` succeeded; otherwise a skip
/// naming what failed.
fn after(image: &Option<Image>, done: bool, failed: &str) -> Result<Image> {
    let img = ready(image)?;
    if !done {
        return Err(skip(failed));
    }
    Ok(img)
}

/// Runs the management cases, then the cleanup.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let (tag1, tag2) = (cx.tag("delete-1"), cx.tag("delete-2"));
    let mut image: Option<Image> = None;
    rec.case(M, "setup: push an image under two tags", async {
        let img = Image::random(Algorithm::Sha256, &[600], Extra::default())?;
        cx.push_blobs(repo, &img.blobs()).await?;
        cx.push_manifest(repo, &tag1, &img.manifest).await?;
        cx.push_manifest(repo, &tag2, &img.manifest).await?;
        image = Some(img);
        Ok(())
    })
    .await;

    let mut tag_deleted = false;
    rec.case(M, "DELETE manifest by tag: 202", async {
        ready(&image)?;
        delete_manifest(cx, repo, &tag1).await?.expect(&[202])?;
        tag_deleted = true;
        Ok(())
    })
    .await;
    rec.case(M, "after the tag delete: GET by that tag is 404, the manifest stays reachable by digest and its other tag", async {
        let img = after(&image, tag_deleted, "the tag delete failed")?;
        cx.http.manifest(Method::GET, repo, &tag1).await?.expect(&[404])?;
        cx.http
            .manifest(Method::GET, repo, &img.manifest.digest.to_string())
            .await?
            .expect(&[200])?
            .expect_body(&img.manifest.bytes)?;
        cx.http.manifest(Method::GET, repo, &tag2).await?.expect(&[200])?;
        Ok(())
    })
    .await;
    rec.case(
        M,
        "after the tag delete: tags/list no longer holds the tag",
        async {
            after(&image, tag_deleted, "the tag delete failed")?;
            let tags = all_tags(cx, repo).await?;
            if tags.contains(&tag1) {
                bail!("GET /v2/{repo}/tags/list still lists deleted tag {tag1:?}");
            }
            if !tags.contains(&tag2) {
                bail!("GET /v2/{repo}/tags/list lost tag {tag2:?}, which was not deleted");
            }
            Ok(())
        },
    )
    .await;

    let mut manifest_deleted = false;
    rec.case(M, "DELETE manifest by digest: 202", async {
        let img = ready(&image)?;
        let d = img.manifest.digest.to_string();
        delete_manifest(cx, repo, &d).await?.expect(&[202])?;
        cx.forget(&Created::Manifest(
            repo.clone(),
            img.manifest.digest.clone(),
        ));
        manifest_deleted = true;
        Ok(())
    })
    .await;
    rec.case(M, "after the manifest delete: GET and HEAD by digest are 404, and so is the tag that pointed to it", async {
        let img = after(&image, manifest_deleted, "the manifest delete failed")?;
        let d = img.manifest.digest.to_string();
        cx.http.manifest(Method::GET, repo, &d).await?.expect(&[404])?;
        cx.http.manifest(Method::HEAD, repo, &d).await?.expect(&[404])?;
        cx.http.manifest(Method::GET, repo, &tag2).await?.expect(&[404])?;
        Ok(())
    })
    .await;
    rec.case(M, "after the deletes: tags/list holds neither tag", async {
        after(&image, manifest_deleted, "the manifest delete failed")?;
        let tags = all_tags(cx, repo).await?;
        if tags.contains(&tag1) || tags.contains(&tag2) {
            bail!("GET /v2/{repo}/tags/list still lists {tag1:?} or {tag2:?}: {tags:?}");
        }
        Ok(())
    })
    .await;

    let mut blob_deleted = false;
    rec.case(M, "DELETE blob: 202", async {
        let img = ready(&image)?;
        let layer = &img.layers[0];
        delete_blob(cx, repo, &layer.digest.to_string())
            .await?
            .expect(&[202])?;
        cx.forget(&Created::Blob(repo.clone(), layer.digest.clone()));
        blob_deleted = true;
        Ok(())
    })
    .await;
    rec.case(
        M,
        "after the blob delete: GET and HEAD of the blob are 404",
        async {
            let img = after(&image, blob_deleted, "the blob delete failed")?;
            let d = img.layers[0].digest.to_string();
            cx.http
                .blob(Method::GET, repo, &d, None)
                .await?
                .expect(&[404])?;
            cx.http
                .blob(Method::HEAD, repo, &d, None)
                .await?
                .expect(&[404])?;
            Ok(())
        },
    )
    .await;

    let unknown = Digest::of(Algorithm::Sha256, &random_bytes(32)).to_string();
    rec.case(
        M,
        "DELETE blob that does not exist: 404 BLOB_UNKNOWN",
        async {
            delete_blob(cx, repo, &unknown)
                .await?
                .expect_error(&[404], &["BLOB_UNKNOWN"])
        },
    )
    .await;
    rec.case(
        M,
        "DELETE manifest that does not exist: 404 MANIFEST_UNKNOWN",
        async {
            setup(cx.ensure_fixture()).await?;
            delete_manifest(cx, repo, &unknown)
                .await?
                .expect_error(&[404], &["MANIFEST_UNKNOWN"])
        },
    )
    .await;
    let no_repo = format!("{repo}/missing-{}", random_id());
    rec.case(
        M,
        "DELETE manifest in a repository that does not exist: 404",
        async {
            delete_manifest(cx, &no_repo, &unknown)
                .await?
                .expect(&[404])?;
            Ok(())
        },
    )
    .await;

    rec.case(
        M,
        "DELETE a referrer by digest: 202, and the subject's referrers list drops it",
        async {
            if !rec_enabled_referrers(cx) {
                return Err(skip("category referrers is switched off"));
            }
            let Some(note) = cx.referrer_note() else {
                return Err(skip("the referrers cases pushed nothing"));
            };
            let d = note.referrer.to_string();
            let exists = cx.http.manifest(Method::HEAD, repo, &d).await?;
            if exists.status.as_u16() != 200 {
                return Err(skip("the referrer was not pushed"));
            }
            delete_manifest(cx, repo, &d).await?.expect(&[202])?;
            cx.forget(&Created::Manifest(repo.clone(), note.referrer.clone()));
            check_removed(cx, &note.subject, &note.referrer).await?;
            cx.http
                .manifest(Method::GET, repo, &note.tag)
                .await?
                .expect(&[404])?;
            Ok(())
        },
    )
    .await;

    cleanup(cx, rec).await;
}

fn rec_enabled_referrers(cx: &Ctx) -> bool {
    cx.cfg.enabled(Category::Referrers)
}

/// Deletes everything the run created: manifests newest first (indexes before what they
/// list), then blobs. A 404 is fine (already gone); anything but 202 or 404 fails.
async fn cleanup(cx: &Ctx, rec: &mut Recorder<'_>) {
    rec.case(
        M,
        "cleanup: DELETE every manifest and blob this run pushed: 202 (or 404 if already gone)",
        async {
            let created = cx.created();
            let mut problems = Vec::new();
            let manifests = created.iter().rev().filter_map(|c| match c {
                Created::Manifest(r, d) => Some((r, d)),
                Created::Blob(..) => None,
            });
            for (r, d) in manifests {
                let resp = delete_manifest(cx, r, &d.to_string()).await?;
                if !matches!(resp.status.as_u16(), 202 | 404) {
                    problems.push(format!("{}: {}", resp.what, resp.status));
                }
            }
            let blobs = created.iter().filter_map(|c| match c {
                Created::Blob(r, d) => Some((r, d)),
                Created::Manifest(..) => None,
            });
            for (r, d) in blobs {
                let resp = delete_blob(cx, r, &d.to_string()).await?;
                if !matches!(resp.status.as_u16(), 202 | 404) {
                    problems.push(format!("{}: {}", resp.what, resp.status));
                }
            }
            for c in &created {
                cx.forget(c);
            }
            if !problems.is_empty() {
                bail!("unexpected answers: {}", problems.join("; "));
            }
            Ok(())
        },
    )
    .await;
    rec.case(
        M,
        "after cleanup: tags/list holds none of this run's tags",
        async {
            // A registry may drop a repository once it is empty; then nothing is listed.
            let probe = cx.http.get(&format!("/v2/{}/tags/list", cx.repo)).await?;
            if probe.status.as_u16() == 404 {
                return Ok(());
            }
            let tags = all_tags(cx, &cx.repo).await?;
            let left: Vec<_> = tags.iter().filter(|t| t.contains(&cx.run_id)).collect();
            if !left.is_empty() {
                bail!("tags of deleted manifests are still listed: {left:?}");
            }
            Ok(())
        },
    )
    .await;
}
