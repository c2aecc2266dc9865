//! Manifests whose descriptors point at content that was never pushed: sparse manifests
//! (accepted when the `sparse` category is on, rejected with `MANIFEST_BLOB_UNKNOWN` when
//! it is off) and non-distributable layers (always accepted, since such layers are by
//! definition not pushed to the registry).

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use crate::Category;
use crate::content::{
    self, Algorithm, Blob, Extra, Image, MT_CONFIG, MT_LAYER_GZ, MT_NONDIST, MT_NONDIST_GZ,
    Manifest,
};
use crate::pull::check_manifest;
use crate::push::{setup, verify_manifest_push};
use crate::suite::{Ctx, Recorder};

/// Pushes `m` and requires acceptance and a byte-exact pull by digest.
async fn accepted(cx: &Ctx, tag: &str, m: &Manifest) -> Result<()> {
    let resp = cx.push_manifest(&cx.repo, tag, m).await?;
    verify_manifest_push(cx, &resp, m).await?;
    check_manifest(cx, Method::GET, &cx.repo, &m.digest.to_string(), m).await
}

/// Pushes `m` and requires `400 MANIFEST_BLOB_UNKNOWN`, and that nothing was stored.
async fn rejected(cx: &Ctx, tag: &str, m: &Manifest) -> Result<()> {
    let resp = cx.put_manifest(&cx.repo, tag, m).await?;
    if resp.status.is_success() {
        cx.created_manifest(&cx.repo, &m.digest);
    }
    resp.expect_error(&[400], &["MANIFEST_BLOB_UNKNOWN"])?;
    cx.http
        .manifest(Method::GET, &cx.repo, tag)
        .await?
        .expect(&[404])?;
    Ok(())
}

/// Pushes the blobs of a new image except its second layer; returns the image.
async fn push_image_missing_layer(cx: &Ctx) -> Result<Image> {
    let img = Image::random(Algorithm::Sha256, &[400, 400], Extra::default())?;
    let missing = &img.layers[1];
    let mut present = img.blobs();
    present.retain(|b| b.digest != missing.digest);
    setup(cx.push_blobs(&cx.repo, &present)).await?;
    Ok(img)
}

/// Runs the sparse and non-distributable cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let sparse_on = rec.enabled(Category::Sparse);

    // A registry either accepts sparse manifests or rejects them: only the cases for
    // what it is configured to do are run (the others are not applicable, not skipped).
    if sparse_on {
        rec.case(
            Category::Sparse,
            "sparse: image manifest with a layer that was never pushed: 201, served back",
            async {
                let img = push_image_missing_layer(cx).await?;
                accepted(cx, &cx.tag("sparse-image"), &img.manifest).await
            },
        )
        .await;
        rec.case(
            Category::Sparse,
            "sparse: image index listing a manifest that was never pushed: 201, served back",
            async {
                let pushed = Image::random(Algorithm::Sha256, &[300], Extra::default())?;
                setup(cx.push_blobs(repo, &pushed.blobs())).await?;
                setup(cx.push_manifest(
                    repo,
                    &pushed.manifest.digest.to_string(),
                    &pushed.manifest,
                ))
                .await?;
                let absent = Image::random(Algorithm::Sha256, &[300], Extra::default())?;
                let idx = content::index(
                    vec![
                        pushed.manifest.platform_descriptor("amd64"),
                        absent.manifest.platform_descriptor("arm64"),
                    ],
                    Extra::default(),
                    Algorithm::Sha256,
                )?;
                accepted(cx, &cx.tag("sparse-index"), &idx).await
            },
        )
        .await;
    }

    let strict = [
        "image manifest with a layer that was never pushed (sparse manifests not allowed): 400 MANIFEST_BLOB_UNKNOWN",
        "image manifest whose config was never pushed (sparse manifests not allowed): 400 MANIFEST_BLOB_UNKNOWN",
        "image index listing a manifest that was never pushed (sparse manifests not allowed): 400 MANIFEST_BLOB_UNKNOWN",
    ];
    if !sparse_on {
        rec.case(Category::Errors, strict[0], async {
            let img = push_image_missing_layer(cx).await?;
            rejected(cx, &cx.tag("strict-layer"), &img.manifest).await
        })
        .await;
        rec.case(Category::Errors, strict[1], async {
            let img = Image::random(Algorithm::Sha256, &[300], Extra::default())?;
            let layers: Vec<&Blob> = img.layers.iter().collect();
            setup(cx.push_blobs(repo, &layers)).await?;
            rejected(cx, &cx.tag("strict-config"), &img.manifest).await
        })
        .await;
        rec.case(Category::Errors, strict[2], async {
            let absent = Image::random(Algorithm::Sha256, &[300], Extra::default())?;
            let idx = content::index(
                vec![absent.manifest.platform_descriptor("amd64")],
                Extra::default(),
                Algorithm::Sha256,
            )?;
            rejected(cx, &cx.tag("strict-index"), &idx).await
        })
        .await;
    }

    rec.case(Category::NonDistributable, "image manifest with non-distributable layers (tar+gzip and tar, with urls) never pushed: 201, served back", async {
        let normal = Blob::random(500, Algorithm::Sha256, MT_LAYER_GZ);
        let nd_gz = Blob::random(256, Algorithm::Sha256, MT_NONDIST_GZ);
        let nd = Blob::random(256, Algorithm::Sha256, MT_NONDIST);
        let config = Blob::config(Algorithm::Sha256, MT_CONFIG, &[&nd_gz, &nd, &normal])?;
        setup(cx.push_blobs(repo, &[&config, &normal])).await?;
        let foreign = |b: &Blob, size: usize| {
            json!({
                "mediaType": b.media_type,
                "digest": b.digest.to_string(),
                "size": size,
                "urls": [format!("https://store.example.com/blobs/{}", b.digest)],
            })
        };
        let m = content::image(
            config.descriptor(),
            vec![foreign(&nd_gz, 123_456), foreign(&nd, 12_345), normal.descriptor()],
            Extra::default(),
            Algorithm::Sha256,
        )?;
        accepted(cx, &cx.tag("non-distributable"), &m).await?;
        // The non-distributable layers stay absent: the registry must not invent them.
        let resp = cx
            .http
            .blob(Method::HEAD, repo, &nd_gz.digest.to_string(), None)
            .await?;
        resp.expect(&[404])?;
        Ok(())
    })
    .await;
}
