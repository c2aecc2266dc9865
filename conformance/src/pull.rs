//! Pull cases: `/v2/`, blobs by GET and HEAD (with `Docker-Content-Digest` and
//! `Content-Length`), single-range requests, manifests by tag and digest with the pushed
//! media type, 404s for content and repositories that do not exist, and a second pull of
//! every manifest the push cases stored.

use anyhow::{Result, bail};
use reqwest::Method;

use crate::Category;
use crate::client::Resp;
use crate::content::{Algorithm, Blob, Digest, Manifest, random_bytes, random_id};
use crate::suite::{Ctx, Recorder, require_digest_header};

const C: Category = Category::Pull;

/// Fetches a manifest with `method` and checks status 200, `Docker-Content-Digest`, the
/// media type, `Content-Length`, and (for GET) the exact bytes.
pub(crate) async fn check_manifest(
    cx: &Ctx,
    method: Method,
    repo: &str,
    reference: &str,
    m: &Manifest,
) -> Result<()> {
    let resp = cx.http.manifest(method.clone(), repo, reference).await?;
    resp.expect(&[200])?;
    require_digest_header(&resp, &m.digest)?;
    match resp.media_type() {
        Some(mt) if mt == m.media_type => {}
        other => bail!(
            "{}: Content-Type {other:?}, expected the pushed {:?}",
            resp.what,
            m.media_type
        ),
    }
    let len = m.bytes.len().to_string();
    if method == Method::HEAD {
        resp.expect_header("Content-Length", &len)?;
        if !resp.body.is_empty() {
            bail!("{}: HEAD response has a body", resp.what);
        }
    } else {
        resp.expect_body(&m.bytes)?;
        if resp.header("Content-Length").is_some() {
            resp.expect_header("Content-Length", &len)?;
        }
    }
    Ok(())
}

/// Fetches a blob with `method` and checks status 200, `Docker-Content-Digest`,
/// `Content-Length`, and (for GET) the content.
pub(crate) async fn check_blob(cx: &Ctx, method: Method, repo: &str, blob: &Blob) -> Result<()> {
    let resp = cx
        .http
        .blob(method.clone(), repo, &blob.digest.to_string(), None)
        .await?;
    resp.expect(&[200])?;
    require_digest_header(&resp, &blob.digest)?;
    let len = blob.bytes.len().to_string();
    if method == Method::HEAD {
        resp.expect_header("Content-Length", &len)?;
    } else {
        resp.expect_body(&blob.bytes)?;
        if resp.header("Content-Length").is_some() {
            resp.expect_header("Content-Length", &len)?;
        }
    }
    Ok(())
}

/// HEAD (200 with the blob's `Content-Length`) and GET (200 with its content) of a blob,
/// judging `Docker-Content-Digest` on both answers with `digest_ok`.
pub(crate) async fn head_and_get_blob(
    cx: &Ctx,
    repo: &str,
    blob: &Blob,
    digest_ok: impl Fn(&Resp, &Blob) -> Result<()>,
) -> Result<()> {
    let d = blob.digest.to_string();
    let head = cx.http.blob(Method::HEAD, repo, &d, None).await?;
    head.expect(&[200])?
        .expect_header("Content-Length", &blob.bytes.len().to_string())?;
    digest_ok(&head, blob)?;
    let get = cx.http.blob(Method::GET, repo, &d, None).await?;
    get.expect(&[200])?.expect_body(&blob.bytes)?;
    digest_ok(&get, blob)
}

/// `GET /v2/`.
pub(crate) async fn base(cx: &Ctx, rec: &mut Recorder<'_>) {
    rec.case(
        C,
        "GET /v2/: 200 (the registry implements the spec)",
        async {
            cx.http.get("/v2/").await?.expect(&[200])?;
            Ok(())
        },
    )
    .await;
}

/// Runs the pull cases.
pub(crate) async fn run(cx: &Ctx, rec: &mut Recorder<'_>) {
    blobs(cx, rec).await;
    ranges(cx, rec).await;
    manifests(cx, rec).await;
}

async fn blobs(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let config = &cx.fixture.config;
    let layer = &cx.fixture.layers[0];
    for (name, method, blob) in [
        (
            "HEAD existing blob: 200 with Content-Length and Docker-Content-Digest",
            Method::HEAD,
            config,
        ),
        (
            "GET existing blob: 200 with the exact content and Docker-Content-Digest",
            Method::GET,
            layer,
        ),
    ] {
        rec.case(C, name, async {
            cx.ensure_fixture().await?;
            check_blob(cx, method, repo, blob).await
        })
        .await;
    }
    let missing = Digest::of(Algorithm::Sha256, &random_bytes(32)).to_string();
    for (name, method) in [
        ("HEAD blob that does not exist: 404", Method::HEAD),
        ("GET blob that does not exist: 404", Method::GET),
    ] {
        rec.case(C, name, async {
            cx.http
                .blob(method, repo, &missing, None)
                .await?
                .expect(&[404])?;
            Ok(())
        })
        .await;
    }
}

async fn ranges(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let layer = &cx.fixture.layers[0];
    let total = layer.bytes.len();
    let d = layer.digest.to_string();
    // (range header, expected first byte, expected last byte)
    let satisfiable = [
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, total - 1),
        ("bytes=-500", total - 500, total - 1),
        ("bytes=2000-5000", 2000, total - 1),
    ];
    for (range, first, last) in satisfiable {
        rec.case(C, format!("GET blob with Range: {range} (blob of {total} bytes): 206 with Content-Range bytes {first}-{last}/{total}"), async {
            cx.ensure_fixture().await?;
            let resp = cx.http.blob(Method::GET, repo, &d, Some(range)).await?;
            resp.expect(&[206])?;
            let cr = resp.require_header("Content-Range")?;
            let full = format!("bytes {first}-{last}/{total}");
            let unknown = format!("bytes {first}-{last}/*");
            if cr != full && cr != unknown {
                bail!("{}: Content-Range {cr:?}, expected {full:?}", resp.what);
            }
            resp.expect_body(&layer.bytes[first..=last])?;
            if resp.header("Content-Length").is_some() {
                resp.expect_header("Content-Length", &(last - first + 1).to_string())?;
            }
            Ok(())
        })
        .await;
    }
    rec.case(
        C,
        format!("GET blob with unsatisfiable Range: bytes=5000-10000 (blob of {total} bytes): 416"),
        async {
            cx.ensure_fixture().await?;
            let resp = cx
                .http
                .blob(Method::GET, repo, &d, Some("bytes=5000-10000"))
                .await?;
            resp.expect(&[416])?;
            if let Some(cr) = resp.header("Content-Range") {
                let expected = format!("bytes */{total}");
                if cr != expected {
                    bail!("{}: Content-Range {cr:?}, expected {expected:?}", resp.what);
                }
            }
            Ok(())
        },
    )
    .await;
    rec.case(C, "GET blob with an invalid Range (bytes=500-0): 416, or 200 with the whole blob (RFC 9110 lets servers ignore it)", async {
        cx.ensure_fixture().await?;
        let resp = cx.http.blob(Method::GET, repo, &d, Some("bytes=500-0")).await?;
        resp.expect(&[416, 200])?;
        if resp.status.as_u16() == 200 {
            resp.expect_body(&layer.bytes)?;
        }
        Ok(())
    })
    .await;
}

async fn manifests(cx: &Ctx, rec: &mut Recorder<'_>) {
    let repo = &cx.repo;
    let m = &cx.fixture.manifest;
    let tag = &cx.fixture_tag;
    let digest = m.digest.to_string();
    for (name, method, reference) in [
        (
            "HEAD manifest by tag: 200 with Content-Type, Content-Length, Docker-Content-Digest",
            Method::HEAD,
            tag,
        ),
        (
            "HEAD manifest by digest: 200 with Content-Type, Content-Length, Docker-Content-Digest",
            Method::HEAD,
            &digest,
        ),
        (
            "GET manifest by tag: 200, exact bytes, pushed Content-Type, Docker-Content-Digest",
            Method::GET,
            tag,
        ),
        (
            "GET manifest by digest: 200, exact bytes, pushed Content-Type, Docker-Content-Digest",
            Method::GET,
            &digest,
        ),
    ] {
        rec.case(C, name, async {
            cx.ensure_fixture().await?;
            check_manifest(cx, method, repo, reference, m).await
        })
        .await;
    }

    let missing_tag = format!("missing-{}", random_id());
    let missing_digest = Digest::of(Algorithm::Sha256, &random_bytes(32)).to_string();
    let no_repo = format!("{}/missing-{}", cx.repo, random_id());
    let absent: [(&str, Method, &str, &str); 4] = [
        (
            "HEAD manifest that does not exist: 404",
            Method::HEAD,
            repo,
            &missing_tag,
        ),
        (
            "GET manifest by a tag that does not exist: 404",
            Method::GET,
            repo,
            &missing_tag,
        ),
        (
            "GET manifest by a digest that does not exist: 404",
            Method::GET,
            repo,
            &missing_digest,
        ),
        (
            "GET manifest from a repository that does not exist: 404",
            Method::GET,
            &no_repo,
            "latest",
        ),
    ];
    for (name, method, repo, reference) in absent {
        rec.case(C, name, async {
            cx.http
                .manifest(method, repo, reference)
                .await?
                .expect(&[404])?;
            Ok(())
        })
        .await;
    }

    for p in cx.pushed_manifests() {
        rec.case(
            C,
            format!(
                "GET and HEAD {} by digest: 200, exact bytes, Content-Type {}",
                p.label, p.manifest.media_type
            ),
            async {
                let d = p.manifest.digest.to_string();
                check_manifest(cx, Method::HEAD, &p.repo, &d, &p.manifest).await?;
                check_manifest(cx, Method::GET, &p.repo, &d, &p.manifest).await
            },
        )
        .await;
    }
}
