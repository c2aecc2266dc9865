//! Marking, streamed so that memory grows with what is live, not with the store: one
//! namespace's listing at a time, marked repository by repository (a manifest's children,
//! referrers, config and layers are all in its own repository); the blobs found live are
//! kept as 32-byte keys, sorted once; then recipes shard by shard and packs as the listing
//! streams, each checked against the live keys. Dead objects go straight out to a
//! [`Sink`] (the run's published candidates), never into a set in memory.
//!
//! A re-mark (after the proposal) and the final read of rescues mark again from what
//! changed and what writers rescued, into [`Additions`], which are small.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use stowage_storage::collection::{ObjectRef, ObjectSet, SetWriter};
use stowage_storage::{
    Algorithm, Digest, Error, Listed, PackId, RepoInventory, RepoName, Store, Tag, UploadId,
    manifest,
};

use crate::policy::{Policy, Rules};
use crate::{Counts, Progress, Report};

/// What a manifest names: blobs, and child manifests.
type References = (Vec<Digest>, Vec<Digest>);

/// Manifest reads in flight within one repository (repositories run side by side).
const REPO_READS: usize = 4;
/// Namespace listings in flight.
const NAMESPACES: usize = 2;
/// Recipe shards in flight.
const SHARDS: usize = 2;

/// A digest in 32 bytes: a SHA-256 digest's own bytes, any other the SHA-256 of its text.
pub(crate) type Key = [u8; 32];

pub(crate) fn key(d: &Digest) -> Key {
    if d.algorithm() != Algorithm::Sha256 {
        return key(&Digest::sha256(d.to_string().as_bytes()));
    }
    let mut out = [0u8; 32];
    let hex = d.hex().as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]);
    }
    out
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// Values gathered with repeats and sorted once: their own size each (a 32-byte key, a
/// 16-byte pack id), where a hash set takes about twice that.
#[derive(Debug)]
pub(crate) struct Sorted<T> {
    items: Vec<T>,
}

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted { items: Vec::new() }
    }
}

impl<T: Ord + Copy> Sorted<T> {
    pub(crate) fn push(&mut self, v: T) {
        if self.items.len() == self.items.capacity() {
            // Full: drop repeats before growing (a shared base layer is named by
            // thousands of manifests), then grow by a quarter, not double.
            if self.items.len() >= 4096 {
                self.compact();
            }
            let cap = self.items.capacity().max(1024);
            if self.items.len() + cap / 8 > cap {
                self.items.reserve_exact(cap / 4);
            }
        }
        self.items.push(v);
    }

    fn compact(&mut self) {
        self.items.sort_unstable();
        self.items.dedup();
    }

    /// Sorts and drops repeats; [`Sorted::contains`] needs it.
    pub(crate) fn freeze(&mut self) {
        self.compact();
        self.items.shrink_to_fit();
    }

    /// Whether `v` is in the set (after [`Sorted::freeze`]).
    pub(crate) fn contains(&self, v: &T) -> bool {
        self.items.binary_search(v).is_ok()
    }
}

/// What marking needs besides the store.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a Store,
    pub(crate) policy: &'a Policy,
    /// The run's time, by the backend's clock.
    pub(crate) now: DateTime<Utc>,
    pub(crate) grace: Duration,
    pub(crate) upload_expiry: Duration,
    pub(crate) concurrency: usize,
    pub(crate) progress: &'a dyn Progress,
}

impl Ctx<'_> {
    /// Repositories marked side by side: with [`REPO_READS`] reads each, about
    /// `concurrency` reads in flight (on local disk each is a thread).
    fn repos_in_flight(&self) -> usize {
        (self.concurrency / REPO_READS).max(1)
    }

    /// Recipe reads in flight per shard, [`SHARDS`] shards at once.
    fn reads_per_shard(&self) -> usize {
        (self.concurrency / SHARDS).max(1)
    }

    fn young(&self, t: &DateTime<Utc>, age: Duration) -> bool {
        young(t, self.now, age)
    }

    fn old(&self, t: &DateTime<Utc>, age: Duration) -> bool {
        chrono::Duration::from_std(age).is_ok_and(|a| *t <= self.now - a)
    }
}

/// Whether `t` is less than `age` before `now`.
fn young(t: &DateTime<Utc>, now: DateTime<Utc>, age: Duration) -> bool {
    chrono::Duration::from_std(age).map_or(true, |a| *t > now - a)
}

/// Where dead objects go: counted by kind, and written to the run's set unless this is
/// a dry run.
pub(crate) struct Sink {
    writer: Option<SetWriter>,
    pub(crate) manifests: Counts,
    pub(crate) blob_links: Counts,
    pub(crate) blobs: Counts,
    pub(crate) packs: Counts,
    pub(crate) uploads: Counts,
}

impl Sink {
    pub(crate) fn new(writer: Option<SetWriter>) -> Self {
        Sink {
            writer,
            manifests: Counts::default(),
            blob_links: Counts::default(),
            blobs: Counts::default(),
            packs: Counts::default(),
            uploads: Counts::default(),
        }
    }

    /// Adds a dead object; `size` counts for recipes and packs; `subject` is a dead
    /// referrer's (its record goes with it).
    pub(crate) async fn push(
        &mut self,
        r: &ObjectRef,
        size: u64,
        subject: Option<&Digest>,
    ) -> Result<(), Error> {
        let c = match r {
            ObjectRef::Manifest(..) => &mut self.manifests,
            ObjectRef::BlobLink(..) => &mut self.blob_links,
            ObjectRef::Recipe(_) => &mut self.blobs,
            ObjectRef::Pack(_) => &mut self.packs,
            ObjectRef::Upload(_) => &mut self.uploads,
        };
        c.deleted += 1;
        c.deleted_bytes += size;
        if let Some(w) = &mut self.writer {
            let note = match subject {
                Some(s) => format!("{size} {s}"),
                None => size.to_string(),
            };
            w.push(r, &note).await?;
        }
        Ok(())
    }

    /// Objects pushed.
    pub(crate) fn count(&self) -> u64 {
        [
            &self.manifests,
            &self.blob_links,
            &self.blobs,
            &self.packs,
            &self.uploads,
        ]
        .iter()
        .map(|c| c.deleted)
        .sum()
    }

    /// Finishes the set; returns its parts (0 for a dry run).
    pub(crate) async fn finish(self) -> Result<u32, Error> {
        match self.writer {
            Some(w) => w.finish().await,
            None => Ok(0),
        }
    }

    /// Copies the counts (deleted = dead) into `report`.
    pub(crate) fn fill(&self, report: &mut Report) {
        for (from, to) in [
            (&self.manifests, &mut report.manifests),
            (&self.blob_links, &mut report.blob_links),
            (&self.blobs, &mut report.blobs),
            (&self.packs, &mut report.packs),
            (&self.uploads, &mut report.uploads),
        ] {
            to.deleted = from.deleted;
            to.deleted_bytes = from.deleted_bytes;
        }
    }
}

/// The size and subject a sink noted for an object.
pub(crate) fn parse_note(note: &str) -> (u64, Option<Digest>) {
    let mut parts = note.split(' ');
    let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let subject = parts.next().and_then(|s| Digest::parse(s).ok());
    (size, subject)
}

/// One repository's listing, indexed.
struct RepoIndex {
    tags: Vec<Listed<Tag>>,
    manifests: HashMap<Digest, DateTime<Utc>>,
    links: HashMap<Digest, DateTime<Utc>>,
    /// Subject -> referrers.
    referrers: HashMap<Digest, Vec<Digest>>,
    /// Referrer -> subject.
    subject_of: HashMap<Digest, Digest>,
}

impl RepoIndex {
    fn new(inv: RepoInventory) -> Self {
        let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let mut subject_of = HashMap::new();
        for r in inv.referrers {
            let (s, d) = r.item;
            referrers.entry(s.clone()).or_default().push(d.clone());
            subject_of.insert(d, s);
        }
        RepoIndex {
            tags: inv.tags,
            manifests: inv
                .manifests
                .into_iter()
                .map(|l| (l.item, l.modified))
                .collect(),
            links: inv
                .blob_links
                .into_iter()
                .map(|l| (l.item, l.modified))
                .collect(),
            referrers,
            subject_of,
        }
    }
}

/// What marking one repository found live.
#[derive(Default)]
struct RepoMark {
    manifests: HashSet<Digest>,
    links: HashSet<Digest>,
    /// Blobs the live manifests name, and the manifests' own digests (their recipes).
    blobs: Vec<Digest>,
}

/// Marks one repository from its root manifests and links: index children and
/// referrers are followed within the repository; configs and layers keep their links.
async fn mark_repo(
    ctx: &Ctx<'_>,
    idx: &RepoIndex,
    manifest_roots: Vec<Digest>,
    link_roots: Vec<Digest>,
) -> Result<RepoMark, Error> {
    let mut out = RepoMark::default();
    for l in link_roots {
        if out.links.insert(l.clone()) {
            out.blobs.push(l);
        }
    }
    let mut wave = manifest_roots;
    while !wave.is_empty() {
        let fresh: Vec<Digest> = wave
            .drain(..)
            .filter(|d| out.manifests.insert(d.clone()))
            .collect();
        let read: Vec<(Digest, Option<References>)> = futures::stream::iter(fresh)
            .map(|d| async move {
                let refs = match ctx.store.blob_bytes(&d).await {
                    Ok(bytes) => manifest::references(&bytes).ok(),
                    // Its bytes are gone (a sparse or damaged store): nothing to follow.
                    Err(Error::BlobNotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                Ok((d, refs))
            })
            .buffer_unordered(REPO_READS)
            .try_collect()
            .await?;
        ctx.progress.advance(read.len() as u64);
        for (d, refs) in read {
            if let Some((blobs, children)) = refs {
                for b in blobs {
                    if idx.links.contains_key(&b) {
                        out.links.insert(b.clone());
                    }
                    out.blobs.push(b);
                }
                wave.extend(children);
            }
            wave.extend(idx.referrers.get(&d).into_iter().flatten().cloned());
            out.blobs.push(d);
        }
    }
    Ok(out)
}

/// The manifests a tag keeps: its kept revisions.
async fn tag_revisions(
    ctx: &Ctx<'_>,
    repo: &RepoName,
    tag: &Tag,
    rules: Rules,
) -> Result<Vec<Digest>, Error> {
    let Some(record) = ctx.store.repository(repo).tag(tag).await? else {
        return Ok(Vec::new());
    };
    Ok(record
        .history
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            *i < rules.keep_tag_revisions.max(1)
                || rules
                    .keep_younger_than
                    .is_some_and(|k| ctx.young(&e.created, k))
        })
        .map(|(_, e)| e.digest.clone())
        .collect())
}

/// The manifests `tags` keep, their records read side by side.
async fn kept_revisions(
    ctx: &Ctx<'_>,
    repo: &RepoName,
    tags: Vec<Tag>,
    rules: Rules,
) -> Result<Vec<Digest>, Error> {
    let kept: Vec<Vec<Digest>> = futures::stream::iter(tags)
        .map(|t| async move { tag_revisions(ctx, repo, &t, rules).await })
        .buffer_unordered(REPO_READS)
        .try_collect()
        .await?;
    Ok(kept.into_iter().flatten().collect())
}

/// Counts of what the first mark examined.
#[derive(Debug, Default)]
pub(crate) struct Examined {
    pub(crate) repositories: u64,
    pub(crate) tags: u64,
    pub(crate) manifests: u64,
    pub(crate) blob_links: u64,
    pub(crate) blobs: u64,
    pub(crate) packs: u64,
    pub(crate) uploads: u64,
}

/// The first mark: every repository from the policy's roots, then recipes, upload
/// sessions and packs; every dead object older than the grace period goes to `sink`.
pub(crate) async fn first_mark(ctx: &Ctx<'_>, sink: &mut Sink) -> Result<Examined, Error> {
    let mut ex = Examined::default();
    let names = ctx.store.all_repositories().await?;
    let nss = stowage_storage::namespaces(&names);
    ctx.progress.phase("mark repositories", None);
    let names = &names;
    let mut live_blobs: Sorted<Key> = Sorted::default();
    let mut listings = futures::stream::iter(nss)
        .map(|ns| async move { ctx.store.namespace_inventory(&ns, names).await })
        .buffer_unordered(NAMESPACES);
    while let Some(inventories) = listings.try_next().await? {
        let mut marked = futures::stream::iter(inventories)
            .map(|(name, inv)| async move {
                let idx = RepoIndex::new(inv);
                let rules = ctx.policy.rules_for(&name);
                let tags: Vec<Tag> = idx.tags.iter().map(|t| t.item.clone()).collect();
                let mut roots = kept_revisions(ctx, &name, tags, rules).await?;
                for (d, modified) in &idx.manifests {
                    let by_rule = !rules.delete_untagged
                        || rules
                            .keep_younger_than
                            .is_some_and(|k| ctx.young(modified, k));
                    if by_rule || ctx.young(modified, ctx.grace) {
                        roots.push(d.clone());
                    }
                }
                let link_roots: Vec<Digest> = idx
                    .links
                    .iter()
                    .filter(|(_, m)| ctx.young(m, ctx.grace))
                    .map(|(d, _)| d.clone())
                    .collect();
                let live = mark_repo(ctx, &idx, roots, link_roots).await?;
                let mut dead: Vec<(ObjectRef, Option<Digest>)> = Vec::new();
                for (d, modified) in &idx.manifests {
                    if !live.manifests.contains(d) && ctx.old(modified, ctx.grace) {
                        dead.push((
                            ObjectRef::Manifest(name.clone(), d.clone()),
                            idx.subject_of.get(d).cloned(),
                        ));
                    }
                }
                for (d, modified) in &idx.links {
                    if !live.links.contains(d) && ctx.old(modified, ctx.grace) {
                        dead.push((ObjectRef::BlobLink(name.clone(), d.clone()), None));
                    }
                }
                let counts = (
                    idx.tags.len() as u64,
                    idx.manifests.len() as u64,
                    idx.links.len() as u64,
                );
                Ok::<_, Error>((live.blobs, dead, counts))
            })
            .buffer_unordered(ctx.repos_in_flight());
        while let Some((blobs, dead, (tags, manifests, links))) = marked.try_next().await? {
            ex.repositories += 1;
            ex.tags += tags;
            ex.manifests += manifests;
            ex.blob_links += links;
            for b in &blobs {
                live_blobs.push(key(b));
            }
            for (r, subject) in &dead {
                sink.push(r, 0, subject.as_ref()).await?;
            }
        }
    }
    live_blobs.freeze();

    // Recipes, shard by shard: a live one (named, or young) keeps its packs.
    let mut live_packs: Sorted<PackId> = Sorted::default();
    let shards = ctx.store.recipe_shards().await?;
    ctx.progress.phase("mark blobs", Some(shards.len() as u64));
    let live_blobs = &live_blobs;
    let mut marked = futures::stream::iter(shards)
        .map(|shard| async move {
            let listed = ctx.store.list_recipe_shard(&shard).await?;
            let examined = listed.len() as u64;
            let mut live = Vec::new();
            let mut dead = Vec::new();
            for l in listed {
                if live_blobs.contains(&key(&l.item)) || ctx.young(&l.modified, ctx.grace) {
                    live.push(l.item);
                } else if ctx.old(&l.modified, ctx.grace) {
                    dead.push((l.item, l.size));
                }
            }
            let packs: Vec<Vec<PackId>> = futures::stream::iter(live)
                .map(|d| async move {
                    Ok::<_, Error>(ctx.store.recipe_packs(&d).await?.unwrap_or_default())
                })
                .buffer_unordered(ctx.reads_per_shard())
                .try_collect()
                .await?;
            Ok::<_, Error>((examined, packs, dead))
        })
        .buffer_unordered(SHARDS);
    while let Some((examined, packs, dead)) = marked.try_next().await? {
        ex.blobs += examined;
        for p in packs.into_iter().flatten() {
            live_packs.push(p);
        }
        for (d, size) in dead {
            sink.push(&ObjectRef::Recipe(d), size, None).await?;
        }
        ctx.progress.advance(1);
    }
    drop(marked);

    // Upload sessions: open ones keep the packs their segments point into.
    ctx.progress.phase("mark uploads", None);
    for s in ctx.store.list_sessions().await? {
        ex.uploads += 1;
        let open = s.has_state && ctx.young(&s.modified, ctx.upload_expiry);
        if open {
            for p in ctx.store.session_packs(&s.id).await?.unwrap_or_default() {
                live_packs.push(p);
            }
            continue;
        }
        // Expired, or the leftovers of a finished or cancelled session.
        let age = if s.has_state {
            ctx.upload_expiry
        } else {
            ctx.grace
        };
        if ctx.old(&s.modified, age) {
            sink.push(&ObjectRef::Upload(s.id.clone()), 0, None).await?;
        }
    }
    live_packs.freeze();

    // Packs, as the listing streams.
    ctx.progress.phase("mark packs", None);
    let mut listing = ctx.store.pack_listing();
    while let Some(l) = listing.try_next().await? {
        ex.packs += 1;
        if !live_packs.contains(&l.item.id) && ctx.old(&l.modified, ctx.grace) {
            sink.push(&ObjectRef::Pack(l.item.id), l.item.size, None)
                .await?;
        }
    }
    Ok(ex)
}

/// Objects a re-mark or a rescue found live after the first mark (few: what changed
/// while the run went on).
#[derive(Debug, Default)]
pub(crate) struct Additions {
    manifests: HashSet<(RepoName, Digest)>,
    links: HashSet<(RepoName, Digest)>,
    recipes: HashSet<Digest>,
    packs: HashSet<PackId>,
    uploads: HashSet<UploadId>,
}

impl Additions {
    pub(crate) fn contains(&self, r: &ObjectRef) -> bool {
        match r {
            ObjectRef::Manifest(repo, d) => self.manifests.contains(&(repo.clone(), d.clone())),
            ObjectRef::BlobLink(repo, d) => self.links.contains(&(repo.clone(), d.clone())),
            ObjectRef::Recipe(d) => self.recipes.contains(d),
            ObjectRef::Pack(p) => self.packs.contains(p),
            ObjectRef::Upload(u) => self.uploads.contains(u),
        }
    }
}

/// Marks from everything written after `since` (all of it: anything new may reuse a
/// candidate) and from `rescued`, into `add`. With `since` `None`, only from
/// `rescued`, listing only the repositories it names.
pub(crate) async fn remark(
    ctx: &Ctx<'_>,
    since: Option<DateTime<Utc>>,
    rescued: &ObjectSet,
    add: &mut Additions,
) -> Result<(), Error> {
    // Rescues by repository.
    let mut by_repo: HashMap<RepoName, (Vec<Digest>, Vec<Digest>)> = HashMap::new();
    let mut recipe_roots: Vec<Digest> = Vec::new();
    let mut upload_roots: Vec<UploadId> = Vec::new();
    for r in rescued.iter() {
        match r {
            ObjectRef::Manifest(repo, d) => {
                by_repo.entry(repo.clone()).or_default().0.push(d.clone());
                recipe_roots.push(d.clone());
            }
            ObjectRef::BlobLink(repo, d) => {
                by_repo.entry(repo.clone()).or_default().1.push(d.clone());
                recipe_roots.push(d.clone());
            }
            ObjectRef::Recipe(d) => recipe_roots.push(d.clone()),
            ObjectRef::Pack(p) => {
                add.packs.insert(*p);
            }
            ObjectRef::Upload(u) => upload_roots.push(u.clone()),
        }
    }
    let names: Vec<RepoName> = match since {
        Some(_) => ctx.store.all_repositories().await?,
        None => by_repo.keys().cloned().collect(),
    };
    let nss = stowage_storage::namespaces(&names);
    ctx.progress.phase("re-mark repositories", None);
    let names = &names;
    let by_repo = &by_repo;
    let mut listings = futures::stream::iter(nss)
        .map(|ns| async move { ctx.store.namespace_inventory(&ns, names).await })
        .buffer_unordered(NAMESPACES);
    while let Some(inventories) = listings.try_next().await? {
        let wanted: Vec<(RepoName, RepoInventory)> = inventories
            .into_iter()
            .filter(|(name, _)| since.is_some() || by_repo.contains_key(name))
            .collect();
        let mut marked = futures::stream::iter(wanted)
            .map(|(name, inv)| async move {
                let idx = RepoIndex::new(inv);
                let rules = ctx.policy.rules_for(&name);
                let (mut roots, mut link_roots) = by_repo.get(&name).cloned().unwrap_or_default();
                if let Some(since) = since {
                    let changed: Vec<Tag> = idx
                        .tags
                        .iter()
                        .filter(|t| t.modified > since)
                        .map(|t| t.item.clone())
                        .collect();
                    roots.extend(kept_revisions(ctx, &name, changed, rules).await?);
                    roots.extend(
                        idx.manifests
                            .iter()
                            .filter(|(_, m)| **m > since)
                            .map(|(d, _)| d.clone()),
                    );
                    link_roots.extend(
                        idx.links
                            .iter()
                            .filter(|(_, m)| **m > since)
                            .map(|(d, _)| d.clone()),
                    );
                }
                if roots.is_empty() && link_roots.is_empty() {
                    return Ok::<_, Error>((name, RepoMark::default()));
                }
                Ok((name, mark_repo(ctx, &idx, roots, link_roots).await?))
            })
            .buffer_unordered(ctx.repos_in_flight());
        while let Some((name, live)) = marked.try_next().await? {
            for d in live.manifests {
                add.manifests.insert((name.clone(), d));
            }
            for d in live.links {
                add.links.insert((name.clone(), d));
            }
            recipe_roots.extend(live.blobs);
        }
    }

    // Recipes: the ones named, and (re-mark) every one committed since.
    if let Some(since) = since {
        ctx.progress.phase("re-mark blobs", None);
        let shards = ctx.store.recipe_shards().await?;
        let recent: Vec<Vec<Digest>> = futures::stream::iter(shards)
            .map(|shard| async move {
                Ok::<_, Error>(
                    ctx.store
                        .list_recipe_shard(&shard)
                        .await?
                        .into_iter()
                        .filter(|l| l.modified > since)
                        .map(|l| l.item)
                        .collect(),
                )
            })
            .buffer_unordered(SHARDS)
            .try_collect()
            .await?;
        recipe_roots.extend(recent.into_iter().flatten());
    }
    let fresh: Vec<Digest> = recipe_roots
        .into_iter()
        .filter(|d| add.recipes.insert(d.clone()))
        .collect();
    let packs: Vec<Vec<PackId>> =
        futures::stream::iter(fresh)
            .map(|d| async move {
                Ok::<_, Error>(ctx.store.recipe_packs(&d).await?.unwrap_or_default())
            })
            .buffer_unordered(ctx.concurrency)
            .try_collect()
            .await?;
    add.packs.extend(packs.into_iter().flatten());

    // Sessions: rescued ones, and (re-mark) every open one appended to since.
    if let Some(since) = since {
        for s in ctx.store.list_sessions().await? {
            if s.has_state && s.modified > since {
                upload_roots.push(s.id);
            }
        }
    }
    for u in upload_roots {
        if add.uploads.insert(u.clone()) {
            add.packs
                .extend(ctx.store.session_packs(&u).await?.unwrap_or_default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_digest_bytes_and_tell_algorithms_apart() {
        let d = Digest::sha256(b"layer");
        let k = key(&d);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, d.hex());
        let long = Digest::parse(&format!("sha512:{}", "ab".repeat(64))).unwrap();
        assert_ne!(
            key(&long),
            key(&Digest::parse(&format!("sha512:{}", "cd".repeat(64))).unwrap())
        );
    }

    #[test]
    fn sorted_sets_keep_each_value_once_across_compactions() {
        let mut s: Sorted<u32> = Sorted::default();
        for round in 0..5 {
            for v in 0..10_000u32 {
                s.push(v * 2 + round % 2);
            }
        }
        s.freeze();
        assert_eq!(s.items.len(), 20_000);
        assert!(s.contains(&0) && s.contains(&19_999) && !s.contains(&20_000));
    }
}
