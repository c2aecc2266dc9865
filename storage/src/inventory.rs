//! What the garbage collector and `fsck` need to see the whole store: listings of every
//! kind of object with the backend's modification time, sharded so that listings run
//! side by side, and the few reads marking needs (a recipe's packs, a session's packs).
//! Times are the backend's own clock: the collector compares them with a time it reads
//! from the backend too, never with a host clock.

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use crate::collection::ObjectRef;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout;
use crate::names::{RepoName, Tag};
use crate::pack::PackId;
use crate::recipe::Recipe;
use crate::store::Store;
use crate::upload::{self, SessionState, UploadId};

/// An object seen in a listing: what it is, and when the backend last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    /// The object.
    pub item: T,
    /// Its modification time, by the backend's clock.
    pub modified: DateTime<Utc>,
    /// Its size in bytes.
    pub size: u64,
}

/// Everything under one repository, from one listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoInventory {
    /// Tags.
    pub tags: Vec<Listed<Tag>>,
    /// Manifest links.
    pub manifests: Vec<Listed<Digest>>,
    /// Blob links.
    pub blob_links: Vec<Listed<Digest>>,
    /// Referrer records: (subject, referrer).
    pub referrers: Vec<Listed<(Digest, Digest)>>,
}

/// One shard of the recipe listing.
#[derive(Debug, Clone)]
pub struct RecipeShard(Path);

/// The namespaces (first name components) of `names`, sorted, once each.
pub fn namespaces(names: &[RepoName]) -> Vec<String> {
    let mut out: Vec<String> = names.iter().map(|n| namespace_of(n).to_owned()).collect();
    out.sort();
    out.dedup();
    out
}

fn namespace_of(name: &RepoName) -> &str {
    name.as_str().split('/').next().unwrap_or_default()
}

/// A pack in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Its id.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
}

/// Deletions not yet durable on local disk: the directories to sync.
#[derive(Debug, Default)]
pub struct PendingDeletes(std::collections::HashSet<std::path::PathBuf>);

/// An upload session in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id.
    pub id: UploadId,
    /// Last write to its state or any segment.
    pub modified: DateTime<Utc>,
    /// Whether its state object exists (a session whose state is gone is leftover
    /// segments of a finished or cancelled one).
    pub has_state: bool,
}

impl Store {
    /// The backend's clock now: writes `gc/clock` and reads its modification time.
    pub async fn backend_now(&self) -> Result<DateTime<Utc>> {
        let key = layout::clock();
        let backend = &self.inner.backend;
        backend
            .put(&key, bytes::Bytes::from_static(b"clock\n"))
            .await?;
        let meta = backend
            .head(&key)
            .await?
            .ok_or_else(|| Error::corrupt(key.as_ref(), "vanished after being written"))?;
        Ok(meta.last_modified)
    }

    /// Every repository with a catalog entry.
    pub async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        self.repositories(None, None, None).await
    }

    /// The objects of every repository in namespace `ns` (the first component of a
    /// name), from one listing; the repositories of `names` in it are included even if
    /// empty, and ones found that `names` lacks too.
    pub async fn namespace_inventory(
        &self,
        ns: &str,
        names: &[RepoName],
    ) -> Result<std::collections::HashMap<RepoName, RepoInventory>> {
        let listed = self
            .inner
            .backend
            .list_all(&layout::repo_namespace_prefix(ns))
            .await?;
        let mut out: std::collections::HashMap<RepoName, RepoInventory> = names
            .iter()
            .filter(|n| namespace_of(n) == ns)
            .map(|n| (n.clone(), RepoInventory::default()))
            .collect();
        for m in listed {
            let Some((repo, object)) = layout::parse_repo_object(&m.location) else {
                continue;
            };
            let inv = out.entry(repo).or_default();
            let (modified, size) = (m.last_modified, m.size);
            match object {
                layout::RepoObject::Tag(t) => inv.tags.push(Listed {
                    item: t,
                    modified,
                    size,
                }),
                layout::RepoObject::ManifestLink(d) => inv.manifests.push(Listed {
                    item: d,
                    modified,
                    size,
                }),
                layout::RepoObject::BlobLink(d) => inv.blob_links.push(Listed {
                    item: d,
                    modified,
                    size,
                }),
                layout::RepoObject::Referrer { subject, referrer } => inv.referrers.push(Listed {
                    item: (subject, referrer),
                    modified,
                    size,
                }),
            }
        }
        Ok(out)
    }

    /// The shards recipes are listed in: one per `blobs/<alg>/<xx>` directory that
    /// exists (found with two delimiter listings, so an unused algorithm or a small store
    /// costs few requests; some S3 servers' listing cost grows with the bucket).
    pub async fn recipe_shards(&self) -> Result<Vec<RecipeShard>> {
        let backend = &self.inner.backend;
        let mut shards = Vec::new();
        for alg in backend.list_dir(&layout::blobs_prefix()).await?.1 {
            shards.extend(backend.list_dir(&alg).await?.1.into_iter().map(RecipeShard));
        }
        Ok(shards)
    }

    /// The recipes of one shard.
    pub async fn list_recipe_shard(&self, shard: &RecipeShard) -> Result<Vec<Listed<Digest>>> {
        self.inner
            .backend
            .list(&shard.0)
            .try_filter_map(|m| async move {
                Ok(layout::parse_recipe(&m.location).map(|d| Listed {
                    item: d,
                    modified: m.last_modified,
                    size: m.size,
                }))
            })
            .try_collect()
            .await
    }

    /// Every pack, as the listing streams in (nothing held).
    pub fn pack_listing(&self) -> futures::stream::BoxStream<'static, Result<Listed<PackInfo>>> {
        self.inner
            .backend
            .list(&layout::packs_prefix())
            .try_filter_map(|m| async move {
                Ok(layout::parse_pack(&m.location).map(|id| Listed {
                    item: PackInfo { id, size: m.size },
                    modified: m.last_modified,
                    size: m.size,
                }))
            })
            .boxed()
    }

    /// Every upload session, with the time of its last write.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>> {
        let mut by_id: std::collections::HashMap<UploadId, SessionInfo> = Default::default();
        let listed = self
            .inner
            .backend
            .list_all(&layout::uploads_prefix())
            .await?;
        for m in listed {
            let mut parts = m.location.parts().skip(1);
            let (Some(id), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(id) = id.as_ref().parse::<UploadId>() else {
                continue;
            };
            let e = by_id.entry(id.clone()).or_insert(SessionInfo {
                id,
                modified: m.last_modified,
                has_state: false,
            });
            e.modified = e.modified.max(m.last_modified);
            e.has_state |= name.as_ref() == "state";
        }
        Ok(by_id.into_values().collect())
    }

    /// The packs a session's segments point into; `None` if it has no state any more.
    pub async fn session_packs(&self, id: &UploadId) -> Result<Option<Vec<PackId>>> {
        let key = layout::upload_state(id);
        let Some(data) = self.inner.backend.get(&key).await? else {
            return Ok(None);
        };
        let state = SessionState::decode(&data, key.as_ref())?;
        let mut packs = Vec::new();
        for (i, nonce) in state.segments.iter().enumerate() {
            let key = layout::upload_segment(id, i as u32, nonce);
            // A segment may vanish with its session between our two reads.
            let Some(data) = self.inner.backend.get(&key).await? else {
                continue;
            };
            packs.extend(crate::recipe::packs_of(&upload::decode_segment(
                &data,
                key.as_ref(),
            )?));
        }
        packs.sort();
        packs.dedup();
        Ok(Some(packs))
    }

    /// The packs a blob's chunks are in (empty for a small blob stored inline); `None`
    /// if there is no such recipe. Usually one short read.
    pub async fn recipe_packs(&self, digest: &Digest) -> Result<Option<Vec<PackId>>> {
        let key = layout::recipe(digest);
        let backend = &self.inner.backend;
        let head = match backend.get_opts_prefix(&key, 4096).await? {
            Some(h) => h,
            None => return Ok(None),
        };
        if let Some(packs) = Recipe::decode_packs(&head.0, key.as_ref())? {
            return Ok(Some(packs));
        }
        let Some(data) = backend.get(&key).await? else {
            return Ok(None);
        };
        Ok(Some(Recipe::decode(&data, key.as_ref())?.packs()))
    }

    /// Deletes objects the collector found dead, in as few requests as the backend
    /// allows (upload sessions one by one: their segments must be listed). A manifest
    /// takes its referrer record (`subject`) with it. On local disk
    /// they are durable once `pending` is passed to [`Store::sync_deletes`].
    pub async fn delete_collected_many(
        &self,
        objects: &[(ObjectRef, Option<Digest>)],
        pending: &mut PendingDeletes,
    ) -> Result<()> {
        let mut keys = Vec::new();
        for (r, subject) in objects {
            match r {
                ObjectRef::Manifest(repo, d) => {
                    keys.push(layout::manifest_link(repo, d));
                    if let Some(s) = subject {
                        keys.push(layout::referrer(repo, s, d));
                    }
                }
                ObjectRef::BlobLink(repo, d) => keys.push(layout::blob_link(repo, d)),
                ObjectRef::Recipe(d) => keys.push(layout::recipe(d)),
                ObjectRef::Pack(p) => keys.push(layout::pack(p)),
                // The state first, then the segments, as a cancelled session goes.
                ObjectRef::Upload(id) => self.remove_session(id).await?,
            }
        }
        self.inner.backend.delete_many(keys, &mut pending.0).await
    }

    /// Makes the deletions noted in `pending` durable (a collector does it before
    /// deleting what the deleted objects named).
    pub async fn sync_deletes(&self, pending: PendingDeletes) -> Result<()> {
        crate::backend::sync_dirs(pending.0).await
    }
}
