//! Marking: a snapshot of the store from listings, the roots a policy names in it, and
//! the closure from roots to everything they keep (children of indexes, referrers of
//! live subjects, configs and layers, recipes, packs).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use stowage_storage::collection::{ObjectRef, ObjectSet};
use stowage_storage::{Digest, Error, Listed, PackId, RepoName, SessionInfo, Store, Tag, manifest};

use crate::Progress;
use crate::policy::{Policy, Rules};

/// What a manifest names: blobs, and child manifests.
type References = (Vec<Digest>, Vec<Digest>);

/// One repository as listed.
#[derive(Debug)]
pub(crate) struct RepoSnap {
    pub(crate) name: RepoName,
    pub(crate) rules: Rules,
    pub(crate) tags: Vec<Listed<Tag>>,
    pub(crate) manifests: HashMap<Digest, DateTime<Utc>>,
    pub(crate) links: HashMap<Digest, DateTime<Utc>>,
    /// Subject -> referrers.
    pub(crate) referrers: HashMap<Digest, Vec<Digest>>,
    /// Referrer -> subject, to delete a dead referrer's record.
    pub(crate) subject_of: HashMap<Digest, Digest>,
}

/// The store as listed at one time.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) repos: HashMap<RepoName, RepoSnap>,
    pub(crate) recipes: HashMap<Digest, (DateTime<Utc>, u64)>,
    pub(crate) packs: HashMap<PackId, (DateTime<Utc>, u64)>,
    pub(crate) sessions: Vec<SessionInfo>,
}

impl Snapshot {
    /// Lists everything; packs only if `with_packs` (a re-mark does not need them).
    pub(crate) async fn take(
        store: &Store,
        policy: &Policy,
        with_packs: bool,
        progress: &dyn Progress,
    ) -> Result<Snapshot, Error> {
        let names = store.all_repositories().await?;
        progress.phase("list repositories", Some(names.len() as u64));
        let inventories = store.repository_inventories(&names).await?;
        progress.advance(names.len() as u64);
        let repos: Vec<RepoSnap> = inventories
            .into_iter()
            .map(|(name, inv)| {
                let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
                let mut subject_of = HashMap::new();
                for r in inv.referrers {
                    let (s, d) = r.item;
                    referrers.entry(s.clone()).or_default().push(d.clone());
                    subject_of.insert(d, s);
                }
                RepoSnap {
                    rules: policy.rules_for(&name),
                    name,
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
            })
            .collect();
        progress.phase("list blobs", None);
        let recipes = store
            .list_recipes()
            .await?
            .into_iter()
            .map(|l| (l.item, (l.modified, l.size)))
            .collect();
        let packs = if with_packs {
            progress.phase("list packs", None);
            store
                .list_packs()
                .await?
                .into_iter()
                .map(|l| (l.item.id, (l.modified, l.size)))
                .collect()
        } else {
            HashMap::new()
        };
        progress.phase("list uploads", None);
        let sessions = store.list_sessions().await?;
        Ok(Snapshot {
            repos: repos.into_iter().map(|r| (r.name.clone(), r)).collect(),
            recipes,
            packs,
            sessions,
        })
    }

    pub(crate) fn manifest_count(&self) -> usize {
        self.repos.values().map(|r| r.manifests.len()).sum()
    }

    pub(crate) fn link_count(&self) -> usize {
        self.repos.values().map(|r| r.links.len()).sum()
    }

    pub(crate) fn tag_count(&self) -> usize {
        self.repos.values().map(|r| r.tags.len()).sum()
    }
}

/// Everything found live so far.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) set: HashSet<ObjectRef>,
}

impl Live {
    pub(crate) fn contains(&self, r: &ObjectRef) -> bool {
        self.set.contains(r)
    }
}

/// Roots the policy names: kept tag revisions, manifests kept by rule or age, and every
/// object younger than the grace period. With `changed_since`, only objects written
/// after it, all of them (a re-mark: anything new may reuse a candidate).
pub(crate) async fn roots(
    store: &Store,
    snap: &Snapshot,
    now: DateTime<Utc>,
    grace: Duration,
    upload_expiry: Duration,
    changed_since: Option<DateTime<Utc>>,
    concurrency: usize,
) -> Result<Vec<ObjectRef>, Error> {
    let young = |t: &DateTime<Utc>, age: Duration| young(t, now, age);
    let fresh = |t: &DateTime<Utc>| match changed_since {
        Some(since) => *t > since,
        None => young(t, grace),
    };
    let mut roots = Vec::new();
    let mut tags: Vec<(RepoName, Tag, Rules)> = Vec::new();
    for repo in snap.repos.values() {
        let rules = repo.rules;
        for t in &repo.tags {
            if changed_since.is_none_or(|s| t.modified > s) {
                tags.push((repo.name.clone(), t.item.clone(), rules));
            }
        }
        for (d, modified) in &repo.manifests {
            let by_rule = changed_since.is_none()
                && (!rules.delete_untagged
                    || rules.keep_younger_than.is_some_and(|k| young(modified, k)));
            if by_rule || fresh(modified) {
                roots.push(ObjectRef::Manifest(repo.name.clone(), d.clone()));
            }
        }
        for (d, modified) in &repo.links {
            if fresh(modified) {
                roots.push(ObjectRef::BlobLink(repo.name.clone(), d.clone()));
            }
        }
    }
    for (d, (modified, _)) in &snap.recipes {
        if fresh(modified) {
            roots.push(ObjectRef::Recipe(d.clone()));
        }
    }
    for (p, (modified, _)) in &snap.packs {
        if fresh(modified) {
            roots.push(ObjectRef::Pack(*p));
        }
    }
    for s in &snap.sessions {
        let open = match changed_since {
            Some(since) => s.modified > since,
            None => young(&s.modified, upload_expiry),
        };
        if s.has_state && open {
            roots.push(ObjectRef::Upload(s.id.clone()));
        }
    }
    // Tag histories: read each tag record.
    let kept: Vec<Vec<ObjectRef>> = futures::stream::iter(tags)
        .map(|(repo, tag, rules)| async move {
            let Some(record) = store.repository(&repo).tag(&tag).await? else {
                return Ok::<_, Error>(Vec::new());
            };
            Ok(record
                .history
                .iter()
                .enumerate()
                .filter(|(i, e)| {
                    *i < rules.keep_tag_revisions.max(1)
                        || rules
                            .keep_younger_than
                            .is_some_and(|k| self::young(&e.created, now, k))
                })
                .map(|(_, e)| ObjectRef::Manifest(repo.clone(), e.digest.clone()))
                .collect())
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    roots.extend(kept.into_iter().flatten());
    Ok(roots)
}

/// Whether `t` is less than `age` before `now`.
fn young(t: &DateTime<Utc>, now: DateTime<Utc>, age: Duration) -> bool {
    chrono::Duration::from_std(age).map_or(true, |a| *t > now - a)
}

/// Marks `roots` and everything they keep. Objects already live are not visited again,
/// so marking more roots later (a re-mark, rescues) costs only what is new.
pub(crate) async fn mark(
    store: &Store,
    snap: &Snapshot,
    live: &mut Live,
    roots: Vec<ObjectRef>,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let mut manifests: Vec<(RepoName, Digest)> = Vec::new();
    let mut recipes: Vec<Digest> = Vec::new();
    let mut sessions = Vec::new();
    for r in roots {
        match r {
            ObjectRef::Manifest(repo, d) => manifests.push((repo, d)),
            ObjectRef::BlobLink(repo, d) => {
                live.set.insert(ObjectRef::BlobLink(repo, d.clone()));
                recipes.push(d);
            }
            ObjectRef::Recipe(d) => recipes.push(d),
            ObjectRef::Pack(p) => {
                live.set.insert(ObjectRef::Pack(p));
            }
            ObjectRef::Upload(u) => sessions.push(u),
        }
    }
    // Manifests, wave by wave: each wave's children and referrers are the next.
    while !manifests.is_empty() {
        let wave: Vec<(RepoName, Digest)> = manifests
            .drain(..)
            .filter(|(repo, d)| {
                live.set
                    .insert(ObjectRef::Manifest(repo.clone(), d.clone()))
            })
            .collect();
        progress.phase("mark manifests", None);
        let read: Vec<(RepoName, Digest, Option<References>)> = futures::stream::iter(wave)
            .map(|(repo, d)| async move {
                let refs = match store.blob_bytes(&d).await {
                    Ok(bytes) => manifest::references(&bytes).ok(),
                    // Its bytes are gone (a sparse or damaged store): nothing to follow.
                    Err(Error::BlobNotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                progress.advance(1);
                Ok((repo, d, refs))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for (repo, d, refs) in read {
            recipes.push(d.clone());
            let Some(snap_repo) = snap.repos.get(&repo) else {
                continue;
            };
            if let Some((blobs, children)) = refs {
                for b in blobs {
                    if snap_repo.links.contains_key(&b) {
                        live.set
                            .insert(ObjectRef::BlobLink(repo.clone(), b.clone()));
                    }
                    recipes.push(b);
                }
                for c in children {
                    manifests.push((repo.clone(), c));
                }
            }
            for r in snap_repo.referrers.get(&d).into_iter().flatten() {
                manifests.push((repo.clone(), r.clone()));
            }
        }
    }
    // Recipes: each live one keeps its packs.
    let fresh: Vec<Digest> = recipes
        .into_iter()
        .filter(|d| live.set.insert(ObjectRef::Recipe(d.clone())))
        .collect();
    progress.phase("mark blobs", Some(fresh.len() as u64));
    let packs: Vec<Vec<PackId>> = futures::stream::iter(fresh)
        .map(|d| async move {
            let packs = store.recipe_packs(&d).await?.unwrap_or_default();
            progress.advance(1);
            Ok::<_, Error>(packs)
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    for p in packs.into_iter().flatten() {
        live.set.insert(ObjectRef::Pack(p));
    }
    // Open upload sessions keep the packs their segments point into.
    let fresh: Vec<_> = sessions
        .into_iter()
        .filter(|u| live.set.insert(ObjectRef::Upload(u.clone())))
        .collect();
    let packs: Vec<Vec<PackId>> = futures::stream::iter(fresh)
        .map(|u| async move { Ok::<_, Error>(store.session_packs(&u).await?.unwrap_or_default()) })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    for p in packs.into_iter().flatten() {
        live.set.insert(ObjectRef::Pack(p));
    }
    Ok(())
}

/// Dead objects old enough to delete: unreached, and written before `now - grace`
/// (sessions: not written to for `upload_expiry`).
pub(crate) fn candidates(
    snap: &Snapshot,
    live: &Live,
    now: DateTime<Utc>,
    grace: Duration,
    upload_expiry: Duration,
) -> ObjectSet {
    let old = |t: &DateTime<Utc>, age: Duration| {
        chrono::Duration::from_std(age).is_ok_and(|a| *t <= now - a)
    };
    let mut out = ObjectSet::new();
    let mut add = |r: ObjectRef| {
        if !live.contains(&r) {
            out.insert(r);
        }
    };
    for repo in snap.repos.values() {
        for (d, modified) in &repo.manifests {
            if old(modified, grace) {
                add(ObjectRef::Manifest(repo.name.clone(), d.clone()));
            }
        }
        for (d, modified) in &repo.links {
            if old(modified, grace) {
                add(ObjectRef::BlobLink(repo.name.clone(), d.clone()));
            }
        }
    }
    for (d, (modified, _)) in &snap.recipes {
        if old(modified, grace) {
            add(ObjectRef::Recipe(d.clone()));
        }
    }
    for (p, (modified, _)) in &snap.packs {
        if old(modified, grace) {
            add(ObjectRef::Pack(*p));
        }
    }
    for s in &snap.sessions {
        let expired = if s.has_state {
            old(&s.modified, upload_expiry)
        } else {
            // Leftovers of a finished or cancelled session.
            old(&s.modified, grace)
        };
        if expired {
            add(ObjectRef::Upload(s.id.clone()));
        }
    }
    out
}
