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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use stowage_storage::collection::{self, ObjectRef, Phase, Run, RunError, SetKind};
use stowage_storage::{Digest, Error, RepoName, Store};

use crate::mark::{Additions, Ctx, Examined, Sink};
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
        // Writes nothing, so not even the backend's clock: the host's.
        let ctx = context(store, options, Utc::now(), progress);
        let mut sink = Sink::new(None);
        let examined = mark::first_mark(&ctx, &mut sink).await?;
        timer.lap("mark");
        fill_report(&mut report, &examined, &sink);
        report.phases = timer.phases;
        return Ok(report);
    }
    let run = Arc::new(tokio::sync::Mutex::new(
        Run::begin(store, &options.host).await?,
    ));
    // Stopped by a signal, never aborted: a heartbeat cancelled between its write and
    // learning the new version would leave the run unable to write its state again.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let beat = tokio::spawn({
        let run = run.clone();
        async move {
            let mut tick = tokio::time::interval(collection::HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                if let Err(e) = run.lock().await.heartbeat().await {
                    tracing::warn!(error = %e, "collection heartbeat failed");
                }
            }
        }
    });
    let result = drive(store, options, &run, &mut report, progress, &mut timer).await;
    let _ = stop.send(true);
    if let Err(e) = beat.await {
        tracing::warn!(error = %e, "collection heartbeat task failed");
    }
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

fn context<'a>(
    store: &'a Store,
    options: &'a Options,
    now: DateTime<Utc>,
    progress: &'a dyn Progress,
) -> Ctx<'a> {
    Ctx {
        store,
        policy: &options.policy,
        now,
        grace: options.grace,
        upload_expiry: options.upload_expiry,
        concurrency: options.concurrency.max(1),
        progress,
    }
}

async fn drive(
    store: &Store,
    options: &Options,
    run: &tokio::sync::Mutex<Run>,
    report: &mut Report,
    progress: &dyn Progress,
    timer: &mut Timer,
) -> Result<(), GcError> {
    let started = store.backend_now().await?;
    let ctx = context(store, options, started, progress);
    let mut sink = Sink::new(Some(run.lock().await.set_writer(SetKind::Candidates)));
    let examined = mark::first_mark(&ctx, &mut sink).await?;
    let proposed = sink.count();
    let parts = sink.finish().await?;
    timer.lap("mark");
    let wait = collection::REFRESH + options.write_deadline;
    progress.phase("propose", None);
    run.lock().await.propose_parts(parts).await?;
    settle(run, wait, report).await?;
    timer.lap("propose");

    // Re-mark from what was written since the run began (a write that started before
    // may land up to the write deadline later, with an earlier time) and from rescues.
    let since = started
        - chrono::Duration::from_std(options.write_deadline).unwrap_or(chrono::Duration::zero());
    let mut added = Additions::default();
    let rescued = run.lock().await.rescues().await?;
    mark::remark(&ctx, Some(since), &rescued, &mut added).await?;
    progress.phase("seal", Some(u64::from(parts)));
    let mut sealed = run.lock().await.set_writer(SetKind::Sealed);
    for n in 0..parts {
        let part = run.lock().await.read_part(SetKind::Candidates, n).await?;
        for line in part.iter() {
            let (r, note) = line?;
            if !added.contains(&r) {
                sealed.push(&r, note).await?;
            }
        }
        progress.advance(1);
    }
    let sealed_parts = sealed.finish().await?;
    run.lock().await.seal_parts(sealed_parts).await?;
    settle(run, wait, report).await?;
    timer.lap("remark and seal");

    // Writers that checked before they saw the seal have rescued what they reused.
    let rescued = run.lock().await.rescues().await?;
    mark::remark(&ctx, None, &rescued, &mut added).await?;
    run.lock().await.set_phase(Phase::Deleting).await?;
    let deleted = sweep(store, options, run, sealed_parts, &added, report, progress).await?;
    fill_report(report, &examined, &deleted);
    report.rescued = proposed.saturating_sub(deleted.count());
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

fn fill_report(report: &mut Report, examined: &Examined, dead: &Sink) {
    report.repositories = examined.repositories;
    report.tags = examined.tags;
    report.manifests.examined = examined.manifests;
    report.blob_links.examined = examined.blob_links;
    report.blobs.examined = examined.blobs;
    report.packs.examined = examined.packs;
    report.uploads.examined = examined.uploads;
    dead.fill(report);
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

/// Deletes the sealed set less what was rescued, in dependency order: manifests (then
/// the tag history naming them), blob links, recipes, upload sessions, packs; each
/// kind's pass reads the published parts again, so nothing is held but a batch. The
/// lease is checked before every batch. Returns what was deleted.
async fn sweep(
    store: &Store,
    options: &Options,
    run: &tokio::sync::Mutex<Run>,
    parts: u32,
    added: &Additions,
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<Sink, GcError> {
    let rank = |r: &ObjectRef| match r {
        ObjectRef::Manifest(..) => 0,
        ObjectRef::BlobLink(..) => 1,
        ObjectRef::Recipe(_) => 2,
        ObjectRef::Upload(_) => 3,
        ObjectRef::Pack(_) => 4,
    };
    let mut deleted = Sink::new(None);
    progress.phase("delete", None);
    for kind in 0..5 {
        // Each kind's deletions are durable before the next kind's begin: a recipe must
        // never outlive the packs it names, even across a crash.
        let mut pending = stowage_storage::PendingDeletes::default();
        let mut gone: HashMap<RepoName, HashSet<Digest>> = HashMap::new();
        let mut batch: Vec<(ObjectRef, Option<Digest>)> = Vec::new();
        for n in 0..parts {
            let part = run.lock().await.read_part(SetKind::Sealed, n).await?;
            for line in part.iter() {
                let (r, note) = line?;
                if rank(&r) != kind || added.contains(&r) {
                    continue;
                }
                let (size, subject) = mark::parse_note(note);
                deleted.push(&r, size, None).await?;
                if let ObjectRef::Manifest(repo, d) = &r {
                    gone.entry(repo.clone()).or_default().insert(d.clone());
                }
                batch.push((r, subject));
                if batch.len() == DELETE_BATCH {
                    delete_batch(store, options, run, &mut batch, &mut pending, progress).await?;
                }
            }
        }
        delete_batch(store, options, run, &mut batch, &mut pending, progress).await?;
        store.sync_deletes(pending).await?;
        if kind == 0 {
            report.history_entries_removed =
                prune_histories(store, gone, options.concurrency).await?;
        }
    }
    Ok(deleted)
}

/// Objects per deletion request (S3's limit for one DeleteObjects).
const DELETE_BATCH: usize = 1000;

async fn delete_batch(
    store: &Store,
    options: &Options,
    run: &tokio::sync::Mutex<Run>,
    batch: &mut Vec<(ObjectRef, Option<Digest>)>,
    pending: &mut stowage_storage::PendingDeletes,
    progress: &dyn Progress,
) -> Result<(), GcError> {
    if batch.is_empty() {
        return Ok(());
    }
    run.lock().await.check_lease(options.write_deadline)?;
    store.delete_collected_many(batch, pending).await?;
    progress.advance(batch.len() as u64);
    batch.clear();
    Ok(())
}

/// Removes deleted manifests from the histories of the tags that named them.
async fn prune_histories(
    store: &Store,
    gone: HashMap<RepoName, HashSet<Digest>>,
    concurrency: usize,
) -> Result<u64, Error> {
    let removed: Vec<usize> = futures::stream::iter(gone)
        .map(|(repo, digests)| async move {
            let r = store.repository(&repo);
            let mut n = 0;
            for tag in r.tags().await? {
                n += r.prune_history(&tag, &digests).await?;
            }
            Ok::<_, Error>(n)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(removed.into_iter().map(|n| n as u64).sum())
}
