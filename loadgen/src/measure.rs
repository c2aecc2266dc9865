//! What a run measures: latency per request kind, errors by status, bytes moved, and
//! the summary operators read (or machines, as JSON).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The kinds of request a run makes, reported separately because their costs differ
/// by orders of magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST …/blobs/uploads/`.
    UploadStart,
    /// `PATCH` of one chunk.
    UploadChunk,
    /// The closing `PUT …?digest=` (with the whole blob when monolithic).
    UploadFinish,
    /// `PUT` of a manifest.
    ManifestPut,
    /// `GET` of a manifest.
    ManifestGet,
    /// `HEAD` of a manifest.
    ManifestHead,
    /// `GET` of a blob.
    BlobGet,
}

impl Kind {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::UploadStart => "upload POST",
            Kind::UploadChunk => "upload PATCH",
            Kind::UploadFinish => "upload PUT",
            Kind::ManifestPut => "manifest PUT",
            Kind::ManifestGet => "manifest GET",
            Kind::ManifestHead => "manifest HEAD",
            Kind::BlobGet => "blob GET",
        }
    }
}

/// Latency percentiles of one request kind, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Which workload ran (`push`, `pull`, `versions`, `manifests`).
    pub workload: String,
    /// Wall-clock seconds, from the first request to the last answer.
    pub seconds: f64,
    /// Requests made, failed ones included.
    pub requests: u64,
    /// Payload bytes sent or received (blob and manifest bodies).
    pub bytes: u64,
    /// `bytes` per second, in MB/s (10^6 bytes).
    pub throughput_mb_s: f64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Latency by request kind.
    pub latency_ms: BTreeMap<Kind, Latency>,
    /// Failed requests by HTTP status, or `transport` and `digest` (content that did
    /// not match its digest).
    pub errors: BTreeMap<String, u64>,
    /// On Stowage: bytes of new chunks the registry stored during the run (from its
    /// metrics); absent for other registries.
    pub stored_bytes: Option<u64>,
}

impl Report {
    /// Failed requests in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Collects measurements from many concurrent requests.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    inner: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    latencies: BTreeMap<Kind, Vec<Duration>>,
    errors: BTreeMap<String, u64>,
    requests: u64,
    bytes: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// Starts the clock.
    pub fn new() -> Self {
        Recorder {
            started: Instant::now(),
            inner: Mutex::new(Samples::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Samples) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One request of `kind` that took `took` and moved `bytes` of payload.
    pub fn request(&self, kind: Kind, took: Duration, bytes: u64) {
        self.with(|s| {
            s.requests += 1;
            s.bytes += bytes;
            s.latencies.entry(kind).or_default().push(took);
        });
    }

    /// One failure (`status` is the HTTP status, or a word for other failures).
    pub fn error(&self, status: impl Into<String>) {
        self.with(|s| *s.errors.entry(status.into()).or_default() += 1);
    }

    /// Requests so far.
    pub fn requests(&self) -> u64 {
        self.with(|s| s.requests)
    }

    /// The summary, with the clock stopped now.
    pub fn report(&self, workload: &str, stored_bytes: Option<u64>) -> Report {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        self.with(|s| Report {
            workload: workload.into(),
            seconds,
            requests: s.requests,
            bytes: s.bytes,
            throughput_mb_s: s.bytes as f64 / seconds / 1e6,
            requests_per_second: s.requests as f64 / seconds,
            latency_ms: s
                .latencies
                .iter_mut()
                .map(|(k, v)| (*k, percentiles(v)))
                .collect(),
            errors: s.errors.clone(),
            stored_bytes,
        })
    }
}

fn percentiles(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1000.0
    };
    Latency {
        count: samples.len() as u64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = percentiles(&mut v);
        assert_eq!(
            (l.count, l.p50, l.p95, l.p99, l.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(percentiles(&mut one).p99, 7.0);
    }

    #[test]
    fn report_sums_requests_bytes_and_errors() {
        let r = Recorder::new();
        r.request(Kind::UploadFinish, Duration::from_millis(10), 1000);
        r.request(Kind::UploadFinish, Duration::from_millis(30), 3000);
        r.error("500");
        r.error("500");
        let report = r.report("push", Some(4000));
        assert_eq!(
            (report.requests, report.bytes, report.error_count()),
            (2, 4000, 2)
        );
        assert_eq!(report.latency_ms[&Kind::UploadFinish].count, 2);
        assert_eq!(report.errors["500"], 2);
        assert!(report.throughput_mb_s > 0.0);
    }
}
