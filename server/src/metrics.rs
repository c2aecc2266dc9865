//! Prometheus metrics of the HTTP front end, served at `/metrics`: requests by endpoint,
//! method and status, their latency, bytes in and out, and uploads in progress.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The registry of metrics and the instruments the middleware updates.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    uploads: IntGauge,
    chunk_bytes: IntCounterVec,
    gc: GcMetrics,
    store: Option<stowage_storage::Store>,
}

/// Garbage collection runs made by this process (`gc.every`).
#[derive(Clone)]
pub struct GcMetrics {
    runs: IntCounterVec,
    deleted: IntCounterVec,
    reclaimed: prometheus::IntCounter,
    rescued: prometheus::IntCounter,
    last_duration: prometheus::Gauge,
    last_success: prometheus::Gauge,
}

impl GcMetrics {
    fn new(registry: &Registry) -> Self {
        let def = |e: prometheus::Error| -> ! { panic!("metric definition: {e}") };
        let m = GcMetrics {
            runs: IntCounterVec::new(
                Opts::new(
                    "stowage_gc_runs_total",
                    "Garbage collection runs by outcome",
                ),
                &["outcome"],
            )
            .unwrap_or_else(|e| def(e)),
            deleted: IntCounterVec::new(
                Opts::new(
                    "stowage_gc_deleted_total",
                    "Objects garbage collection deleted, by kind",
                ),
                &["kind"],
            )
            .unwrap_or_else(|e| def(e)),
            reclaimed: prometheus::IntCounter::new(
                "stowage_gc_reclaimed_bytes_total",
                "Bytes of packs and recipes garbage collection deleted",
            )
            .unwrap_or_else(|e| def(e)),
            rescued: prometheus::IntCounter::new(
                "stowage_gc_rescued_total",
                "Candidates kept because something reused them while a run went on",
            )
            .unwrap_or_else(|e| def(e)),
            last_duration: prometheus::Gauge::new(
                "stowage_gc_last_duration_seconds",
                "Duration of the last garbage collection run",
            )
            .unwrap_or_else(|e| def(e)),
            last_success: prometheus::Gauge::new(
                "stowage_gc_last_success_timestamp_seconds",
                "When the last successful garbage collection run ended (Unix time)",
            )
            .unwrap_or_else(|e| def(e)),
        };
        for c in [
            Box::new(m.runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.deleted.clone()),
            Box::new(m.reclaimed.clone()),
            Box::new(m.rescued.clone()),
            Box::new(m.last_duration.clone()),
            Box::new(m.last_success.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| panic!("metric registration: {e}"));
        }
        m
    }

    /// Records one run.
    pub fn record(&self, result: &Result<stowage_gc::Report, stowage_gc::GcError>, seconds: f64) {
        self.last_duration.set(seconds);
        match result {
            Ok(r) => {
                self.runs.with_label_values(&["success"]).inc();
                for (kind, c) in [
                    ("manifests", r.manifests),
                    ("blob_links", r.blob_links),
                    ("blobs", r.blobs),
                    ("packs", r.packs),
                    ("uploads", r.uploads),
                ] {
                    self.deleted.with_label_values(&[kind]).inc_by(c.deleted);
                }
                self.reclaimed.inc_by(r.reclaimed_bytes);
                self.rescued.inc_by(r.rescued);
                self.last_success.set(chrono::Utc::now().timestamp() as f64);
            }
            Err(_) => self.runs.with_label_values(&["failure"]).inc(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every instrument.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "stowage_http_requests_total",
                "HTTP requests by endpoint, method and status",
            ),
            &["endpoint", "method", "status"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "stowage_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
            ]),
            &["endpoint", "method"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "stowage_http_received_bytes_total",
                "Request body bytes (Content-Length)",
            ),
            &["endpoint"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let bytes_out = IntCounterVec::new(
            Opts::new(
                "stowage_http_sent_bytes_total",
                "Response body bytes (Content-Length)",
            ),
            &["endpoint"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let uploads = IntGauge::new(
            "stowage_uploads_in_progress",
            "Upload requests (POST, PATCH, PUT of blobs) being received",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let chunk_bytes = IntCounterVec::new(
            Opts::new(
                "stowage_store_chunk_bytes_total",
                "Bytes of chunks written by this process: stored (new) or deduplicated",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        for c in [
            Box::new(chunk_bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(uploads.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| panic!("metric registration: {e}"));
        }
        let gc = GcMetrics::new(&registry);
        Metrics {
            gc,
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads,
            chunk_bytes,
            store: None,
        }
    }

    /// Instruments for in-process garbage collection runs.
    pub fn gc(&self) -> &GcMetrics {
        &self.gc
    }

    /// Also reports what `store` has written (read at each scrape).
    pub fn with_store(mut self, store: stowage_storage::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(store) = &self.store {
            let totals = store.write_totals();
            for (outcome, value) in [
                ("stored", totals.stored_bytes),
                ("deduplicated", totals.deduplicated_bytes),
            ] {
                let c = self.chunk_bytes.with_label_values(&[outcome]);
                c.inc_by(value.saturating_sub(c.get()));
            }
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A low-cardinality name for the endpoint a path addresses.
fn endpoint(path: &str) -> &'static str {
    let Some(rest) = path
        .strip_prefix("/v2/")
        .or(path.strip_prefix("/v2").map(|_| ""))
    else {
        return match path {
            "/healthz" => "healthz",
            "/metrics" => "metrics",
            _ => "other",
        };
    };
    match crate::route::parse(rest) {
        Ok(crate::route::Route::Base) => "base",
        Ok(crate::route::Route::Catalog) => "catalog",
        Ok(crate::route::Route::Tags(_)) => "tags",
        Ok(crate::route::Route::Manifest(..)) => "manifests",
        Ok(crate::route::Route::Blob(..)) => "blobs",
        Ok(crate::route::Route::UploadStart(_) | crate::route::Route::Upload(..)) => "uploads",
        Ok(crate::route::Route::Referrers(..)) => "referrers",
        Err(_) => "invalid",
    }
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Middleware recording every request.
pub async fn record(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    let endpoint = endpoint(req.uri().path());
    let method = req.method().as_str().to_owned();
    m.bytes_in
        .with_label_values(&[endpoint])
        .inc_by(content_length(req.headers()));
    let upload = endpoint == "uploads" && method != "GET" && method != "DELETE";
    if upload {
        m.uploads.inc();
    }
    let start = Instant::now();
    let resp = next.run(req).await;
    if upload {
        m.uploads.dec();
    }
    let status = resp.status().as_u16().to_string();
    m.requests
        .with_label_values(&[endpoint, method.as_str(), status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[endpoint, method.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.bytes_out
        .with_label_values(&[endpoint])
        .inc_by(content_length(resp.headers()));
    resp
}

/// `GET /metrics`.
pub async fn expose(State(m): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
