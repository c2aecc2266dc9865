//! Prometheus metrics of the HTTP front end, served at `/metrics`: requests by endpoint,
//! method and status, their latency, bytes in and out, and uploads in progress.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
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

/// A low-cardinality name for the endpoint a path addresses: one of a fixed set
/// whatever the path (anything unknown is "other" or "invalid").
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

/// The method label: one of a fixed set, so that made-up methods (any token is a valid
/// HTTP method) cannot add series to `/metrics` without bound.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Counts one upload request in progress until dropped: when the response is ready, or
/// when the request's future is dropped (the client went away mid-upload).
struct InProgress(IntGauge);

impl InProgress {
    fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        InProgress(gauge.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware recording every request. Every label comes from a fixed set: the
/// endpoint from [`endpoint`], the method from [`method_label`], the status code.
pub async fn record(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    let endpoint = endpoint(req.uri().path());
    let method = method_label(req.method());
    m.bytes_in
        .with_label_values(&[endpoint])
        .inc_by(content_length(req.headers()));
    let upload = endpoint == "uploads" && matches!(method, "POST" | "PATCH" | "PUT");
    let in_progress = upload.then(|| InProgress::start(&m.uploads));
    let start = Instant::now();
    let resp = next.run(req).await;
    drop(in_progress);
    let status = resp.status().as_u16().to_string();
    m.requests
        .with_label_values(&[endpoint, method, status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[endpoint, method])
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use futures::StreamExt as _;
    use tower::ServiceExt;

    use crate::{AppState, router};

    async fn state() -> AppState {
        let store = stowage_storage::Store::open(stowage_storage::StoreOptions::new("memory://"))
            .await
            .unwrap();
        AppState::new(store)
    }

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn word(&mut self, alphabet: &[u8], len: usize) -> String {
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
                .collect()
        }
    }

    /// The label sets of every series of the request metrics in a rendering.
    fn series(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("stowage_http_"))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
            .collect()
    }

    fn label_values(text: &str, label: &str) -> BTreeSet<String> {
        let key = format!("{label}=\"");
        text.lines()
            .filter(|l| l.starts_with("stowage_http_"))
            .filter_map(|l| {
                let rest = &l[l.find(&key)? + key.len()..];
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn made_up_methods_and_paths_add_no_series() {
        let state = state().await;
        let metrics = state.metrics.clone();
        let app = router(state);
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let token =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
        let path = b"abcdefghijklmnopqrstuvwxyz0123456789._-/%";
        let uuid = "0f5c4a60-7a4b-4f0e-9a35-95f0d3e0c1a2";
        for i in 0..300 {
            let method = match rng.next() % 4 {
                0 => ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
                    [(rng.next() % 7) as usize]
                    .to_owned(),
                _ => {
                    let len = 3 + (rng.next() % 20) as usize;
                    rng.word(token, len)
                }
            };
            let len = 1 + (rng.next() % 30) as usize;
            let (a, b) = (rng.word(path, len), rng.word(path, 8));
            let uri = match rng.next() % 8 {
                0 => format!("/v2/{a}/manifests/{b}"),
                1 => format!("/v2/{a}/blobs/sha256:{b}"),
                2 => format!("/v2/{a}/blobs/uploads/{b}"),
                3 => format!("/v2/{a}/blobs/uploads/{uuid}"),
                4 => format!("/v2/{a}/tags/list?n={i}"),
                5 => format!("/{a}/{b}"),
                6 => format!("/v2/{a}"),
                _ => format!("/v2/_catalog?last={a}"),
            };
            let mut uri = uri.replace('%', "%25");
            while uri.contains("//") {
                uri = uri.replace("//", "/x/");
            }
            let req = axum::http::Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_ne!(
                resp.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {uri}"
            );
        }
        let text = metrics.render();
        let methods = label_values(&text, "method");
        let allowed: BTreeSet<String> = [
            "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(methods.is_subset(&allowed), "{methods:?}");
        assert!(
            methods.contains("other"),
            "made-up methods were sent: {methods:?}"
        );
        let endpoints = label_values(&text, "endpoint");
        let known: BTreeSet<String> = [
            "base",
            "catalog",
            "tags",
            "manifests",
            "blobs",
            "uploads",
            "referrers",
            "healthz",
            "metrics",
            "other",
            "invalid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(endpoints.is_subset(&known), "{endpoints:?}");
        // 300 requests of mostly distinct methods and paths: a label taken from either
        // would make a series of each; fixed sets keep them to a few dozen.
        let requests = series(&text)
            .into_iter()
            .filter(|s| s.starts_with("stowage_http_requests_total{"))
            .count();
        assert!(requests <= 60, "{requests} series:\n{text}");
        let latencies = series(&text)
            .into_iter()
            .filter(|s| s.starts_with("stowage_http_request_duration_seconds_count{"))
            .count();
        assert!(latencies <= 40, "{latencies} series:\n{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_dropped_mid_body_is_no_longer_in_progress() {
        let state = state().await;
        let metrics = state.metrics.clone();
        let app = router(state);
        let start = axum::http::Request::builder()
            .method("POST")
            .uri("/v2/demo/blobs/uploads/")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(start).await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let location = resp.headers()[axum::http::header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(metrics.uploads.get(), 0);

        // A body whose first bytes arrive and whose end never does: the client is stuck
        // or gone, and the server drops the request (a timeout, a closed connection).
        let body = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"the first bytes"))
        })
        .chain(futures::stream::pending());
        let patch = axum::http::Request::builder()
            .method("PATCH")
            .uri(&location)
            .body(Body::from_stream(body))
            .unwrap();
        let mut request = Box::pin(app.clone().oneshot(patch));
        tokio::select! {
            r = &mut request => panic!("the request ended: {:?}", r.map(|r| r.status())),
            () = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
        }
        assert_eq!(metrics.uploads.get(), 1, "the upload is in progress");
        drop(request);
        assert_eq!(
            metrics.uploads.get(),
            0,
            "a dropped upload is not in progress"
        );
        assert!(metrics.render().contains("stowage_uploads_in_progress 0"));
    }
}
