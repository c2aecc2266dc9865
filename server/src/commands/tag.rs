//! `stowage tag NS/NAME:TAG --to DIGEST`: roll a tag back (or forward) to an image from
//! its history, on the store directly (as the operator) or through a server's image
//! stream API (`--server URL --token T`, as the token's account). Either way the move is
//! recorded in the tag's history like a push, and refused if the digest was never the
//! tag's or its image is gone.

use anyhow::Context;
use clap::Args;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use stowage_storage::{Digest, Error as StoreError, RepoName, Store, StoreOptions, Tag};

/// Who the history records as having moved the tag when the CLI works on the store.
const OPERATOR: &str = "store-operator";

/// What a name of an image stream (a repository without its namespace) keeps
/// unencoded in a URL path segment: its `/` separators are encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// `stowage tag ...`.
#[derive(Args, Debug, Clone)]
pub struct TagArgs {
    /// The tag to move, as NS/NAME:TAG (e.g. tripleo/centos-binary-aodh-api:latest).
    #[arg(value_name = "NS/NAME:TAG")]
    reference: String,
    /// The image to point it at: a digest from the tag's history (sha256:...).
    #[arg(long, value_name = "DIGEST")]
    to: String,
    /// Go through this server's API instead of the store (e.g. http://127.0.0.1:5000).
    #[arg(long, env = "STOWAGE_SERVER")]
    server: Option<String>,
    /// Bearer token to authenticate to --server.
    #[arg(long, env = "STOWAGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the answer as JSON (the server's ImageStreamTag, or the tag's record).
    #[arg(long)]
    json: bool,
}

/// A parsed `NS/NAME:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TagRef {
    repo: RepoName,
    tag: Tag,
}

impl std::fmt::Display for TagRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repo, self.tag)
    }
}

fn parse_reference(reference: &str) -> anyhow::Result<TagRef> {
    if reference.contains('@') {
        anyhow::bail!(
            "{reference:?} names an image by digest; give the tag to move as NS/NAME:TAG \
             and the digest with --to"
        );
    }
    let Some((name, tag)) = reference.rsplit_once(':') else {
        anyhow::bail!("{reference:?} has no tag: expected NS/NAME:TAG, e.g. library/app:v1");
    };
    if tag.contains('/') {
        anyhow::bail!(
            "{reference:?} has no tag (a host:port?): expected NS/NAME:TAG of this registry, \
             e.g. library/app:v1"
        );
    }
    let repo = RepoName::parse(name).with_context(|| format!("in {reference:?}"))?;
    let tag = Tag::parse(tag).with_context(|| format!("in {reference:?}"))?;
    Ok(TagRef { repo, tag })
}

fn parse_digest(to: &str) -> anyhow::Result<Digest> {
    Digest::parse(to).with_context(|| {
        format!("--to {to:?} is not a digest (expected sha256: and 64 hex digits)")
    })
}

/// The rollback endpoint of `server` for `target`.
fn rollback_url(server: &str, target: &TagRef) -> anyhow::Result<String> {
    let full = target.repo.as_str();
    let Some((ns, name)) = full.split_once('/') else {
        anyhow::bail!(
            "{full:?} has no namespace: through --server a tag is named NS/NAME:TAG \
             (image streams live in namespaces)"
        );
    };
    Ok(format!(
        "{}/apis/image.openshift.io/v1/namespaces/{ns}/imagestreamtags/{}:{}/rollback",
        server.trim_end_matches('/'),
        utf8_percent_encode(name, SEGMENT),
        target.tag
    ))
}

/// Where the tag points and its generation, from the server's ImageStreamTag.
fn summary_of(answer: &Value) -> (Option<String>, Option<u64>) {
    let digest = answer["image"]["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            answer["image"]["dockerImageReference"]
                .as_str()
                .and_then(|r| r.rsplit_once('@'))
                .map(|(_, d)| d.to_string())
        });
    let generation = answer["generation"]
        .as_u64()
        .or_else(|| answer["metadata"]["resourceVersion"].as_str()?.parse().ok());
    (digest, generation)
}

async fn through_server(
    server: &str,
    token: Option<&str>,
    target: &TagRef,
    digest: &Digest,
) -> anyhow::Result<Value> {
    let url = rollback_url(server, target)?;
    let client = reqwest::Client::new();
    let mut req = client
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&json!({ "digest": digest.to_string() }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading the answer of POST {url}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "cannot roll back {target} to {digest}: {status}: {}",
            crate::commands::view::error_message(&body)
        );
    }
    serde_json::from_str(&body)
        .with_context(|| format!("the answer of POST {url} is not JSON: {body:.200}"))
}

async fn on_store(
    options: StoreOptions,
    target: &TagRef,
    digest: &Digest,
) -> anyhow::Result<stowage_storage::TagRecord> {
    let mut options = options;
    // A tag record is tiny; the chunk index is not needed to move it.
    options.dedup_index = false;
    let store = Store::open(options).await?;
    let repo = store.repository(&target.repo);
    match repo.rollback_tag(&target.tag, digest, Some(OPERATOR)).await {
        Ok(record) => Ok(record),
        Err(e @ StoreError::ManifestNotFound { .. }) => {
            Err(anyhow::Error::new(e).context(format!(
                "cannot roll back {target} to {digest}: the image was garbage collected \
                 (or deleted)"
            )))
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("cannot roll back {target} to {digest}")))
        }
    }
}

/// `stowage tag NS/NAME:TAG --to DIGEST`.
pub async fn tag(options: StoreOptions, args: TagArgs) -> anyhow::Result<()> {
    let target = parse_reference(&args.reference)?;
    let digest = parse_digest(&args.to)?;
    let (answer, now, generation) = match &args.server {
        Some(server) => {
            let answer = through_server(server, args.token.as_deref(), &target, &digest).await?;
            let (now, generation) = summary_of(&answer);
            (
                answer,
                now.unwrap_or_else(|| digest.to_string()),
                generation,
            )
        }
        None => {
            let record = on_store(options, &target, &digest).await?;
            let mut answer = serde_json::to_value(&record)?;
            answer["repository"] = json!(target.repo.as_str());
            (
                answer,
                record.current().to_string(),
                Some(record.generation),
            )
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        match generation {
            Some(g) => println!("{target} -> {now} (generation {g})"),
            None => println!("{target} -> {now}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn references_are_ns_name_tag() {
        let r = parse_reference("tripleo/centos-binary-aodh-api:latest").unwrap();
        assert_eq!(r.repo.as_str(), "tripleo/centos-binary-aodh-api");
        assert_eq!(r.tag.as_str(), "latest");
        assert_eq!(r.to_string(), "tripleo/centos-binary-aodh-api:latest");
        let r = parse_reference("a/b/c:v1.0").unwrap();
        assert_eq!((r.repo.as_str(), r.tag.as_str()), ("a/b/c", "v1.0"));
        for bad in [
            "repo/app",
            "repo/app:",
            "Repo/app:v1",
            "repo/app:bad tag",
            "localhost:5000/repo/app",
            "repo/app@sha256:0000",
            ":v1",
        ] {
            let e = parse_reference(bad).unwrap_err();
            assert!(format!("{e:#}").contains(bad), "{bad}: {e:#}");
        }
        assert!(parse_digest("sha256:abc").is_err());
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn the_rollback_url_names_the_image_stream_tag() {
        let r = parse_reference("tripleo/aodh:latest").unwrap();
        assert_eq!(
            rollback_url("http://h:5000/", &r).unwrap(),
            "http://h:5000/apis/image.openshift.io/v1/namespaces/tripleo/imagestreamtags/aodh:latest/rollback"
        );
        let r = parse_reference("ns/sub/app:v1").unwrap();
        assert_eq!(
            rollback_url("http://h", &r).unwrap(),
            "http://h/apis/image.openshift.io/v1/namespaces/ns/imagestreamtags/sub%2Fapp:v1/rollback"
        );
        assert!(rollback_url("http://h", &parse_reference("app:v1").unwrap()).is_err());
    }

    #[test]
    fn answers_give_the_digest_and_generation() {
        let d = format!("sha256:{}", "b".repeat(64));
        let answer = json!({
            "kind": "ImageStreamTag",
            "metadata": {"name": "aodh:latest", "resourceVersion": "7"},
            "generation": 7,
            "image": {"metadata": {"name": d}, "dockerImageReference": format!("h/ns/aodh@{d}")},
        });
        assert_eq!(summary_of(&answer), (Some(d.clone()), Some(7)));
        let bare = json!({"image": {"dockerImageReference": format!("h/ns/aodh@{d}")}, "metadata": {"resourceVersion": "3"}});
        assert_eq!(summary_of(&bare), (Some(d), Some(3)));
        let status =
            r#"{"kind":"Status","status":"Failure","message":"not in history","code":400}"#;
        assert_eq!(
            crate::commands::view::error_message(status),
            "not in history"
        );
        let oci = r#"{"errors":[{"code":"DENIED","message":"no"}]}"#;
        assert_eq!(crate::commands::view::error_message(oci), "no");
        assert_eq!(crate::commands::view::error_message(""), "(no message)");
        assert_eq!(crate::commands::view::error_message("plain"), "plain");
    }
}
