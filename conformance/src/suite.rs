//! The machinery shared by every category: the run context (HTTP client, namespaces, the
//! shared test image, what was pushed so it can be deleted), the recorder that turns each
//! case's result into a [`CaseResult`], and the push helpers used for setup steps.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Result, anyhow, bail};
use reqwest::Method;
use serde::Serialize;
use url::Url;

use crate::client::{Http, Resp};
use crate::content::{Algorithm, Blob, Digest, Extra, Image, Manifest, random_id};
use crate::{Categories, Category, Config, upload};

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// An assertion failed; the text says which request and what came back.
    Failed(String),
    /// Not run: its category is off, or a step it depends on failed.
    Skipped(String),
}

/// One case of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The case's category.
    pub category: Category,
    /// What the case checks.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every case of a run, in run order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The cases.
    pub cases: Vec<CaseResult>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// Number of passed cases.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// Number of failed cases.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// Number of skipped cases.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// True when no case failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
    }
}

/// The error a case returns to be reported as skipped rather than failed.
#[derive(Debug)]
struct SkipCase(String);

impl std::fmt::Display for SkipCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SkipCase {}

/// An error that marks the current case as skipped with `reason`.
pub(crate) fn skip(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(SkipCase(reason.into()))
}

/// The value a case depends on, or a skip naming the earlier step that should have made it.
pub(crate) fn need<'a, T>(value: &'a Option<T>, step: &str) -> Result<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| skip(format!("depends on an earlier step that failed: {step}")))
}

/// Collects case results in order and reports each one as it ends.
pub(crate) struct Recorder<'a> {
    categories: Categories,
    cases: Vec<CaseResult>,
    on_case: Box<dyn FnMut(&CaseResult) + Send + 'a>,
}

impl<'a> Recorder<'a> {
    /// A recorder that runs the categories switched on in `categories`.
    pub(crate) fn new(
        categories: Categories,
        on_case: Box<dyn FnMut(&CaseResult) + Send + 'a>,
    ) -> Self {
        Self {
            categories,
            cases: Vec::new(),
            on_case,
        }
    }

    fn push(&mut self, category: Category, name: String, outcome: Outcome) {
        let case = CaseResult {
            category,
            name,
            outcome,
        };
        (self.on_case)(&case);
        self.cases.push(case);
    }

    /// Runs `body` as the case `name` unless its category is off. Returns whether it passed.
    pub(crate) async fn case(
        &mut self,
        category: Category,
        name: impl Into<String>,
        body: impl Future<Output = Result<()>>,
    ) -> bool {
        let name = name.into();
        if !self.categories.enabled(category) {
            self.push(
                category,
                name,
                Outcome::Skipped(format!("category {category} is switched off")),
            );
            return false;
        }
        let outcome = match body.await {
            Ok(()) => Outcome::Passed,
            Err(e) => match e.downcast_ref::<SkipCase>() {
                Some(s) => Outcome::Skipped(s.0.clone()),
                None => Outcome::Failed(format!("{e:#}")),
            },
        };
        let passed = outcome == Outcome::Passed;
        self.push(category, name, outcome);
        passed
    }

    /// Records `name` as skipped for `reason` without running anything.
    pub(crate) fn skip(
        &mut self,
        category: Category,
        name: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.push(category, name.into(), Outcome::Skipped(reason.into()));
    }

    /// Records `name` as failed with `err`.
    pub(crate) fn fail(
        &mut self,
        category: Category,
        name: impl Into<String>,
        err: &anyhow::Error,
    ) {
        self.push(category, name.into(), Outcome::Failed(format!("{err:#}")));
    }

    /// Whether `category` is switched on.
    pub(crate) fn enabled(&self, category: Category) -> bool {
        self.categories.enabled(category)
    }

    /// The finished report.
    pub(crate) fn into_report(self) -> Report {
        Report { cases: self.cases }
    }
}

/// Something this run created, to delete at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// A manifest in a repository.
    Manifest(String, Digest),
    /// A blob in a repository.
    Blob(String, Digest),
}

/// A manifest pushed during the run, checked again by the pull cases.
#[derive(Clone, Debug)]
pub(crate) struct Pushed {
    /// Short description for case names.
    pub label: String,
    /// Repository it was pushed to.
    pub repo: String,
    /// The document.
    pub manifest: Manifest,
}

#[derive(Default)]
struct State {
    fixture_pushed: bool,
    created: Vec<Created>,
    pushed: Vec<Pushed>,
    referrer: Option<ReferrerNote>,
}

/// A referrer the management cases delete, to check the referrers list drops it.
#[derive(Clone, Debug)]
pub(crate) struct ReferrerNote {
    /// The subject's digest.
    pub subject: Digest,
    /// The referrer's digest.
    pub referrer: Digest,
    /// A tag pointing at the referrer.
    pub tag: String,
}

/// Shared context of one run.
pub(crate) struct Ctx {
    /// HTTP helper bound to the registry.
    pub http: Http,
    /// The run's configuration.
    pub cfg: Config,
    /// Repository for the cases.
    pub repo: String,
    /// Second repository (cross-repository mounts, scoping checks).
    pub other: String,
    /// Random id of this run, part of tags and annotations.
    pub run_id: String,
    /// The shared test image, pushed once and pulled by several categories.
    pub fixture: Image,
    /// The tag the shared image is pushed under.
    pub fixture_tag: String,
    state: Mutex<State>,
}

impl Ctx {
    /// The context for `cfg`, with freshly generated content.
    pub(crate) fn new(cfg: &Config) -> Result<Self> {
        let run_id = random_id();
        Ok(Self {
            http: Http::new(&cfg.registry)?,
            cfg: cfg.clone(),
            repo: cfg.namespace.clone(),
            other: cfg.crossmount_namespace.clone(),
            fixture: Image::random(Algorithm::Sha256, &[2048, 1500], Extra::default())?,
            fixture_tag: format!("image-{run_id}"),
            run_id,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another case panicked; the list is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run-unique tag with the given prefix.
    pub(crate) fn tag(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.run_id)
    }

    /// Notes a blob for the final cleanup.
    pub(crate) fn created_blob(&self, repo: &str, digest: &Digest) {
        let item = Created::Blob(repo.to_owned(), digest.clone());
        let mut st = self.state();
        if !st.created.contains(&item) {
            st.created.push(item);
        }
    }

    /// Notes a manifest for the final cleanup.
    pub(crate) fn created_manifest(&self, repo: &str, digest: &Digest) {
        let item = Created::Manifest(repo.to_owned(), digest.clone());
        let mut st = self.state();
        if !st.created.contains(&item) {
            st.created.push(item);
        }
    }

    /// Forgets an item (it was deleted by a case).
    pub(crate) fn forget(&self, item: &Created) {
        self.state().created.retain(|c| c != item);
    }

    /// Everything still to delete, in creation order.
    pub(crate) fn created(&self) -> Vec<Created> {
        self.state().created.clone()
    }

    /// Notes a manifest pushed by a case so the pull cases fetch it again.
    pub(crate) fn pushed(&self, label: &str, repo: &str, manifest: &Manifest) {
        self.state().pushed.push(Pushed {
            label: label.to_owned(),
            repo: repo.to_owned(),
            manifest: manifest.clone(),
        });
    }

    /// Manifests pushed so far.
    pub(crate) fn pushed_manifests(&self) -> Vec<Pushed> {
        self.state().pushed.clone()
    }

    /// Remembers a referrer for the management cases.
    pub(crate) fn set_referrer_note(&self, subject: &Digest, referrer: &Digest, tag: &str) {
        self.state().referrer = Some(ReferrerNote {
            subject: subject.clone(),
            referrer: referrer.clone(),
            tag: tag.to_owned(),
        });
    }

    /// The referrer remembered by the referrers cases, if they ran.
    pub(crate) fn referrer_note(&self) -> Option<ReferrerNote> {
        self.state().referrer.clone()
    }

    /// Marks the shared image as pushed.
    pub(crate) fn fixture_done(&self) {
        self.state().fixture_pushed = true;
    }

    /// `/v2/<repo>/blobs/uploads/` as a URL.
    pub(crate) fn uploads_url(&self, repo: &str) -> Result<Url> {
        self.http.url(&format!("/v2/{repo}/blobs/uploads/"))
    }

    /// Starts an upload session (`POST`, `Content-Length: 0`) and returns its location.
    pub(crate) async fn start_upload(&self, repo: &str) -> Result<Url> {
        Ok(upload::open(self, repo, None).await?.url)
    }

    /// Pushes `blob` to `repo` with POST then PUT (the one upload every registry must
    /// support) and notes it for cleanup; returns the PUT's answer (201).
    pub(crate) async fn push_blob(&self, repo: &str, blob: &Blob) -> Result<Resp> {
        let loc = self.start_upload(repo).await?;
        upload::monolithic(self, repo, &loc, blob).await
    }

    /// Pushes every blob in `blobs`.
    pub(crate) async fn push_blobs(&self, repo: &str, blobs: &[&Blob]) -> Result<()> {
        for b in blobs {
            self.push_blob(repo, b).await?;
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type; returns the
    /// response without judging it.
    pub(crate) async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<Resp> {
        let url = self
            .http
            .url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let bytes = m.bytes.clone();
        let mt = m.media_type.clone();
        self.http
            .call(Method::PUT, &url, |r| {
                r.header("Content-Type", mt).body(bytes)
            })
            .await
    }

    /// Pushes a manifest, requiring `201 Created`, and notes it for cleanup.
    pub(crate) async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<Resp> {
        let resp = self.put_manifest(repo, reference, m).await?;
        resp.expect(&[201])?;
        self.created_manifest(repo, &m.digest);
        Ok(resp)
    }

    /// Makes sure the shared image is in the test repository under its tag, pushing it
    /// if no earlier case did. Failure skips the calling case.
    pub(crate) async fn ensure_fixture(&self) -> Result<()> {
        if self.state().fixture_pushed {
            return Ok(());
        }
        let push = async {
            self.push_blobs(&self.repo, &self.fixture.blobs()).await?;
            self.push_manifest(&self.repo, &self.fixture_tag, &self.fixture.manifest)
                .await?;
            Ok::<_, anyhow::Error>(())
        };
        match push.await {
            Ok(()) => {
                self.fixture_done();
                Ok(())
            }
            Err(e) => Err(skip(format!("could not push the shared test image: {e:#}"))),
        }
    }
}

/// Adds an empty body with an explicit `Content-Length: 0` (the spec asks for it on the
/// POST that opens a chunked upload and on DELETE of a session; without the header the
/// HTTP stack would send none).
pub(crate) fn empty_body(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r.header("Content-Length", "0").body(Vec::<u8>::new())
}

/// `url` with `digest=<digest>` added to its query (keeping whatever query the registry
/// put in the location).
pub(crate) fn with_digest(url: &Url, digest: &Digest) -> Url {
    let mut u = url.clone();
    crate::client::add_query(&mut u, "digest", &digest.to_string());
    u
}

/// `url` with `digest=<text>` added, for digests that are deliberately malformed.
pub(crate) fn with_digest_text(url: &Url, digest: &str) -> Url {
    let mut u = url.clone();
    crate::client::add_query(&mut u, "digest", digest);
    u
}

/// Checks a `Docker-Content-Digest` header, when present, against `expected`.
pub(crate) fn check_digest_header(resp: &Resp, expected: &Digest) -> Result<()> {
    match resp.header("Docker-Content-Digest") {
        Some(h) if h == expected.to_string() => Ok(()),
        Some(h) => bail!(
            "{}: Docker-Content-Digest is {h:?}, expected {expected}",
            resp.what
        ),
        None => Ok(()),
    }
}

/// Checks that a `Docker-Content-Digest` header is present and equals `expected`.
pub(crate) fn require_digest_header(resp: &Resp, expected: &Digest) -> Result<()> {
    let h = resp.require_header("Docker-Content-Digest")?;
    if h != expected.to_string() {
        return Err(anyhow!(
            "{}: Docker-Content-Digest is {h:?}, expected {expected}",
            resp.what
        ));
    }
    Ok(())
}
