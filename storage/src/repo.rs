//! Repository metadata: which blobs a repository may serve (links), its manifests (with
//! media type), its tags (with history, updated by compare-and-swap) and its referrers
//! (indexed by subject). Content lives once in the store; all of this is small JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::collection::ObjectRef;
use crate::digest::Digest;
use crate::error::{BoxError, Error, Result};
use crate::layout;
use crate::manifest;
use crate::names::{RepoName, Tag};
use crate::store::{BlobInfo, Store};

/// Tag updates retried this often under contention before giving up with a conflict.
const TAG_RETRIES: usize = 64;

/// An OCI content descriptor, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The artifact type, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a repository records about one of its manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLink {
    /// Media type the manifest was pushed with, returned as stored.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// The manifest it refers to, if it has a `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// When it was pushed.
    pub created: DateTime<Utc>,
}

/// What a manifest names that must be in its repository: blobs (config, layers) and,
/// for an index, child manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Blobs.
    pub blobs: Vec<Digest>,
    /// Child manifests.
    pub manifests: Vec<Digest>,
    /// False when sparse manifests are allowed: missing references are not an error.
    pub required: bool,
}

/// A manifest with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its link record (media type, size, subject).
    pub link: ManifestLink,
    /// The exact bytes pushed.
    pub bytes: Bytes,
}

/// One entry of a tag's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEvent {
    /// What the tag pointed to.
    pub digest: Digest,
    /// When it was set to it.
    pub created: DateTime<Utc>,
    /// Who moved it (`user:alice`, `robot:team+ci`, `anonymous`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A tag, with every digest it has pointed to (newest first; the first is current).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The tag.
    pub tag: Tag,
    /// Incremented on every update, so no two versions of the record are equal.
    pub generation: u64,
    /// History, newest first; never empty.
    pub history: Vec<TagEvent>,
}

impl TagRecord {
    /// The digest the tag points to now.
    pub fn current(&self) -> &Digest {
        &self.history[0].digest
    }

    /// When the tag was last moved.
    pub fn updated(&self) -> DateTime<Utc> {
        self.history[0].created
    }
}

/// A handle on one repository.
#[derive(Clone, Debug)]
pub struct Repository {
    store: Store,
    name: RepoName,
}

impl Repository {
    pub(crate) fn new(store: Store, name: RepoName) -> Self {
        Repository { store, name }
    }

    /// The repository's name.
    pub fn name(&self) -> &RepoName {
        &self.name
    }

    /// Whether anything was ever pushed here (its catalog entry exists).
    pub async fn exists(&self) -> Result<bool> {
        Ok(self
            .backend()
            .head(&layout::repository_entry(&self.name))
            .await?
            .is_some())
    }

    fn backend(&self) -> &crate::backend::Backend {
        &self.store.inner.backend
    }

    fn collection(&self) -> &crate::collection::CollectionView {
        &self.store.inner.collection
    }

    // ----- blobs -----

    /// Makes a committed blob servable from this repository (push, mount).
    pub async fn link_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        let info = self
            .store
            .blob(digest)
            .await?
            .ok_or_else(|| Error::BlobNotFound(digest.clone()))?;
        self.link_committed(digest).await?;
        Ok(info)
    }

    pub(crate) async fn link_committed(&self, digest: &Digest) -> Result<()> {
        self.store.ensure_repository(&self.name).await?;
        // A link is written afresh (a sealed one is waited out); the recipe it names is
        // reused, and one being swept is not there to link.
        match self
            .collection()
            .protect_recreating(
                &[ObjectRef::BlobLink(self.name.clone(), digest.clone())],
                &[ObjectRef::Recipe(digest.clone())],
            )
            .await
        {
            Err(Error::Collected(_)) => return Err(Error::BlobNotFound(digest.clone())),
            other => other?,
        }
        let record = serde_json::json!({ "created": Utc::now() }).to_string();
        self.backend()
            .put(&layout::blob_link(&self.name, digest), Bytes::from(record))
            .await
    }

    /// The blob, if it is linked here and committed.
    pub async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        if !self.has_link(digest).await? {
            return Ok(None);
        }
        self.store.blob(digest).await
    }

    /// A blob of this repository opened for reading (see [`crate::Store::open_blob`]),
    /// if it is linked here.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<crate::BlobReader>> {
        if !self.has_link(digest).await? {
            return Ok(None);
        }
        self.store.open_blob(digest).await
    }

    async fn has_link(&self, digest: &Digest) -> Result<bool> {
        if self
            .store
            .hidden(&ObjectRef::BlobLink(self.name.clone(), digest.clone()))
        {
            return Ok(false);
        }
        let key = layout::blob_link(&self.name, digest);
        Ok(self.backend().head(&key).await?.is_some())
    }

    /// Removes a blob link. `Ok(false)` if there was none. The content stays until the
    /// garbage collector finds nothing else needs it.
    pub async fn unlink_blob(&self, digest: &Digest) -> Result<bool> {
        let key = layout::blob_link(&self.name, digest);
        let existed = self.backend().head(&key).await?.is_some();
        self.backend().delete(&key).await?;
        Ok(existed)
    }

    /// Digests of every blob linked here.
    pub async fn blobs(&self) -> Result<Vec<Digest>> {
        self.list_links(layout::blob_links_prefix(&self.name)).await
    }

    async fn list_links(&self, prefix: object_store::path::Path) -> Result<Vec<Digest>> {
        let mut out: Vec<Digest> = self
            .backend()
            .list_all(&prefix)
            .await?
            .iter()
            .filter_map(|m| layout::parse_link(&m.location))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Writes a blob and links it here.
    pub async fn put_blob<S, E>(&self, expected: &Digest, body: S) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let info = self.store.put_blob(expected, body).await?;
        self.link_committed(expected).await?;
        Ok(info)
    }

    // ----- manifests -----

    /// Stores a manifest's bytes (verified against `digest`) and records it here with
    /// its media type. `referrer`: the subject and this manifest's descriptor, when it
    /// has a `subject`; it is indexed before the manifest becomes visible, with the
    /// `artifactType` the referrers API must list filled in from the bytes when the
    /// descriptor has none (an image's config media type).
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
        bytes: Bytes,
        referrer: Option<(&Digest, &Descriptor)>,
        references: &References,
    ) -> Result<ManifestLink> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let size = bytes.len() as u64;
        let record = referrer.map(|(_, d)| {
            let mut d = d.clone();
            d.artifact_type = d
                .artifact_type
                .filter(|t| !t.is_empty())
                .or_else(|| manifest::referrer_artifact_type(&d.media_type, &bytes));
            d
        });
        self.store.put_blob_bytes(digest, bytes).await?;
        self.store.ensure_repository(&self.name).await?;
        self.protect_references(digest, references).await?;
        if let (Some((subject, _)), Some(descriptor)) = (referrer, &record) {
            let json = to_json(descriptor)?;
            self.backend()
                .put(&layout::referrer(&self.name, subject, digest), json)
                .await?;
        }
        let link = ManifestLink {
            media_type: media_type.to_owned(),
            size,
            subject: referrer.map(|(s, _)| s.clone()),
            created: Utc::now(),
        };
        self.backend()
            .put(&layout::manifest_link(&self.name, digest), to_json(&link)?)
            .await?;
        Ok(link)
    }

    /// Right before a manifest's link is written: the link is written afresh (a sealed
    /// one is waited out); the blobs and child manifests it names are reused, so a
    /// collection run must keep them, and one it is sweeping is not in the repository.
    async fn protect_references(&self, digest: &Digest, references: &References) -> Result<()> {
        let mut reuse = vec![ObjectRef::Recipe(digest.clone())];
        for b in &references.blobs {
            reuse.push(ObjectRef::BlobLink(self.name.clone(), b.clone()));
            reuse.push(ObjectRef::Recipe(b.clone()));
        }
        for m in &references.manifests {
            reuse.push(ObjectRef::Manifest(self.name.clone(), m.clone()));
            reuse.push(ObjectRef::Recipe(m.clone()));
        }
        let me = [ObjectRef::Manifest(self.name.clone(), digest.clone())];
        loop {
            match self.collection().protect_recreating(&me, &reuse).await {
                Err(Error::Collected(what)) => {
                    let hit = reuse.iter().position(|r| r.to_string() == what);
                    match hit.map(|i| reuse.remove(i)) {
                        // The manifest's own bytes: committed a moment ago, sealed since.
                        Some(ObjectRef::Recipe(d)) if &d == digest => {
                            return Err(Error::Collected(what));
                        }
                        Some(
                            ObjectRef::BlobLink(_, d)
                            | ObjectRef::Recipe(d)
                            | ObjectRef::Manifest(_, d),
                        ) if references.required => {
                            return Err(Error::ReferenceUnknown(d));
                        }
                        // Sparse manifests may name what the repository lacks.
                        Some(_) => {}
                        None => return Err(Error::Collected(what)),
                    }
                }
                other => return other,
            }
        }
    }

    /// The link record of a manifest (media type, size), without its bytes.
    pub async fn manifest_link(&self, digest: &Digest) -> Result<Option<ManifestLink>> {
        if self
            .store
            .hidden(&ObjectRef::Manifest(self.name.clone(), digest.clone()))
        {
            return Ok(None);
        }
        let key = layout::manifest_link(&self.name, digest);
        match self.backend().get(&key).await? {
            Some(data) => from_json(&data, key.as_ref()).map(Some),
            None => Ok(None),
        }
    }

    /// A manifest and its bytes, if it is in this repository.
    pub async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        let Some(link) = self.manifest_link(digest).await? else {
            return Ok(None);
        };
        let bytes = self.store.blob_bytes(digest).await?;
        Ok(Some(Manifest {
            digest: digest.clone(),
            link,
            bytes,
        }))
    }

    /// Removes a manifest from this repository, with the tags that point at it and its
    /// entry among its subject's referrers. `Ok(false)` if it was not here.
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<bool> {
        let Some(link) = self.manifest_link(digest).await? else {
            return Ok(false);
        };
        // Tags pointing at it go first, so none is ever listed without its manifest; a
        // tag moved to another manifest meanwhile stays.
        for tag in self.tags().await? {
            self.delete_tag_if_current(&tag, digest).await?;
        }
        if let Some(subject) = &link.subject {
            self.backend()
                .delete(&layout::referrer(&self.name, subject, digest))
                .await?;
        }
        self.backend()
            .delete(&layout::manifest_link(&self.name, digest))
            .await?;
        Ok(true)
    }

    /// Digests of every manifest in this repository.
    pub async fn manifests(&self) -> Result<Vec<Digest>> {
        self.list_links(layout::manifest_links_prefix(&self.name))
            .await
    }

    // ----- referrers -----

    /// Descriptors of the manifests whose subject is `subject`, by digest. Records
    /// whose manifest is no longer here (an interrupted push or delete) are skipped.
    /// A record of an image without `artifactType` (older versions wrote one for an
    /// ordinary image config) gets its config's media type, read from the manifest.
    pub async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let prefix = layout::referrers_prefix(&self.name, subject);
        let listed = self.backend().list_all(&prefix).await?;
        let mut out: Vec<Descriptor> = futures::stream::iter(listed)
            .filter(|m| futures::future::ready(layout::parse_referrer(&m.location).is_some()))
            .map(|m| {
                let this = self.clone();
                async move {
                    let Some(data) = this.backend().get(&m.location).await? else {
                        return Ok(None);
                    };
                    let d: Descriptor = from_json(&data, m.location.as_ref())?;
                    let present = this
                        .backend()
                        .head(&layout::manifest_link(&this.name, &d.digest))
                        .await?
                        .is_some();
                    if !present {
                        return Ok(None);
                    }
                    this.with_artifact_type(d).await
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// A referrer record as the referrers API lists it: an empty `artifactType` is
    /// none, and an image without one gets its config's media type, read (at most
    /// [`manifest::MANIFEST_READ_MAX`] bytes) from its manifest. `None` if the
    /// manifest's bytes are gone (swept meanwhile): the record is stale.
    async fn with_artifact_type(&self, mut d: Descriptor) -> Result<Option<Descriptor>> {
        d.artifact_type = d.artifact_type.filter(|t| !t.is_empty());
        if d.artifact_type.is_some()
            || manifest::kind_of(&d.media_type) != Some(manifest::Kind::Image)
        {
            return Ok(Some(d));
        }
        match self
            .store
            .blob_bytes_limited(&d.digest, manifest::MANIFEST_READ_MAX)
            .await
        {
            Ok(Some(bytes)) => {
                d.artifact_type = manifest::referrer_artifact_type(&d.media_type, &bytes);
            }
            Ok(None) => tracing::warn!(
                repo = %self.name,
                manifest = %d.digest,
                "referrer record without artifactType: the manifest is over {} bytes, \
                 not read to find its config media type",
                manifest::MANIFEST_READ_MAX
            ),
            Err(Error::BlobNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(d))
    }

    // ----- tags -----

    /// A tag's record, or `None`.
    pub async fn tag(&self, tag: &Tag) -> Result<Option<TagRecord>> {
        Ok(self.tag_versioned(tag).await?.map(|(r, _)| r))
    }

    async fn tag_versioned(
        &self,
        tag: &Tag,
    ) -> Result<Option<(TagRecord, crate::backend::Version)>> {
        let key = layout::tag(&self.name, tag);
        match self.backend().get_versioned(&key).await? {
            Some((data, version)) => {
                let record: TagRecord = from_json(&data, key.as_ref())?;
                if record.history.is_empty() {
                    return Err(Error::corrupt(key.as_ref(), "tag has no history"));
                }
                Ok(Some((record, version)))
            }
            None => Ok(None),
        }
    }

    /// Points `tag` at `digest`, recording the move in its history. Concurrent updates
    /// are serialised by compare-and-swap; none is lost.
    pub async fn set_tag(&self, tag: &Tag, digest: &Digest) -> Result<TagRecord> {
        self.set_tag_by(tag, digest, None).await
    }

    /// [`Repository::set_tag`], recording who moved the tag in its history.
    pub async fn set_tag_by(
        &self,
        tag: &Tag,
        digest: &Digest,
        by: Option<&str>,
    ) -> Result<TagRecord> {
        for attempt in 0..TAG_RETRIES {
            match self.try_set_tag(tag, None, digest, by).await {
                Err(Error::Conflict { .. }) => conflict_backoff(attempt).await,
                other => return other,
            }
        }
        Err(Error::Conflict {
            what: format!("tag {}:{tag}", self.name),
        })
    }

    /// Moves `tag` back to `digest`, an image it pointed to before, recording the move
    /// (with `by`) in its history like any other. The tag must exist
    /// ([`Error::TagNotFound`]), `digest` must be in its history
    /// ([`Error::NotInHistory`]) and its manifest still in the repository
    /// ([`Error::ManifestNotFound`]: the image was deleted or garbage collected). Rolling
    /// back to the current digest changes nothing. The checks are made against the
    /// record the swap replaces: a tag moved meanwhile is read and checked again.
    pub async fn rollback_tag(
        &self,
        tag: &Tag,
        digest: &Digest,
        by: Option<&str>,
    ) -> Result<TagRecord> {
        for attempt in 0..TAG_RETRIES {
            let Some(record) = self.tag(tag).await? else {
                return Err(Error::TagNotFound {
                    repo: self.name.to_string(),
                    tag: tag.to_string(),
                });
            };
            if !record.history.iter().any(|e| &e.digest == digest) {
                return Err(Error::NotInHistory {
                    repo: self.name.to_string(),
                    tag: tag.to_string(),
                    digest: digest.clone(),
                });
            }
            if self.manifest_link(digest).await?.is_none() {
                return Err(Error::ManifestNotFound {
                    repo: self.name.to_string(),
                    digest: digest.clone(),
                });
            }
            if record.current() == digest {
                return Ok(record);
            }
            // Only from the digest checked against: a tag moved (or deleted) since it was
            // read is a conflict, and is read and checked again.
            match self
                .try_set_tag(tag, Some(Some(record.current())), digest, by)
                .await
            {
                Err(Error::Conflict { .. }) => conflict_backoff(attempt).await,
                other => return other,
            }
        }
        Err(Error::Conflict {
            what: format!("tag {}:{tag}", self.name),
        })
    }

    /// Points `tag` at `digest` only if it currently points at `expected` (`None`: only
    /// if the tag does not exist). Fails with [`Error::Conflict`] otherwise.
    pub async fn compare_and_set_tag(
        &self,
        tag: &Tag,
        expected: Option<&Digest>,
        digest: &Digest,
    ) -> Result<TagRecord> {
        self.try_set_tag(tag, Some(expected), digest, None).await
    }

    async fn try_set_tag(
        &self,
        tag: &Tag,
        expected: Option<Option<&Digest>>,
        digest: &Digest,
        by: Option<&str>,
    ) -> Result<TagRecord> {
        let conflict = || Error::Conflict {
            what: format!("tag {}:{tag}", self.name),
        };
        let current = self.tag_versioned(tag).await?;
        if let Some(expected) = expected
            && current.as_ref().map(|(r, _)| r.current()) != expected
        {
            return Err(conflict());
        }
        let (record, version) = match current {
            Some((r, _)) if r.current() == digest => return Ok(r),
            Some((mut r, v)) => {
                r.generation += 1;
                r.history.insert(
                    0,
                    TagEvent {
                        digest: digest.clone(),
                        created: Utc::now(),
                        by: by.map(str::to_string),
                    },
                );
                (r, Some(v))
            }
            None => (
                TagRecord {
                    tag: tag.clone(),
                    generation: 1,
                    history: vec![TagEvent {
                        digest: digest.clone(),
                        created: Utc::now(),
                        by: by.map(str::to_string),
                    }],
                },
                None,
            ),
        };
        self.store.ensure_repository(&self.name).await?;
        let target = ObjectRef::Manifest(self.name.clone(), digest.clone());
        if let Err(Error::Collected(_)) = self
            .collection()
            .protect(std::slice::from_ref(&target))
            .await
        {
            // Being swept: once it is, the manifest is gone and so is the tag's target.
            self.collection().wait_swept(&target).await?;
            if self.manifest_link(digest).await?.is_none() {
                return Err(Error::ManifestNotFound {
                    repo: self.name.to_string(),
                    digest: digest.clone(),
                });
            }
            return Err(conflict());
        }
        let key = layout::tag(&self.name, tag);
        if self
            .backend()
            .compare_and_swap(&key, version.as_ref(), to_json(&record)?)
            .await?
        {
            Ok(record)
        } else {
            Err(conflict())
        }
    }

    /// Removes entries naming `gone` from a tag's history, never its current one (the
    /// garbage collector, after deleting those manifests). Returns how many went.
    pub async fn prune_history(
        &self,
        tag: &Tag,
        gone: &std::collections::HashSet<Digest>,
    ) -> Result<usize> {
        for _ in 0..TAG_RETRIES {
            let Some((mut record, version)) = self.tag_versioned(tag).await? else {
                return Ok(0);
            };
            let before = record.history.len();
            let current = record.history[0].clone();
            record.history.retain(|e| !gone.contains(&e.digest));
            if record.history.first() != Some(&current) {
                record.history.insert(0, current);
            }
            let removed = before - record.history.len();
            if removed == 0 {
                return Ok(0);
            }
            record.generation += 1;
            let key = layout::tag(&self.name, tag);
            if self
                .backend()
                .compare_and_swap(&key, Some(&version), to_json(&record)?)
                .await?
            {
                return Ok(removed);
            }
        }
        Err(Error::Conflict {
            what: format!("tag {}:{tag}", self.name),
        })
    }

    /// Deletes a tag and its history. `Ok(false)` if it did not exist.
    pub async fn delete_tag(&self, tag: &Tag) -> Result<bool> {
        let key = layout::tag(&self.name, tag);
        let existed = self.backend().head(&key).await?.is_some();
        self.backend().delete_swapped(&key).await?;
        Ok(existed)
    }

    /// Deletes `tag` if it points at `digest`, and never a tag moved elsewhere meanwhile:
    /// the delete is conditional on the version of the record read. `Ok(true)` if it
    /// was deleted.
    pub async fn delete_tag_if_current(&self, tag: &Tag, digest: &Digest) -> Result<bool> {
        for _ in 0..TAG_RETRIES {
            let Some((record, version)) = self.tag_versioned(tag).await? else {
                return Ok(false);
            };
            if record.current() != digest {
                return Ok(false);
            }
            if self.delete_tag_at(tag, &version).await? {
                return Ok(true);
            }
            // Changed since it was read (moved, or its history pruned): read it again.
        }
        Err(Error::Conflict {
            what: format!("tag {}:{tag}", self.name),
        })
    }

    /// Deletes a tag's record if it is still the version read. `Ok(false)` if not.
    async fn delete_tag_at(&self, tag: &Tag, version: &crate::backend::Version) -> Result<bool> {
        self.backend()
            .delete_if_version(&layout::tag(&self.name, tag), version)
            .await
    }

    /// Every tag, in lexical order.
    pub async fn tags(&self) -> Result<Vec<Tag>> {
        let mut tags: Vec<Tag> = self
            .backend()
            .list_all(&layout::tags_prefix(&self.name))
            .await?
            .iter()
            .filter_map(|m| layout::parse_tag(&m.location))
            .collect();
        tags.sort();
        Ok(tags)
    }
}

/// Waits before retrying a tag swap that lost a race: exponential, with jitter so that
/// contenders do not collide again in step.
async fn conflict_backoff(attempt: usize) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
    let ms = (1u64 << attempt.min(6)) + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Task(format!("encoding JSON: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(data: &[u8], key: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::corrupt(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, Kind};

    /// A tag moved between the read and the delete of a conditional delete survives;
    /// one still at the version read goes.
    async fn a_tag_moved_after_it_was_read_is_not_deleted(kind: Kind) {
        let t = testkit::open(kind).await;
        let r = t.store.repository(&RepoName::parse("moved/tag").unwrap());
        let latest = Tag::parse("latest").unwrap();
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        r.set_tag(&latest, &a).await.unwrap();
        let (read, version) = r.tag_versioned(&latest).await.unwrap().unwrap();
        assert_eq!(read.current(), &a);
        // Another writer moves the tag after delete_manifest(a) read it.
        r.set_tag(&latest, &b).await.unwrap();
        assert!(!r.delete_tag_at(&latest, &version).await.unwrap());
        assert_eq!(r.tag(&latest).await.unwrap().unwrap().current(), &b);
        assert!(!r.delete_tag_if_current(&latest, &a).await.unwrap());
        assert_eq!(r.tag(&latest).await.unwrap().unwrap().current(), &b);
        // Unchanged since read: deleted.
        let (_, version) = r.tag_versioned(&latest).await.unwrap().unwrap();
        assert!(r.delete_tag_at(&latest, &version).await.unwrap());
        assert!(r.tag(&latest).await.unwrap().is_none());
        assert!(!r.delete_tag_at(&latest, &version).await.unwrap());
        r.set_tag(&latest, &a).await.unwrap();
        assert!(r.delete_tag_if_current(&latest, &a).await.unwrap());
        assert!(r.tag(&latest).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_moved_after_it_was_read_is_not_deleted_memory() {
        a_tag_moved_after_it_was_read_is_not_deleted(Kind::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_moved_after_it_was_read_is_not_deleted_local() {
        a_tag_moved_after_it_was_read_is_not_deleted(Kind::Local).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_moved_after_it_was_read_is_not_deleted_s3() {
        a_tag_moved_after_it_was_read_is_not_deleted(Kind::S3).await;
    }

    /// Referrer records written by older versions lack `artifactType` for images with
    /// an ordinary config (they copied it only for other config types). Reading such a
    /// record fills it in from the manifest's config media type; indexes keep none; a
    /// manifest too large to read whole keeps the record as it is; a record whose
    /// manifest's bytes are gone is skipped like one whose link is gone.
    async fn old_referrer_records_get_the_config_media_type(kind: Kind) {
        use crate::manifest::{MANIFEST_READ_MAX, OCI_INDEX, OCI_MANIFEST};
        let t = testkit::open(kind).await;
        let r = t
            .store
            .repository(&RepoName::parse("legacy/referrers").unwrap());
        let subject = Digest::sha256(b"the subject");
        let sd = format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":11}}"#);
        let image = |config_type: &str, padding: usize| {
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{}","size":2}},"layers":[],"subject":{sd},"annotations":{{"pad":"{}"}}}}"#,
                Digest::sha256(b"{}"),
                "x".repeat(padding)
            ))
        };
        let oci_config = "application/vnd.oci.image.config.v1+json";
        let docker_config = "application/vnd.docker.container.image.v1+json";
        let index = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"subject":{sd}}}"#
        ));
        let huge = image(oci_config, MANIFEST_READ_MAX as usize);
        // (bytes, media type, artifactType listed)
        let cases = [
            (image(oci_config, 0), OCI_MANIFEST, Some(oci_config)),
            (image(docker_config, 0), OCI_MANIFEST, Some(docker_config)),
            (index, OCI_INDEX, None),
            (huge, OCI_MANIFEST, None),
        ];
        let mut expected = Vec::new();
        for (bytes, mt, at) in cases {
            let digest = Digest::of(crate::Algorithm::Sha256, &bytes);
            let old = Descriptor {
                media_type: mt.into(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                artifact_type: None,
                annotations: None,
            };
            r.put_manifest(&digest, mt, bytes, None, &References::default())
                .await
                .unwrap();
            // The record as an older version wrote it.
            r.backend()
                .put(
                    &layout::referrer(&r.name, &subject, &digest),
                    to_json(&old).unwrap(),
                )
                .await
                .unwrap();
            expected.push(Descriptor {
                artifact_type: at.map(str::to_owned),
                ..old
            });
        }
        expected.sort_by(|a, b| a.digest.cmp(&b.digest));
        assert_eq!(r.referrers(&subject).await.unwrap(), expected);
        // Linked, but its bytes gone (swept, or a damaged store): skipped.
        let gone = Digest::sha256(b"never stored");
        let record = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: gone.clone(),
            size: 3,
            artifact_type: None,
            annotations: None,
        };
        let link = ManifestLink {
            media_type: OCI_MANIFEST.into(),
            size: 3,
            subject: Some(subject.clone()),
            created: Utc::now(),
        };
        r.backend()
            .put(
                &layout::referrer(&r.name, &subject, &gone),
                to_json(&record).unwrap(),
            )
            .await
            .unwrap();
        r.backend()
            .put(
                &layout::manifest_link(&r.name, &gone),
                to_json(&link).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.referrers(&subject).await.unwrap(), expected);
    }

    /// A new referrer record carries the `artifactType` the referrers API lists, so a
    /// listing need not open the manifest: filled in from the manifest's bytes when the
    /// caller gives none (or an empty one), kept when it gives one.
    async fn new_referrer_records_carry_the_artifact_type(kind: Kind) {
        use crate::manifest::OCI_MANIFEST;
        let t = testkit::open(kind).await;
        let r = t
            .store
            .repository(&RepoName::parse("new/referrers").unwrap());
        let subject = Digest::sha256(b"the subject");
        let oci_config = "application/vnd.oci.image.config.v1+json";
        for (i, given) in [None, Some(""), Some("application/x-given")]
            .into_iter()
            .enumerate()
        {
            let bytes = Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{oci_config}","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":11}},"annotations":{{"i":"{i}"}}}}"#,
                Digest::sha256(b"{}"),
            ));
            let digest = Digest::of(crate::Algorithm::Sha256, &bytes);
            let descriptor = Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                artifact_type: given.map(str::to_owned),
                annotations: None,
            };
            r.put_manifest(
                &digest,
                OCI_MANIFEST,
                bytes,
                Some((&subject, &descriptor)),
                &References::default(),
            )
            .await
            .unwrap();
            let key = layout::referrer(&r.name, &subject, &digest);
            let stored: Descriptor =
                from_json(&r.backend().get(&key).await.unwrap().unwrap(), key.as_ref()).unwrap();
            let expected = given.filter(|t| !t.is_empty()).unwrap_or(oci_config);
            assert_eq!(stored.artifact_type.as_deref(), Some(expected), "{given:?}");
        }
    }

    crate::on_every_backend!(
        old_referrer_records_get_the_config_media_type,
        new_referrer_records_carry_the_artifact_type,
    );
}
