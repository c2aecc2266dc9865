//! The protocol between the garbage collector and every process that writes to the
//! store, so that collection runs online: no read-only mode, no lock that stalls pushes.
//! docs/gc.md gives the argument; in short:
//!
//! 1. The collector marks, then publishes the objects it found dead as *candidates*
//!    (`Proposed`). A writer about to commit something that reuses a candidate (a pack it
//!    deduplicated into, an existing recipe, a blob link, a manifest) first writes a
//!    *rescue* record naming it.
//! 2. After every writer has seen the proposal and every write checked before it has
//!    landed, the collector marks again from what changed since it started and from the
//!    rescues, and publishes what is still dead as *sealed*. Writers treat sealed objects
//!    as absent: they never reuse them, and one that must recreate a sealed key (the same
//!    blob pushed again) waits until the run has swept.
//! 3. After every writer has seen the seal, the collector reads the rescues once more,
//!    then deletes.
//!
//! Writers check at commit time with a view of the collector's state that is never older
//! than [`REFRESH`]; the collector waits [`REFRESH`] plus its write deadline between steps.
//! A run whose heartbeat stops for [`LEASE`] is abandoned, and writers stop honouring it.
//!
//! Every writing process keeps a *presence* record (`gc/writers/<id>`) no older than
//! [`PRESENCE_MAX_AGE`] whenever it checks a commit. A collector that finds no presence
//! younger than [`LEASE`] right after publishing a step skips that step's wait: no write
//! checked against an older view can still land, and any later writer registers first and
//! then reads the step.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::ChunkIndex;
use crate::layout;
use crate::names::RepoName;
use crate::pack::PackId;
use crate::upload::UploadId;

/// A writer's view of the collector is never older than this when it commits.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A run whose heartbeat has not changed for this long is abandoned.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a running collector renews its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often a writing process renews its presence record.
pub const PRESENCE_RENEW: Duration = HEARTBEAT;
/// A writer never checks a commit under a presence record older than this; past it, it
/// registers afresh and reads the collector's state again. With the longest write
/// deadline a run accepts, a write checked under a presence record lands before that
/// record is [`LEASE`] old.
pub const PRESENCE_MAX_AGE: Duration = Duration::from_secs(10);

/// Where a collection run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Listing and marking; nothing published yet.
    Marking,
    /// Candidates published; writers rescue what they reuse.
    Proposed,
    /// The final set published; writers treat it as absent.
    Sealed,
    /// Deleting the sealed set.
    Deleting,
    /// Finished.
    Done,
    /// Stopped before deleting (an error, or a dry run); nothing was deleted.
    Abandoned,
}

impl Phase {
    fn active(self) -> bool {
        matches!(self, Phase::Proposed | Phase::Sealed | Phase::Deleting)
    }
}

/// The collector's state object, `gc/state`, replaced by compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's id (a UUIDv7).
    pub run: String,
    /// Where it is.
    pub phase: Phase,
    /// Incremented by the collector every [`HEARTBEAT`] while it runs.
    pub heartbeat: u64,
    /// When it started (the collector's clock; for people, not for the protocol).
    pub started: DateTime<Utc>,
    /// Runs that have reached `Sealed`, over the store's life: a writer that sees this
    /// jump by more than one has missed a sweep and rebuilds its dedup index.
    pub sweeps: u64,
    /// Who runs it, for operators.
    pub host: String,
    /// Parts of the published candidates.
    #[serde(default)]
    pub candidate_parts: u32,
    /// Parts of the published sealed set.
    #[serde(default)]
    pub sealed_parts: u32,
}

/// Which published set of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// The candidates (`Proposed`).
    Candidates,
    /// The sealed set (`Sealed` and after).
    Sealed,
}

impl SetKind {
    fn name(self) -> &'static str {
        match self {
            SetKind::Candidates => "candidates",
            SetKind::Sealed => "sealed",
        }
    }
}

/// A published set is written in parts of about this size, so that neither the collector
/// nor a reader needs it in one buffer.
const PART_BYTES: usize = 256 << 10;

/// Writes one published set part by part; lines may carry a note after a tab (the
/// collector's own: sizes, a referrer's subject) that readers ignore.
pub struct SetWriter {
    backend: Backend,
    run: String,
    kind: SetKind,
    buf: Vec<u8>,
    parts: u32,
    count: u64,
}

impl SetWriter {
    /// Adds an object, with an optional note.
    pub async fn push(&mut self, r: &ObjectRef, note: &str) -> Result<()> {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(PART_BYTES + 4096);
        }
        let _ = write!(self.buf, "{r}");
        if !note.is_empty() {
            self.buf.push(b'\t');
            self.buf.extend_from_slice(note.as_bytes());
        }
        self.buf.push(b'\n');
        self.count += 1;
        if self.buf.len() >= PART_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let key = layout::run_set_part(&self.run, self.kind.name(), self.parts);
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.backend.put(&key, data).await?;
        self.parts += 1;
        Ok(())
    }

    /// Objects pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the last part; returns how many parts there are.
    pub async fn finish(mut self) -> Result<u32> {
        if !self.buf.is_empty() {
            self.flush().await?;
        }
        Ok(self.parts)
    }
}

/// One published part, read back: its objects, with their notes, parsed as iterated.
pub struct SetPart {
    text: String,
    key: String,
}

impl SetPart {
    fn new(data: Bytes, key: &str) -> Result<Self> {
        let text =
            String::from_utf8(Vec::from(data)).map_err(|_| Error::corrupt(key, "not UTF-8"))?;
        Ok(SetPart {
            text,
            key: key.to_owned(),
        })
    }

    /// The objects and their notes, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = Result<(ObjectRef, &str)>> + '_ {
        self.text.lines().filter(|l| !l.is_empty()).map(|line| {
            let (object, note) = line.split_once('\t').unwrap_or((line, ""));
            ObjectRef::parse(object)
                .map(|r| (r, note))
                .ok_or_else(|| Error::corrupt(&self.key, format!("bad object line {line:?}")))
        })
    }
}

/// One object the collector may delete, named the way writers reuse it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectRef {
    /// A manifest of a repository (its link, referrer record and tag history entries).
    Manifest(RepoName, Digest),
    /// A blob link of a repository.
    BlobLink(RepoName, Digest),
    /// A blob's recipe.
    Recipe(Digest),
    /// A pack of chunks.
    Pack(PackId),
    /// An upload session.
    Upload(UploadId),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Manifest(r, d) => write!(f, "m {r} {d}"),
            ObjectRef::BlobLink(r, d) => write!(f, "l {r} {d}"),
            ObjectRef::Recipe(d) => write!(f, "r {d}"),
            ObjectRef::Pack(p) => write!(f, "p {p}"),
            ObjectRef::Upload(u) => write!(f, "u {u}"),
        }
    }
}

impl ObjectRef {
    /// Parses the form `Display` writes.
    pub fn parse(line: &str) -> Option<ObjectRef> {
        let mut parts = line.split(' ');
        let kind = parts.next()?;
        let a = parts.next()?;
        let b = parts.next();
        let r = match (kind, b) {
            ("m", Some(d)) => ObjectRef::Manifest(RepoName::parse(a).ok()?, Digest::parse(d).ok()?),
            ("l", Some(d)) => ObjectRef::BlobLink(RepoName::parse(a).ok()?, Digest::parse(d).ok()?),
            ("r", None) => ObjectRef::Recipe(Digest::parse(a).ok()?),
            ("p", None) => ObjectRef::Pack(a.parse().ok()?),
            ("u", None) => ObjectRef::Upload(a.parse().ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(r)
    }
}

/// A set of objects: a run's candidates, its sealed set, a rescue record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectSet {
    items: HashSet<ObjectRef>,
    packs: HashSet<PackId>,
}

impl ObjectSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object; false if it was there.
    pub fn insert(&mut self, r: ObjectRef) -> bool {
        if let ObjectRef::Pack(p) = &r {
            self.packs.insert(*p);
        }
        self.items.insert(r)
    }

    /// Removes an object; false if it was not there.
    pub fn remove(&mut self, r: &ObjectRef) -> bool {
        if let ObjectRef::Pack(p) = r {
            self.packs.remove(p);
        }
        self.items.remove(r)
    }

    /// Whether the set holds `r`.
    pub fn contains(&self, r: &ObjectRef) -> bool {
        self.items.contains(r)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The objects, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &ObjectRef> {
        self.items.iter()
    }

    /// The packs in the set.
    pub fn packs(&self) -> &HashSet<PackId> {
        &self.packs
    }

    /// One object per line, sorted, so equal sets encode equally.
    pub fn encode(&self) -> Vec<u8> {
        let mut lines: Vec<String> = self.items.iter().map(ToString::to_string).collect();
        lines.sort_unstable();
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Parses [`ObjectSet::encode`]'s output.
    pub fn decode(data: &[u8], key: &str) -> Result<Self> {
        let text = std::str::from_utf8(data).map_err(|_| Error::corrupt(key, "not UTF-8"))?;
        let mut set = ObjectSet::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let object = line.split_once('\t').map_or(line, |(o, _)| o);
            let r = ObjectRef::parse(object)
                .ok_or_else(|| Error::corrupt(key, format!("bad object line {line:?}")))?;
            set.insert(r);
        }
        Ok(set)
    }
}

impl FromIterator<ObjectRef> for ObjectSet {
    fn from_iter<T: IntoIterator<Item = ObjectRef>>(iter: T) -> Self {
        let mut s = ObjectSet::new();
        for r in iter {
            s.insert(r);
        }
        s
    }
}

/// What a writer must do about the collector right now.
#[derive(Debug, Clone, Default)]
pub(crate) enum Guard {
    /// No run is proposing or deleting anything.
    #[default]
    Open,
    /// Reusing a candidate needs a rescue record first.
    Proposed { run: String, set: Arc<ObjectSet> },
    /// The set will be deleted: it is absent for every purpose.
    Sealed { set: Arc<ObjectSet> },
}

#[derive(Default)]
struct ViewInner {
    fetched: Option<Instant>,
    state: Option<RunState>,
    heartbeat_seen: Option<Instant>,
    candidates: Option<(String, Arc<ObjectSet>)>,
    sealed: Option<(String, Arc<ObjectSet>)>,
    /// Rescues this process has written in the current run.
    rescued: HashSet<ObjectRef>,
    rescued_run: String,
    /// Sweeps the dedup index has accounted for.
    index_sweeps: Option<u64>,
    guard: Guard,
    /// When this process last checked a commit.
    checked: Option<Instant>,
}

/// This process's presence record, written only once it writes.
struct Presence {
    /// The record's key; a fresh registration takes a new one.
    key: Option<object_store::path::Path>,
    /// When the last confirmed write of the record began.
    written: Option<Instant>,
}

/// A writer's view of the collector, refreshed at least every [`REFRESH`] before a
/// commit, and the hooks that make writes safe against a concurrent run.
pub(crate) struct CollectionView {
    backend: Backend,
    index: Arc<ChunkIndex>,
    inner: Mutex<ViewInner>,
    refreshing: tokio::sync::Mutex<()>,
    presence: tokio::sync::Mutex<Presence>,
}

impl CollectionView {
    pub(crate) fn new(backend: Backend, index: Arc<ChunkIndex>) -> Self {
        CollectionView {
            backend,
            index,
            inner: Mutex::new(ViewInner::default()),
            refreshing: tokio::sync::Mutex::new(()),
            presence: tokio::sync::Mutex::new(Presence {
                key: None,
                written: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guard as last fetched, without refreshing: for reads and hints.
    pub(crate) fn cached(&self) -> Guard {
        self.lock().guard.clone()
    }

    /// The run and phase last fetched.
    pub(crate) fn run_phase(&self) -> Option<(String, Phase)> {
        self.lock().state.as_ref().map(|s| (s.run.clone(), s.phase))
    }

    /// Whether a reader should act as if `r` were not there (it is sealed for deletion).
    pub(crate) fn hides(&self, r: &ObjectRef) -> bool {
        matches!(self.cached(), Guard::Sealed { set, .. } if set.contains(r))
    }

    /// A guard no older than [`REFRESH`], for checking a commit: this process's presence
    /// is renewed first if due.
    pub(crate) async fn current(&self) -> Result<Guard> {
        self.lock().checked = Some(Instant::now());
        self.ensure_present(PRESENCE_RENEW).await?;
        if let Some(g) = self.fresh() {
            return Ok(g);
        }
        let _one = self.refreshing.lock().await;
        if let Some(g) = self.fresh() {
            return Ok(g);
        }
        self.refresh().await
    }

    /// Renews the presence record if it is older than `due`. A registration afresh (none
    /// yet, or one past [`PRESENCE_MAX_AGE`]) takes a new key and drops the cached state,
    /// so the next check reads it after the record became visible.
    async fn ensure_present(&self, due: Duration) -> Result<()> {
        let mut presence = self.presence.lock().await;
        let age = presence.written.map(|t| t.elapsed());
        if age.is_some_and(|a| a < due) {
            return Ok(());
        }
        let afresh = age.is_none_or(|a| a >= PRESENCE_MAX_AGE);
        let key = match &presence.key {
            Some(key) if !afresh => key.clone(),
            _ => layout::writer(&uuid::Uuid::now_v7().simple().to_string()),
        };
        presence.key = Some(key.clone());
        let started = Instant::now();
        let body = format!("pid {}\n", std::process::id());
        self.backend.put(&key, Bytes::from(body)).await?;
        presence.written = Some(started);
        if afresh {
            self.lock().fetched = None;
        }
        Ok(())
    }

    /// Renews the presence record ahead of time (servers call this in the background),
    /// as long as this process has checked a commit within the last [`LEASE`]; an idle
    /// process lets it lapse, and collectors stop waiting for it.
    pub(crate) async fn renew_presence(&self) -> Result<()> {
        let active = self.lock().checked.is_some_and(|t| t.elapsed() < LEASE);
        if active {
            self.ensure_present(PRESENCE_RENEW).await?;
        }
        Ok(())
    }

    /// Removes the presence record, so collectors stop waiting for this process. Only
    /// once no commit of this process is in flight (a server after its last request);
    /// a later write registers afresh.
    pub(crate) async fn retire(&self) -> Result<()> {
        let mut presence = self.presence.lock().await;
        if let Some(key) = presence.key.take() {
            presence.written = None;
            self.backend.delete(&key).await?;
        }
        Ok(())
    }

    fn fresh(&self) -> Option<Guard> {
        let inner = self.lock();
        let fetched = inner.fetched?;
        (fetched.elapsed() < REFRESH).then(|| inner.guard.clone())
    }

    /// Reads `gc/state` and whatever sets the run has published.
    pub(crate) async fn refresh(&self) -> Result<Guard> {
        let started = Instant::now();
        let key = layout::collector_state();
        let state: Option<RunState> = match self.backend.get(&key).await? {
            Some(data) => Some(
                serde_json::from_slice(&data)
                    .map_err(|e| Error::corrupt(key.as_ref(), e.to_string()))?,
            ),
            None => None,
        };
        let (want_candidates, want_sealed) = {
            let inner = self.lock();
            match &state {
                Some(s) if s.phase.active() || s.phase == Phase::Done => (
                    (s.phase == Phase::Proposed
                        && inner.candidates.as_ref().is_none_or(|(r, _)| r != &s.run))
                    .then(|| (s.run.clone(), s.candidate_parts)),
                    (s.phase >= Phase::Sealed
                        && s.phase != Phase::Abandoned
                        && inner.sealed.as_ref().is_none_or(|(r, _)| r != &s.run))
                    .then(|| (s.run.clone(), s.sealed_parts)),
                ),
                _ => (None, None),
            }
        };
        let candidates = match want_candidates {
            Some((run, parts)) => Some((
                run.clone(),
                Arc::new(self.load_set(&run, SetKind::Candidates, parts).await?),
            )),
            None => None,
        };
        let sealed = match want_sealed {
            Some((run, parts)) => Some((
                run.clone(),
                Arc::new(self.load_set(&run, SetKind::Sealed, parts).await?),
            )),
            None => None,
        };
        let mut rebuild = false;
        let guard = {
            let mut inner = self.lock();
            if let Some(c) = candidates {
                inner.candidates = Some(c);
            }
            let newly_sealed = sealed.is_some();
            if let Some(s) = sealed {
                inner.sealed = Some(s);
            }
            let beat_changed = match (&inner.state, &state) {
                (Some(old), Some(new)) => old.run != new.run || old.heartbeat != new.heartbeat,
                (None, Some(_)) => true,
                _ => false,
            };
            if beat_changed || inner.heartbeat_seen.is_none() {
                inner.heartbeat_seen = Some(started);
            }
            // The dedup index must never offer a pack a sweep may delete: packs of a
            // sealed set are forgotten for good (a rescued one only loses dedup), and a
            // process that missed a whole sweep rebuilds its index.
            let sweeps = state.as_ref().map_or(0, |s| s.sweeps);
            match inner.index_sweeps {
                None => inner.index_sweeps = Some(sweeps),
                Some(seen) => {
                    let accounted = seen + u64::from(newly_sealed);
                    if sweeps > accounted {
                        rebuild = true;
                    }
                    inner.index_sweeps = Some(sweeps);
                }
            }
            if newly_sealed && let Some((_, set)) = &inner.sealed {
                self.index.forget(set.packs());
            }
            let abandoned = inner.heartbeat_seen.is_some_and(|t| t.elapsed() > LEASE);
            inner.guard = match &state {
                Some(s) if s.phase.active() && !abandoned => match s.phase {
                    Phase::Proposed => match &inner.candidates {
                        Some((run, set)) if run == &s.run => Guard::Proposed {
                            run: run.clone(),
                            set: set.clone(),
                        },
                        _ => Guard::Open,
                    },
                    _ => match &inner.sealed {
                        Some((run, set)) if run == &s.run => Guard::Sealed { set: set.clone() },
                        _ => Guard::Open,
                    },
                },
                _ => Guard::Open,
            };
            self.index.avoid(match &inner.guard {
                Guard::Open => None,
                Guard::Proposed { set, .. } | Guard::Sealed { set, .. } => Some(set.clone()),
            });
            inner.state = state;
            inner.fetched = Some(started);
            inner.guard.clone()
        };
        if rebuild {
            tracing::warn!("missed a garbage collection sweep; rebuilding the dedup index");
            self.index.clear();
            self.index.refresh(&self.backend).await?;
        }
        Ok(guard)
    }

    async fn load_set(&self, run: &str, kind: SetKind, parts: u32) -> Result<ObjectSet> {
        let mut set = ObjectSet::new();
        for n in 0..parts {
            let data = read_part(&self.backend, run, kind, n).await?;
            let key = layout::run_set_part(run, kind.name(), n);
            for r in ObjectSet::decode(&data, key.as_ref())?.items {
                set.insert(r);
            }
        }
        Ok(set)
    }

    /// Called right before a commit that reuses `refs`: rescues candidates of a proposed
    /// run (durably, before returning) and refuses sealed ones with
    /// [`Error::Collected`]. The commit must follow within the collector's write deadline.
    pub(crate) async fn protect(&self, refs: &[ObjectRef]) -> Result<()> {
        match self.current().await? {
            Guard::Open => Ok(()),
            Guard::Sealed { set, .. } => match refs.iter().find(|r| set.contains(r)) {
                Some(r) => Err(Error::Collected(r.to_string())),
                None => Ok(()),
            },
            Guard::Proposed { run, set } => {
                let needed: ObjectSet = {
                    let mut inner = self.lock();
                    if inner.rescued_run != run {
                        inner.rescued_run = run.clone();
                        inner.rescued.clear();
                    }
                    refs.iter()
                        .filter(|r| set.contains(r) && !inner.rescued.contains(r))
                        .cloned()
                        .collect()
                };
                if needed.is_empty() {
                    return Ok(());
                }
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                self.backend
                    .put(
                        &layout::run_rescue(&run, &nonce),
                        Bytes::from(needed.encode()),
                    )
                    .await?;
                tracing::info!(%run, objects = needed.len(), "rescued objects from a collection run");
                let mut inner = self.lock();
                if inner.rescued_run == run {
                    inner.rescued.extend(needed.iter().cloned());
                }
                Ok(())
            }
        }
    }

    /// Waits until no run holds `r` sealed (it has been swept, or the run ended or was
    /// abandoned), so a writer may create that key afresh.
    pub(crate) async fn wait_swept(&self, r: &ObjectRef) -> Result<()> {
        loop {
            match self.current().await? {
                Guard::Sealed { set, .. } if set.contains(r) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Protects a commit that writes `recreate` (keys it may create afresh) and reuses
    /// `reuse`. A sealed `recreate` is waited out (the sweep deletes it first, then the
    /// write makes it again); a sealed `reuse` fails with [`Error::Collected`].
    pub(crate) async fn protect_recreating(
        &self,
        recreate: &[ObjectRef],
        reuse: &[ObjectRef],
    ) -> Result<()> {
        let all: Vec<ObjectRef> = recreate.iter().chain(reuse).cloned().collect();
        loop {
            for r in recreate {
                self.wait_swept(r).await?;
            }
            match self.protect(&all).await {
                Err(Error::Collected(what)) if recreate.iter().any(|r| r.to_string() == what) => {}
                other => return other,
            }
        }
    }
}

async fn read_part(backend: &Backend, run: &str, kind: SetKind, n: u32) -> Result<Bytes> {
    let key = layout::run_set_part(run, kind.name(), n);
    backend
        .get(&key)
        .await?
        .ok_or_else(|| Error::corrupt(key.as_ref(), "published set part is missing"))
}

/// A collection run's hold on the store: its state object, kept by compare-and-swap, so
/// two collectors never run at once and one that loses its lease knows it.
pub struct Run {
    store: crate::Store,
    state: RunState,
    version: crate::backend::Version,
    /// When the last heartbeat (or phase change) was confirmed written.
    renewed: Instant,
    /// The run before this one: its sets stay until the next run.
    previous: Option<String>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run").field("state", &self.state).finish()
    }
}

/// Why a run could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another collector holds the store.
    #[error(
        "another garbage collection ({run} on {host}, {phase:?}) is running; its lease expires {LEASE:?} after its last heartbeat"
    )]
    Busy {
        /// Its id.
        run: String,
        /// Where it runs.
        host: String,
        /// Its phase.
        phase: Phase,
    },
    /// Our state was replaced: another collector took over after our lease lapsed.
    #[error("lost the collection lease (the state object changed under us)")]
    LostLease,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

impl Run {
    /// Starts a run, unless another one is active and its heartbeat is fresh (watched for
    /// [`LEASE`], since only a change of heartbeat proves it alive).
    pub async fn begin(store: &crate::Store, host: &str) -> Result<Run, RunError> {
        let backend = &store.inner.backend;
        let key = layout::collector_state();
        let mut watched: Option<(RunState, Instant)> = None;
        loop {
            let current = backend.get_versioned(&key).await?;
            let previous = match &current {
                Some((data, _)) => Some(
                    serde_json::from_slice::<RunState>(data)
                        .map_err(|e| Error::corrupt(key.as_ref(), e.to_string()))?,
                ),
                None => None,
            };
            if let Some(p) = &previous
                && matches!(
                    p.phase,
                    Phase::Marking | Phase::Proposed | Phase::Sealed | Phase::Deleting
                )
            {
                match &watched {
                    None => {
                        watched = Some((p.clone(), Instant::now()));
                        tokio::time::sleep(HEARTBEAT).await;
                        continue;
                    }
                    Some((w, _)) if w.run != p.run || w.heartbeat != p.heartbeat => {
                        return Err(RunError::Busy {
                            run: p.run.clone(),
                            host: p.host.clone(),
                            phase: p.phase,
                        });
                    }
                    Some((_, since)) if since.elapsed() < LEASE => {
                        tokio::time::sleep(HEARTBEAT).await;
                        continue;
                    }
                    Some(_) => {}
                }
                tracing::warn!(run = %p.run, "taking over from an abandoned collection run");
            }
            let state = RunState {
                run: uuid::Uuid::now_v7().simple().to_string(),
                phase: Phase::Marking,
                heartbeat: 0,
                started: Utc::now(),
                sweeps: previous.as_ref().map_or(0, |p| p.sweeps),
                host: host.to_owned(),
                candidate_parts: 0,
                sealed_parts: 0,
            };
            let version = current.map(|(_, v)| v);
            let data =
                Bytes::from(serde_json::to_vec(&state).map_err(|e| Error::Task(e.to_string()))?);
            if backend
                .compare_and_swap(&key, version.as_ref(), data)
                .await?
            {
                let (_, version) = backend
                    .get_versioned(&key)
                    .await?
                    .ok_or(RunError::LostLease)?;
                return Ok(Run {
                    store: store.clone(),
                    state,
                    version,
                    renewed: Instant::now(),
                    previous: previous.map(|p| p.run),
                });
            }
        }
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.state.run
    }

    /// Where the run is.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    async fn write(&mut self, next: RunState) -> Result<(), RunError> {
        let backend = &self.store.inner.backend;
        let key = layout::collector_state();
        let data = Bytes::from(serde_json::to_vec(&next).map_err(|e| Error::Task(e.to_string()))?);
        let started = Instant::now();
        if !backend
            .compare_and_swap(&key, Some(&self.version), data)
            .await?
        {
            return Err(RunError::LostLease);
        }
        let (_, version) = backend
            .get_versioned(&key)
            .await?
            .ok_or(RunError::LostLease)?;
        self.version = version;
        self.state = next;
        self.renewed = started;
        Ok(())
    }

    /// Proves the run alive; call every [`HEARTBEAT`].
    pub async fn heartbeat(&mut self) -> Result<(), RunError> {
        let mut next = self.state.clone();
        next.heartbeat += 1;
        self.write(next).await
    }

    /// Fails unless the last heartbeat is recent enough that no writer can have given up
    /// on this run before a write started now lands (`deadline` bounds that write).
    pub fn check_lease(&self, deadline: Duration) -> Result<(), RunError> {
        if self.renewed.elapsed() + deadline + REFRESH < LEASE {
            Ok(())
        } else {
            Err(RunError::LostLease)
        }
    }

    /// Starts writing one of this run's sets; publish it with [`Run::propose_parts`] or
    /// [`Run::seal_parts`].
    pub fn set_writer(&self, kind: SetKind) -> SetWriter {
        SetWriter {
            backend: self.store.inner.backend.clone(),
            run: self.state.run.clone(),
            kind,
            buf: Vec::new(),
            parts: 0,
            count: 0,
        }
    }

    /// Reads back part `n` of one of this run's sets.
    pub async fn read_part(&self, kind: SetKind, n: u32) -> Result<SetPart> {
        let data = read_part(&self.store.inner.backend, &self.state.run, kind, n).await?;
        SetPart::new(
            data,
            layout::run_set_part(&self.state.run, kind.name(), n).as_ref(),
        )
    }

    /// Publishes the candidates written in `parts` parts: from now on writers rescue
    /// what they reuse.
    pub async fn propose_parts(&mut self, parts: u32) -> Result<(), RunError> {
        let mut next = self.state.clone();
        next.phase = Phase::Proposed;
        next.candidate_parts = parts;
        self.write(next).await
    }

    /// Publishes the sealed set written in `parts` parts: from now on writers treat it
    /// as absent.
    pub async fn seal_parts(&mut self, parts: u32) -> Result<(), RunError> {
        let mut next = self.state.clone();
        next.phase = Phase::Sealed;
        next.sealed_parts = parts;
        next.sweeps += 1;
        self.write(next).await
    }

    /// Publishes `candidates` (a whole set at once, for small runs and tests).
    pub async fn propose(&mut self, candidates: &ObjectSet) -> Result<(), RunError> {
        let parts = self.publish(SetKind::Candidates, candidates).await?;
        self.propose_parts(parts).await
    }

    /// Publishes `sealed` (a whole set at once, for small runs and tests).
    pub async fn seal(&mut self, sealed: &ObjectSet) -> Result<(), RunError> {
        let parts = self.publish(SetKind::Sealed, sealed).await?;
        self.seal_parts(parts).await
    }

    async fn publish(&self, kind: SetKind, set: &ObjectSet) -> Result<u32> {
        let mut w = self.set_writer(kind);
        for r in set.iter() {
            w.push(r, "").await?;
        }
        w.finish().await
    }

    /// Moves to `phase` (`Deleting`, `Done`, `Abandoned`).
    pub async fn set_phase(&mut self, phase: Phase) -> Result<(), RunError> {
        let mut next = self.state.clone();
        next.phase = phase;
        self.write(next).await
    }

    /// How many writing processes have renewed their presence within [`LEASE`] of the
    /// backend's clock now. Call it after publishing a step: none means no write checked
    /// against an earlier view can still land, so the step's wait can be skipped.
    /// Records long dead are removed.
    pub async fn live_writers(&self) -> Result<usize> {
        let backend = &self.store.inner.backend;
        let now = self.store.backend_now().await?;
        let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::MAX);
        let mut live = 0;
        for m in backend.list_all(&layout::writers_prefix()).await? {
            if m.last_modified > now - lease {
                live += 1;
            } else if m.last_modified < now - lease * 10 {
                // Its writer re-registers under a new key if it ever writes again.
                backend.delete(&m.location).await?;
            }
        }
        Ok(live)
    }

    /// Every object writers have rescued from this run so far.
    pub async fn rescues(&self) -> Result<ObjectSet> {
        let backend = &self.store.inner.backend;
        let listed = backend
            .list_all(&layout::run_rescues_prefix(&self.state.run))
            .await?;
        let mut all = ObjectSet::new();
        for m in listed {
            if let Some(data) = backend.get(&m.location).await? {
                for r in ObjectSet::decode(&data, m.location.as_ref())?.iter() {
                    all.insert(r.clone());
                }
            }
        }
        Ok(all)
    }

    /// Removes what runs before the previous one published (the previous run's sets
    /// stay one more run, for a writer that was away during it).
    pub async fn remove_old_runs(&self) -> Result<usize> {
        let backend = &self.store.inner.backend;
        let mut removed = 0;
        for m in backend.list_all(&layout::runs_prefix()).await? {
            match layout::parse_run(&m.location) {
                Some(run) if run != self.state.run && self.previous.as_ref() != Some(&run) => {
                    backend.delete(&m.location).await?;
                    removed += 1;
                }
                _ => {}
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_sets_round_trip() {
        let repo = RepoName::parse("a/b").unwrap();
        let d = Digest::sha256(b"x");
        let set: ObjectSet = [
            ObjectRef::Manifest(repo.clone(), d.clone()),
            ObjectRef::BlobLink(repo, d.clone()),
            ObjectRef::Recipe(d),
            ObjectRef::Pack(PackId::generate()),
            ObjectRef::Upload(UploadId::generate()),
        ]
        .into_iter()
        .collect();
        let back = ObjectSet::decode(&set.encode(), "k").unwrap();
        assert_eq!(back, set);
        assert_eq!(back.packs().len(), 1);
        assert!(ObjectSet::decode(b"x nonsense\n", "k").is_err());
    }
}
