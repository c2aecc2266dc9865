//! `stowage gc`: one garbage collection run, with a progress bar per phase on stderr and
//! a summary (or JSON) at the end. Servers keep running while it does.

use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use stowage_gc::{Counts, Progress, Report};
use stowage_storage::{Store, StoreOptions};

use crate::output;
use stowage_server::config::{FileConfig, GcConfig, GcOverrides};

/// `stowage gc` flags; each overrides the configuration file's `[gc]` section.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Configuration file (TOML): its `[storage]` and `[gc]` sections are used.
    #[arg(long, env = "STOWAGE_CONFIG")]
    config: Option<PathBuf>,
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Keep untagged manifests; collect only content no manifest names.
    #[arg(long)]
    keep_untagged: bool,
    /// Revisions of each tag's history to keep, the current one included [default: 3].
    #[arg(long)]
    keep_tag_revisions: Option<usize>,
    /// Keep manifests and tag revisions younger than this (e.g. 7d).
    #[arg(long, value_parser = duration)]
    keep_younger_than: Option<std::time::Duration>,
    /// Delete nothing written more recently than this [default: 1h].
    #[arg(long, value_parser = duration)]
    grace: Option<std::time::Duration>,
    /// Remove upload sessions idle for this long [default: 24h].
    #[arg(long, value_parser = duration)]
    upload_expiry: Option<std::time::Duration>,
    /// Longest a server's metadata write may take to land; the run waits about twice
    /// this between its phases [default: 30s].
    #[arg(long, value_parser = duration)]
    write_deadline: Option<std::time::Duration>,
    /// Listings and reads in flight at once [default: 32].
    #[arg(long)]
    concurrency: Option<usize>,
    /// CPU niceness of the run, so that servers on the same machine keep their share of
    /// it (0 leaves the priority as it is).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
}

/// Lowers the CPU priority of every thread of this process: Linux keeps niceness per
/// thread, and threads started later (the runtime's blocking threads) inherit it from
/// the thread that starts them.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let tid = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(tid) = tid
            && let Err(e) = rustix::process::setpriority_process(Some(tid), nice)
        {
            tracing::debug!(error = %e, "could not lower a thread's priority");
        }
    }
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    stowage_gc::parse_duration(text)
}

/// Bars on stderr, one per phase; hidden when stderr is not a terminal.
struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn phase(&self, name: &'static str, total: Option<u64>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.take() {
            old.finish();
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix:>18} {spinner} {pos} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        *current = Some(bar.with_prefix(name));
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*self.current.lock().unwrap_or_else(|e| e.into_inner()) {
            b.inc(n);
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    store: &'a str,
    seconds: f64,
    #[serde(flatten)]
    report: &'a Report,
}

/// Runs one collection and prints what it did.
pub async fn gc(cli_store: StoreOptions, storage_flag: bool, args: GcArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    // The file's storage unless --storage (or STOWAGE_STORAGE) names one.
    let mut options = cli_store;
    if !storage_flag && let Some(backend) = file.storage.clone() {
        options.backend = backend;
    }
    let over = GcOverrides {
        keep_untagged: args.keep_untagged,
        keep_tag_revisions: args.keep_tag_revisions,
        keep_younger_than: args.keep_younger_than,
        grace: args.grace,
        upload_expiry: args.upload_expiry,
        write_deadline: args.write_deadline,
        concurrency: args.concurrency,
        dry_run: args.dry_run,
    };
    let mut gc_options = file
        .gc
        .clone()
        .unwrap_or_else(GcConfig::default)
        .options(&over)?;
    gc_options.host = format!("stowage gc (pid {})", std::process::id());
    lower_priority(args.nice);
    // The collector writes no content: no dedup index to load.
    options.dedup_index = false;
    let store = Store::open(options).await?;
    let bars = Bars {
        current: Mutex::new(None),
    };
    let started = std::time::Instant::now();
    let result = stowage_gc::collect(&store, &gc_options, &bars).await;
    if let Some(b) = bars
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        b.finish_and_clear();
    }
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let out = JsonReport {
            store: store.description(),
            seconds,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(store.description(), seconds, &report);
    }
    Ok(())
}

fn print_summary(store: &str, seconds: f64, r: &Report) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "{} {store}{}",
        if r.dry_run { "dry run on" } else { "collected" },
        r.run
            .as_deref()
            .map(|id| format!(" (run {id})"))
            .unwrap_or_default()
    );
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>12}",
        "", "examined", "kept", verb, "bytes"
    );
    let row = |name: &str, c: &Counts| {
        println!(
            "{name:<14} {:>10} {:>10} {:>12} {:>12}",
            c.examined,
            c.kept,
            c.deleted,
            if c.deleted_bytes > 0 {
                output::bytes(c.deleted_bytes)
            } else {
                "-".into()
            }
        );
    };
    row("manifests", &r.manifests);
    row("blob links", &r.blob_links);
    row("blobs", &r.blobs);
    row("packs", &r.packs);
    row("uploads", &r.uploads);
    println!(
        "{} repositories, {} tags; {} history entries removed; {} candidates rescued",
        r.repositories, r.tags, r.history_entries_removed, r.rescued
    );
    println!(
        "reclaimed {} in {seconds:.1}s",
        output::bytes(r.reclaimed_bytes)
    );
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(name, s)| format!("{name} {s:.1}s"))
        .collect();
    println!("phases: {}", phases.join(", "));
}
