//! Stowage's garbage collector: deletes what no kept tag reaches, online, while servers
//! (several, sharing the store) accept pushes and pulls. The protocol that makes that
//! safe is in `stowage_storage::collection`; docs/gc.md argues why it is.
//!
//! A run: list the store and mark from the policy's roots; publish the dead objects as
//! candidates; wait until every writer has seen them; mark again from whatever was
//! written since the run began and from writers' rescues; seal what is still dead; wait
//! again, take the last rescues, and delete. `--dry-run` stops after the first mark.

mod mark;
pub mod policy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use stowage_storage::collection::{self, ObjectRef, ObjectSet, Phase, Run, RunError};
use stowage_storage::{Digest, Error, Store};

use crate::mark::{Live, Snapshot};
pub use crate::policy::{Policy, Rules, parse_duration};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to keep.
    pub policy: Policy,
    /// Nothing written more recently than this is deleted, whatever refers to it: a push
    /// uploads blobs before the manifest that names them.
    pub grace: Duration,
    /// Upload sessions untouched for this long are abandoned and removed.
    pub upload_expiry: Duration,
    /// The longest a single metadata write of any server may take to land after it was
    /// checked against the collector's state. The run waits [`collection::REFRESH`]
    /// plus this, twice.
    pub write_deadline: Duration,
    /// Listings and reads in flight at once.
    pub concurrency: usize,
    /// Report what would be deleted; write and delete nothing.
    pub dry_run: bool,
    /// Who runs this, recorded in the store for other collectors and operators.
    pub host: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: Policy::default(),
            grace: Duration::from_secs(3600),
            upload_expiry: Duration::from_secs(24 * 3600),
            write_deadline: Duration::from_secs(30),
            concurrency: 32,
            dry_run: false,
            host: "stowage-gc".into(),
        }
    }
}

/// Hooks for a progress display; every method has a silent default.
pub trait Progress: Sync {
    /// A new phase begins, with its amount of work if known.
    fn phase(&self, _name: &'static str, _total: Option<u64>) {}
    /// `n` more units of the current phase are done.
    fn advance(&self, _n: u64) {}
}

/// Progress that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// Found, kept and deleted, for one kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Seen in the listing.
    pub examined: u64,
    /// Kept.
    pub kept: u64,
    /// Deleted (or, in a dry run, that would be).
    pub deleted: u64,
    /// Bytes of the deleted objects.
    pub deleted_bytes: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run's id (none for a dry run).
    pub run: Option<String>,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Repositories examined.
    pub repositories: u64,
    /// Tags examined.
    pub tags: u64,
    /// Tag history entries removed with their manifests.
    pub history_entries_removed: u64,
    /// Manifests (per repository).
    pub manifests: Counts,
    /// Blob links (per repository).
    pub blob_links: Counts,
    /// Blobs (recipes).
    pub blobs: Counts,
    /// Packs of chunks.
    pub packs: Counts,
    /// Upload sessions (expired ones are deleted).
    pub uploads: Counts,
    /// Candidates a re-mark or a writer's rescue kept.
    pub rescued: u64,
    /// Writing processes found present after each published step (the run waits out a
    /// step only when some are).
    pub writers: Vec<u64>,
    /// Bytes freed: packs and recipes deleted.
    pub reclaimed_bytes: u64,
    /// Seconds per phase, in order.
    pub phases: Vec<(String, f64)>,
    /// What would be (or was) deleted, when asked for (`--list`): one line per object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The run could not start or lost its lease.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The options cannot work.
    #[error("invalid options: {0}")]
    Options(String),
}

struct Timer {
    phases: Vec<(String, f64)>,
    at: Instant,
}

impl Timer {
    fn lap(&mut self, name: &str) {
        self.phases
            .push((name.to_owned(), self.at.elapsed().as_secs_f64()));
        self.at = Instant::now();
    }
}

/// Runs one collection over `store`.
pub async fn collect(
    store: &Store,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report, GcError> {
    let c = options.concurrency.max(1);
    let longest = collection::LEASE - collection::REFRESH - 3 * collection::HEARTBEAT;
    if options.write_deadline > longest {
        return Err(GcError::Options(format!(
            "the write deadline ({:?}) must stay below {longest:?}: the run must renew its lease within it",
            options.write_deadline
        )));
    }
    let mut timer = Timer {
        phases: Vec::new(),
        at: Instant::now(),
    };
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    if options.dry_run {
        let now = Utc::now();
        let (snap, live) = first_mark(store, options, now, progress, &mut timer).await?;
        let cands = mark::candidates(&snap, &live, now, options.grace, options.upload_expiry);
        fill_report(&mut report, &snap, &cands);
        report.phases = timer.phases;
        return Ok(report);
    }
    let run = Arc::new(tokio::sync::Mutex::new(
        Run::begin(store, &options.host).await?,
    ));
    let beat = tokio::spawn({
        let run = run.clone();
        async move {
            let mut tick = tokio::time::interval(collection::HEARTBEAT);
            loop {
                tick.tick().await;
                if let Err(e) = run.lock().await.heartbeat().await {
                    tracing::warn!(error = %e, "collection heartbeat failed");
                }
            }
        }
    });
    let result = drive(store, options, c, &run, &mut report, progress, &mut timer).await;
    beat.abort();
    let mut run = run.lock().await;
    report.run = Some(run.id().to_owned());
    match result {
        Ok(()) => {
            run.set_phase(Phase::Done).await?;
            report.phases = timer.phases;
            Ok(report)
        }
        Err(e) => {
            if run.phase() < Phase::Done
                && let Err(e2) = run.set_phase(Phase::Abandoned).await
            {
                tracing::warn!(error = %e2, "could not mark the run abandoned");
            }
            Err(e)
        }
    }
}

async fn first_mark(
    store: &Store,
    options: &Options,
    now: DateTime<Utc>,
    progress: &dyn Progress,
    timer: &mut Timer,
) -> Result<(Snapshot, Live), GcError> {
    let c = options.concurrency.max(1);
    let snap = Snapshot::take(store, &options.policy, true, progress).await?;
    timer.lap("list");
    let roots = mark::roots(
        store,
        &snap,
        now,
        options.grace,
        options.upload_expiry,
        None,
        c,
    )
    .await?;
    let mut live = Live::default();
    mark::mark(store, &snap, &mut live, roots, c, progress).await?;
    timer.lap("mark");
    Ok((snap, live))
}

async fn drive(
    store: &Store,
    options: &Options,
    c: usize,
    run: &tokio::sync::Mutex<Run>,
    report: &mut Report,
    progress: &dyn Progress,
    timer: &mut Timer,
) -> Result<(), GcError> {
    let started = store.backend_now().await?;
    let (snap, mut live) = first_mark(store, options, started, progress, timer).await?;
    let candidates = mark::candidates(&snap, &live, started, options.grace, options.upload_expiry);
    let proposed = candidates.len();
    let wait = collection::REFRESH + options.write_deadline;
    progress.phase("propose", None);
    run.lock().await.propose(&candidates).await?;
    settle(run, wait, report).await?;
    timer.lap("propose");

    // Re-mark from what was written since the run began (a write that started before
    // may land up to the write deadline later, with an earlier time) and from rescues.
    let since = started
        - chrono::Duration::from_std(options.write_deadline).unwrap_or(chrono::Duration::zero());
    let snap2 = Snapshot::take(store, &options.policy, false, progress).await?;
    let mut roots = mark::roots(
        store,
        &snap2,
        started,
        options.grace,
        options.upload_expiry,
        Some(since),
        c,
    )
    .await?;
    roots.extend(run.lock().await.rescues().await?.iter().cloned());
    mark::mark(store, &snap2, &mut live, roots, c, progress).await?;
    // Filtered in place: the sets are the run's largest structures.
    let sealed = without_live(candidates, &live);
    progress.phase("seal", None);
    run.lock().await.seal(&sealed).await?;
    settle(run, wait, report).await?;
    timer.lap("remark and seal");

    // Writers that checked before they saw the seal have rescued what they reused.
    let rescues: Vec<ObjectRef> = run.lock().await.rescues().await?.iter().cloned().collect();
    mark::mark(store, &snap2, &mut live, rescues, c, progress).await?;
    let doomed = without_live(sealed, &live);
    report.rescued = (proposed - doomed.len()) as u64;
    run.lock().await.set_phase(Phase::Deleting).await?;
    fill_report(report, &snap, &doomed);
    sweep(
        store, options, run, &snap, &snap2, &doomed, report, progress,
    )
    .await?;
    timer.lap("sweep");
    run.lock().await.remove_old_runs().await?;
    Ok(())
}

/// Lets a published step reach every writer: waits `wait` (a view's age plus the write
/// deadline) unless no writing process is present, in which case none can hold an older
/// view and any that starts later reads the step first.
async fn settle(
    run: &tokio::sync::Mutex<Run>,
    wait: Duration,
    report: &mut Report,
) -> Result<(), GcError> {
    let writers = run.lock().await.live_writers().await?;
    report.writers.push(writers as u64);
    if writers > 0 {
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

/// `set` less everything marked live.
fn without_live(mut set: ObjectSet, live: &Live) -> ObjectSet {
    let found: Vec<ObjectRef> = set.iter().filter(|r| live.contains(r)).cloned().collect();
    for r in &found {
        set.remove(r);
    }
    set
}

fn fill_report(report: &mut Report, snap: &Snapshot, doomed: &ObjectSet) {
    report.repositories = snap.repos.len() as u64;
    report.tags = snap.tag_count() as u64;
    report.manifests.examined = snap.manifest_count() as u64;
    report.blob_links.examined = snap.link_count() as u64;
    report.blobs.examined = snap.recipes.len() as u64;
    report.packs.examined = snap.packs.len() as u64;
    report.uploads.examined = snap.sessions.len() as u64;
    for r in doomed.iter() {
        match r {
            ObjectRef::Manifest(..) => report.manifests.deleted += 1,
            ObjectRef::BlobLink(..) => report.blob_links.deleted += 1,
            ObjectRef::Recipe(d) => {
                report.blobs.deleted += 1;
                report.blobs.deleted_bytes += snap.recipes.get(d).map_or(0, |(_, s)| *s);
            }
            ObjectRef::Pack(p) => {
                report.packs.deleted += 1;
                report.packs.deleted_bytes += snap.packs.get(p).map_or(0, |(_, s)| *s);
            }
            ObjectRef::Upload(_) => report.uploads.deleted += 1,
        }
    }
    for c in [
        &mut report.manifests,
        &mut report.blob_links,
        &mut report.blobs,
        &mut report.packs,
        &mut report.uploads,
    ] {
        c.kept = c.examined.saturating_sub(c.deleted);
    }
    report.reclaimed_bytes = report.blobs.deleted_bytes + report.packs.deleted_bytes;
}

/// Deletes in dependency order: manifests (then the tag history naming them), blob links,
/// recipes, upload sessions, packs. The lease is checked before every batch.
#[allow(clippy::too_many_arguments)]
async fn sweep(
    store: &Store,
    options: &Options,
    run: &tokio::sync::Mutex<Run>,
    snap: &Snapshot,
    snap2: &Snapshot,
    doomed: &ObjectSet,
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<(), GcError> {
    let rank = |r: &ObjectRef| match r {
        ObjectRef::Manifest(..) => 0,
        ObjectRef::BlobLink(..) => 1,
        ObjectRef::Recipe(_) => 2,
        ObjectRef::Upload(_) => 3,
        ObjectRef::Pack(_) => 4,
    };
    let mut by_rank: BTreeMap<u8, Vec<&ObjectRef>> = BTreeMap::new();
    for r in doomed.iter() {
        by_rank.entry(rank(r)).or_default().push(r);
    }
    let subject = |r: &ObjectRef| -> Option<Digest> {
        let ObjectRef::Manifest(repo, d) = r else {
            return None;
        };
        [snap, snap2]
            .iter()
            .find_map(|s| s.repos.get(repo)?.subject_of.get(d).cloned())
    };
    progress.phase("delete", Some(doomed.len() as u64));
    for (rank, objects) in by_rank {
        // Each kind's deletions are durable before the next kind's begin: a recipe must
        // never outlive the packs it names, even across a crash.
        let mut pending = stowage_storage::PendingDeletes::default();
        for batch in objects.chunks(1000) {
            run.lock().await.check_lease(options.write_deadline)?;
            let batch: Vec<(ObjectRef, Option<Digest>)> =
                batch.iter().map(|r| ((*r).clone(), subject(r))).collect();
            let n = batch.len() as u64;
            store.delete_collected_many(&batch, &mut pending).await?;
            progress.advance(n);
        }
        store.sync_deletes(pending).await?;
        if rank == 0 {
            report.history_entries_removed =
                prune_histories(store, snap2, doomed, options.concurrency).await?;
        }
    }
    Ok(())
}

/// Removes deleted manifests from the histories of the tags that named them.
async fn prune_histories(
    store: &Store,
    snap: &Snapshot,
    doomed: &ObjectSet,
    concurrency: usize,
) -> Result<u64, Error> {
    let mut gone: HashMap<stowage_storage::RepoName, Arc<HashSet<Digest>>> = HashMap::new();
    for r in doomed.iter() {
        if let ObjectRef::Manifest(repo, d) = r {
            Arc::make_mut(gone.entry(repo.clone()).or_default()).insert(d.clone());
        }
    }
    let mut work = Vec::new();
    for r in snap.repos.values() {
        if let Some(g) = gone.get(&r.name) {
            for t in &r.tags {
                work.push((r.name.clone(), t.item.clone(), g.clone()));
            }
        }
    }
    let removed: Vec<usize> = futures::stream::iter(work)
        .map(|(repo, tag, g)| async move { store.repository(&repo).prune_history(&tag, &g).await })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(removed.into_iter().map(|n| n as u64).sum())
}
