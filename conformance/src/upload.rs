//! Blob uploads as clients send them, shared by the push, sha512 and error cases: the
//! requests of every upload method (monolithic PUT, single POST, chunk PATCH, streamed
//! PATCH, closing PUT) and the flows built from them. The flows take their blob, or the
//! digest algorithm to build it with, so one piece of code serves sha256 and sha512.

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyStream, Full, StreamBody};
use reqwest::Method;
use url::Url;

use crate::client::{Resp, add_query};
use crate::content::{Algorithm, Blob, Digest, MT_LAYER_GZ};
use crate::suite::{Ctx, check_digest_header, empty_body, with_digest};

/// Smallest chunk this suite sends when the registry states no minimum.
pub(crate) const CHUNK: usize = 1024;

/// The content type of every upload body.
const OCTETS: &str = "application/octet-stream";

/// An open upload session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Where to send the content (the POST's `Location`).
    pub url: Url,
    /// The chunk size to use: ours, or `OCI-Chunk-Min-Length` when larger.
    pub chunk: usize,
}

/// A request body of unknown length, sent with chunked transfer encoding: no
/// `Content-Length`, as a streamed upload does.
fn streamed(bytes: Vec<u8>) -> reqwest::Body {
    reqwest::Body::wrap(StreamBody::new(BodyStream::new(Full::new(Bytes::from(
        bytes,
    )))))
}

/// Sends `body` with `method` to `url` as an octet stream, with `Content-Range:
/// <start>-<end>` when `range` is given.
async fn send(
    cx: &Ctx,
    method: Method,
    url: &Url,
    body: reqwest::Body,
    range: Option<(usize, usize)>,
) -> Result<Resp> {
    cx.http
        .call(method, url, |r| {
            let r = r.header("Content-Type", OCTETS);
            let r = match range {
                Some((start, end)) => r.header("Content-Range", format!("{start}-{end}")),
                None => r,
            };
            r.body(body)
        })
        .await
}

/// `PUT` of `bytes` to `url` as it is (for digests in the query that are deliberately
/// malformed).
pub(crate) async fn put_bytes(cx: &Ctx, url: &Url, bytes: &[u8]) -> Result<Resp> {
    send(cx, Method::PUT, url, bytes.to_vec().into(), None).await
}

/// Monolithic `PUT <loc>?digest=<digest>` with the whole content.
pub(crate) async fn put_blob(cx: &Ctx, loc: &Url, digest: &Digest, bytes: &[u8]) -> Result<Resp> {
    put_bytes(cx, &with_digest(loc, digest), bytes).await
}

/// Single `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with the whole content.
pub(crate) async fn post_blob(cx: &Ctx, repo: &str, digest: &Digest, bytes: &[u8]) -> Result<Resp> {
    let mut url = cx.uploads_url(repo)?;
    add_query(&mut url, "digest", &digest.to_string());
    send(cx, Method::POST, &url, bytes.to_vec().into(), None).await
}

/// Sends one chunk with `Content-Range` and `Content-Length`.
pub(crate) async fn patch_chunk(cx: &Ctx, loc: &Url, bytes: &[u8], start: usize) -> Result<Resp> {
    let end = start + bytes.len() - 1;
    send(
        cx,
        Method::PATCH,
        loc,
        bytes.to_vec().into(),
        Some((start, end)),
    )
    .await
}

/// Sends the whole content in one `PATCH` with neither `Content-Length` nor
/// `Content-Range`.
pub(crate) async fn patch_streamed(cx: &Ctx, loc: &Url, bytes: &[u8]) -> Result<Resp> {
    send(cx, Method::PATCH, loc, streamed(bytes.to_vec()), None).await
}

/// Closes an upload with `PUT ?digest=` and an optional final chunk starting at `start`.
pub(crate) async fn put_final(
    cx: &Ctx,
    loc: &Url,
    digest: &Digest,
    last: Option<(&[u8], usize)>,
) -> Result<Resp> {
    match last {
        Some((bytes, start)) => {
            let end = start + bytes.len() - 1;
            let url = with_digest(loc, digest);
            send(
                cx,
                Method::PUT,
                &url,
                bytes.to_vec().into(),
                Some((start, end)),
            )
            .await
        }
        None => put_blob(cx, loc, digest, &[]).await,
    }
}

/// Reads `OCI-Chunk-Min-Length` and picks the chunk size for a session.
fn chunk_size(resp: &Resp) -> usize {
    resp.header("OCI-Chunk-Min-Length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(CHUNK, |min| min.max(CHUNK))
}

/// Checks a chunk response's `Range` header is `0-<end>`.
pub(crate) fn expect_range(resp: &Resp, end: usize) -> Result<()> {
    resp.expect_header("Range", &format!("0-{end}"))?;
    Ok(())
}

/// Requires `202 Accepted` and returns the resolved `Location` to continue the upload at.
pub(crate) fn next_location(cx: &Ctx, resp: &Resp) -> Result<Url> {
    resp.expect(&[202])?;
    cx.http.resolve(resp.require_header("Location")?)
}

/// Opens an upload session (`POST`, `Content-Length: 0`), announcing
/// `digest-algorithm=<algorithm>` when one is given: 202 with `Location`.
pub(crate) async fn open(cx: &Ctx, repo: &str, algorithm: Option<Algorithm>) -> Result<Session> {
    let mut url = cx.uploads_url(repo)?;
    if let Some(a) = algorithm {
        add_query(&mut url, "digest-algorithm", a.name());
    }
    let resp = cx.http.call(Method::POST, &url, empty_body).await?;
    let url = next_location(cx, &resp)?;
    Ok(Session {
        url,
        chunk: chunk_size(&resp),
    })
}

/// Completes a monolithic upload at `loc` with `blob`: 201, noted for cleanup.
pub(crate) async fn monolithic(cx: &Ctx, repo: &str, loc: &Url, blob: &Blob) -> Result<Resp> {
    let resp = put_blob(cx, loc, &blob.digest, &blob.bytes).await?;
    resp.expect(&[201])?;
    cx.created_blob(repo, &blob.digest);
    Ok(resp)
}

/// Uploads `blob` by single POST: 201, or 202 when the registry declines single-request
/// uploads (the spec allows it), then a PUT to the session completes it with 201. Notes the
/// blob for cleanup and returns the answer that stored it, and whether that was the POST.
pub(crate) async fn single_post(cx: &Ctx, repo: &str, blob: &Blob) -> Result<(Resp, bool)> {
    let resp = post_blob(cx, repo, &blob.digest, &blob.bytes).await?;
    resp.expect(&[201, 202])?;
    let stored = if resp.status.as_u16() == 202 {
        let session = cx.http.resolve(resp.require_header("Location")?)?;
        let put = put_blob(cx, &session, &blob.digest, &blob.bytes).await?;
        put.expect(&[201])?;
        (put, false)
    } else {
        (resp, true)
    };
    cx.created_blob(repo, &blob.digest);
    Ok(stored)
}

/// Sends `bytes` in one streamed PATCH: 202; returns the answer and the next location.
pub(crate) async fn stream(cx: &Ctx, loc: &Url, bytes: &[u8]) -> Result<(Resp, Url)> {
    let resp = patch_streamed(cx, loc, bytes).await?;
    let next = next_location(cx, &resp)?;
    Ok((resp, next))
}

/// Closes an upload of `blob` with `PUT ?digest=` (carrying the last chunk when `last` is
/// given): 201, noted for cleanup.
pub(crate) async fn close(
    cx: &Ctx,
    repo: &str,
    loc: &Url,
    blob: &Blob,
    last: Option<(&[u8], usize)>,
) -> Result<Resp> {
    let resp = put_final(cx, loc, &blob.digest, last).await?;
    resp.expect(&[201])?;
    cx.created_blob(repo, &blob.digest);
    Ok(resp)
}

/// Uploads `blob` in chunks of `chunk` bytes over an open session, the last one in the
/// closing PUT when `last_in_put`; checks every status, `Location` and `Range` on the way
/// and returns the blob's `Location`.
async fn chunked_upload(
    cx: &Ctx,
    repo: &str,
    mut loc: Url,
    blob: &Blob,
    chunk: usize,
    last_in_put: bool,
) -> Result<String> {
    let chunks: Vec<&[u8]> = blob.bytes.chunks(chunk).collect();
    let mut start = 0;
    let mut last = None;
    for (i, c) in chunks.iter().enumerate() {
        if last_in_put && i + 1 == chunks.len() {
            last = Some((*c, start));
            break;
        }
        let resp = patch_chunk(cx, &loc, c, start).await?;
        resp.expect(&[202])?;
        expect_range(&resp, start + c.len() - 1)?;
        loc = cx.http.resolve(resp.require_header("Location")?)?;
        start += c.len();
    }
    let resp = close(cx, repo, &loc, blob, last).await?;
    check_digest_header(&resp, &blob.digest)?;
    Ok(resp.require_header("Location")?.to_owned())
}

/// A chunked upload of a random `algorithm` blob of three chunks less five bytes, over a
/// session opened for it (announcing `digest-algorithm` unless it is sha256, the
/// default); the last chunk goes in the closing PUT when `last_in_put`, otherwise that PUT
/// is empty. Returns the blob and its `Location`.
pub(crate) async fn chunked(
    cx: &Ctx,
    repo: &str,
    algorithm: Algorithm,
    last_in_put: bool,
) -> Result<(Blob, String)> {
    let announce = (algorithm != Algorithm::Sha256).then_some(algorithm);
    let session = open(cx, repo, announce).await?;
    let blob = Blob::random(session.chunk * 3 - 5, algorithm, MT_LAYER_GZ);
    let location = chunked_upload(cx, repo, session.url, &blob, session.chunk, last_in_put).await?;
    Ok((blob, location))
}

/// GETs a blob `Location` and requires the pushed bytes.
pub(crate) async fn verify_blob_location(cx: &Ctx, location: &str, bytes: &[u8]) -> Result<()> {
    let url = cx.http.resolve(location)?;
    let resp = cx.http.call(Method::GET, &url, |r| r).await?;
    resp.expect(&[200])?.expect_body(bytes)?;
    Ok(())
}

/// Checks a successful blob upload: `Docker-Content-Digest` (if sent) equals the digest,
/// and the `Location` serves the exact bytes.
pub(crate) async fn verify_blob_push(cx: &Ctx, resp: &Resp, blob: &Blob) -> Result<()> {
    check_digest_header(resp, &blob.digest)?;
    verify_blob_location(cx, resp.require_header("Location")?, &blob.bytes).await
}

/// A 416 answer may carry `Range` (the spec does not require it); if it does, it must
/// state the progress actually made.
pub(crate) fn out_of_order_range(resp: &Resp, end: usize) -> Result<()> {
    match resp.header("Range") {
        Some(r) if r == format!("0-{end}") => Ok(()),
        Some(r) => bail!(
            "{}: 416 carries Range {r:?}, but the upload is at 0-{end}",
            resp.what
        ),
        None => Ok(()),
    }
}
