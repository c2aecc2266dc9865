//! `stowage-conformance`: runs the OCI Distribution Specification conformance cases
//! against a registry URL, prints one line per case and a summary, and exits 1 if any
//! case failed.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use stowage_conformance::{Category, Config, Outcome, Report, run_with};

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "OCI Distribution Spec conformance run against a registry"
)]
struct Args {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    registry: String,
    /// Repository the cases push to.
    #[arg(long, default_value = "conformance/test")]
    namespace: String,
    /// Second repository, the target of cross-repository mounts.
    #[arg(long, default_value = "conformance/other")]
    crossmount_namespace: String,
    /// Categories to switch off (pull, push, discovery, management, sha512, sparse,
    /// referrers, subjects, non-distributable, errors). Switching off `sparse` means the
    /// registry is expected to reject sparse manifests with MANIFEST_BLOB_UNKNOWN.
    #[arg(long = "skip", num_args = 1.., value_name = "CATEGORY")]
    skip: Vec<Category>,
    /// Print the report as JSON instead of one line per case.
    #[arg(long)]
    json: bool,
}

fn line(category: Category, name: &str, outcome: &Outcome) -> String {
    let result = match outcome {
        Outcome::Passed => "ok".to_owned(),
        Outcome::Failed(reason) => format!("FAILED: {reason}"),
        Outcome::Skipped(reason) => format!("skipped: {reason}"),
    };
    format!("[{category}] {name} ... {result}")
}

fn summary(report: &Report) -> String {
    format!(
        "{} passed, {} failed, {} skipped",
        report.passed(),
        report.failed(),
        report.skipped()
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = Config::new(args.registry);
    cfg.namespace = args.namespace;
    cfg.crossmount_namespace = args.crossmount_namespace;
    for c in args.skip {
        cfg.categories.set(c, false);
    }
    let json = args.json;
    let report = run_with(&cfg, |case| {
        if !json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", line(case.category, &case.name, &case.outcome));
            let _ = out.flush();
        }
    })
    .await;
    if json {
        let doc = serde_json::json!({
            "passed": report.passed(),
            "failed": report.failed(),
            "skipped": report.skipped(),
            "cases": report.cases,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot render the report as JSON: {e}"),
        }
    } else {
        println!("{}", summary(&report));
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
