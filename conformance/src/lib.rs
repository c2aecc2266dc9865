//! A black-box conformance run of the OCI Distribution Specification v1.1: only HTTP,
//! no code shared with the server, so it checks the registry as clients see it.
//!
//! The catalogue of cases follows the official conformance suite
//! (opencontainers/distribution-spec, `conformance/`) and the spec text, which is the
//! authority where they differ. Cases run in a fixed order (push, pull, discovery, the
//! data categories, error codes, then deletes) and share content generated from random
//! bytes, so reruns against the same registry never collide. With content management
//! enabled the run deletes what it pushed.
//!
//! ```no_run
//! # async fn demo() {
//! let mut cfg = stowage_conformance::Config::new("http://127.0.0.1:5000");
//! cfg.categories.sparse = false; // this registry rejects sparse manifests
//! let report = stowage_conformance::run(&cfg).await;
//! for case in report.failures() {
//!     eprintln!("[{}] {}: {:?}", case.category, case.name, case.outcome);
//! }
//! assert!(report.success());
//! # }
//! ```

mod client;
mod content;
mod discovery;
mod errors;
mod management;
mod pull;
mod push;
mod referrers;
mod sha512;
mod suite;
mod unpushed;
mod upload;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use suite::{CaseResult, Outcome, Report};

/// A group of cases that can be switched off together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// `/v2/` and pulling manifests and blobs (the spec's mandatory category).
    Pull,
    /// Blob uploads of every kind, cross-repository mounts, manifest pushes.
    Push,
    /// Tag listing (and the catalog, where offered).
    Discovery,
    /// Deleting tags, manifests and blobs; also the run's cleanup.
    Management,
    /// Blobs and manifests addressed by sha512 digests.
    Sha512,
    /// The registry accepts manifests whose descriptors point at content never pushed.
    /// Switched off, the registry is expected to reject them with `MANIFEST_BLOB_UNKNOWN`.
    Sparse,
    /// The referrers API: listing, filtering, empty lists.
    Referrers,
    /// Manifests with a `subject` field and the `OCI-Subject` response header.
    Subjects,
    /// Image manifests with non-distributable layers that are never pushed.
    NonDistributable,
    /// Error status codes and JSON error bodies, including bad digests.
    Errors,
}

impl Category {
    /// Every category, in run order.
    pub const ALL: [Category; 10] = [
        Category::Pull,
        Category::Push,
        Category::Discovery,
        Category::Management,
        Category::Sha512,
        Category::Sparse,
        Category::Referrers,
        Category::Subjects,
        Category::NonDistributable,
        Category::Errors,
    ];

    /// The category's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Pull => "pull",
            Category::Push => "push",
            Category::Discovery => "discovery",
            Category::Management => "management",
            Category::Sha512 => "sha512",
            Category::Sparse => "sparse",
            Category::Referrers => "referrers",
            Category::Subjects => "subjects",
            Category::NonDistributable => "non-distributable",
            Category::Errors => "errors",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        let alias = match wanted.as_str() {
            "content-discovery" => "discovery",
            "content-management" | "delete" | "deletes" => "management",
            "nondistributable" => "non-distributable",
            "bad-digests" | "error-codes" => "errors",
            other => other,
        };
        Category::ALL
            .into_iter()
            .find(|c| c.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = Category::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown category {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Which categories run. All are on by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Categories {
    /// See [`Category::Pull`].
    pub pull: bool,
    /// See [`Category::Push`].
    pub push: bool,
    /// See [`Category::Discovery`].
    pub discovery: bool,
    /// See [`Category::Management`].
    pub management: bool,
    /// See [`Category::Sha512`].
    pub sha512: bool,
    /// See [`Category::Sparse`]: on means the registry is expected to accept sparse
    /// manifests, off means it is expected to reject them with `MANIFEST_BLOB_UNKNOWN`.
    pub sparse: bool,
    /// See [`Category::Referrers`].
    pub referrers: bool,
    /// See [`Category::Subjects`].
    pub subjects: bool,
    /// See [`Category::NonDistributable`].
    pub non_distributable: bool,
    /// See [`Category::Errors`].
    pub errors: bool,
}

impl Default for Categories {
    fn default() -> Self {
        Self {
            pull: true,
            push: true,
            discovery: true,
            management: true,
            sha512: true,
            sparse: true,
            referrers: true,
            subjects: true,
            non_distributable: true,
            errors: true,
        }
    }
}

impl Categories {
    fn slot(&mut self, category: Category) -> &mut bool {
        match category {
            Category::Pull => &mut self.pull,
            Category::Push => &mut self.push,
            Category::Discovery => &mut self.discovery,
            Category::Management => &mut self.management,
            Category::Sha512 => &mut self.sha512,
            Category::Sparse => &mut self.sparse,
            Category::Referrers => &mut self.referrers,
            Category::Subjects => &mut self.subjects,
            Category::NonDistributable => &mut self.non_distributable,
            Category::Errors => &mut self.errors,
        }
    }

    /// Whether `category` runs.
    pub fn enabled(&self, category: Category) -> bool {
        match category {
            Category::Pull => self.pull,
            Category::Push => self.push,
            Category::Discovery => self.discovery,
            Category::Management => self.management,
            Category::Sha512 => self.sha512,
            Category::Sparse => self.sparse,
            Category::Referrers => self.referrers,
            Category::Subjects => self.subjects,
            Category::NonDistributable => self.non_distributable,
            Category::Errors => self.errors,
        }
    }

    /// Switches `category` on or off.
    pub fn set(&mut self, category: Category, on: bool) {
        *self.slot(category) = on;
    }
}

/// What to test and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the registry, e.g. `http://127.0.0.1:5000`.
    pub registry: String,
    /// Repository the cases push to.
    pub namespace: String,
    /// Second repository, the target of cross-repository mounts.
    pub crossmount_namespace: String,
    /// Category switches.
    pub categories: Categories,
}

impl Config {
    /// Defaults for the registry at `registry`: namespaces `conformance/test` and
    /// `conformance/other`, every category on.
    pub fn new(registry: impl Into<String>) -> Self {
        Self {
            registry: registry.into(),
            namespace: "conformance/test".to_owned(),
            crossmount_namespace: "conformance/other".to_owned(),
            categories: Categories::default(),
        }
    }

    /// Whether `category` runs.
    pub fn enabled(&self, category: Category) -> bool {
        self.categories.enabled(category)
    }
}

/// Runs every case against the registry in `cfg` and reports each one.
pub async fn run(cfg: &Config) -> Report {
    run_with(cfg, |_| {}).await
}

/// Like [`run`], calling `on_case` as each case ends (for progress output).
pub async fn run_with(cfg: &Config, on_case: impl FnMut(&CaseResult) + Send) -> Report {
    let mut rec = suite::Recorder::new(cfg.categories.clone(), Box::new(on_case));
    let cx = match suite::Ctx::new(cfg) {
        Ok(cx) => cx,
        Err(e) => {
            rec.fail(Category::Pull, "set up the test client and content", &e);
            return rec.into_report();
        }
    };
    pull::base(&cx, &mut rec).await;
    push::run(&cx, &mut rec).await;
    pull::run(&cx, &mut rec).await;
    discovery::run(&cx, &mut rec).await;
    sha512::run(&cx, &mut rec).await;
    unpushed::run(&cx, &mut rec).await;
    referrers::run(&cx, &mut rec).await;
    errors::run(&cx, &mut rec).await;
    management::run(&cx, &mut rec).await;
    rec.into_report()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_parse_back() {
        for c in Category::ALL {
            assert_eq!(c.name().parse::<Category>(), Ok(c));
        }
        assert_eq!(
            "nondistributable".parse::<Category>(),
            Ok(Category::NonDistributable)
        );
        assert!("nope".parse::<Category>().is_err());
    }

    #[test]
    fn the_run_can_be_spawned_on_a_multi_threaded_runtime() {
        fn assert_send<T: Send>(_: &T) {}
        let cfg = Config::new("http://127.0.0.1:1");
        let fut = run(&cfg);
        assert_send(&fut);
    }

    #[test]
    fn categories_toggle() {
        let mut c = Categories::default();
        assert!(Category::ALL.iter().all(|&k| c.enabled(k)));
        c.set(Category::Sparse, false);
        assert!(!c.enabled(Category::Sparse));
        assert!(!c.sparse);
    }
}
