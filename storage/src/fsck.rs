//! `fsck`: reads everything a store holds and reports what does not fit together: packs
//! whose footers are damaged, recipes pointing at chunks that are not where they say,
//! tags without their manifest, manifests without their blobs, upload sessions missing
//! a segment. It only reads. It reports and never repairs: which copy is right is a
//! decision for an operator, and a checker that deletes is one bug away from a
//! collector without a grace period.
//!
//! Phases run in order: the store identity, packs (footers; with `rehash`, every chunk
//! against its BLAKE3 id), recipes (against the pack footers; with `rehash`, every blob
//! against its digest), repositories (tags, manifest links and what the manifests need,
//! blob links, referrer records), upload sessions. Memory grows with metadata, not data:
//! the footer of every pack (40 bytes a chunk) and about a hundred bytes per blob are kept
//! for the run; data is streamed, a few reads at a time, and only with `rehash`.
//!
//! On a store in use a write can race the check (a manifest pushed between two
//! listings). A reference the listings miss is confirmed with a direct read before it is
//! reported, and an object deleted while being checked is skipped, so such races rarely
//! show; a finding that a second run does not repeat was one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Serialize, Serializer};

use crate::backend::{self, Backend};
use crate::chunk::ChunkId;
use crate::config::StoreIdentity;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::index;
use crate::layout::{self, RepoObject, UploadObject};
use crate::manifest;
use crate::names::{RepoName, Tag};
use crate::pack::{Footer, PackEntry, PackId, TRAILER_LEN};
use crate::reader;
use crate::recipe::{Body, ChunkRef, Recipe};
use crate::repo::{Descriptor, ManifestLink, TagRecord};
use crate::store::Store;
use crate::upload::{self, SessionState, UploadId};

/// Metadata reads in flight (footers, recipes, links): small objects, latency-bound.
const META_CONCURRENCY: usize = 32;
/// Checks in flight while re-hashing: each holds a read of up to 2 MiB of pack data
/// (or a blob stream's read-ahead), so this bounds the memory data costs.
const DATA_CONCURRENCY: usize = 4;
/// Longest single read of pack data while re-hashing its chunks.
const REHASH_READ_MAX: u64 = 2 << 20;
/// Manifests larger than this are not read into memory; no registry takes them.
const MANIFEST_READ_MAX: u64 = 64 << 20;

/// What [`Store::fsck`] checks beyond metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// Also read every chunk and every blob and check that they hash to their names:
    /// finds bit rot in data nobody has pulled, at the cost of reading all of it.
    pub rehash: bool,
}

/// The phases of a check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsckPhase {
    /// `stowage.json`.
    Identity,
    /// Pack footers, and chunks with `rehash`.
    Packs,
    /// Recipes against the packs, and blobs with `rehash`.
    Recipes,
    /// Tags, manifests, blob links and referrers of every repository.
    Repositories,
    /// Upload sessions and their segments.
    Uploads,
}

impl FsckPhase {
    /// A short name for progress output.
    pub fn name(self) -> &'static str {
        match self {
            FsckPhase::Identity => "identity",
            FsckPhase::Packs => "packs",
            FsckPhase::Recipes => "recipes",
            FsckPhase::Repositories => "repositories",
            FsckPhase::Uploads => "uploads",
        }
    }
}

impl fmt::Display for FsckPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How far a phase has got, so a command can draw a progress bar: reported once when
/// the phase knows how many items it has, then after every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckProgress {
    /// The phase running.
    pub phase: FsckPhase,
    /// Items of this phase checked so far.
    pub done: u64,
    /// Items this phase has in all.
    pub total: u64,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something a client can see fail (a pull, a read, a listing), or data lost.
    Error,
    /// Untidy but harmless to reads: they skip it or never need it.
    Warning,
}

impl Severity {
    /// The name, as printed and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What is wrong, as a stable kebab-case name scripts can match on
/// ([`FindingKind::as_str`]); each kind has one [`Severity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// `stowage.json` is missing or does not parse.
    BadIdentity,
    /// A pack's footer is unreadable or fails its checks, or its data is cut short.
    BadPack,
    /// A chunk's bytes do not hash to its id (found with `rehash`).
    ChunkMismatch,
    /// A recipe does not decode (checksum, truncation, chunk sizes).
    BadRecipe,
    /// A recipe describes another blob than the one it is filed under.
    RecipeDigestMismatch,
    /// A recipe or upload segment needs a pack that does not exist.
    MissingPack,
    /// A chunk ref does not match the footer of its pack, or the pack is damaged.
    BadChunkRef,
    /// Reading a blob failed its chunk checks (found with `rehash`).
    UnreadableBlob,
    /// A blob's bytes hash to another digest (found with `rehash`).
    BlobDigestMismatch,
    /// A tag record does not parse, has no history, or names another tag.
    BadTag,
    /// A tag points at a manifest the repository has no link for.
    DanglingTag,
    /// A manifest link does not parse.
    BadManifestLink,
    /// A manifest, or a blob a manifest needs, has no recipe.
    MissingBlob,
    /// A manifest's blob is not the size its link records.
    ManifestSizeMismatch,
    /// A manifest's blob is damaged, or reading it failed its checks.
    UnreadableManifest,
    /// A manifest's bytes do not parse as its media type.
    BadManifest,
    /// A blob a manifest needs is not linked in its repository.
    MissingBlobLink,
    /// A blob's size differs from the size a manifest's descriptor gives it.
    BlobSizeMismatch,
    /// A child of an index has no manifest link in the repository.
    MissingChildManifest,
    /// A blob link names a blob that has no recipe.
    DanglingBlobLink,
    /// A referrer record does not parse or describes another manifest than its key.
    BadReferrer,
    /// A referrer record whose manifest is gone (reads skip it).
    StaleReferrer,
    /// A manifest with a subject has no referrer record (the referrers API misses it).
    MissingReferrer,
    /// An upload session's state does not decode or does not add up.
    BadUpload,
    /// A segment named by an upload session's state does not exist.
    MissingSegment,
    /// An upload segment does not decode.
    BadSegment,
    /// An upload segment no session state names (an append that lost a race).
    OrphanSegment,
    /// Objects under `repos/<name>/` without the repository's catalog entry.
    UncatalogedRepository,
    /// A key the layout never makes, under one of its prefixes.
    UnknownObject,
}

impl FindingKind {
    /// The stable name, as printed and serialized.
    pub fn as_str(self) -> &'static str {
        use FindingKind::*;
        match self {
            BadIdentity => "bad-identity",
            BadPack => "bad-pack",
            ChunkMismatch => "chunk-mismatch",
            BadRecipe => "bad-recipe",
            RecipeDigestMismatch => "recipe-digest-mismatch",
            MissingPack => "missing-pack",
            BadChunkRef => "bad-chunk-ref",
            UnreadableBlob => "unreadable-blob",
            BlobDigestMismatch => "blob-digest-mismatch",
            BadTag => "bad-tag",
            DanglingTag => "dangling-tag",
            BadManifestLink => "bad-manifest-link",
            MissingBlob => "missing-blob",
            ManifestSizeMismatch => "manifest-size-mismatch",
            UnreadableManifest => "unreadable-manifest",
            BadManifest => "bad-manifest",
            MissingBlobLink => "missing-blob-link",
            BlobSizeMismatch => "blob-size-mismatch",
            MissingChildManifest => "missing-child-manifest",
            DanglingBlobLink => "dangling-blob-link",
            BadReferrer => "bad-referrer",
            StaleReferrer => "stale-referrer",
            MissingReferrer => "missing-referrer",
            BadUpload => "bad-upload",
            MissingSegment => "missing-segment",
            BadSegment => "bad-segment",
            OrphanSegment => "orphan-segment",
            UncatalogedRepository => "uncataloged-repository",
            UnknownObject => "unknown-object",
        }
    }

    /// How much this kind of finding matters.
    pub fn severity(self) -> Severity {
        use FindingKind::*;
        match self {
            StaleReferrer
            | MissingReferrer
            | BlobSizeMismatch
            | OrphanSegment
            | UncatalogedRepository
            | UnknownObject => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for FindingKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One inconsistency: what, where, and the values a person needs to look into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters (fixed by the kind).
    pub severity: Severity,
    /// What is wrong.
    pub kind: FindingKind,
    /// The object key it was found at.
    pub key: String,
    /// Details.
    pub message: String,
}

impl Finding {
    fn new(kind: FindingKind, key: &Path, message: impl Into<String>) -> Self {
        Finding {
            severity: kind.severity(),
            kind,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// How many objects of each kind were examined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FsckCounts {
    /// Pack objects.
    pub packs: u64,
    /// Chunks listed by pack footers.
    pub chunks: u64,
    /// Recipes (committed blobs).
    pub recipes: u64,
    /// Repositories: catalog entries and `repos/` prefixes.
    pub repositories: u64,
    /// Tag records.
    pub tags: u64,
    /// Manifest links.
    pub manifests: u64,
    /// Blob links.
    pub blob_links: u64,
    /// Referrer records.
    pub referrers: u64,
    /// Upload sessions with a state.
    pub uploads: u64,
    /// Segments named by those states.
    pub segments: u64,
}

impl std::ops::AddAssign for FsckCounts {
    fn add_assign(&mut self, o: Self) {
        self.packs += o.packs;
        self.chunks += o.chunks;
        self.recipes += o.recipes;
        self.repositories += o.repositories;
        self.tags += o.tags;
        self.manifests += o.manifests;
        self.blob_links += o.blob_links;
        self.referrers += o.referrers;
        self.uploads += o.uploads;
        self.segments += o.segments;
    }
}

/// What [`Store::fsck`] examined and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Objects examined, by kind.
    pub examined: FsckCounts,
    /// Bytes read and hashed again (chunks and blobs; zero without `rehash`).
    pub bytes_rehashed: u64,
    /// Packs no recipe or upload session refers to: left by writes that failed or
    /// lost a race, for the garbage collector. Not a finding.
    pub unreferenced_packs: u64,
    /// Every inconsistency, sorted by key.
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// True when nothing of [`Severity::Error`] was found (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.errors() == 0
    }

    /// Findings of [`Severity::Error`].
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Findings of [`Severity::Warning`].
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    fn absorb(&mut self, t: Tally) {
        self.examined += t.counts;
        self.bytes_rehashed += t.rehashed;
        self.findings.extend(t.findings);
    }
}

/// What one check found and counted; merged into the report as checks finish.
#[derive(Default)]
struct Tally {
    findings: Vec<Finding>,
    counts: FsckCounts,
    rehashed: u64,
}

impl Tally {
    fn find(&mut self, kind: FindingKind, key: &Path, message: impl Into<String>) {
        self.findings.push(Finding::new(kind, key, message));
    }
}

/// A pack as its footer was found.
enum PackState {
    Footer(Footer),
    /// Unreadable or failing its checks (already a finding of its own).
    Damaged,
}

/// A committed blob as its recipe was found.
#[derive(Debug, Clone, Copy)]
struct RecipeState {
    /// The blob's size, if the recipe decoded and is filed under its digest.
    size: Option<u64>,
    /// No finding against the recipe: its bytes can be read.
    healthy: bool,
}

impl RecipeState {
    const DAMAGED: RecipeState = RecipeState {
        size: None,
        healthy: false,
    };
}

/// The objects of one repository, from the listing of `repos/`.
#[derive(Default)]
struct RepoObjects {
    blob_links: HashSet<Digest>,
    manifests: HashSet<Digest>,
    tags: Vec<Tag>,
    referrers: HashSet<(Digest, Digest)>,
}

struct Repo {
    name: RepoName,
    objects: RepoObjects,
}

/// The objects of one upload session, from the listing of `uploads/`.
#[derive(Default)]
struct SessionObjects {
    state: bool,
    segments: Vec<Path>,
}

/// The reason of a `Corrupt` error, which is a finding; any other error is a failure of
/// the backend, which ends the check.
fn corrupt_reason(e: Error) -> Result<String> {
    match e {
        Error::Corrupt { reason, .. } => Ok(reason),
        e => Err(e),
    }
}

/// The read-only state of one run.
struct Run<'a> {
    store: &'a Store,
    backend: &'a Backend,
    rehash: bool,
    progress: &'a (dyn Fn(FsckProgress) + Send + Sync),
}

impl Store {
    /// Reads the whole store and reports every inconsistency between its objects (see
    /// [`FindingKind`]), changing nothing. `progress` hears how each phase advances.
    /// A damaged object is a finding; a failure of the backend itself (a listing or a
    /// read that errs) ends the check with `Err`.
    pub async fn fsck(
        &self,
        options: FsckOptions,
        progress: &(dyn Fn(FsckProgress) + Send + Sync),
    ) -> Result<FsckReport> {
        let run = Run {
            store: self,
            backend: &self.inner.backend,
            rehash: options.rehash,
            progress,
        };
        let mut report = FsckReport::default();
        run.identity(&mut report).await?;
        let packs = run.packs(&mut report).await?;
        let (recipes, mut referenced) = run.recipes(&packs, &mut report).await?;
        run.repositories(&recipes, &mut report).await?;
        referenced.extend(run.uploads(&packs, &mut report).await?);
        report.unreferenced_packs = packs.keys().filter(|p| !referenced.contains(p)).count() as u64;
        report
            .findings
            .sort_by(|a, b| (&a.key, a.kind).cmp(&(&b.key, b.kind)));
        Ok(report)
    }
}

impl Run<'_> {
    fn tick(&self, phase: FsckPhase, done: u64, total: usize) {
        (self.progress)(FsckProgress {
            phase,
            done,
            total: total as u64,
        });
    }

    /// Runs `check` on every item, `concurrency` at a time, merging what each finds
    /// into `report` and what each returns into `out`.
    async fn each<T, R, F, Fut>(
        &self,
        phase: FsckPhase,
        items: Vec<T>,
        concurrency: usize,
        report: &mut FsckReport,
        check: F,
        mut out: impl FnMut(R),
    ) -> Result<()>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<(Tally, R)>>,
    {
        let total = items.len();
        self.tick(phase, 0, total);
        let mut results = futures::stream::iter(items)
            .map(check)
            .buffer_unordered(concurrency);
        let mut done = 0;
        while let Some((tally, r)) = results.try_next().await? {
            report.absorb(tally);
            out(r);
            done += 1;
            self.tick(phase, done, total);
        }
        Ok(())
    }

    fn data_concurrency(&self) -> usize {
        if self.rehash {
            DATA_CONCURRENCY
        } else {
            META_CONCURRENCY
        }
    }

    // ----- identity -----

    async fn identity(&self, report: &mut FsckReport) -> Result<()> {
        self.tick(FsckPhase::Identity, 0, 1);
        let key = layout::config();
        let mut t = Tally::default();
        match self.backend.get(&key).await? {
            None => t.find(
                FindingKind::BadIdentity,
                &key,
                "the store has no identity file",
            ),
            Some(data) => {
                if let Err(e) = serde_json::from_slice::<StoreIdentity>(&data) {
                    t.find(
                        FindingKind::BadIdentity,
                        &key,
                        format!("does not parse: {e}"),
                    );
                }
            }
        }
        report.absorb(t);
        self.tick(FsckPhase::Identity, 1, 1);
        Ok(())
    }

    // ----- packs -----

    async fn packs(&self, report: &mut FsckReport) -> Result<HashMap<PackId, PackState>> {
        let listed = self.backend.list_all(&layout::packs_prefix()).await?;
        let mut packs = HashMap::with_capacity(listed.len());
        self.each(
            FsckPhase::Packs,
            listed,
            self.data_concurrency(),
            report,
            |meta| self.check_pack(meta.location, meta.size),
            |found| {
                if let Some((id, state)) = found {
                    packs.insert(id, state);
                }
            },
        )
        .await?;
        Ok(packs)
    }

    async fn check_pack(
        &self,
        key: Path,
        size: u64,
    ) -> Result<(Tally, Option<(PackId, PackState)>)> {
        let mut t = Tally::default();
        let Some(id) = layout::parse_pack(&key) else {
            t.find(FindingKind::UnknownObject, &key, "not a pack id");
            return Ok((t, None));
        };
        t.counts.packs += 1;
        if size < TRAILER_LEN as u64 {
            t.find(
                FindingKind::BadPack,
                &key,
                format!("{size} bytes: shorter than a pack's trailer"),
            );
            return Ok((t, Some((id, PackState::Damaged))));
        }
        let footer = match index::read_footer(self.backend, &id).await {
            Ok(f) => f,
            // Removed since it was listed.
            Err(e) if backend::is_not_found(&e) => return Ok((Tally::default(), None)),
            Err(e) => {
                t.find(FindingKind::BadPack, &key, corrupt_reason(e)?);
                return Ok((t, Some((id, PackState::Damaged))));
            }
        };
        t.counts.chunks += footer.entries().len() as u64;
        if self.rehash {
            self.rehash_pack(&key, &footer, &mut t).await?;
        }
        Ok((t, Some((id, PackState::Footer(footer)))))
    }

    /// Reads a pack's chunks in runs of neighbours and checks each against its id.
    async fn rehash_pack(&self, key: &Path, footer: &Footer, t: &mut Tally) -> Result<()> {
        let mut entries: Vec<PackEntry> = footer.entries().to_vec();
        entries.sort_unstable_by_key(|e| e.offset);
        let mut rest = &entries[..];
        while let Some(first) = rest.first() {
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.len);
            let mut n = 1;
            for e in &rest[1..] {
                let next = u64::from(e.offset);
                if next != end || next + u64::from(e.len) - start > REHASH_READ_MAX {
                    break;
                }
                end = next + u64::from(e.len);
                n += 1;
            }
            let (run, after) = rest.split_at(n);
            rest = after;
            let data = match self.backend.get_range(key, start..end).await {
                Ok(d) => d,
                Err(e) if backend::is_not_found(&e) => return Ok(()),
                Err(e) => {
                    t.find(FindingKind::BadPack, key, corrupt_reason(e)?);
                    return Ok(());
                }
            };
            let run = run.to_vec();
            let bad: Vec<PackEntry> = tokio::task::spawn_blocking(move || {
                run.into_iter()
                    .filter(|e| {
                        let from = (u64::from(e.offset) - start) as usize;
                        ChunkId::of(&data[from..from + e.len as usize]) != e.id
                    })
                    .collect()
            })
            .await?;
            t.rehashed += end - start;
            for e in bad {
                t.find(
                    FindingKind::ChunkMismatch,
                    key,
                    format!(
                        "chunk {} at offset {} ({} bytes) does not hash to its id",
                        e.id, e.offset, e.len
                    ),
                );
            }
        }
        Ok(())
    }

    // ----- recipes -----

    async fn recipes(
        &self,
        packs: &HashMap<PackId, PackState>,
        report: &mut FsckReport,
    ) -> Result<(HashMap<Digest, RecipeState>, HashSet<PackId>)> {
        let listed = self.backend.list_all(&layout::blobs_prefix()).await?;
        let mut recipes = HashMap::with_capacity(listed.len());
        let mut referenced = HashSet::new();
        self.each(
            FsckPhase::Recipes,
            listed,
            self.data_concurrency(),
            report,
            |meta| self.check_recipe(meta.location, packs),
            |(found, used)| {
                if let Some((digest, state)) = found {
                    recipes.insert(digest, state);
                }
                referenced.extend(used);
            },
        )
        .await?;
        Ok((recipes, referenced))
    }

    async fn check_recipe(
        &self,
        key: Path,
        packs: &HashMap<PackId, PackState>,
    ) -> Result<(Tally, (Option<(Digest, RecipeState)>, Vec<PackId>))> {
        let mut t = Tally::default();
        let digest = match layout::parse_recipe(&key) {
            Some(d) if layout::recipe(&d) == key => d,
            _ => {
                t.find(
                    FindingKind::UnknownObject,
                    &key,
                    "not where a recipe belongs",
                );
                return Ok((t, (None, Vec::new())));
            }
        };
        let Some(data) = self.backend.get(&key).await? else {
            return Ok((t, (None, Vec::new())));
        };
        t.counts.recipes += 1;
        let recipe = match Recipe::decode(&data, key.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                t.find(FindingKind::BadRecipe, &key, corrupt_reason(e)?);
                return Ok((t, (Some((digest, RecipeState::DAMAGED)), Vec::new())));
            }
        };
        if recipe.digest != digest {
            t.find(
                FindingKind::RecipeDigestMismatch,
                &key,
                format!("filed as {digest}, describes {}", recipe.digest),
            );
            return Ok((t, (Some((digest, RecipeState::DAMAGED)), Vec::new())));
        }
        let mut used = Vec::new();
        if let Body::Chunks(refs) = &recipe.body {
            used = self.check_refs(&key, refs, packs, &mut t).await?;
        }
        let mut healthy = t.findings.is_empty();
        if healthy && self.rehash {
            healthy = self.rehash_blob(&key, recipe.clone(), &mut t).await?;
        }
        let state = RecipeState {
            size: Some(recipe.size),
            healthy,
        };
        Ok((t, (Some((digest, state)), used)))
    }

    /// Checks chunk refs (of a recipe or an upload segment at `key`) against the
    /// footers of their packs; returns the packs they use.
    async fn check_refs(
        &self,
        key: &Path,
        refs: &[ChunkRef],
        packs: &HashMap<PackId, PackState>,
        t: &mut Tally,
    ) -> Result<Vec<PackId>> {
        let mut by_pack: BTreeMap<PackId, Vec<&ChunkRef>> = BTreeMap::new();
        for c in refs {
            by_pack.entry(c.at.pack).or_default().push(c);
        }
        for (pack, refs) in &by_pack {
            let n = refs.len();
            let footer: Cow<'_, Footer> = match packs.get(pack) {
                Some(PackState::Footer(f)) => Cow::Borrowed(f),
                Some(PackState::Damaged) => {
                    t.find(
                        FindingKind::BadChunkRef,
                        key,
                        format!("{n} of its chunks are in pack {pack}, which is damaged"),
                    );
                    continue;
                }
                // Not listed: written since, or missing.
                None => {
                    match index::read_footer(self.backend, pack).await {
                        Ok(f) => Cow::Owned(f),
                        Err(e) if backend::is_not_found(&e) => {
                            t.find(
                                FindingKind::MissingPack,
                                key,
                                format!("pack {pack}, holding {n} of its chunks, does not exist"),
                            );
                            continue;
                        }
                        Err(e) => {
                            let reason = corrupt_reason(e)?;
                            t.find(
                            FindingKind::BadChunkRef,
                            key,
                            format!("{n} of its chunks are in pack {pack}, which is damaged: {reason}"),
                        );
                            continue;
                        }
                    }
                }
            };
            let wrong: Vec<&&ChunkRef> = refs
                .iter()
                .filter(|c| {
                    footer
                        .find(&c.id)
                        .is_none_or(|e| e.offset != c.at.offset || e.len != c.at.len)
                })
                .collect();
            if let Some(c) = wrong.first() {
                t.find(
                    FindingKind::BadChunkRef,
                    key,
                    format!(
                        "{} of its {n} chunks in pack {pack} are not in the pack's footer as \
                         recorded, the first chunk {} at offset {} ({} bytes)",
                        wrong.len(),
                        c.id,
                        c.at.offset,
                        c.at.len
                    ),
                );
            }
        }
        Ok(by_pack.into_keys().collect())
    }

    /// Streams a blob and hashes it; false if it is not what its recipe promises.
    async fn rehash_blob(&self, key: &Path, recipe: Recipe, t: &mut Tally) -> Result<bool> {
        let expected = recipe.digest.clone();
        let size = recipe.size;
        let mut hasher = Hasher::new(expected.algorithm());
        let mut stream = reader::stream(self.backend.clone(), recipe, 0..size);
        while let Some(part) = stream.next().await {
            let bytes = match part {
                Ok(b) => b,
                // A pack removed since it was checked: nothing to say about this blob.
                Err(e) if backend::is_not_found(&e) => return Ok(true),
                Err(e) => {
                    let reason = corrupt_reason(e)?;
                    t.find(FindingKind::UnreadableBlob, key, reason);
                    return Ok(false);
                }
            };
            t.rehashed += bytes.len() as u64;
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&bytes);
                hasher
            })
            .await?;
        }
        let actual = hasher.finish();
        if actual != expected {
            t.find(
                FindingKind::BlobDigestMismatch,
                key,
                format!("the blob's bytes hash to {actual}"),
            );
            return Ok(false);
        }
        Ok(true)
    }

    // ----- repositories -----

    async fn repositories(
        &self,
        recipes: &HashMap<Digest, RecipeState>,
        report: &mut FsckReport,
    ) -> Result<()> {
        let mut t = Tally::default();
        let mut catalog = HashSet::new();
        for meta in self
            .backend
            .list_all(&layout::repositories_prefix(None))
            .await?
        {
            match layout::parse_repository_entry(&meta.location) {
                Some(name) => {
                    catalog.insert(name);
                }
                None => t.find(
                    FindingKind::UnknownObject,
                    &meta.location,
                    "not a catalog entry",
                ),
            }
        }
        let mut repos: BTreeMap<RepoName, RepoObjects> = catalog
            .iter()
            .map(|n| (n.clone(), RepoObjects::default()))
            .collect();
        for meta in self.backend.list_all(&layout::repos_prefix()).await? {
            let Some((name, object)) = layout::parse_repo_object(&meta.location) else {
                t.find(
                    FindingKind::UnknownObject,
                    &meta.location,
                    "not a repository object",
                );
                continue;
            };
            let objects = repos.entry(name).or_default();
            match object {
                RepoObject::BlobLink(d) => {
                    objects.blob_links.insert(d);
                }
                RepoObject::ManifestLink(d) => {
                    objects.manifests.insert(d);
                }
                RepoObject::Tag(tag) => objects.tags.push(tag),
                RepoObject::Referrer { subject, referrer } => {
                    objects.referrers.insert((subject, referrer));
                }
            }
        }
        t.counts.repositories = repos.len() as u64;
        let mut items = Vec::new();
        for (name, objects) in repos {
            if !catalog.contains(&name) {
                t.find(
                    FindingKind::UncatalogedRepository,
                    &layout::repository_entry(&name),
                    format!("repository {name} holds objects but has no catalog entry"),
                );
            }
            let repo = Arc::new(Repo { name, objects });
            let o = &repo.objects;
            items.extend(
                o.tags
                    .iter()
                    .map(|x| (repo.clone(), RepoObject::Tag(x.clone()))),
            );
            items.extend(
                o.manifests
                    .iter()
                    .map(|d| (repo.clone(), RepoObject::ManifestLink(d.clone()))),
            );
            items.extend(
                o.blob_links
                    .iter()
                    .map(|d| (repo.clone(), RepoObject::BlobLink(d.clone()))),
            );
            items.extend(o.referrers.iter().map(|(s, r)| {
                let object = RepoObject::Referrer {
                    subject: s.clone(),
                    referrer: r.clone(),
                };
                (repo.clone(), object)
            }));
        }
        report.absorb(t);
        self.each(
            FsckPhase::Repositories,
            items,
            META_CONCURRENCY,
            report,
            |(repo, object)| async move {
                let t = match object {
                    RepoObject::Tag(tag) => self.check_tag(&repo, &tag).await?,
                    RepoObject::ManifestLink(d) => self.check_manifest(&repo, &d, recipes).await?,
                    RepoObject::BlobLink(d) => self.check_blob_link(&repo, &d, recipes).await?,
                    RepoObject::Referrer { subject, referrer } => {
                        self.check_referrer(&repo, &subject, &referrer).await?
                    }
                };
                Ok((t, ()))
            },
            |()| {},
        )
        .await
    }

    /// The state of a blob's recipe; one committed since the listing is read now.
    async fn recipe_state(
        &self,
        recipes: &HashMap<Digest, RecipeState>,
        digest: &Digest,
    ) -> Result<Option<RecipeState>> {
        if let Some(s) = recipes.get(digest) {
            return Ok(Some(*s));
        }
        match self.store.blob(digest).await {
            Ok(info) => Ok(info.map(|i| RecipeState {
                size: Some(i.size),
                healthy: true,
            })),
            Err(e) => {
                corrupt_reason(e)?;
                Ok(Some(RecipeState::DAMAGED))
            }
        }
    }

    async fn has_manifest_link(&self, repo: &Repo, digest: &Digest) -> Result<bool> {
        Ok(repo.objects.manifests.contains(digest)
            || self
                .exists(&layout::manifest_link(&repo.name, digest))
                .await?)
    }

    async fn has_blob_link(&self, repo: &Repo, digest: &Digest) -> Result<bool> {
        Ok(repo.objects.blob_links.contains(digest)
            || self.exists(&layout::blob_link(&repo.name, digest)).await?)
    }

    async fn exists(&self, key: &Path) -> Result<bool> {
        Ok(self.backend.head(key).await?.is_some())
    }

    async fn check_tag(&self, repo: &Repo, tag: &Tag) -> Result<Tally> {
        let mut t = Tally::default();
        let key = layout::tag(&repo.name, tag);
        let Some(data) = self.backend.get(&key).await? else {
            return Ok(t);
        };
        t.counts.tags += 1;
        let record: TagRecord = match serde_json::from_slice(&data) {
            Ok(r) => r,
            Err(e) => {
                t.find(FindingKind::BadTag, &key, format!("does not parse: {e}"));
                return Ok(t);
            }
        };
        if &record.tag != tag {
            t.find(
                FindingKind::BadTag,
                &key,
                format!("the record is for tag {}", record.tag),
            );
        }
        let Some(current) = record.history.first() else {
            t.find(FindingKind::BadTag, &key, "the tag has no history");
            return Ok(t);
        };
        if !self.has_manifest_link(repo, &current.digest).await? {
            t.find(
                FindingKind::DanglingTag,
                &key,
                format!(
                    "points at {}, which has no manifest link in {}",
                    current.digest, repo.name
                ),
            );
        }
        Ok(t)
    }

    async fn check_manifest(
        &self,
        repo: &Repo,
        digest: &Digest,
        recipes: &HashMap<Digest, RecipeState>,
    ) -> Result<Tally> {
        let mut t = Tally::default();
        let key = layout::manifest_link(&repo.name, digest);
        let Some(data) = self.backend.get(&key).await? else {
            return Ok(t);
        };
        t.counts.manifests += 1;
        let link: ManifestLink = match serde_json::from_slice(&data) {
            Ok(l) => l,
            Err(e) => {
                t.find(
                    FindingKind::BadManifestLink,
                    &key,
                    format!("does not parse: {e}"),
                );
                return Ok(t);
            }
        };
        match self.recipe_state(recipes, digest).await? {
            None => {
                t.find(
                    FindingKind::MissingBlob,
                    &key,
                    format!("the manifest's own blob {digest} has no recipe"),
                );
                return Ok(t);
            }
            Some(s) if !s.healthy => {
                t.find(
                    FindingKind::UnreadableManifest,
                    &key,
                    format!(
                        "the manifest's blob is damaged (see the findings for {})",
                        layout::recipe(digest)
                    ),
                );
                return Ok(t);
            }
            Some(s) if s.size != Some(link.size) => {
                t.find(
                    FindingKind::ManifestSizeMismatch,
                    &key,
                    format!(
                        "the link records {} bytes, the blob has {}",
                        link.size,
                        s.size.unwrap_or_default()
                    ),
                );
                return Ok(t);
            }
            Some(_) => {}
        }
        if link.size > MANIFEST_READ_MAX {
            t.find(
                FindingKind::BadManifest,
                &key,
                format!("{} bytes: too large to be a manifest", link.size),
            );
            return Ok(t);
        }
        let bytes = match self.store.blob_bytes(digest).await {
            Ok(b) => b,
            Err(Error::BlobNotFound(_)) => return Ok(t),
            Err(e) if backend::is_not_found(&e) => return Ok(t),
            Err(e) => {
                let reason = corrupt_reason(e)?;
                t.find(FindingKind::UnreadableManifest, &key, reason);
                return Ok(t);
            }
        };
        let parsed = match manifest::parse(&link.media_type, &bytes) {
            Ok(p) => p,
            Err(e) => {
                t.find(
                    FindingKind::BadManifest,
                    &key,
                    format!("not a valid {}: {e}", link.media_type),
                );
                return Ok(t);
            }
        };
        for blob in parsed.required_blobs() {
            let d = &blob.digest;
            if !self.has_blob_link(repo, d).await? {
                t.find(
                    FindingKind::MissingBlobLink,
                    &key,
                    format!(
                        "needs blob {d} ({}), which is not linked in {}",
                        blob.media_type, repo.name
                    ),
                );
            }
            match self.recipe_state(recipes, d).await? {
                None => t.find(
                    FindingKind::MissingBlob,
                    &key,
                    format!("needs blob {d} ({}), which has no recipe", blob.media_type),
                ),
                Some(RecipeState {
                    size: Some(size), ..
                }) if size != blob.size => t.find(
                    FindingKind::BlobSizeMismatch,
                    &key,
                    format!("describes blob {d} as {} bytes; it has {size}", blob.size),
                ),
                Some(_) => {}
            }
        }
        for child in &parsed.manifests {
            if !self.has_manifest_link(repo, &child.digest).await? {
                t.find(
                    FindingKind::MissingChildManifest,
                    &key,
                    format!(
                        "lists manifest {}, which has no manifest link in {}",
                        child.digest, repo.name
                    ),
                );
            }
        }
        if let Some(subject) = &parsed.subject {
            let pair = (subject.digest.clone(), digest.clone());
            let record = layout::referrer(&repo.name, &subject.digest, digest);
            if !repo.objects.referrers.contains(&pair) && !self.exists(&record).await? {
                t.find(
                    FindingKind::MissingReferrer,
                    &key,
                    format!(
                        "has subject {} but no referrer record ({record})",
                        subject.digest
                    ),
                );
            }
        }
        Ok(t)
    }

    async fn check_blob_link(
        &self,
        repo: &Repo,
        digest: &Digest,
        recipes: &HashMap<Digest, RecipeState>,
    ) -> Result<Tally> {
        let mut t = Tally::default();
        t.counts.blob_links += 1;
        if self.recipe_state(recipes, digest).await?.is_none() {
            // Unlinked since the listing: not a finding.
            let key = layout::blob_link(&repo.name, digest);
            if self.exists(&key).await? {
                t.find(
                    FindingKind::DanglingBlobLink,
                    &key,
                    format!("links blob {digest}, which has no recipe"),
                );
            }
        }
        Ok(t)
    }

    async fn check_referrer(
        &self,
        repo: &Repo,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<Tally> {
        let mut t = Tally::default();
        let key = layout::referrer(&repo.name, subject, referrer);
        let Some(data) = self.backend.get(&key).await? else {
            return Ok(t);
        };
        t.counts.referrers += 1;
        let descriptor: Descriptor = match serde_json::from_slice(&data) {
            Ok(d) => d,
            Err(e) => {
                t.find(
                    FindingKind::BadReferrer,
                    &key,
                    format!("does not parse: {e}"),
                );
                return Ok(t);
            }
        };
        if &descriptor.digest != referrer {
            t.find(
                FindingKind::BadReferrer,
                &key,
                format!("filed as {referrer}, describes {}", descriptor.digest),
            );
            return Ok(t);
        }
        if !self.has_manifest_link(repo, referrer).await? {
            t.find(
                FindingKind::StaleReferrer,
                &key,
                format!(
                    "manifest {referrer} is no longer in {}; reads skip this record",
                    repo.name
                ),
            );
        }
        Ok(t)
    }

    // ----- upload sessions -----

    async fn uploads(
        &self,
        packs: &HashMap<PackId, PackState>,
        report: &mut FsckReport,
    ) -> Result<HashSet<PackId>> {
        let mut t = Tally::default();
        let mut sessions: BTreeMap<UploadId, SessionObjects> = BTreeMap::new();
        for meta in self.backend.list_all(&layout::uploads_prefix()).await? {
            match layout::parse_upload_object(&meta.location) {
                Some((id, UploadObject::State)) => sessions.entry(id).or_default().state = true,
                Some((id, UploadObject::Segment { .. })) => {
                    sessions.entry(id).or_default().segments.push(meta.location)
                }
                None => t.find(
                    FindingKind::UnknownObject,
                    &meta.location,
                    "not an upload state or segment",
                ),
            }
        }
        report.absorb(t);
        let mut referenced = HashSet::new();
        self.each(
            FsckPhase::Uploads,
            sessions.into_iter().collect(),
            META_CONCURRENCY,
            report,
            |(id, objects)| self.check_upload(id, objects, packs),
            |used| referenced.extend(used),
        )
        .await?;
        Ok(referenced)
    }

    async fn check_upload(
        &self,
        id: UploadId,
        objects: SessionObjects,
        packs: &HashMap<PackId, PackState>,
    ) -> Result<(Tally, Vec<PackId>)> {
        let mut t = Tally::default();
        let mut used = Vec::new();
        let key = layout::upload_state(&id);
        let data = match objects.state {
            true => self.backend.get(&key).await?,
            false => None,
        };
        let Some(data) = data else {
            for segment in &objects.segments {
                // Removed since the listing, with its session.
                if self.exists(segment).await? {
                    t.find(
                        FindingKind::OrphanSegment,
                        segment,
                        format!("upload {id} has no state (finished or cancelled)"),
                    );
                }
            }
            return Ok((t, used));
        };
        t.counts.uploads += 1;
        let state = match SessionState::decode(&data, key.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                t.find(FindingKind::BadUpload, &key, corrupt_reason(e)?);
                return Ok((t, used));
            }
        };
        if Hasher::restore(state.algorithm, &state.hash_state).is_none() {
            t.find(
                FindingKind::BadUpload,
                &key,
                "its hash midstate cannot be restored",
            );
        }
        let mut held = state.tail.len() as u64;
        let mut complete = true;
        let mut named = HashSet::new();
        for (i, nonce) in state.segments.iter().enumerate() {
            let seg = layout::upload_segment(&id, i as u32, nonce);
            named.insert(seg.clone());
            t.counts.segments += 1;
            let Some(data) = self.backend.get(&seg).await? else {
                t.find(
                    FindingKind::MissingSegment,
                    &seg,
                    format!("named by the state of upload {id} as append #{i}"),
                );
                complete = false;
                continue;
            };
            let refs = match upload::decode_segment(&data, seg.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    t.find(FindingKind::BadSegment, &seg, corrupt_reason(e)?);
                    complete = false;
                    continue;
                }
            };
            held += refs.iter().map(|c| u64::from(c.at.len)).sum::<u64>();
            used.extend(self.check_refs(&seg, &refs, packs, &mut t).await?);
        }
        if complete && held != state.offset {
            t.find(
                FindingKind::BadUpload,
                &key,
                format!(
                    "its segments and tail hold {held} bytes; the state says {} were received",
                    state.offset
                ),
            );
        }
        for segment in objects.segments.iter().filter(|s| !named.contains(*s)) {
            t.find(
                FindingKind::OrphanSegment,
                segment,
                format!("not named by the state of upload {id} (an append that lost a race)"),
            );
        }
        Ok((t, used))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::index::Location;
    use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::testkit::{self, Kind, TestStore, random_bytes, stream_of};

    const BOTH: [Kind; 2] = [Kind::Memory, Kind::Local];

    /// A store holding an image (config, a chunked layer, a foreign layer that is not
    /// pushed), an index of it, an artifact referring to it, two tags and an upload
    /// in progress.
    struct Pushed {
        t: TestStore,
        repo: RepoName,
        layer: Digest,
        config: Digest,
        image: Digest,
        index: Digest,
        artifact: Digest,
        upload: UploadId,
    }

    fn descriptor(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
    }

    async fn push(kind: Kind) -> Pushed {
        let t = testkit::open(kind).await;
        let repo = RepoName::parse("fsck/app").unwrap();
        let r = t.store.repository(&repo);
        let layer_bytes = random_bytes(300_000, 1);
        let layer = Digest::sha256(&layer_bytes);
        r.put_blob(&layer, stream_of(layer_bytes, vec![64 << 10]))
            .await
            .unwrap();
        let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let config = Digest::sha256(&config_bytes);
        r.put_blob(&config, stream_of(config_bytes.clone(), vec![4096]))
            .await
            .unwrap();
        let image_bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config, config_bytes.len()),
            "layers": [
                descriptor("application/vnd.oci.image.layer.v1.tar", &layer, 300_000),
                descriptor(
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    &Digest::sha256(b"foreign layer, never pushed"),
                    1234,
                ),
            ],
        }))
        .unwrap();
        let image = Digest::sha256(&image_bytes);
        let image_size = image_bytes.len();
        r.put_manifest(
            &image,
            OCI_MANIFEST,
            Bytes::from(image_bytes),
            None,
            &Default::default(),
        )
        .await
        .unwrap();
        let index_bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, &image, image_size)],
        }))
        .unwrap();
        let index = Digest::sha256(&index_bytes);
        r.put_manifest(
            &index,
            OCI_INDEX,
            Bytes::from(index_bytes),
            None,
            &Default::default(),
        )
        .await
        .unwrap();
        let empty = Digest::sha256(b"{}");
        r.put_blob(&empty, stream_of(b"{}".to_vec(), vec![2]))
            .await
            .unwrap();
        let artifact_bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": descriptor("application/vnd.oci.empty.v1+json", &empty, 2),
            "layers": [],
            "subject": descriptor(OCI_MANIFEST, &image, image_size),
        }))
        .unwrap();
        let artifact = Digest::sha256(&artifact_bytes);
        let me = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: artifact.clone(),
            size: artifact_bytes.len() as u64,
            artifact_type: Some("application/vnd.example.sig".into()),
            annotations: None,
        };
        r.put_manifest(
            &artifact,
            OCI_MANIFEST,
            Bytes::from(artifact_bytes),
            Some((&image, &me)),
            &Default::default(),
        )
        .await
        .unwrap();
        r.set_tag(&Tag::parse("latest").unwrap(), &index)
            .await
            .unwrap();
        r.set_tag(&Tag::parse("v1").unwrap(), &image).await.unwrap();
        let upload = t.store.start_upload(&repo).await.unwrap().id;
        let part = random_bytes(400_000, 2);
        t.store
            .append_upload(&upload, &repo, 0, stream_of(part, vec![64 << 10]))
            .await
            .unwrap();
        Pushed {
            t,
            repo,
            layer,
            config,
            image,
            index,
            artifact,
            upload,
        }
    }

    impl Pushed {
        fn backend(&self) -> &Backend {
            &self.t.store.inner.backend
        }

        async fn fsck(&self, rehash: bool) -> FsckReport {
            self.t
                .store
                .fsck(FsckOptions { rehash }, &|_| {})
                .await
                .unwrap()
        }

        /// The pack holding the layer's first chunk.
        async fn layer_pack(&self) -> (Path, Location) {
            let Body::Chunks(refs) = self.t.store.recipe(&self.layer).await.unwrap().body else {
                panic!("the layer is chunked");
            };
            (layout::pack(&refs[0].at.pack), refs[0].at)
        }
    }

    fn has(report: &FsckReport, kind: FindingKind, key: &Path) -> bool {
        report
            .findings
            .iter()
            .any(|f| f.kind == kind && f.key == key.as_ref())
    }

    #[track_caller]
    fn assert_found(report: &FsckReport, kind: FindingKind, key: &Path) {
        assert!(
            has(report, kind, key),
            "expected {kind} at {key}, found {:#?}",
            report.findings
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pushed_image_is_clean() {
        for kind in BOTH {
            let p = push(kind).await;
            for rehash in [false, true] {
                let seen = std::sync::Mutex::new(Vec::new());
                let report =
                    p.t.store
                        .fsck(FsckOptions { rehash }, &|e| {
                            seen.lock().unwrap().push(e);
                        })
                        .await
                        .unwrap();
                assert!(
                    report.findings.is_empty(),
                    "{kind:?}: {:#?}",
                    report.findings
                );
                assert!(report.is_clean());
                let e = report.examined;
                assert_eq!(
                    (e.recipes, e.repositories, e.tags, e.manifests, e.blob_links),
                    (6, 1, 2, 3, 3),
                    "{e:?}"
                );
                assert_eq!((e.referrers, e.uploads), (1, 1), "{e:?}");
                assert!(e.packs >= 2 && e.chunks >= 10 && e.segments >= 1, "{e:?}");
                assert_eq!(report.unreferenced_packs, 0);
                if rehash {
                    // Every chunk (layer and upload) and every blob (the layer again).
                    assert!(report.bytes_rehashed > 2 * 300_000, "{report:?}");
                } else {
                    assert_eq!(report.bytes_rehashed, 0);
                }
                // Every phase, in order, each ending at its total.
                let seen = seen.into_inner().unwrap();
                let mut phases: Vec<FsckPhase> = seen.iter().map(|e| e.phase).collect();
                phases.dedup();
                use FsckPhase::*;
                assert_eq!(phases, [Identity, Packs, Recipes, Repositories, Uploads]);
                for phase in phases {
                    let last = seen.iter().rfind(|e| e.phase == phase).unwrap();
                    assert_eq!(last.done, last.total, "{phase}");
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flipped_pack_byte_is_found_by_rehashing() {
        for kind in BOTH {
            let p = push(kind).await;
            let (pack, at) = p.layer_pack().await;
            let mut bytes = p.backend().get(&pack).await.unwrap().unwrap().to_vec();
            bytes[at.offset as usize + 100] ^= 0x01;
            p.backend().put(&pack, Bytes::from(bytes)).await.unwrap();
            // Footers and recipes still agree: only reading the data shows it.
            assert!(p.fsck(false).await.findings.is_empty(), "{kind:?}");
            let report = p.fsck(true).await;
            assert!(!report.is_clean());
            assert_found(&report, FindingKind::ChunkMismatch, &pack);
            assert_found(
                &report,
                FindingKind::UnreadableBlob,
                &layout::recipe(&p.layer),
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_pack_is_missing_for_its_recipe() {
        for kind in BOTH {
            let p = push(kind).await;
            let (pack, _) = p.layer_pack().await;
            p.backend().delete(&pack).await.unwrap();
            for rehash in [false, true] {
                let report = p.fsck(rehash).await;
                assert!(!report.is_clean());
                assert_found(&report, FindingKind::MissingPack, &layout::recipe(&p.layer));
            }
        }
    }

    #[tokio::test]
    async fn a_recipe_deleted_under_a_manifest_is_a_missing_blob() {
        let p = push(Kind::Memory).await;
        p.backend().delete(&layout::recipe(&p.layer)).await.unwrap();
        let report = p.fsck(false).await;
        assert_found(
            &report,
            FindingKind::MissingBlob,
            &layout::manifest_link(&p.repo, &p.image),
        );
        assert_found(
            &report,
            FindingKind::DanglingBlobLink,
            &layout::blob_link(&p.repo, &p.layer),
        );
        // A manifest whose own blob is gone.
        p.backend().delete(&layout::recipe(&p.index)).await.unwrap();
        let report = p.fsck(false).await;
        assert_found(
            &report,
            FindingKind::MissingBlob,
            &layout::manifest_link(&p.repo, &p.index),
        );
    }

    #[tokio::test]
    async fn a_tag_whose_manifest_link_is_gone_dangles() {
        let p = push(Kind::Memory).await;
        p.backend()
            .delete(&layout::manifest_link(&p.repo, &p.image))
            .await
            .unwrap();
        let report = p.fsck(false).await;
        let v1 = Tag::parse("v1").unwrap();
        assert_found(
            &report,
            FindingKind::DanglingTag,
            &layout::tag(&p.repo, &v1),
        );
        assert_found(
            &report,
            FindingKind::MissingChildManifest,
            &layout::manifest_link(&p.repo, &p.index),
        );
        // The artifact's record names a subject that is gone, not the artifact: fine.
        let latest = Tag::parse("latest").unwrap();
        assert!(!has(
            &report,
            FindingKind::DanglingTag,
            &layout::tag(&p.repo, &latest)
        ));
    }

    #[tokio::test]
    async fn a_blob_link_without_a_recipe_dangles() {
        let p = push(Kind::Memory).await;
        let key = layout::blob_link(&p.repo, &Digest::sha256(b"never pushed"));
        p.backend()
            .put(
                &key,
                Bytes::from_static(b"{\"created\":\"2024-01-01T00:00:00Z\"}"),
            )
            .await
            .unwrap();
        let report = p.fsck(false).await;
        assert_found(&report, FindingKind::DanglingBlobLink, &key);
        assert_eq!(report.errors(), 1, "{:#?}", report.findings);
    }

    #[tokio::test]
    async fn a_stale_referrer_is_a_warning() {
        let p = push(Kind::Memory).await;
        p.backend()
            .delete(&layout::manifest_link(&p.repo, &p.artifact))
            .await
            .unwrap();
        let report = p.fsck(false).await;
        let record = layout::referrer(&p.repo, &p.image, &p.artifact);
        assert_found(&report, FindingKind::StaleReferrer, &record);
        assert!(
            report.is_clean(),
            "reads skip stale records: {:#?}",
            report.findings
        );
        assert_eq!(report.warnings(), 1);
        // A record that does not parse is an error: it breaks the referrers listing.
        p.backend()
            .put(&record, Bytes::from_static(b"not json"))
            .await
            .unwrap();
        assert_found(&p.fsck(false).await, FindingKind::BadReferrer, &record);
    }

    #[tokio::test]
    async fn a_manifest_without_its_referrer_record_is_a_warning() {
        let p = push(Kind::Memory).await;
        let record = layout::referrer(&p.repo, &p.image, &p.artifact);
        p.backend().delete(&record).await.unwrap();
        let report = p.fsck(false).await;
        assert_found(
            &report,
            FindingKind::MissingReferrer,
            &layout::manifest_link(&p.repo, &p.artifact),
        );
        assert!(report.is_clean());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncated_garbage_and_misfiled_recipes_are_found() {
        for kind in BOTH {
            let p = push(kind).await;
            let layer_key = layout::recipe(&p.layer);
            let data = p.backend().get(&layer_key).await.unwrap().unwrap();
            p.backend()
                .put(&layer_key, data.slice(..data.len() / 2))
                .await
                .unwrap();
            let config_key = layout::recipe(&p.config);
            p.backend()
                .put(
                    &config_key,
                    Bytes::from_static(b"garbage, not a recipe at all"),
                )
                .await
                .unwrap();
            // A sound recipe filed under another blob's digest.
            let misfiled = layout::recipe(&Digest::sha256(b"elsewhere"));
            let index_recipe = p
                .backend()
                .get(&layout::recipe(&p.index))
                .await
                .unwrap()
                .unwrap();
            p.backend().put(&misfiled, index_recipe).await.unwrap();
            let report = p.fsck(true).await;
            assert_found(&report, FindingKind::BadRecipe, &layer_key);
            assert_found(&report, FindingKind::BadRecipe, &config_key);
            assert_found(&report, FindingKind::RecipeDigestMismatch, &misfiled);
        }
    }

    #[tokio::test]
    async fn a_chunk_ref_that_disagrees_with_its_footer_is_found() {
        let p = push(Kind::Memory).await;
        let mut recipe = p.t.store.recipe(&p.layer).await.unwrap();
        let Body::Chunks(refs) = &mut recipe.body else {
            panic!("chunked");
        };
        // Off by one byte: sizes still add up, the recipe still decodes.
        refs[1].at.offset += 1;
        let key = layout::recipe(&p.layer);
        p.backend().put(&key, recipe.encode()).await.unwrap();
        let report = p.fsck(false).await;
        assert_found(&report, FindingKind::BadChunkRef, &key);
        assert_eq!(report.errors(), 1, "{:#?}", report.findings);
    }

    #[tokio::test]
    async fn manifests_and_tags_that_do_not_parse_or_lack_blobs_are_found() {
        let p = push(Kind::Memory).await;
        let r = p.t.store.repository(&p.repo);
        // The engine stores what it is given; the API is what validates.
        let junk = Bytes::from_static(b"{\"schemaVersion\":1}");
        let junk_digest = Digest::sha256(&junk);
        r.put_manifest(&junk_digest, OCI_MANIFEST, junk, None, &Default::default())
            .await
            .unwrap();
        assert!(r.unlink_blob(&p.config).await.unwrap());
        let v1 = layout::tag(&p.repo, &Tag::parse("v1").unwrap());
        p.backend()
            .put(
                &v1,
                Bytes::from_static(b"{\"tag\":\"v1\",\"generation\":1,\"history\":[]}"),
            )
            .await
            .unwrap();
        let link = layout::manifest_link(&p.repo, &p.index);
        p.backend()
            .put(&link, Bytes::from_static(b"{\"mediaType\":"))
            .await
            .unwrap();
        let report = p.fsck(false).await;
        assert_found(
            &report,
            FindingKind::BadManifest,
            &layout::manifest_link(&p.repo, &junk_digest),
        );
        assert_found(
            &report,
            FindingKind::MissingBlobLink,
            &layout::manifest_link(&p.repo, &p.image),
        );
        assert_found(&report, FindingKind::BadTag, &v1);
        assert_found(&report, FindingKind::BadManifestLink, &link);
    }

    #[tokio::test]
    async fn upload_sessions_missing_or_damaged_parts_are_found() {
        let p = push(Kind::Memory).await;
        let listed = p
            .backend()
            .list_all(&layout::upload_prefix(&p.upload))
            .await
            .unwrap();
        let segment = listed
            .iter()
            .map(|m| m.location.clone())
            .find(|k| k.as_ref().contains("/seg-"))
            .unwrap();
        p.backend().delete(&segment).await.unwrap();
        let report = p.fsck(false).await;
        assert_found(&report, FindingKind::MissingSegment, &segment);
        // Its pack is now referred to by nothing.
        assert_eq!(report.unreferenced_packs, 1);
        let state = layout::upload_state(&p.upload);
        let data = p.backend().get(&state).await.unwrap().unwrap();
        p.backend().put(&state, data.slice(1..)).await.unwrap();
        assert_found(&p.fsck(false).await, FindingKind::BadUpload, &state);
    }

    #[tokio::test]
    async fn damaged_packs_identity_catalog_and_blobs_are_found() {
        let p = push(Kind::Memory).await;
        let identity = layout::config();
        p.backend()
            .put(&identity, Bytes::from_static(b"{\"format\":"))
            .await
            .unwrap();
        let (pack, _) = p.layer_pack().await;
        let data = p.backend().get(&pack).await.unwrap().unwrap();
        p.backend().put(&pack, data.slice(..1000)).await.unwrap();
        // The artifact's link claims one byte more than its blob has.
        let link_key = layout::manifest_link(&p.repo, &p.artifact);
        let mut link: ManifestLink =
            serde_json::from_slice(&p.backend().get(&link_key).await.unwrap().unwrap()).unwrap();
        link.size += 1;
        p.backend()
            .put(&link_key, Bytes::from(serde_json::to_vec(&link).unwrap()))
            .await
            .unwrap();
        // A sound recipe whose bytes are not its blob's.
        let config_key = layout::recipe(&p.config);
        let mut recipe = p.t.store.recipe(&p.config).await.unwrap();
        let Body::Inline(bytes) = &recipe.body else {
            panic!("a small blob is inline");
        };
        recipe.body = Body::Inline(Bytes::from(vec![b' '; bytes.len()]));
        p.backend().put(&config_key, recipe.encode()).await.unwrap();
        p.backend()
            .delete(&layout::repository_entry(&p.repo))
            .await
            .unwrap();
        let stray = Path::from("blobs/sha256/zz/not-a-digest");
        p.backend().put(&stray, Bytes::new()).await.unwrap();

        let report = p.fsck(true).await;
        assert_found(&report, FindingKind::BadIdentity, &identity);
        assert_found(&report, FindingKind::BadPack, &pack);
        assert_found(&report, FindingKind::BadChunkRef, &layout::recipe(&p.layer));
        assert_found(&report, FindingKind::ManifestSizeMismatch, &link_key);
        assert_found(&report, FindingKind::BlobDigestMismatch, &config_key);
        assert_found(
            &report,
            FindingKind::UncatalogedRepository,
            &layout::repository_entry(&p.repo),
        );
        assert_found(&report, FindingKind::UnknownObject, &stray);
        // The image's layer is damaged, which its recipe's finding says; the manifest
        // itself is sound.
        assert!(!has(
            &report,
            FindingKind::MissingBlob,
            &layout::manifest_link(&p.repo, &p.image)
        ));
    }

    #[test]
    fn kinds_have_stable_names_and_severities() {
        let f = Finding::new(FindingKind::StaleReferrer, &Path::from("k"), "m");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"severity": "warning", "kind": "stale-referrer", "key": "k", "message": "m"})
        );
        assert_eq!(FindingKind::MissingPack.severity(), Severity::Error);
    }
}
