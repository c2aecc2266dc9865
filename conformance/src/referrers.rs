//! Subject and referrers cases. A subject image gets six referrers (two artifacts of
//! different types, two images without an artifact type, whose artifact type falls back
//! to their config media type: one with an artifact's config, one an ordinary image with
//! an image config, an index without and one with an artifact type); pushing each must
//! answer with `OCI-Subject`. The referrers API must then list exactly those, with artifact types and
//! annotations, filter by `artifactType`, answer empty lists for digests without
//! referrers, list a referrer pushed before its subject existed, and stay scoped to the
//! repository.

use anyhow::{Result, bail};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Category;
use crate::client::Resp;
use crate::content::{
    self, AT_EXAMPLE_A, AT_EXAMPLE_B, Algorithm, Blob, Digest, Extra, Image, MT_CONFIG,
    MT_EXAMPLE_CONFIG, MT_INDEX, MT_LAYER_GZ, Manifest, annotations, random_bytes, random_id,
};
use crate::push::setup;
use crate::suite::{Ctx, Recorder, need, skip};

const R: Category = Category::Referrers;
const S: Category = Category::Subjects;

/// A descriptor in a referrers response.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<Map<String, Value>>,
}

/// A referrers response.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
}

/// `GET /v2/<repo>/referrers/<digest>[?artifactType=..]`, requiring 200, the index
/// Content-Type and a valid index body.
async fn list(
    cx: &Ctx,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<(Resp, Vec<Desc>)> {
    let mut url = cx.http.url(&format!("/v2/{repo}/referrers/{subject}"))?;
    if let Some(at) = artifact_type {
        crate::client::add_query(&mut url, "artifactType", at);
    }
    let resp = cx.http.call(reqwest::Method::GET, &url, |r| r).await?;
    resp.expect(&[200])?;
    if resp.media_type() != Some(MT_INDEX) {
        bail!(
            "{}: Content-Type {:?}, expected {MT_INDEX:?}",
            resp.what,
            resp.header("Content-Type")
        );
    }
    let l: Listing = resp.json()?;
    if l.schema_version != 2 || l.media_type.as_deref() != Some(MT_INDEX) {
        bail!(
            "{}: not an OCI index (schemaVersion {}, mediaType {:?})",
            resp.what,
            l.schema_version,
            l.media_type
        );
    }
    let manifests = l.manifests.unwrap_or_default();
    Ok((resp, manifests))
}

/// Checks that `got` lists exactly `expected`, each with media type, size, artifact type
/// and annotations.
fn same_referrers(what: &str, got: &[Desc], expected: &[&Manifest]) -> Result<()> {
    if got.len() != expected.len() {
        let digests: Vec<_> = got.iter().map(|d| d.digest.as_str()).collect();
        bail!(
            "{what}: {} referrers listed ({digests:?}), expected {}",
            got.len(),
            expected.len()
        );
    }
    for m in expected {
        let digest = m.digest.to_string();
        let Some(d) = got.iter().find(|d| d.digest == digest) else {
            bail!("{what}: referrer {digest} is missing");
        };
        if d.media_type != m.media_type || d.size != m.bytes.len() as u64 {
            bail!(
                "{what}: referrer {digest} listed as {:?} of {} bytes, expected {:?} of {}",
                d.media_type,
                d.size,
                m.media_type,
                m.bytes.len()
            );
        }
        if d.artifact_type != m.referrer_artifact_type {
            bail!(
                "{what}: referrer {digest} has artifactType {:?}, expected {:?}",
                d.artifact_type,
                m.referrer_artifact_type
            );
        }
        let listed = d.annotations.clone().unwrap_or_default();
        for (k, v) in &m.annotations {
            if listed.get(k) != Some(v) {
                bail!("{what}: referrer {digest} lacks annotation {k}={v}");
            }
        }
    }
    Ok(())
}

/// Pushes a referrer and requires `201` with `OCI-Subject: <subject>`.
async fn push_referrer(cx: &Ctx, reference: &str, m: &Manifest, subject: &Digest) -> Result<()> {
    let resp = cx.push_manifest(&cx.repo, reference, m).await?;
    resp.expect_header("OCI-Subject", &subject.to_string())?;
    Ok(())
}

/// Everything the cases push.
struct Set {
    subject: Image,
    /// Artifact type A, by digest.
    art_a: Manifest,
    /// Artifact type B, by tag.
    art_b: Manifest,
    /// Image without artifactType: listed with its config media type.
    plain: Manifest,
    plain_config: Blob,
    /// An ordinary image (config `application/vnd.oci.image.config.v1+json`, no
    /// artifactType), such as a signed base image or an attestation pushed as an image:
    /// listed with the image config media type, which a registry must not take for
    /// "not an artifact" and leave out.
    image: Image,
    /// Index without artifactType.
    index_plain: Manifest,
    /// Index with artifactType A.
    index_typed: Manifest,
    /// Layer blob shared by the artifacts.
    layer: Blob,
    /// A subject pushed only after its referrer.
    late_subject: Image,
    late_referrer: Manifest,
}

fn build(cx: &Ctx) -> Result<Set> {
    let subject = Image::random(Algorithm::Sha256, &[500], Extra::default())?;
    let sd = subject.manifest.descriptor();
    let ann = |kind: &str| {
        Some(annotations(&[
            ("org.opencontainers.conformance", kind),
            (&format!("org.example.run-{}", cx.run_id), &random_id()),
        ]))
    };
    let with = |kind: &str| Extra {
        subject: Some(sd.clone()),
        annotations: ann(kind),
        ..Extra::default()
    };
    let layer = Blob::random(256, Algorithm::Sha256, AT_EXAMPLE_A);
    let art_a = content::artifact(AT_EXAMPLE_A, &layer, with("artifact a"))?;
    let art_b = content::artifact(AT_EXAMPLE_B, &layer, with("artifact b"))?;
    let plain_config = Blob::new(
        format!("{{\"conformance\":\"{}\"}}", random_id()).into_bytes(),
        Algorithm::Sha256,
        MT_EXAMPLE_CONFIG,
    );
    let plain = content::image(
        plain_config.descriptor(),
        vec![layer.descriptor()],
        with("plain image"),
        Algorithm::Sha256,
    )?;
    let image = Image::random(
        Algorithm::Sha256,
        &[200],
        with("image with an image config"),
    )?;
    let index_plain = content::index(
        Vec::new(),
        with("index without artifactType"),
        Algorithm::Sha256,
    )?;
    let mut typed = with("index with artifactType");
    typed.artifact_type = Some(AT_EXAMPLE_A.to_owned());
    let index_typed = content::index(Vec::new(), typed, Algorithm::Sha256)?;
    let late_subject = Image::random(Algorithm::Sha256, &[300], Extra::default())?;
    let late_referrer = content::artifact(
        AT_EXAMPLE_A,
        &layer,
        Extra {
            subject: Some(late_subject.manifest.descriptor()),
            annotations: ann("referrer before subject"),
            ..Extra::default()
        },
    )?;
    Ok(Set {
        subject,
        art_a,
        art_b,
        plain,
        plain_config,
        image,
        index_plain,
        index_typed,
        layer,
        late_subject,
        late_referrer,
    })
}

/// Runs the subject and referrers cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let set = match build(cx) {
        Ok(s) => s,
        Err(e) => {
            rec.fail(R, "build the referrers test content", &e);
            return;
        }
    };
    if !rec.enabled(R) && !rec.enabled(S) {
        rec.skip(
            R,
            "referrers and subjects",
            "categories referrers and subjects are switched off",
        );
        return;
    }
    let sd = set.subject.manifest.digest.clone();
    let late = set.late_subject.manifest.digest.clone();

    // Setup runs under whichever of the two categories is on.
    let setup_cat = if rec.enabled(S) { S } else { R };
    let mut ready = false;
    rec.case(
        setup_cat,
        "setup: push the subject image and the blobs its referrers use",
        async {
            cx.push_blobs(repo, &set.subject.blobs()).await?;
            cx.push_blobs(
                repo,
                &[
                    &Blob::empty_json(Algorithm::Sha256),
                    &set.layer,
                    &set.plain_config,
                ],
            )
            .await?;
            cx.push_blobs(repo, &set.image.blobs()).await?;
            cx.push_manifest(repo, &cx.tag("subject"), &set.subject.manifest)
                .await?;
            cx.push_blobs(repo, &set.late_subject.blobs()).await?;
            ready = true;
            Ok(())
        },
    )
    .await;
    let ready = ready;

    let pushes: [(&str, &Manifest, String, &Digest); 7] = [
        (
            "PUT artifact manifest with subject: 201 with OCI-Subject: <subject digest>",
            &set.art_a,
            set.art_a.digest.to_string(),
            &sd,
        ),
        (
            "PUT artifact manifest with subject by tag: 201 with OCI-Subject",
            &set.art_b,
            cx.tag("referrer-b"),
            &sd,
        ),
        (
            "PUT image manifest without artifactType with subject: 201 with OCI-Subject",
            &set.plain,
            set.plain.digest.to_string(),
            &sd,
        ),
        (
            "PUT image manifest with an image config, no artifactType, with subject: 201 with OCI-Subject",
            &set.image.manifest,
            set.image.manifest.digest.to_string(),
            &sd,
        ),
        (
            "PUT image index with subject: 201 with OCI-Subject",
            &set.index_plain,
            set.index_plain.digest.to_string(),
            &sd,
        ),
        (
            "PUT image index with subject and artifactType: 201 with OCI-Subject",
            &set.index_typed,
            set.index_typed.digest.to_string(),
            &sd,
        ),
        (
            "PUT manifest whose subject does not exist yet: accepted (201) with OCI-Subject",
            &set.late_referrer,
            set.late_referrer.digest.to_string(),
            &late,
        ),
    ];
    if rec.enabled(S) {
        for (name, m, reference, subject) in pushes {
            rec.case(S, name, async {
                need_setup(ready)?;
                push_referrer(cx, &reference, m, subject).await
            })
            .await;
        }
    } else {
        rec.case(
            R,
            "setup: push the referrers (subjects category off, OCI-Subject not checked)",
            async {
                need_setup(ready)?;
                for (_, m, reference, _) in pushes {
                    cx.push_manifest(repo, &reference, m).await?;
                }
                Ok(())
            },
        )
        .await;
    }
    cx.set_referrer_note(&sd, &set.art_b.digest, &cx.tag("referrer-b"));
    let sds = sd.to_string();
    let all = [
        &set.art_a,
        &set.art_b,
        &set.plain,
        &set.image.manifest,
        &set.index_plain,
        &set.index_typed,
    ];

    rec.case(
        R,
        "GET referrers of a digest without referrers: 200, index Content-Type, empty manifests",
        async {
            let none = Digest::of(Algorithm::Sha256, &random_bytes(32)).to_string();
            let (resp, got) = list(cx, repo, &none, None).await?;
            if !got.is_empty() {
                bail!(
                    "{}: expected an empty list, got {} entries",
                    resp.what,
                    got.len()
                );
            }
            Ok(())
        },
    )
    .await;

    let mut listed: Option<Vec<Desc>> = None;
    rec.case(R, "GET referrers of the subject: 200 with Content-Type application/vnd.oci.image.index.v1+json and a valid index", async {
        need_setup(ready)?;
        let (_, got) = list(cx, repo, &sds, None).await?;
        listed = Some(got);
        Ok(())
    })
    .await;
    let what = format!("GET /v2/{repo}/referrers/{sds}");
    rec.case(R, "referrers list holds exactly the six referrers, with mediaType, size, artifactType and annotations", async {
        let got = need(&listed, "list the subject's referrers")?;
        same_referrers(&what, got, &all)
    })
    .await;
    let by_kind: [(&str, &[&Manifest]); 3] = [
        (
            "referrers artifactType: the manifest's artifactType when set",
            &[&set.art_a, &set.art_b],
        ),
        (
            "referrers artifactType: the config mediaType when the manifest has none, an image config's too",
            &[&set.plain, &set.image.manifest],
        ),
        (
            "referrers artifactType: omitted for an index without one, copied for an index with one",
            &[&set.index_plain, &set.index_typed],
        ),
    ];
    for (name, expected) in by_kind {
        rec.case(R, name, async {
            let got = need(&listed, "list the subject's referrers")?;
            same_referrers(&what, &pick(got, expected), expected)
        })
        .await;
    }

    let filtered: [(&str, &str, &[&Manifest]); 4] = [
        (
            "GET referrers ?artifactType=<type A>: only type A referrers, with OCI-Filters-Applied: artifactType",
            AT_EXAMPLE_A,
            &[&set.art_a, &set.index_typed],
        ),
        (
            "GET referrers ?artifactType=<config media type fallback>: the image without artifactType",
            MT_EXAMPLE_CONFIG,
            &[&set.plain],
        ),
        (
            "GET referrers ?artifactType=application/vnd.oci.image.config.v1+json: the image with an image config",
            MT_CONFIG,
            &[&set.image.manifest],
        ),
        (
            "GET referrers ?artifactType=<type nobody uses>: empty list, with OCI-Filters-Applied",
            "application/vnd.example.unused.v1",
            &[],
        ),
    ];
    for (name, artifact_type, expected) in filtered {
        rec.case(R, name, async {
            need_setup(ready)?;
            let (resp, got) = list(cx, repo, &sds, Some(artifact_type)).await?;
            filters_applied(&resp)?;
            same_referrers(&resp.what, &got, expected)
        })
        .await;
    }

    rec.case(
        R,
        "GET referrers of a subject that does not exist yet: lists the referrer pushed before it",
        async {
            need_setup(ready)?;
            let (resp, got) = list(cx, repo, &late.to_string(), None).await?;
            same_referrers(&resp.what, &got, &[&set.late_referrer])
        },
    )
    .await;
    rec.case(
        R,
        "after the subject is pushed, its referrers list still holds the earlier referrer",
        async {
            need_setup(ready)?;
            setup(cx.push_manifest(repo, &late.to_string(), &set.late_subject.manifest)).await?;
            let (resp, got) = list(cx, repo, &late.to_string(), None).await?;
            same_referrers(&resp.what, &got, &[&set.late_referrer])
        },
    )
    .await;

    rec.case(
        R,
        "referrers are scoped to the repository: another repository lists none for the subject",
        async {
            need_setup(ready)?;
            let marker = Blob::random(64, Algorithm::Sha256, MT_LAYER_GZ);
            setup(cx.push_blob(&cx.other, &marker)).await?;
            let (resp, got) = list(cx, &cx.other, &sds, None).await?;
            same_referrers(&resp.what, &got, &[])
        },
    )
    .await;

    rec.case(R, "GET referrers with a malformed digest: 400", async {
        let resp = cx
            .http
            .get(&format!("/v2/{repo}/referrers/sha256:not-a-digest"))
            .await?;
        resp.expect(&[400])?;
        Ok(())
    })
    .await;
}

/// Skips the case unless the setup step succeeded.
fn need_setup(ready: bool) -> Result<()> {
    if ready {
        Ok(())
    } else {
        Err(skip("setup failed"))
    }
}

/// The entries of `got` for the given manifests.
fn pick(got: &[Desc], wanted: &[&Manifest]) -> Vec<Desc> {
    got.iter()
        .filter(|d| wanted.iter().any(|m| m.digest.to_string() == d.digest))
        .map(|d| Desc {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            artifact_type: d.artifact_type.clone(),
            annotations: d.annotations.clone(),
        })
        .collect()
}

/// Requires `OCI-Filters-Applied` to name `artifactType`.
fn filters_applied(resp: &Resp) -> Result<()> {
    let h = resp.require_header("OCI-Filters-Applied")?;
    if h.split(',').any(|f| f.trim() == "artifactType") {
        return Ok(());
    }
    bail!(
        "{}: OCI-Filters-Applied is {h:?}, expected artifactType",
        resp.what
    )
}

/// Checks the subject's referrers list no longer holds `gone` (used after deletes).
pub(crate) async fn check_removed(cx: &Ctx, subject: &Digest, gone: &Digest) -> Result<()> {
    let (resp, got) = list(cx, &cx.repo, &subject.to_string(), None).await?;
    if got.iter().any(|d| d.digest == gone.to_string()) {
        bail!("{}: deleted referrer {gone} is still listed", resp.what);
    }
    Ok(())
}
