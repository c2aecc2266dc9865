//! `stowage fsck`: checks that a store's tags, manifests, recipes and chunks fit
//! together, and prints what does not. It never changes the store.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use stowage_storage::{FsckOptions, FsckPhase, FsckProgress, FsckReport, Store, StoreOptions};

use crate::output;

/// The JSON printed with `--json`: the report with its verdict and the store it is of.
#[derive(Serialize)]
struct JsonReport<'a> {
    store: &'a str,
    clean: bool,
    errors: usize,
    warnings: usize,
    #[serde(flatten)]
    report: &'a FsckReport,
}

/// Runs the check with a progress bar per phase on stderr, then prints a summary and
/// every finding (or JSON). Returns whether the store is clean (no error findings).
pub async fn fsck(options: StoreOptions, rehash: bool, json: bool) -> anyhow::Result<bool> {
    let mut options = options;
    options.dedup_index = false;
    let store = Store::open(options).await?;
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len}")?.progress_chars("=> ");
    let bar: Mutex<Option<(FsckPhase, ProgressBar)>> = Mutex::new(None);
    let progress = |p: FsckProgress| {
        let mut current = bar.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
            if let Some((_, old)) = current.take() {
                old.finish();
            }
            let b = ProgressBar::new(p.total)
                .with_style(style.clone())
                .with_prefix(p.phase.name());
            *current = Some((p.phase, b));
        }
        if let Some((_, b)) = current.as_ref() {
            b.set_length(p.total);
            b.set_position(p.done);
        }
    };
    let result = store.fsck(FsckOptions { rehash }, &progress).await;
    if let Some((_, b)) = bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
        b.finish();
    }
    let report = result?;
    if json {
        let out = JsonReport {
            store: store.description(),
            clean: report.is_clean(),
            errors: report.errors(),
            warnings: report.warnings(),
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(store.description(), &report);
    }
    Ok(report.is_clean())
}

fn print_summary(store: &str, report: &FsckReport) {
    let e = &report.examined;
    println!("store           {store}");
    println!("packs           {}  ({} chunks)", e.packs, e.chunks);
    println!("recipes         {}", e.recipes);
    println!(
        "repositories    {}  ({} tags, {} manifests, {} blob links, {} referrers)",
        e.repositories, e.tags, e.manifests, e.blob_links, e.referrers
    );
    println!("uploads         {}  ({} segments)", e.uploads, e.segments);
    if report.bytes_rehashed > 0 {
        println!("re-hashed       {}", output::bytes(report.bytes_rehashed));
    }
    if report.unreferenced_packs > 0 {
        println!(
            "unreferenced    {} packs  (for the garbage collector)",
            report.unreferenced_packs
        );
    }
    println!();
    if report.findings.is_empty() {
        println!("clean: no findings");
        return;
    }
    for f in &report.findings {
        println!("{:<7}  {:<22}  {}", f.severity, f.kind, f.key);
        println!("{:<7}  {}", "", f.message);
    }
    println!();
    let (errors, warnings) = (report.errors(), report.warnings());
    println!(
        "{errors} error{}, {warnings} warning{}{}",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" },
        if errors == 0 { ": clean" } else { "" }
    );
}
