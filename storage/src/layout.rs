//! The object-key layout: the one place that turns validated names into keys and keys
//! back into names. docs/storage.md describes the same table for operators.
//!
//! ```text
//! stowage.json                                        store identity, written once
//! packs/<pack id>                                     chunk data + footer index (immutable)
//! blobs/<alg>/<hex[..2]>/<hex>                        recipe: the commit point of a blob
//! uploads/<id>/state                                  upload session state (compare-and-swap)
//! uploads/<id>/seg-<n>-<nonce>                        chunk refs of one append (write-once)
//! repos/<repo>/_blobs/<alg>/<hex>                     blob link
//! repos/<repo>/_manifests/<alg>/<hex>                 manifest link, with media type
//! repos/<repo>/_tags/<tag>                            tag record with history (compare-and-swap)
//! repos/<repo>/_referrers/<alg>/<hex>/<alg>-<hex>     referrer descriptor, by subject
//! index/repositories/<repo>/_repo                     catalog entry
//! gc/state                                            the collector's run (compare-and-swap)
//! gc/clock                                            written to read the backend's clock
//! gc/runs/<run>/candidates                            what a run proposes to delete
//! gc/runs/<run>/sealed                                what it will delete
//! gc/runs/<run>/rescues/<nonce>                       objects a writer reused meanwhile
//! ```
//!
//! Repository path components cannot start with `_`, so the `_blobs`-style markers never
//! collide with a nested repository, and no key is ever a directory of another key (which
//! a local file system could not store).

use object_store::path::Path;

use crate::digest::{Algorithm, Digest};
use crate::names::{RepoName, Tag};
use crate::pack::PackId;
use crate::upload::UploadId;

pub(crate) fn config() -> Path {
    Path::from("stowage.json")
}

pub(crate) fn packs_prefix() -> Path {
    Path::from("packs")
}

pub(crate) fn pack(id: &PackId) -> Path {
    Path::from(format!("packs/{id}"))
}

pub(crate) fn parse_pack(path: &Path) -> Option<PackId> {
    let mut parts = path.parts();
    (parts.next()?.as_ref() == "packs").then_some(())?;
    let id = parts.next()?;
    parts.next().is_none().then_some(())?;
    id.as_ref().parse().ok()
}

pub(crate) fn blobs_prefix() -> Path {
    Path::from("blobs")
}

pub(crate) fn recipe(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!(
        "blobs/{}/{}/{}",
        digest.algorithm(),
        &hex[..2],
        hex
    ))
}

pub(crate) fn parse_recipe(path: &Path) -> Option<Digest> {
    let parts: Vec<_> = path.parts().collect();
    match parts.as_slice() {
        [blobs, alg, _, hex] if blobs.as_ref() == "blobs" => {
            Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref())).ok()
        }
        _ => None,
    }
}

pub(crate) fn uploads_prefix() -> Path {
    Path::from("uploads")
}

pub(crate) fn upload_prefix(id: &UploadId) -> Path {
    Path::from(format!("uploads/{id}"))
}

pub(crate) fn upload_state(id: &UploadId) -> Path {
    Path::from(format!("uploads/{id}/state"))
}

pub(crate) fn upload_segment(id: &UploadId, index: u32, nonce: &str) -> Path {
    Path::from(format!("uploads/{id}/seg-{index:08}-{nonce}"))
}

pub(crate) fn repo_prefix(repo: &RepoName) -> Path {
    Path::from(format!("repos/{repo}"))
}

fn repo_key(repo: &RepoName, rest: &str) -> Path {
    Path::from(format!("repos/{repo}/{rest}"))
}

pub(crate) fn blob_link(repo: &RepoName, digest: &Digest) -> Path {
    repo_key(
        repo,
        &format!("_blobs/{}/{}", digest.algorithm(), digest.hex()),
    )
}

pub(crate) fn blob_links_prefix(repo: &RepoName) -> Path {
    repo_key(repo, "_blobs")
}

pub(crate) fn manifest_link(repo: &RepoName, digest: &Digest) -> Path {
    repo_key(
        repo,
        &format!("_manifests/{}/{}", digest.algorithm(), digest.hex()),
    )
}

pub(crate) fn manifest_links_prefix(repo: &RepoName) -> Path {
    repo_key(repo, "_manifests")
}

/// The digest named by the last two parts of a `_blobs` or `_manifests` link key.
pub(crate) fn parse_link(path: &Path) -> Option<Digest> {
    let parts: Vec<_> = path.parts().collect();
    let [.., alg, hex] = parts.as_slice() else {
        return None;
    };
    Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref())).ok()
}

pub(crate) fn tag(repo: &RepoName, tag: &Tag) -> Path {
    repo_key(repo, &format!("_tags/{tag}"))
}

pub(crate) fn tags_prefix(repo: &RepoName) -> Path {
    repo_key(repo, "_tags")
}

pub(crate) fn parse_tag(path: &Path) -> Option<Tag> {
    Tag::parse(path.filename()?).ok()
}

pub(crate) fn referrer(repo: &RepoName, subject: &Digest, referrer: &Digest) -> Path {
    repo_key(
        repo,
        &format!(
            "_referrers/{}/{}/{}-{}",
            subject.algorithm(),
            subject.hex(),
            referrer.algorithm(),
            referrer.hex()
        ),
    )
}

pub(crate) fn referrers_prefix(repo: &RepoName, subject: &Digest) -> Path {
    repo_key(
        repo,
        &format!("_referrers/{}/{}", subject.algorithm(), subject.hex()),
    )
}

pub(crate) fn parse_referrer(path: &Path) -> Option<Digest> {
    let (alg, hex) = path.filename()?.split_once('-')?;
    let algorithm = match alg {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

pub(crate) fn repository_entry(repo: &RepoName) -> Path {
    Path::from(format!("index/repositories/{repo}/_repo"))
}

/// Prefix listing every catalog entry, or those under one namespace.
pub(crate) fn repositories_prefix(namespace: Option<&str>) -> Path {
    match namespace {
        Some(ns) => Path::from(format!("index/repositories/{ns}")),
        None => Path::from("index/repositories"),
    }
}

pub(crate) fn parse_repository_entry(path: &Path) -> Option<RepoName> {
    let name = path
        .as_ref()
        .strip_prefix("index/repositories/")?
        .strip_suffix("/_repo")?;
    RepoName::parse(name).ok()
}

pub(crate) fn clock() -> Path {
    Path::from("gc/clock")
}

pub(crate) fn collector_state() -> Path {
    Path::from("gc/state")
}

pub(crate) fn run_candidates(run: &str) -> Path {
    Path::from(format!("gc/runs/{run}/candidates"))
}

pub(crate) fn run_sealed(run: &str) -> Path {
    Path::from(format!("gc/runs/{run}/sealed"))
}

pub(crate) fn run_rescues_prefix(run: &str) -> Path {
    Path::from(format!("gc/runs/{run}/rescues"))
}

pub(crate) fn run_rescue(run: &str, nonce: &str) -> Path {
    Path::from(format!("gc/runs/{run}/rescues/{nonce}"))
}

pub(crate) fn runs_prefix() -> Path {
    Path::from("gc/runs")
}

/// The run id of a key under `gc/runs/`.
pub(crate) fn parse_run(path: &Path) -> Option<String> {
    let mut parts = path.parts();
    (parts.next()?.as_ref() == "gc").then_some(())?;
    (parts.next()?.as_ref() == "runs").then_some(())?;
    Some(parts.next()?.as_ref().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_parsers() {
        let d = Digest::sha256(b"layer");
        let s = Digest::sha256(b"subject");
        let repo = RepoName::parse("tripleo/centos-binary-aodh-api").unwrap();
        let t = Tag::parse("latest-passed-ci").unwrap();
        assert_eq!(parse_recipe(&recipe(&d)), Some(d.clone()));
        assert_eq!(parse_link(&blob_link(&repo, &d)), Some(d.clone()));
        assert_eq!(parse_link(&manifest_link(&repo, &d)), Some(d.clone()));
        assert_eq!(parse_tag(&tag(&repo, &t)), Some(t));
        assert_eq!(parse_referrer(&referrer(&repo, &s, &d)), Some(d.clone()));
        assert_eq!(parse_repository_entry(&repository_entry(&repo)), Some(repo));
        let id = PackId::generate();
        assert_eq!(parse_pack(&pack(&id)), Some(id));
        assert!(recipe(&d).as_ref().starts_with("blobs/sha256/"));
    }

    #[test]
    fn nested_repositories_do_not_collide() {
        let outer = RepoName::parse("a/b").unwrap();
        let inner = RepoName::parse("a/b/c").unwrap();
        let d = Digest::sha256(b"x");
        let keys = [
            blob_link(&outer, &d),
            blob_link(&inner, &d),
            repository_entry(&outer),
            repository_entry(&inner),
        ];
        for a in &keys {
            for b in &keys {
                if a != b {
                    let prefix = format!("{}/", a.as_ref());
                    assert!(
                        !b.as_ref().starts_with(&prefix),
                        "{a} is a directory of {b}"
                    );
                }
            }
        }
    }
}
