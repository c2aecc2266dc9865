//! `stowage bench`: load any registry with pushes and pulls and report throughput,
//! request rates, latency percentiles and errors (and, on Stowage, what was stored).

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use stowage_loadgen::workload::{self, Manifests, Pull, Push, Versions};
use stowage_loadgen::{Registry, Report, Target};

use crate::output;

/// Where to connect, shared by every workload.
#[derive(Args, Debug, Clone)]
pub struct Connect {
    /// Registry base URL (`http://` or `https://`).
    #[arg(long)]
    registry: url::Url,
    /// Repository to use.
    #[arg(long, default_value = "bench/blobs")]
    repo: String,
    /// User for Basic auth or for fetching tokens.
    #[arg(long, env = "STOWAGE_BENCH_USERNAME")]
    username: Option<String>,
    /// Password for that user.
    #[arg(long, env = "STOWAGE_BENCH_PASSWORD")]
    password: Option<String>,
    /// A personal access token (from `stowage token create`, or another registry's),
    /// used as `docker login -u unused -p TOKEN` uses it: exchanged at the registry's
    /// token endpoint for a Bearer token per repository.
    #[arg(long, env = "STOWAGE_BENCH_TOKEN", conflicts_with = "password")]
    token: Option<String>,
    /// Accept any TLS certificate.
    #[arg(long)]
    insecure: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Push blobs of random bytes (then, with --tag, a manifest listing them).
    Push {
        #[command(flatten)]
        connect: Connect,
        /// Blobs to push.
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Bytes per blob (suffixes KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, default_value = "16MiB", value_parser = parse_size)]
        size: u64,
        /// Uploads at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Push in PATCHes of this size instead of one PUT per blob.
        #[arg(long, value_parser = parse_size)]
        chunk_size: Option<u64>,
        /// Then push a manifest with the blobs as layers under this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Content seed (the same seed pushes the same blobs).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Pull every layer of a manifest and verify each digest.
    Pull {
        #[command(flatten)]
        connect: Connect,
        /// Tag (or digest) of the manifest.
        #[arg(long)]
        tag: String,
        /// Downloads at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Push versions of an image whose layer changes a little each time (dedup).
    Versions {
        #[command(flatten)]
        connect: Connect,
        /// How many versions (tagged v1, v2, …).
        #[arg(long, default_value_t = 10)]
        versions: usize,
        /// Bytes of the uncompressed layer.
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        /// Fraction of the layer's files changed between versions.
        #[arg(long, default_value_t = 0.01)]
        change: f64,
        /// Push in PATCHes of this size.
        #[arg(long, value_parser = parse_size)]
        chunk_size: Option<u64>,
        /// Content seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// HEAD and GET one manifest by tag from many connections.
    Manifests {
        #[command(flatten)]
        connect: Connect,
        /// Tag to request.
        #[arg(long)]
        tag: String,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// Runs a workload, shows progress, prints the report. Fails if any request failed.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let connect = match &command {
        BenchCommand::Push { connect, .. }
        | BenchCommand::Pull { connect, .. }
        | BenchCommand::Versions { connect, .. }
        | BenchCommand::Manifests { connect, .. } => connect.clone(),
    };
    let reg = Registry::new(Target {
        url: connect.registry.clone(),
        username: connect.username.clone(),
        password: connect.password.clone(),
        token: connect.token.clone(),
        insecure: connect.insecure,
    })?;
    let bar = if connect.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    let bytes_style = ProgressStyle::with_template(
        "{spinner} {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}",
    )?;
    let advance = |n: u64| bar.inc(n);
    let repo = connect.repo.clone();
    let report = match command {
        BenchCommand::Push {
            count,
            size,
            concurrency,
            chunk_size,
            tag,
            seed,
            ..
        } => {
            let p = Push {
                repo,
                count,
                size: size as usize,
                concurrency,
                chunk_size: chunk_size.map(|c| c as usize),
                tag,
                seed,
            };
            bar.set_message(format!("generating {count} × {}", output::bytes(size)));
            let blobs = workload::generate(p.count, p.size, p.seed).await;
            bar.set_style(bytes_style);
            bar.set_length(size * count as u64);
            bar.set_message("pushing");
            workload::push(&reg, &p, &blobs, &advance).await
        }
        BenchCommand::Pull {
            tag, concurrency, ..
        } => {
            bar.set_style(bytes_style);
            bar.set_message("pulling");
            let p = Pull {
                repo,
                tag,
                concurrency,
            };
            workload::pull(&reg, &p, &advance, &|total| bar.set_length(total)).await
        }
        BenchCommand::Versions {
            versions,
            size,
            change,
            chunk_size,
            seed,
            ..
        } => {
            let v = Versions {
                repo,
                versions,
                size: size as usize,
                change,
                chunk_size: chunk_size.map(|c| c as usize),
                seed,
            };
            bar.set_message(format!("generating {versions} versions"));
            let layers = workload::generate_versions(&v).await;
            bar.set_style(bytes_style);
            bar.set_length(layers.iter().map(|l| l.data.len() as u64).sum());
            bar.set_message("pushing");
            workload::versions(&reg, &v, &layers, &advance).await
        }
        BenchCommand::Manifests {
            tag,
            connections,
            seconds,
            ..
        } => {
            bar.set_style(ProgressStyle::with_template(
                "{spinner} {msg} {pos} requests {per_sec} {elapsed}",
            )?);
            bar.set_message("requesting");
            let m = Manifests {
                repo,
                tag,
                connections,
                duration: Duration::from_secs(seconds),
            };
            workload::manifests(&reg, &m, &advance).await
        }
    };
    bar.finish_and_clear();
    let text = if connect.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render_report(&report)
    };
    // A reader that stops early (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    anyhow::ensure!(
        report.error_count() == 0,
        "{} request(s) failed{}",
        report.error_count(),
        auth_hint(
            &report,
            connect.token.is_some() || connect.username.is_some()
        )
    );
    Ok(())
}

/// What refusals in a report mean, for the error message.
fn auth_hint(r: &Report, credentials: bool) -> &'static str {
    match (r.errors.contains_key("401"), r.errors.contains_key("403")) {
        (true, _) if !credentials => {
            "; 401: the registry wants credentials (--token, or --username and --password)"
        }
        (true, _) => "; 401: the registry refused the credentials (or the token's scope)",
        (false, true) => "; 403: the credentials do not grant access to the repository",
        (false, false) => "",
    }
}

/// The report as a person reads it.
fn render_report(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} requests in {:.2} s, {} moved",
        r.workload,
        r.requests,
        r.seconds,
        output::bytes(r.bytes)
    );
    let _ = writeln!(
        out,
        "throughput      {:.1} MB/s, {:.1} requests/s",
        r.throughput_mb_s, r.requests_per_second
    );
    if let Some(stored) = r.stored_bytes {
        let _ = writeln!(
            out,
            "stored          {} of new chunks",
            output::bytes(stored)
        );
    }
    let _ = writeln!(
        out,
        "{:<16}{:>8}{:>10}{:>10}{:>10}{:>10}",
        "latency (ms)", "count", "p50", "p95", "p99", "max"
    );
    for (kind, l) in &r.latency_ms {
        let _ = writeln!(
            out,
            "{:<16}{:>8}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
            kind.name(),
            l.count,
            l.p50,
            l.p95,
            l.p99,
            l.max
        );
    }
    if r.errors.is_empty() {
        let _ = writeln!(out, "errors          none");
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(out, "errors          {}", list.join(", "));
    }
    out
}

/// `16MiB`, `1GiB`, `500KB`, `1000`: a size in bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 16MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000 * 1000,
        "g" | "gb" => 1000 * 1000 * 1000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_as_a_table() {
        let rec = stowage_loadgen::measure::Recorder::new();
        rec.request(
            stowage_loadgen::Kind::UploadFinish,
            Duration::from_millis(12),
            1 << 20,
        );
        rec.error("503");
        let text = render_report(&rec.report("push", Some(1 << 20)));
        assert!(text.starts_with("push: 1 requests in "), "{text}");
        assert!(
            text.contains("stored          1.0 MiB of new chunks"),
            "{text}"
        );
        assert!(
            text.contains("upload PUT             1     12.00"),
            "{text}"
        );
        assert!(text.contains("errors          503: 1"), "{text}");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
