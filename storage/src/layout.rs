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
//! gc/runs/<run>/candidates/<n>                        what a run proposes to delete, in parts
//! gc/runs/<run>/sealed/<n>                            what it will delete, in parts
//! gc/runs/<run>/rescues/<nonce>                       objects a writer reused meanwhile
//! gc/writers/<id>                                     a writing process's presence, renewed
//! auth/policy                                         users, teams, namespaces, grants (compare-and-swap)
//! auth/tokens/<id>                                    a personal or robot token, hashed
//! auth/keys/<kid>                                     a signing key of the token service
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

/// A record of another part of Stowage ([`crate::Records`]); `name` already checked.
pub(crate) fn record(area: &str, name: &str) -> Path {
    Path::from(format!("{area}/{name}"))
}

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

/// What an object under `uploads/<id>/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadObject {
    /// The session state.
    State,
    /// The refs of one append: its position and nonce.
    Segment { index: u32, nonce: String },
}

/// The session and role of an object under `uploads/`; `None` for keys this layout
/// never makes.
pub(crate) fn parse_upload_object(path: &Path) -> Option<(UploadId, UploadObject)> {
    let parts: Vec<_> = path.parts().collect();
    let [uploads, id, name] = parts.as_slice() else {
        return None;
    };
    (uploads.as_ref() == "uploads").then_some(())?;
    let id: UploadId = id.as_ref().parse().ok()?;
    let object = if name.as_ref() == "state" {
        UploadObject::State
    } else {
        let (index, nonce) = name.as_ref().strip_prefix("seg-")?.split_once('-')?;
        let index: u32 = index.parse().ok()?;
        // Only the exact spelling `upload_segment` writes (zero-padded index).
        (&upload_segment(&id, index, nonce) == path).then_some(())?;
        UploadObject::Segment {
            index,
            nonce: nonce.to_owned(),
        }
    };
    Some((id, object))
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

/// Every repository whose name starts with the namespace `ns` (and `ns` itself).
pub(crate) fn repo_namespace_prefix(ns: &str) -> Path {
    Path::from(format!("repos/{ns}"))
}

pub(crate) fn repos_prefix() -> Path {
    Path::from("repos")
}

/// What an object under `repos/<repo>/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepoObject {
    /// `_blobs/<alg>/<hex>`.
    BlobLink(Digest),
    /// `_manifests/<alg>/<hex>`.
    ManifestLink(Digest),
    /// `_tags/<tag>`.
    Tag(Tag),
    /// `_referrers/<alg>/<hex>/<alg>-<hex>`.
    Referrer { subject: Digest, referrer: Digest },
}

/// The repository and role of an object under `repos/`; `None` for keys this layout
/// never makes. The repository name is everything before the first `_` component.
pub(crate) fn parse_repo_object(path: &Path) -> Option<(RepoName, RepoObject)> {
    let parts: Vec<_> = path.parts().collect();
    let (first, rest) = parts.split_first()?;
    (first.as_ref() == "repos").then_some(())?;
    let marker = rest.iter().position(|p| p.as_ref().starts_with('_'))?;
    let name: Vec<&str> = rest[..marker].iter().map(|p| p.as_ref()).collect();
    let repo = RepoName::parse(&name.join("/")).ok()?;
    let digest = |alg: &str, hex: &str| Digest::parse(&format!("{alg}:{hex}")).ok();
    let tail: Vec<&str> = rest[marker..].iter().map(|p| p.as_ref()).collect();
    let (object, key) = match tail.as_slice() {
        ["_blobs", alg, hex] => {
            let d = digest(alg, hex)?;
            (RepoObject::BlobLink(d.clone()), blob_link(&repo, &d))
        }
        ["_manifests", alg, hex] => {
            let d = digest(alg, hex)?;
            (
                RepoObject::ManifestLink(d.clone()),
                manifest_link(&repo, &d),
            )
        }
        ["_tags", name] => {
            let t = Tag::parse(name).ok()?;
            let key = tag(&repo, &t);
            (RepoObject::Tag(t), key)
        }
        ["_referrers", alg, hex, name] => {
            let subject = digest(alg, hex)?;
            let (ralg, rhex) = name.split_once('-')?;
            let referrer_digest = digest(ralg, rhex)?;
            let key = referrer(&repo, &subject, &referrer_digest);
            (
                RepoObject::Referrer {
                    subject,
                    referrer: referrer_digest,
                },
                key,
            )
        }
        _ => return None,
    };
    // Only keys spelled exactly as the builders above spell them.
    (&key == path).then_some((repo, object))
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

/// Part `n` of a set a run publishes (`kind` is `candidates` or `sealed`).
pub(crate) fn run_set_part(run: &str, kind: &str, n: u32) -> Path {
    Path::from(format!("gc/runs/{run}/{kind}/{n:06}"))
}

pub(crate) fn run_rescues_prefix(run: &str) -> Path {
    Path::from(format!("gc/runs/{run}/rescues"))
}

pub(crate) fn run_rescue(run: &str, nonce: &str) -> Path {
    Path::from(format!("gc/runs/{run}/rescues/{nonce}"))
}

pub(crate) fn writer(id: &str) -> Path {
    Path::from(format!("gc/writers/{id}"))
}

pub(crate) fn writers_prefix() -> Path {
    Path::from("gc/writers")
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
    fn repository_and_upload_objects_parse_back() {
        let repo = RepoName::parse("a/b/c").unwrap();
        let (d, s) = (Digest::sha256(b"d"), Digest::sha256(b"s"));
        let t = Tag::parse("v1.0").unwrap();
        let cases = [
            (blob_link(&repo, &d), RepoObject::BlobLink(d.clone())),
            (
                manifest_link(&repo, &d),
                RepoObject::ManifestLink(d.clone()),
            ),
            (tag(&repo, &t), RepoObject::Tag(t)),
            (
                referrer(&repo, &s, &d),
                RepoObject::Referrer {
                    subject: s.clone(),
                    referrer: d.clone(),
                },
            ),
        ];
        for (key, object) in cases {
            assert_eq!(
                parse_repo_object(&key),
                Some((repo.clone(), object)),
                "{key}"
            );
        }
        for bad in [
            "repos/a/b",
            "repos/_blobs/sha256/00",
            "repos/a/_blobs/sha256/xyz",
            "repos/a/_tags/v1/extra",
            "repos/a/_unknown/x",
            "elsewhere/a/_tags/v1",
        ] {
            assert_eq!(parse_repo_object(&Path::from(bad)), None, "{bad}");
        }
        let id = UploadId::generate();
        assert_eq!(
            parse_upload_object(&upload_state(&id)),
            Some((id.clone(), UploadObject::State))
        );
        let seg = upload_segment(&id, 3, "00ff");
        assert_eq!(
            parse_upload_object(&seg),
            Some((
                id.clone(),
                UploadObject::Segment {
                    index: 3,
                    nonce: "00ff".into()
                }
            ))
        );
        for bad in [
            format!("uploads/{id}/seg-3-00ff"),
            format!("uploads/{id}/other"),
            "uploads/not-an-id/state".to_string(),
        ] {
            assert_eq!(
                parse_upload_object(&Path::from(bad.as_str())),
                None,
                "{bad}"
            );
        }
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
