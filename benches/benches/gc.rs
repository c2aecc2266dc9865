//! Garbage collection, Stowage against CNCF Distribution (Debian's `docker-registry`
//! 2.8), on the same synthetic registry, on local disk and on S3 (moto).
//!
//! ```text
//! cargo bench -p stowage-benches --bench gc -- [--backend local|s3|both] [--scale F] [--quick]
//!                                              [--seed N] [--rounds N]
//! ```
//!
//! Both stores get the same content (`gc/content.rs`): R repositories in ~R/20
//! namespaces, 10 images each, half tagged and half pushed by digest only; each image
//! has its own config and 6 layers of 20 KiB, and 2 layers from a pool of shared 64 KiB
//! base layers (scale 1: R = 2000, 20,000 manifests, ~140,000 blobs). Stowage's store is
//! written in this process through the storage API, Distribution's directly in its
//! storage layout (checked by serving it once before and once after its collection).
//!
//! Then: (1) `docker-registry garbage-collect --delete-untagged` on Distribution's store
//! and `stowage gc --grace 0s --write-deadline 1s --keep-tag-revisions 1` on Stowage's,
//! wall time and peak RSS of each, and checks that both deleted exactly the untagged
//! images; `stowage fsck` afterwards for the live chunks. (2) On local disk, Stowage's
//! collection at 1/4 and 1/2 of the size, for how its cost grows. (3) `stowage serve`
//! on the collected store and `stowage bench push` (256 x 1 MiB, 4 clients) without and
//! with collections running back to back, alternating, medians.
//!
//! Local disk runs at scale 1 with 3 rounds of pushes, S3 at 0.05 with one, unless
//! `--scale` and `--rounds` say otherwise; `--quick` is scale 0.02 and one round. Progress goes to stderr, the table to stdout,
//! the figures to `<target>/gc-bench-<backend>.json`, logs to `<target>/gc-bench-logs/`.
//! Stores live in a temporary directory under /tmp (and in moto's memory), removed at
//! the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with the compare benchmark; not every helper is used here.
#[path = "compare/procs.rs"]
#[allow(dead_code)]
mod procs;

#[path = "gc/content.rs"]
mod content;
#[path = "gc/measure.rs"]
mod measure;
#[path = "gc/stores.rs"]
mod stores;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use stowage_storage::collection::REFRESH;

use content::{Expected, MANIFEST_TYPE, Params, Pool};
use measure::{Measured, run_measured};
use procs::{Moto, Storage};
use stores::{DistCounts, DistTarget};

/// `--write-deadline` of the measured collections: a run waits twice for `REFRESH` plus
/// this while a server is attached (the pushes of (3)); the offline runs of (1) and (2),
/// like Distribution's, have none and do not wait.
const WRITE_DEADLINE: Duration = Duration::from_secs(1);
/// The longest one collection (either registry's) may take.
const RUN_LIMIT: Duration = Duration::from_secs(3 * 3600);
/// Buckets on moto.
const STOWAGE_BUCKET: &str = "gc-stowage";
const DISTRIBUTION_BUCKET: &str = "gc-distribution";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::S3 => "s3",
        }
    }

    /// Rounds of pushes without and with collections: one on S3, where a collection
    /// through moto takes minutes.
    fn default_rounds(self) -> usize {
        match self {
            Backend::Local => 3,
            Backend::S3 => 1,
        }
    }

    fn default_scale(self) -> f64 {
        match self {
            Backend::Local => 1.0,
            // moto keeps everything in memory, and every listing scans the whole
            // bucket: a collection through it grows with the square of the store.
            Backend::S3 => 0.05,
        }
    }
}

struct Opts {
    backends: Vec<Backend>,
    scale: Option<f64>,
    quick: bool,
    seed: u64,
    /// `--rounds`, if given.
    rounds: Option<usize>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        backends: vec![Backend::Local],
        scale: None,
        quick: false,
        seed: 5,
        rounds: None,
    };
    let mut args = std::env::args().skip(1);
    let number = |name: &str, v: Option<String>| -> Result<String> {
        v.ok_or_else(|| anyhow!("{name} needs a value"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--quick" => o.quick = true,
            "--scale" => {
                let s: f64 = number("--scale", args.next())?.parse().context("--scale")?;
                if !(s > 0.0 && s.is_finite()) {
                    bail!("--scale must be positive");
                }
                o.scale = Some(s);
            }
            "--seed" => o.seed = number("--seed", args.next())?.parse().context("--seed")?,
            "--rounds" => {
                let n: usize = number("--rounds", args.next())?
                    .parse()
                    .context("--rounds")?;
                if n == 0 {
                    bail!("--rounds must be at least 1");
                }
                o.rounds = Some(n);
            }
            "--backend" => {
                o.backends = match args.next().as_deref() {
                    Some("local") => vec![Backend::Local],
                    Some("s3") => vec![Backend::S3],
                    Some("both") => vec![Backend::Local, Backend::S3],
                    other => bail!("--backend local|s3|both, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "cargo bench -p stowage-benches --bench gc -- [--backend local|s3|both] \
                     [--scale F] [--quick] [--seed N] [--rounds N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(o)
}

/// What every backend's run shares.
struct Ctx {
    rt: tokio::runtime::Runtime,
    stowage: PathBuf,
    logs: PathBuf,
    root: PathBuf,
    seed: u64,
    /// `--rounds`, if given.
    rounds: Option<usize>,
    quick: bool,
}

/// A Stowage store, as the `stowage` command is told about it.
#[derive(Clone)]
struct StowageLoc {
    url: String,
    endpoint: Option<String>,
}

impl StowageLoc {
    /// `stowage <sub> --storage URL ...`, with the S3 endpoint and credentials if need be.
    fn command(&self, bin: &Path, sub: &str) -> Command {
        // For profiling: `STOWAGE_GC_BENCH_WRAP=heaptrack` runs every stowage command
        // under that program (its RSS figures are then the wrapper's).
        let mut cmd = match std::env::var_os("STOWAGE_GC_BENCH_WRAP") {
            Some(wrap) => {
                let mut c = Command::new(wrap);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg(sub)
            .args(["--storage", &self.url])
            .env_remove("STOWAGE_CONFIG")
            .env_remove("AWS_CA_BUNDLE");
        if let Some(e) = &self.endpoint {
            cmd.args(["--s3-endpoint", e]).envs(procs::S3_ENV);
        }
        cmd
    }

    fn options(&self) -> stowage_storage::StoreOptions {
        stores::stowage_options(&self.url, self.endpoint.as_deref())
    }
}

/// Where a backend's stores live: a temporary directory, and moto on S3.
struct Place {
    dir: tempfile::TempDir,
    moto: Option<Moto>,
}

impl Place {
    fn stowage(&self, name: &str) -> StowageLoc {
        match &self.moto {
            None => StowageLoc {
                url: self.dir.path().join(name).display().to_string(),
                endpoint: None,
            },
            Some(m) => StowageLoc {
                url: format!("s3://{STOWAGE_BUCKET}/{name}"),
                endpoint: Some(m.endpoint.clone()),
            },
        }
    }

    /// Distribution's store: where this process writes it, and how Distribution is told.
    fn distribution(&self) -> Result<(DistTarget, Storage)> {
        match &self.moto {
            None => {
                let dir = self.dir.path().join("distribution");
                std::fs::create_dir_all(&dir)?;
                Ok((DistTarget::Dir(dir.clone()), Storage::Dir(dir)))
            }
            Some(m) => Ok((
                DistTarget::s3(
                    &m.endpoint,
                    DISTRIBUTION_BUCKET,
                    procs::DISTRIBUTION_S3_ROOT,
                )?,
                Storage::S3 {
                    endpoint: m.endpoint.clone(),
                    bucket: DISTRIBUTION_BUCKET.into(),
                },
            )),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn describe(p: &Params, e: &Expected) -> String {
    format!(
        "scale {}: {} repositories in {} namespaces, {} images each ({} manifests, {} \
         tagged); per image a ~200 B config, {} unique {} KiB layers and {} of {} shared {} \
         KiB layers ({} used); {} distinct blobs with the manifests, {:.1} MiB of layers",
        p.scale,
        p.repos,
        p.namespaces(),
        p.images,
        e.manifests,
        e.tagged,
        p.unique,
        p.layer_size >> 10,
        p.shared,
        p.pool,
        p.shared_size >> 10,
        e.pool_used,
        e.blobs,
        e.layer_bytes as f64 / (1u64 << 20) as f64
    )
}

/// One `stowage gc` run, measured, with its JSON report.
struct StowageRun {
    measured: Measured,
    report: Value,
}

impl StowageRun {
    fn count(&self, kind: &str, field: &str) -> u64 {
        self.report[kind][field].as_u64().unwrap_or(0)
    }

    /// Process wall time minus the collection's own: starting and opening the store
    /// (which loads the dedup index from every pack footer).
    fn open_seconds(&self) -> f64 {
        self.measured.seconds - self.report["seconds"].as_f64().unwrap_or(0.0)
    }

    /// The run's fixed waits: `REFRESH + write_deadline` for each step published while
    /// some writer was present (none when the store has no server attached).
    fn waits(&self) -> f64 {
        let waited = self.report["writers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w.as_u64().unwrap_or(0) > 0)
            .count();
        waited as f64 * (REFRESH + WRITE_DEADLINE).as_secs_f64()
    }

    fn phases(&self) -> Vec<(String, f64)> {
        let mut out = vec![("open".to_owned(), self.open_seconds())];
        for p in self.report["phases"].as_array().into_iter().flatten() {
            if let (Some(n), Some(s)) = (p[0].as_str(), p[1].as_f64()) {
                out.push((n.to_owned(), s));
            }
        }
        out
    }

    fn phases_text(&self) -> String {
        self.phases()
            .iter()
            .map(|(n, s)| format!("{n} {s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn to_json(&self) -> Value {
        json!({
            "wall_seconds": self.measured.seconds,
            "busy_seconds": self.measured.seconds - self.waits(),
            "fixed_waits_seconds": self.waits(),
            "open_seconds": self.open_seconds(),
            "peak_rss_kib": self.measured.peak_rss_kib,
            "report": self.report,
        })
    }
}

/// Runs `stowage gc` on `loc` as the benchmark does, after making sure nothing was
/// written within the last write deadline (the re-mark would keep it) plus a margin.
fn stowage_gc(ctx: &Ctx, loc: &StowageLoc, filled_at: Instant, name: &str) -> Result<StowageRun> {
    let quiet = WRITE_DEADLINE + Duration::from_secs(2);
    if let Some(rest) = quiet.checked_sub(filled_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let mut cmd = loc.command(&ctx.stowage, "gc");
    cmd.args(["--grace", "0s", "--write-deadline"])
        .arg(format!("{}s", WRITE_DEADLINE.as_secs()))
        .args(["--keep-tag-revisions", "1", "--json"]);
    let measured = run_measured(&mut cmd, &ctx.logs, name, RUN_LIMIT)?;
    measured.check("stowage gc")?;
    let report: Value = serde_json::from_str(&measured.stdout)
        .with_context(|| format!("stowage gc printed no JSON report: {}", measured.stdout))?;
    Ok(StowageRun { measured, report })
}

/// Starts Distribution on its store and checks the answers to `GET`s:
/// `(path, accept header, acceptable statuses)`.
fn check_distribution(
    ctx: &Ctx,
    storage: &Storage,
    name: &str,
    checks: &[(String, Option<&str>, &[u16])],
) -> Result<()> {
    let config_dir = tempfile::tempdir()?;
    let log = ctx.logs.join(format!("{name}.log"));
    let server = procs::start_distribution(storage, config_dir.path(), &log)?;
    let port: u16 = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in {}", server.url))?;
    let mut failures = Vec::new();
    for (path, accept, want) in checks {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        match procs::http_status_with(port, path, &headers) {
            Ok(code) if want.contains(&code) => {}
            Ok(code) => failures.push(format!("GET {path}: {code}, expected {want:?}")),
            Err(e) => failures.push(format!("GET {path}: {e}")),
        }
    }
    server.proc.stop();
    if !failures.is_empty() {
        bail!(
            "Distribution does not serve its store as expected ({name}): {}",
            failures.join("; ")
        );
    }
    Ok(())
}

/// The requests that tell whether Distribution reads the store: a tagged image by tag
/// and one of its layers, and an untagged image by digest (`untagged_status`: 200
/// before the collection, 404 after).
fn probes(
    params: &Params,
    pool: &Pool,
    blob_ok: &'static [u16],
    untagged_status: &'static [u16],
) -> Vec<(String, Option<&'static str>, &'static [u16])> {
    let tagged = params.image(pool, 0, 0);
    let untagged = params.image(pool, 0, 1);
    let repo = &tagged.repo;
    let tag = tagged.tag.clone().unwrap_or_default();
    vec![
        (
            format!("/v2/{repo}/manifests/{tag}"),
            Some(MANIFEST_TYPE),
            &[200],
        ),
        (
            format!("/v2/{repo}/blobs/{}", tagged.layers[0].0),
            None,
            blob_ok,
        ),
        (
            format!("/v2/{repo}/blobs/{}", pool.get(tagged.shared[0]).0),
            None,
            blob_ok,
        ),
        (
            format!("/v2/{repo}/manifests/{}", untagged.manifest.0),
            Some(MANIFEST_TYPE),
            untagged_status,
        ),
    ]
}

/// Adds a failed check to `problems` if `actual != expected`.
fn expect_eq(problems: &mut Vec<String>, what: &str, actual: u64, expected: u64) {
    if actual != expected {
        problems.push(format!("{what}: {actual}, expected {expected}"));
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// `stowage bench push` against `url`: its throughput in MB/s.
fn push_bench(ctx: &Ctx, url: &str, name: &str) -> Result<(f64, Measured)> {
    let mut cmd = Command::new(&ctx.stowage);
    cmd.args(["bench", "push", "--registry", url])
        .args(["--count", "256", "--size", "1048576", "--concurrency", "4"])
        .args(["--repo", &format!("bench/{name}"), "--json"]);
    let m = run_measured(&mut cmd, &ctx.logs, name, Duration::from_secs(600))?;
    m.check("stowage bench push")?;
    let report: Value = serde_json::from_str(&m.stdout).context("stowage bench push JSON")?;
    let v = report["throughput_mb_s"]
        .as_f64()
        .ok_or_else(|| anyhow!("no throughput_mb_s in {}", m.stdout))?;
    Ok((v, m))
}

/// Pushes through `stowage serve` on `loc`, without and with collections running back to
/// back, alternating. With collections, the push starts as the loop's first collection
/// starts, so it meets that collection's busy part (opening the store, listing, marking;
/// its sweep deletes what the round before pushed), and it must end before that
/// collection does.
fn pushes(
    ctx: &Ctx,
    loc: &StowageLoc,
    storage: &Storage,
    tag: &str,
    rounds: usize,
) -> Result<Value> {
    let server = procs::start_stowage(
        &ctx.stowage,
        storage,
        &ctx.logs.join(format!("{tag}-serve.log")),
    )?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut figures = Vec::new();
    for round in 0..rounds {
        let name = format!("{tag}-push-r{round}-nogc");
        let (plain, _) = push_bench(ctx, &server.url, &name)?;
        eprintln!("    round {}: without gc {plain:.1} MB/s", round + 1);
        let cmd = {
            let loc = loc.clone();
            let bin = ctx.stowage.clone();
            move || {
                let mut c = loc.command(&bin, "gc");
                c.args(["--grace", "0s", "--write-deadline"])
                    .arg(format!("{}s", WRITE_DEADLINE.as_secs()))
                    .arg("--json");
                c
            }
        };
        let gc_loop = measure::GcLoop::start(cmd, &ctx.logs, &format!("{tag}-push-r{round}-loop"));
        let started = gc_loop.wait_started(0, RUN_LIMIT);
        let pushed = started.and_then(|()| {
            let t0 = Instant::now();
            let r = push_bench(ctx, &server.url, &format!("{tag}-push-r{round}-withgc"));
            r.map(|(v, _)| (v, t0, Instant::now()))
        });
        let spans = gc_loop.stop();
        let (busy, t0, t1) = pushed?;
        if let Some(e) = spans.iter().find_map(|s| s.error.clone()) {
            bail!("a collection during the pushes failed: {e}");
        }
        let run = &spans[0];
        let overlapped = run.start <= t0 && run.end.is_some_and(|e| e >= t1);
        if !overlapped {
            bail!("the collection did not last the whole push (round {round}); no figure");
        }
        eprintln!(
            "    round {}: with gc {busy:.1} MB/s (push {:.2} s inside a {:.1} s collection; {} \
             collections in the loop)",
            round + 1,
            (t1 - t0).as_secs_f64(),
            run.end.map_or(0.0, |e| (e - run.start).as_secs_f64()),
            spans.len()
        );
        without.push(plain);
        with.push(busy);
        figures.push(json!({
            "without_gc_mb_s": plain, "with_gc_mb_s": busy,
            "push_seconds": (t1 - t0).as_secs_f64(),
            "overlapping_gc_seconds": run.end.map(|e| (e - run.start).as_secs_f64()),
            "gc_runs": spans.len(),
        }));
    }
    server.proc.stop();
    let (a, b) = (median(without).unwrap_or(0.0), median(with).unwrap_or(0.0));
    let slowdown = if a > 0.0 { 1.0 - b / a } else { 0.0 };
    Ok(json!({
        "rounds": figures, "without_gc_median_mb_s": a, "with_gc_median_mb_s": b,
        "slowdown": slowdown,
    }))
}

/// Scaling on local disk: Stowage's collection at fractions of `params`'s size, each
/// store built afresh and removed after.
fn scaling(ctx: &Ctx, place: &Place, params: &Params, full: &StowageRun) -> Result<Vec<Value>> {
    let point = |p: &Params, run: &StowageRun| {
        let manifests = run.count("manifests", "examined");
        let blobs = run.count("blobs", "examined");
        let busy = run.measured.seconds - run.waits();
        json!({
            "scale": p.scale, "manifests": manifests, "blobs": blobs,
            "packs": run.count("packs", "examined"),
            "wall_seconds": run.measured.seconds, "busy_seconds": busy,
            "open_seconds": run.open_seconds(),
            "us_per_manifest": busy * 1e6 / manifests.max(1) as f64,
            "us_per_blob": busy * 1e6 / blobs.max(1) as f64,
            "peak_rss_kib": run.measured.peak_rss_kib,
            "phases": run.phases(),
        })
    };
    let mut out = Vec::new();
    for f in [0.25, 0.5] {
        let p = Params::at_scale(params.scale * f, ctx.seed);
        eprintln!("  scaling: {}", describe(&p, &p.expected()));
        let pool = p.pool_layers();
        let name = format!("scale-{}", p.scale);
        let loc = place.stowage(&name);
        let filled = ctx
            .rt
            .block_on(stores::fill_stowage(&p, &pool, loc.options()))?;
        let at = Instant::now();
        eprintln!("    filled in {:.1} s", filled.seconds);
        let run = stowage_gc(ctx, &loc, at, &format!("local-{name}-gc"))?;
        expect_manifests(&run, &p.expected())?;
        eprintln!(
            "    stowage gc {:.2} s ({})",
            run.measured.seconds,
            run.phases_text()
        );
        out.push(point(&p, &run));
        std::fs::remove_dir_all(&loc.url)?;
    }
    out.push(point(params, full));
    Ok(out)
}

fn expect_manifests(run: &StowageRun, e: &Expected) -> Result<()> {
    let d = run.count("manifests", "deleted");
    if d != e.manifests_deleted {
        bail!(
            "stowage gc deleted {d} manifests, expected {} (the untagged ones)",
            e.manifests_deleted
        );
    }
    Ok(())
}

/// Everything for one backend; returns the JSON document.
fn run_backend(ctx: &Ctx, backend: Backend, scale: f64) -> Result<Value> {
    let started = Instant::now();
    let params = Params::at_scale(scale, ctx.seed);
    let expected = params.expected();
    eprintln!("== {}: {}", backend.name(), describe(&params, &expected));
    let dir = tempfile::Builder::new()
        .prefix("stowage-gc-bench-")
        .tempdir_in("/tmp")?;
    let moto = match backend {
        Backend::Local => None,
        Backend::S3 => {
            let venv = procs::ensure_moto(&ctx.root)?;
            let m = Moto::start(&venv, &ctx.logs.join("s3-moto.log"))?;
            m.create_bucket(STOWAGE_BUCKET)?;
            m.create_bucket(DISTRIBUTION_BUCKET)?;
            Some(m)
        }
    };
    let place = Place { dir, moto };
    let pool = params.pool_layers();
    let mut problems = Vec::new();

    // The stores.
    let loc = place.stowage("stowage");
    eprintln!("  filling Stowage's store ({})", loc.url);
    let st_fill = ctx
        .rt
        .block_on(stores::fill_stowage(&params, &pool, loc.options()))?;
    let st_filled_at = Instant::now();
    eprintln!(
        "    {} blobs, {:.1} MiB in {:.1} s",
        st_fill.blobs,
        st_fill.bytes as f64 / (1u64 << 20) as f64,
        st_fill.seconds
    );
    expect_eq(
        &mut problems,
        "blobs written",
        st_fill.blobs,
        expected.blobs,
    );
    let (target, dstorage) = place.distribution()?;
    eprintln!("  writing Distribution's store");
    let di_fill = ctx
        .rt
        .block_on(stores::fill_distribution(&params, &pool, &target))?;
    eprintln!("    written in {:.1} s", di_fill.seconds);
    let before = ctx.rt.block_on(stores::count_distribution(&target))?;
    let blob_ok: &'static [u16] = match backend {
        Backend::Local => &[200],
        // Distribution redirects blob GETs to presigned S3 URLs.
        Backend::S3 => &[200, 307],
    };
    check_distribution(
        ctx,
        &dstorage,
        &format!("{}-distribution-before", backend.name()),
        &probes(&params, &pool, blob_ok, &[200]),
    )?;
    eprintln!("    Distribution serves it: {before:?}");
    expect_eq(
        &mut problems,
        "distribution blobs before",
        before.blobs,
        expected.blobs,
    );
    expect_eq(
        &mut problems,
        "distribution revisions before",
        before.revisions,
        expected.manifests,
    );

    // Distribution's collection.
    eprintln!("  docker-registry garbage-collect --delete-untagged");
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("gc.yml");
    std::fs::write(
        &config,
        procs::distribution_config(&dstorage, procs::free_port()?),
    )?;
    let mut cmd = Command::new(procs::DISTRIBUTION);
    cmd.args(["garbage-collect", "--delete-untagged"])
        .arg(&config)
        .env_remove("AWS_CA_BUNDLE");
    let di_run = run_measured(
        &mut cmd,
        &ctx.logs,
        &format!("{}-distribution-gc", backend.name()),
        RUN_LIMIT,
    )?;
    di_run.check("docker-registry garbage-collect")?;
    let after = ctx.rt.block_on(stores::count_distribution(&target))?;
    eprintln!(
        "    {:.2} s, peak RSS {:.1} MiB; after: {after:?}",
        di_run.seconds,
        mib(di_run.peak_rss_kib)
    );
    expect_eq(
        &mut problems,
        "distribution blobs after",
        after.blobs,
        expected.blobs - expected.blobs_deleted,
    );
    expect_eq(
        &mut problems,
        "distribution revisions after",
        after.revisions,
        expected.tagged,
    );
    check_distribution(
        ctx,
        &dstorage,
        &format!("{}-distribution-after", backend.name()),
        &probes(&params, &pool, blob_ok, &[404]),
    )?;

    // Stowage's collection.
    eprintln!("  stowage gc --grace 0s --write-deadline 1s --keep-tag-revisions 1");
    let st_run = stowage_gc(
        ctx,
        &loc,
        st_filled_at,
        &format!("{}-stowage-gc", backend.name()),
    )?;
    expect_manifests(&st_run, &expected)?;
    expect_eq(
        &mut problems,
        "stowage blobs deleted",
        st_run.count("blobs", "deleted"),
        expected.blobs_deleted,
    );
    expect_eq(
        &mut problems,
        "stowage blob links deleted",
        st_run.count("blob_links", "deleted"),
        expected.blob_links_deleted,
    );
    expect_eq(
        &mut problems,
        "stowage packs deleted",
        st_run.count("packs", "deleted"),
        expected.packs_deleted,
    );
    eprintln!(
        "    {:.2} s, peak RSS {:.1} MiB; {}",
        st_run.measured.seconds,
        mib(st_run.measured.peak_rss_kib),
        st_run.phases_text()
    );
    let empty = place.stowage("empty");
    if backend == Backend::Local {
        std::fs::create_dir_all(&empty.url)?;
    }
    let baseline = stowage_gc(
        ctx,
        &empty,
        Instant::now(),
        &format!("{}-stowage-gc-empty", backend.name()),
    )?;
    let mut cmd = loc.command(&ctx.stowage, "fsck");
    cmd.arg("--json");
    let fsck = run_measured(
        &mut cmd,
        &ctx.logs,
        &format!("{}-stowage-fsck", backend.name()),
        RUN_LIMIT,
    )?;
    fsck.check("stowage fsck")?;
    let fsck_report: Value = serde_json::from_str(&fsck.stdout).context("stowage fsck JSON")?;
    if fsck_report["clean"] != Value::Bool(true) {
        problems.push(format!(
            "stowage fsck after the collection is not clean: {}",
            fsck.stdout
        ));
    }
    let chunks = fsck_report["examined"]["chunks"].as_u64().unwrap_or(0);
    let live_objects = st_run.count("manifests", "kept")
        + st_run.count("blobs", "kept")
        + st_run.count("packs", "kept");
    let rss = st_run.measured.peak_rss_kib * 1024;
    let over_empty = rss.saturating_sub(baseline.measured.peak_rss_kib * 1024);
    eprintln!(
        "    after: {chunks} live chunks, {live_objects} live objects; fsck {:.1} s; empty-store \
         collection peaks at {:.1} MiB",
        fsck.seconds,
        mib(baseline.measured.peak_rss_kib)
    );

    // Scaling and pushes.
    let scaling = if backend == Backend::Local {
        eprintln!("  scaling");
        scaling(ctx, &place, &params, &st_run)?
    } else {
        Vec::new()
    };
    eprintln!("  pushes through stowage serve, without and with collections");
    let sstorage = match &place.moto {
        None => Storage::Dir(PathBuf::from(&loc.url)),
        Some(m) => Storage::S3 {
            endpoint: m.endpoint.clone(),
            bucket: STOWAGE_BUCKET.into(),
        },
    };
    let rounds = ctx.rounds.unwrap_or(if ctx.quick {
        1
    } else {
        backend.default_rounds()
    });
    let pushes = pushes(ctx, &loc, &sstorage, backend.name(), rounds)?;

    let ratio = di_run.seconds / st_run.measured.seconds;
    let busy = st_run.measured.seconds - st_run.waits();
    let doc = json!({
        "backend": backend.name(),
        "quick": ctx.quick,
        "params": params,
        "expected": expected,
        "distribution_version": procs::distribution_version(),
        "fill": {"stowage": st_fill, "distribution": di_fill},
        "distribution": {
            "wall_seconds": di_run.seconds, "peak_rss_kib": di_run.peak_rss_kib,
            "before": before, "after": after,
        },
        "stowage": st_run.to_json(),
        "stowage_empty_store": baseline.to_json(),
        "fsck_after": {"seconds": fsck.seconds, "report": fsck_report},
        "ratio_distribution_over_stowage": ratio,
        "ratio_without_fixed_waits": di_run.seconds / busy,
        "fixed_waits_seconds": st_run.waits(),
        "live_chunks": chunks,
        "live_objects": live_objects,
        "rss_bytes_per_live_chunk": rss as f64 / chunks.max(1) as f64,
        "rss_bytes_per_live_object": rss as f64 / live_objects.max(1) as f64,
        "rss_over_empty_per_live_chunk": over_empty as f64 / chunks.max(1) as f64,
        "scaling": scaling,
        "pushes": pushes,
        "problems": problems,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let summary = Summary {
        backend,
        params: &params,
        expected: &expected,
        before,
        after,
        di: &di_run,
        st: &st_run,
        baseline: &baseline,
        chunks,
        live_objects,
        doc: &doc,
    };
    summary.print();
    let path = procs::target_dir(&ctx.root).join(format!("gc-bench-{}.json", backend.name()));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("wrote {}", path.display());
    if let Some(m) = place.moto {
        m.proc.stop();
    }
    drop(place.dir);
    if !problems.is_empty() {
        bail!("checks failed: {}", problems.join("; "));
    }
    Ok(doc)
}

/// The readable table of one backend.
struct Summary<'a> {
    backend: Backend,
    params: &'a Params,
    expected: &'a Expected,
    before: DistCounts,
    after: DistCounts,
    di: &'a Measured,
    st: &'a StowageRun,
    baseline: &'a StowageRun,
    chunks: u64,
    live_objects: u64,
    doc: &'a Value,
}

impl Summary<'_> {
    fn print(&self) {
        let (p, e, st) = (self.params, self.expected, self.st);
        println!();
        println!(
            "Garbage collection on {} storage: {}",
            self.backend.name(),
            describe(p, e)
        );
        println!(
            "{:<34} {:>14} {:>14} {:>10}",
            "", "distribution", "stowage", "D / S"
        );
        let (dw, sw) = (self.di.seconds, st.measured.seconds);
        let busy = sw - st.waits();
        println!(
            "{:<34} {:>12.2} s {:>12.2} s {:>10.1}",
            "wall time",
            dw,
            sw,
            dw / sw
        );
        println!(
            "{:<34} {:>14} {:>12.2} s {:>10.1}",
            format!("  less the fixed waits ({:.0} s)", st.waits()),
            "",
            busy,
            dw / busy
        );
        println!(
            "{:<34} {:>10.1} MiB {:>10.1} MiB",
            "peak RSS",
            mib(self.di.peak_rss_kib),
            mib(st.measured.peak_rss_kib)
        );
        println!(
            "{:<34} {:>14} {:>14}",
            "manifests deleted",
            self.before.revisions - self.after.revisions,
            st.count("manifests", "deleted")
        );
        println!(
            "{:<34} {:>14} {:>14}",
            "blobs deleted",
            self.before.blobs - self.after.blobs,
            st.count("blobs", "deleted")
        );
        println!(
            "{:<34} {:>14} {:>14}",
            "packs deleted (stowage)",
            "",
            st.count("packs", "deleted")
        );
        let target = if dw / sw >= 10.0 { "met" } else { "missed" };
        println!(
            "target: Stowage at least 10x faster: {target} ({:.1}x)",
            dw / sw
        );
        let rss = (st.measured.peak_rss_kib * 1024) as f64;
        let per_chunk = rss / self.chunks.max(1) as f64;
        let over = (st
            .measured
            .peak_rss_kib
            .saturating_sub(self.baseline.measured.peak_rss_kib)
            * 1024) as f64
            / self.chunks.max(1) as f64;
        println!(
            "stowage peak RSS per live chunk: {per_chunk:.0} B ({} live chunks; {over:.0} B above \
             an empty store's {:.1} MiB); per live object: {:.0} B ({} manifests + blobs + \
             packs kept); target < 64 B per live chunk: {}",
            self.chunks,
            mib(self.baseline.measured.peak_rss_kib),
            rss / self.live_objects.max(1) as f64,
            self.live_objects,
            if per_chunk < 64.0 { "met" } else { "missed" }
        );
        println!("stowage phases: {}", st.phases_text());
        if let Some(points) = self.doc["scaling"].as_array().filter(|a| !a.is_empty()) {
            println!();
            println!(
                "Stowage's collection by store size ({} disk):",
                self.backend.name()
            );
            println!(
                "{:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12} {:>10} {:>9}",
                "scale",
                "manifests",
                "blobs",
                "packs",
                "wall s",
                "busy s",
                "open s",
                "us/manifest",
                "us/blob",
                "RSS MiB"
            );
            for x in points {
                println!(
                    "{:>6} {:>10} {:>10} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>12.1} {:>10.1} {:>9.1}",
                    x["scale"].as_f64().unwrap_or(0.0),
                    x["manifests"].as_u64().unwrap_or(0),
                    x["blobs"].as_u64().unwrap_or(0),
                    x["packs"].as_u64().unwrap_or(0),
                    x["wall_seconds"].as_f64().unwrap_or(0.0),
                    x["busy_seconds"].as_f64().unwrap_or(0.0),
                    x["open_seconds"].as_f64().unwrap_or(0.0),
                    x["us_per_manifest"].as_f64().unwrap_or(0.0),
                    x["us_per_blob"].as_f64().unwrap_or(0.0),
                    mib(x["peak_rss_kib"].as_u64().unwrap_or(0)),
                );
            }
            println!(
                "(busy = wall less the fixed waits, paid only while a server is attached; per manifest and per blob examined)"
            );
        }
        let pu = &self.doc["pushes"];
        let slowdown = pu["slowdown"].as_f64().unwrap_or(0.0);
        println!();
        println!(
            "pushes (256 x 1 MiB, 4 clients), median of {}: {:.1} MB/s without gc, {:.1} MB/s \
             during a collection: slowdown {:.1}% (target < 10%: {})",
            pu["rounds"].as_array().map_or(0, Vec::len),
            pu["without_gc_median_mb_s"].as_f64().unwrap_or(0.0),
            pu["with_gc_median_mb_s"].as_f64().unwrap_or(0.0),
            slowdown * 100.0,
            if slowdown < 0.10 { "met" } else { "missed" }
        );
        if let Some(problems) = self.doc["problems"].as_array().filter(|a| !a.is_empty()) {
            println!("CHECKS FAILED:");
            for x in problems {
                println!("  {}", x.as_str().unwrap_or_default());
            }
        }
    }
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    let root = procs::workspace_root();
    let stowage = procs::build_stowage(&root, "gc-bench-bin")?;
    procs::ensure_distribution()?;
    let logs = procs::target_dir(&root).join("gc-bench-logs");
    std::fs::create_dir_all(&logs)?;
    let ctx = Ctx {
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        stowage,
        logs,
        root,
        seed: opts.seed,
        rounds: opts.rounds,
        quick: opts.quick,
    };
    for backend in &opts.backends {
        let scale = opts.scale.unwrap_or(if opts.quick {
            0.02
        } else {
            backend.default_scale()
        });
        run_backend(&ctx, *backend, scale)?;
    }
    Ok(())
}
