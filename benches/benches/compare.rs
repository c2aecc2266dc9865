//! Stowage against CNCF Distribution (Debian's `docker-registry` 2.8), side by side, on
//! local disk and on S3 (moto). Each workload runs against both registries in turn, for
//! each round, on fresh storage and fresh server processes, with only one registry
//! running at a time; the table compares the medians with Stowage's targets.
//!
//! ```text
//! cargo bench -p stowage-benches --bench compare -- [--rounds N] [--backend local|s3|both] [--quick]
//! ```
//!
//! The load comes from `stowage bench` of the release binary, which this builds first
//! (and runs from a copy in `target/compare-bin/`, safe from concurrent rebuilds).
//! Workloads: (1) one 1 GiB blob pushed monolithically, (2) the same in 16 MiB PATCHes,
//! (3) 64 blobs of 16 MiB from 16 clients (and Stowage's peak RSS meanwhile), (4) pulling
//! them back, (5) manifest HEAD and GET by tag from 64 connections, (6) bytes on disk
//! after 10 versions of an image whose 256 MiB layer changes 1% each time. On S3 only
//! 1, 3 and 4 run. `--quick` shrinks everything and runs one round.
//!
//! Progress goes to stderr, the table to stdout, every round's figures to
//! `target/compare-<backend>.json`, and server logs to `target/compare-logs/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "compare/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use procs::{Kind, Moto, Server, Storage};

/// Whether a figure is better high or low, and the bound Stowage's ratio must meet.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Stowage / Distribution at least this.
    RatioAtLeast(f64),
    /// Stowage / Distribution at most this.
    RatioAtMost(f64),
    /// Stowage's own figure below this.
    StowageBelow(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(r) => format!("ratio >= {r}"),
            Target::RatioAtMost(r) => format!("ratio <= {r}"),
            Target::StowageBelow(v) => format!("stowage < {v} {unit}"),
        }
    }

    fn met(self, stowage: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Target::RatioAtMost(r) => ratio.map(|x| x <= r),
            Target::StowageBelow(v) => Some(stowage < v),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Copy)]
struct Metric {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    target: Target,
}

const W1: Metric = Metric {
    id: "w1_push_monolithic",
    title: "1 push 1 blob, monolithic",
    unit: "MB/s",
    target: Target::RatioAtLeast(4.0),
};
const W2: Metric = Metric {
    id: "w2_push_chunked",
    title: "2 push 1 blob, 16 MiB PATCHes",
    unit: "MB/s",
    target: Target::RatioAtLeast(4.0),
};
const W3: Metric = Metric {
    id: "w3_push_concurrent",
    title: "3 push many blobs, 16 clients",
    unit: "MB/s",
    target: Target::RatioAtLeast(4.0),
};
const W3_RSS: Metric = Metric {
    id: "w3_peak_rss",
    title: "3 server peak RSS during 3",
    unit: "MiB",
    target: Target::StowageBelow(128.0),
};
const W4: Metric = Metric {
    id: "w4_pull_concurrent",
    title: "4 pull them, 16 clients",
    unit: "MB/s",
    target: Target::RatioAtLeast(2.0),
};
const W5: Metric = Metric {
    id: "w5_manifests",
    title: "5 manifest HEAD+GET, 64 conns",
    unit: "req/s",
    target: Target::RatioAtLeast(3.0),
};
const W6: Metric = Metric {
    id: "w6_versions_stored",
    title: "6 stored after 10 versions",
    unit: "MiB",
    target: Target::RatioAtMost(0.25),
};

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

    fn metrics(self) -> &'static [Metric] {
        match self {
            Backend::Local => &[W1, W2, W3, W3_RSS, W4, W5, W6],
            Backend::S3 => &[W1, W3, W3_RSS, W4],
        }
    }
}

/// The sizes of the workloads, full or `--quick`.
#[derive(Debug, Clone)]
struct Sizes {
    big: &'static str,
    chunk: &'static str,
    many_count: usize,
    many_size: &'static str,
    clients: usize,
    connections: usize,
    manifest_seconds: u64,
    versions: usize,
    layer: &'static str,
    change: f64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        let full = Sizes {
            big: "1GiB",
            chunk: "16MiB",
            many_count: 64,
            many_size: "16MiB",
            clients: 16,
            connections: 64,
            manifest_seconds: 10,
            versions: 10,
            layer: "256MiB",
            change: 0.01,
        };
        if quick {
            Sizes {
                big: "256MiB",
                many_count: 16,
                many_size: "4MiB",
                manifest_seconds: 3,
                layer: "64MiB",
                ..full
            }
        } else {
            full
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "big_blob": self.big, "chunk": self.chunk, "many_count": self.many_count,
            "many_size": self.many_size, "clients": self.clients,
            "connections": self.connections, "manifest_seconds": self.manifest_seconds,
            "versions": self.versions, "layer": self.layer, "change": self.change,
        })
    }
}

struct Opts {
    rounds: usize,
    backends: Vec<Backend>,
    quick: bool,
}

fn parse_args() -> Result<Opts> {
    let mut rounds = None;
    let mut backends = vec![Backend::Local];
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--quick" => quick = true,
            "--rounds" => {
                let n: usize = args
                    .next()
                    .ok_or_else(|| anyhow!("--rounds needs a number"))?
                    .parse()
                    .context("--rounds")?;
                if n == 0 {
                    bail!("--rounds must be at least 1");
                }
                rounds = Some(n);
            }
            "--backend" => {
                backends = match args.next().as_deref() {
                    Some("local") => vec![Backend::Local],
                    Some("s3") => vec![Backend::S3],
                    Some("both") => vec![Backend::Local, Backend::S3],
                    other => bail!("--backend local|s3|both, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "cargo bench -p stowage-benches --bench compare -- \
                     [--rounds N] [--backend local|s3|both] [--quick]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Opts {
        rounds: rounds.unwrap_or(if quick { 1 } else { 3 }),
        backends,
        quick,
    })
}

/// What one run of `stowage bench` gave.
struct Outcome {
    report: Option<Value>,
    error: Option<String>,
    seconds: f64,
}

impl Outcome {
    fn figure(&self, field: &str) -> Result<f64, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.report
            .as_ref()
            .and_then(|r| r[field].as_f64())
            .ok_or_else(|| format!("no {field} in the report"))
    }
}

/// One figure of one round.
struct Sample {
    metric: &'static str,
    registry: Kind,
    round: usize,
    value: Result<f64, String>,
    details: Value,
}

/// The environment every round shares.
struct Ctx {
    root: PathBuf,
    stowage: PathBuf,
    logs: PathBuf,
    venv: Option<PathBuf>,
    sizes: Sizes,
    samples: Vec<Sample>,
}

impl Ctx {
    fn record(
        &mut self,
        metric: &Metric,
        registry: Kind,
        round: usize,
        value: Result<f64, String>,
        details: Value,
    ) {
        match &value {
            Ok(v) => eprintln!(
                "    {:<12} {:<30} {:>10.1} {}",
                registry.name(),
                metric.title,
                v,
                metric.unit
            ),
            Err(e) => eprintln!(
                "    {:<12} {:<30} FAILED: {e}",
                registry.name(),
                metric.title
            ),
        }
        self.samples.push(Sample {
            metric: metric.id,
            registry,
            round,
            value,
            details,
        });
    }

    /// Runs `stowage bench <args> --registry url --json`, for at most `limit`.
    fn bench(&self, url: &str, args: &[String], log_name: &str) -> Outcome {
        let out_path = self.logs.join(format!("{log_name}.json"));
        let err_path = self.logs.join(format!("{log_name}.stderr"));
        let start = Instant::now();
        let run = || -> Result<(std::process::ExitStatus, String)> {
            let mut child = Command::new(&self.stowage)
                .arg("bench")
                .args(args)
                .args(["--registry", url, "--json"])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out_path)?)
                .stderr(std::fs::File::create(&err_path)?)
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(30 * 60);
            loop {
                if let Some(status) = child.try_wait()? {
                    return Ok((status, std::fs::read_to_string(&out_path)?));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "stowage bench {} timed out after 30 minutes",
                        args.join(" ")
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let (status, stdout) = match run() {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    report: None,
                    error: Some(e.to_string()),
                    seconds: start.elapsed().as_secs_f64(),
                };
            }
        };
        let report: Option<Value> = serde_json::from_str(&stdout).ok();
        let error = if status.success() && report.is_some() {
            None
        } else {
            let mut msg = format!("exit {}", status.code().unwrap_or(-1));
            if let Some(errors) = report.as_ref().map(|r| &r["errors"]) {
                let _ = write!(msg, ", errors {errors}");
            }
            let stderr = procs::tail(&err_path);
            if !stderr.is_empty() {
                let _ = write!(msg, ": {stderr}");
            }
            Some(msg)
        };
        Outcome {
            report,
            error,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// Fresh storage for one registry's turn: a new directory, or a new moto with a
    /// new bucket. The guards keep it alive; drop them to clean up.
    fn fresh_storage(&self, backend: Backend, tag: &str) -> Result<(Storage, Fresh)> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stowage-compare-{tag}-"))
            .tempdir()?;
        match backend {
            Backend::Local => {
                let data = dir.path().join("data");
                std::fs::create_dir(&data)?;
                Ok((Storage::Dir(data), Fresh { dir, moto: None }))
            }
            Backend::S3 => {
                let venv = self.venv.as_ref().expect("moto installed for s3");
                let moto = Moto::start(venv, &self.logs.join(format!("{tag}-moto.log")))?;
                let bucket = tag.replace('_', "-");
                moto.create_bucket(&bucket)?;
                Ok((
                    Storage::S3 {
                        endpoint: moto.endpoint.clone(),
                        bucket,
                    },
                    Fresh {
                        dir,
                        moto: Some(moto),
                    },
                ))
            }
        }
    }

    fn start(&self, kind: Kind, storage: &Storage, fresh: &Fresh, tag: &str) -> Result<Server> {
        let log = self.logs.join(format!("{tag}.log"));
        match kind {
            Kind::Stowage => procs::start_stowage(&self.stowage, storage, &log),
            Kind::Distribution => procs::start_distribution(storage, fresh.dir.path(), &log),
        }
    }
}

/// What backs one turn: a temporary directory (storage or configuration) and, on S3,
/// the moto server. Dropping it stops moto and deletes the directory.
struct Fresh {
    dir: tempfile::TempDir,
    moto: Option<Moto>,
}

impl Fresh {
    fn stop(self) {
        if let Some(m) = self.moto {
            m.proc.stop();
        }
    }
}

fn order(round: usize) -> [Kind; 2] {
    if round.is_multiple_of(2) {
        [Kind::Stowage, Kind::Distribution]
    } else {
        [Kind::Distribution, Kind::Stowage]
    }
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// Workloads 1 and 2: one big blob, on fresh storage and a fresh server.
fn big_push(
    ctx: &mut Ctx,
    backend: Backend,
    round: usize,
    kind: Kind,
    metric: &Metric,
    chunked: bool,
) {
    let tag = format!("r{round}-{}-{}", metric.id, kind.name());
    let mut args = vec![
        s("push"),
        s("--count"),
        s(1),
        s("--size"),
        s(ctx.sizes.big),
        s("--concurrency"),
        s(1),
        s("--repo"),
        s("bench/big"),
    ];
    if chunked {
        args.extend([s("--chunk-size"), s(ctx.sizes.chunk)]);
    }
    let result = (|| -> Result<Outcome> {
        let (storage, fresh) = ctx.fresh_storage(backend, &tag)?;
        let server = ctx.start(kind, &storage, &fresh, &tag)?;
        let out = ctx.bench(&server.url, &args, &tag);
        server.proc.stop();
        fresh.stop();
        Ok(out)
    })();
    match result {
        Ok(out) => {
            let v = out.figure("throughput_mb_s");
            let details = json!({"args": args, "report": out.report, "wall_seconds": out.seconds});
            ctx.record(metric, kind, round, v, details);
        }
        Err(e) => ctx.record(metric, kind, round, Err(format!("{e:#}")), Value::Null),
    }
}

/// Workloads 3, 4 and (on local disk) 5, on one fresh server: push many blobs under
/// tag w3 (with the server's peak RSS), pull them back, then request the manifest.
fn many(ctx: &mut Ctx, backend: Backend, round: usize, kind: Kind) {
    let tag = format!("r{round}-w3-{}", kind.name());
    let sz = ctx.sizes.clone();
    let repo = "bench/many";
    let push = vec![
        s("push"),
        s("--count"),
        s(sz.many_count),
        s("--size"),
        s(sz.many_size),
        s("--concurrency"),
        s(sz.clients),
        s("--tag"),
        s("w3"),
        s("--repo"),
        s(repo),
    ];
    let pull = vec![
        s("pull"),
        s("--tag"),
        s("w3"),
        s("--concurrency"),
        s(sz.clients),
        s("--repo"),
        s(repo),
    ];
    let manifests = vec![
        s("manifests"),
        s("--tag"),
        s("w3"),
        s("--connections"),
        s(sz.connections),
        s("--seconds"),
        s(sz.manifest_seconds),
        s("--repo"),
        s(repo),
    ];
    let started = ctx
        .fresh_storage(backend, &tag)
        .and_then(|(storage, fresh)| Ok((ctx.start(kind, &storage, &fresh, &tag)?, fresh)));
    let (server, fresh) = match started {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("{e:#}");
            for m in backend
                .metrics()
                .iter()
                .filter(|m| [W3.id, W3_RSS.id, W4.id, W5.id].contains(&m.id))
            {
                ctx.record(m, kind, round, Err(msg.clone()), Value::Null);
            }
            return;
        }
    };
    let pid = server.proc.pid();
    let rss_before = procs::peak_rss_kib(pid).ok();
    let out = ctx.bench(&server.url, &push, &format!("{tag}-push"));
    let rss = procs::peak_rss_kib(pid);
    let pushed = out.error.is_none();
    let v = out.figure("throughput_mb_s");
    ctx.record(
        &W3,
        kind,
        round,
        v,
        json!({"args": push, "report": out.report, "wall_seconds": out.seconds}),
    );
    ctx.record(
        &W3_RSS,
        kind,
        round,
        rss.map(|k| k as f64 / 1024.0).map_err(|e| e.to_string()),
        json!({"pid": pid, "vmhwm_kib_at_start": rss_before}),
    );
    let after_push = if pushed {
        None
    } else {
        Some(String::from("the push of workload 3 failed"))
    };
    let out = match &after_push {
        None => ctx.bench(&server.url, &pull, &format!("{tag}-pull")),
        Some(e) => Outcome {
            report: None,
            error: Some(e.clone()),
            seconds: 0.0,
        },
    };
    let v = out.figure("throughput_mb_s");
    ctx.record(
        &W4,
        kind,
        round,
        v,
        json!({"args": pull, "report": out.report, "wall_seconds": out.seconds}),
    );
    if backend == Backend::Local {
        let out = match &after_push {
            None => ctx.bench(&server.url, &manifests, &format!("{tag}-manifests")),
            Some(e) => Outcome {
                report: None,
                error: Some(e.clone()),
                seconds: 0.0,
            },
        };
        let v = out.figure("requests_per_second");
        ctx.record(
            &W5,
            kind,
            round,
            v,
            json!({"args": manifests, "report": out.report, "wall_seconds": out.seconds}),
        );
    }
    server.proc.stop();
    fresh.stop();
}

/// Workload 6: versions of an image, then the bytes under the storage directory with
/// the server stopped.
fn versions(ctx: &mut Ctx, round: usize, kind: Kind) {
    let tag = format!("r{round}-w6-{}", kind.name());
    let sz = ctx.sizes.clone();
    let args = vec![
        s("versions"),
        s("--versions"),
        s(sz.versions),
        s("--size"),
        s(sz.layer),
        s("--change"),
        s(sz.change),
        s("--repo"),
        s("bench/versions"),
    ];
    let result = (|| -> Result<(Outcome, u64)> {
        let (storage, fresh) = ctx.fresh_storage(Backend::Local, &tag)?;
        let server = ctx.start(kind, &storage, &fresh, &tag)?;
        let out = ctx.bench(&server.url, &args, &tag);
        server.proc.stop();
        let Storage::Dir(dir) = &storage else {
            unreachable!("workload 6 runs on local disk")
        };
        let bytes = procs::dir_bytes(dir)?;
        fresh.stop();
        Ok((out, bytes))
    })();
    match result {
        Ok((out, bytes)) => {
            let v = match &out.error {
                Some(e) => Err(e.clone()),
                None => Ok(bytes as f64 / (1u64 << 20) as f64),
            };
            let details = json!({
                "args": args, "report": out.report, "wall_seconds": out.seconds,
                "bytes_on_disk": bytes,
            });
            ctx.record(&W6, kind, round, v, details);
        }
        Err(e) => ctx.record(&W6, kind, round, Err(format!("{e:#}")), Value::Null),
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

/// A table row's figures: the median of the rounds that worked, or the first error.
struct Summary {
    median: Option<f64>,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
}

fn summarize(samples: &[Sample], metric: &str, kind: Kind) -> Summary {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && s.registry == kind)
        .collect();
    let values: Vec<f64> = mine.iter().filter_map(|s| s.value.clone().ok()).collect();
    let errors: Vec<String> = mine.iter().filter_map(|s| s.value.clone().err()).collect();
    Summary {
        median: median(values.clone()),
        ok: values.len(),
        failed: errors.len(),
        first_error: errors.into_iter().next(),
    }
}

fn cell(s: &Summary) -> String {
    match (s.median, s.failed) {
        (Some(m), 0) => format!("{m:.1}"),
        (Some(m), f) => format!("{m:.1} ({f} failed)"),
        (None, _) => String::from("ERROR"),
    }
}

/// Prints the table to stdout and returns its rows as JSON.
fn report(backend: Backend, rounds: usize, samples: &[Sample]) -> Value {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    println!();
    println!(
        "Stowage vs Distribution 2.8 on {} storage, median of {rounds} round(s)",
        backend.name()
    );
    println!(
        "{:<32} {:>14} {:>14} {:>6} {:>8} {:>20} {:>4}",
        "workload", "stowage", "distribution", "unit", "ratio", "target", "met"
    );
    for m in backend.metrics() {
        let st = summarize(samples, m.id, Kind::Stowage);
        let di = summarize(samples, m.id, Kind::Distribution);
        let ratio = match (st.median, di.median) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let met = st.median.and_then(|v| m.target.met(v, ratio));
        println!(
            "{:<32} {:>14} {:>14} {:>6} {:>8} {:>20} {:>4}",
            m.title,
            cell(&st),
            cell(&di),
            m.unit,
            ratio.map_or_else(|| String::from("-"), |r| format!("{r:.2}")),
            m.target.describe(m.unit),
            match met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            }
        );
        for (kind, sum) in [(Kind::Stowage, &st), (Kind::Distribution, &di)] {
            if let Some(e) = &sum.first_error {
                errors.push(format!("  {} / {}: {e}", m.title, kind.name()));
            }
        }
        rows.push(json!({
            "metric": m.id, "title": m.title, "unit": m.unit,
            "stowage_median": st.median, "distribution_median": di.median,
            "stowage_rounds_ok": st.ok, "stowage_rounds_failed": st.failed,
            "distribution_rounds_ok": di.ok, "distribution_rounds_failed": di.failed,
            "ratio": ratio, "target": m.target.describe(m.unit), "met": met,
            "stowage_error": st.first_error, "distribution_error": di.first_error,
        }));
    }
    if backend == Backend::S3 {
        println!(
            "note: Distribution answers blob GETs with redirects to presigned S3 URLs (its \
             default), so its pull figure measures the client reading moto directly"
        );
    }
    if !errors.is_empty() {
        println!("errors:");
        for e in errors {
            println!("{e}");
        }
    }
    Value::Array(rows)
}

fn run_backend(ctx: &mut Ctx, backend: Backend, rounds: usize, quick: bool) -> Result<()> {
    ctx.samples.clear();
    let started = Instant::now();
    for round in 0..rounds {
        eprintln!(
            "== {} round {}/{rounds} ({})",
            backend.name(),
            round + 1,
            order(round).map(Kind::name).join(" then ")
        );
        let b = ctx.sizes.big;
        eprintln!("  workload 1: push one {b} blob, monolithic");
        for kind in order(round) {
            big_push(ctx, backend, round, kind, &W1, false);
        }
        if backend == Backend::Local {
            eprintln!(
                "  workload 2: push one {b} blob in {} PATCHes",
                ctx.sizes.chunk
            );
            for kind in order(round) {
                big_push(ctx, backend, round, kind, &W2, true);
            }
        }
        eprintln!(
            "  workloads 3-5: push {} x {} from {} clients, pull, manifests",
            ctx.sizes.many_count, ctx.sizes.many_size, ctx.sizes.clients
        );
        for kind in order(round) {
            many(ctx, backend, round, kind);
        }
        if backend == Backend::Local {
            eprintln!(
                "  workload 6: {} versions of a {} layer, {}% changed each",
                ctx.sizes.versions,
                ctx.sizes.layer,
                ctx.sizes.change * 100.0
            );
            for kind in order(round) {
                versions(ctx, round, kind);
            }
        }
    }
    let rows = report(backend, rounds, &ctx.samples);
    let samples: Vec<Value> = ctx
        .samples
        .iter()
        .map(|s| {
            json!({
                "metric": s.metric, "registry": s.registry.name(), "round": s.round,
                "value": s.value.as_ref().ok(), "error": s.value.as_ref().err(),
                "details": s.details,
            })
        })
        .collect();
    let doc = json!({
        "backend": backend.name(),
        "rounds": rounds,
        "quick": quick,
        "sizes": ctx.sizes.to_json(),
        "distribution_version": procs::distribution_version(),
        "seconds": started.elapsed().as_secs_f64(),
        "summary": rows,
        "samples": samples,
    });
    let path = procs::target_dir(&ctx.root).join(format!("compare-{}.json", backend.name()));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    let root = procs::workspace_root();
    let stowage = procs::build_stowage(&root, "compare-bin")?;
    procs::ensure_distribution()?;
    let venv = if opts.backends.contains(&Backend::S3) {
        Some(procs::ensure_moto(&root)?)
    } else {
        None
    };
    let logs = procs::target_dir(&root).join("compare-logs");
    std::fs::create_dir_all(&logs)?;
    let mut ctx = Ctx {
        root,
        stowage,
        logs,
        venv,
        sizes: Sizes::new(opts.quick),
        samples: Vec::new(),
    };
    for backend in &opts.backends {
        run_backend(&mut ctx, *backend, opts.rounds, opts.quick)?;
    }
    Ok(())
}
