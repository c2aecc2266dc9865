//! `stowage serve`: the registry's HTTP server. One log line per request, graceful
//! shutdown on SIGINT/SIGTERM (in-flight requests finish), a timeout on requests that
//! stall, and panics turned into 500s instead of dropped connections.

use std::time::Duration;

use axum::http::Request;
use stowage_storage::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::api::{AppState, router};
use crate::config::ServeConfig;

/// Runs the registry until a shutdown signal.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let store = Store::open(config.store.clone()).await?;
    spawn_store_refresh(store.clone());
    let mut state = AppState::new(store.clone());
    state.allow_sparse = config.allow_sparse_manifests;
    state.max_manifest_bytes = config.max_manifest_bytes;
    state.max_blob_bytes = config.max_blob_bytes;
    state.deletes = config.deletes;
    state.public_url = config.public_url.clone();
    let auth = stowage_auth::Auth::open(&store, config.auth.model.clone()).await?;
    announce_access(&auth, &config);
    spawn_auth_refresh(auth.clone());
    state.gate = Some(crate::auth::Gate {
        auth,
        public_url: config.public_url.clone(),
        https: config.tls.is_some(),
        public_metrics: config.auth.public_metrics,
        failed: std::sync::Arc::new(crate::auth::FailedLogins::new(
            config.auth.failed_login_limit,
            Duration::from_secs(60),
        )),
    });
    if let Some((options, every)) = config.gc.clone() {
        spawn_gc_schedule(
            state.store.clone(),
            options,
            every,
            state.metrics.gc().clone(),
        );
    }
    let app = router(state)
        .layer(CatchPanicLayer::new())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            config.body_timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(
                    |resp: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                        tracing::info!(status = resp.status().as_u16(), ms = latency.as_millis() as u64, "served");
                    },
                ),
        );
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            // In-flight requests finish; stalled bodies end at the body timeout.
            handle.graceful_shutdown(None);
        }
    });
    let rustls = match &config.tls {
        Some(tls) => {
            // One provider for the process, whatever else linked rustls in.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let loaded =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await;
            Some(loaded.map_err(|e| {
                anyhow::anyhow!(
                    "TLS certificate {} / key {}: {e}",
                    tls.cert.display(),
                    tls.key.display()
                )
            })?)
        }
        None => None,
    };
    let scheme = if rustls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, public_url = ?config.public_url, "stowage listening");
    // Tests and scripts read the bound address (the port may have been 0) from here.
    println!("listening on {addr}");
    // Handlers can read the client's address with `ConnectInfo<SocketAddr>`.
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let limits = config.conn;
    tracing::info!(
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        per_client = limits.per_client,
        max_connections = limits.max_connections,
        "connection limits"
    );
    let limiter = crate::conn::ConnLimiter::new(&limits);
    match rustls {
        Some(rustls) => {
            // The limiter runs first: a refused connection costs no TLS handshake.
            let server = axum_server::from_tcp_rustls(listener, rustls)?
                .handle(handle)
                .map(|tls| tls.acceptor(limiter));
            limits.configure(server).serve(service).await?
        }
        None => {
            let server = axum_server::from_tcp(listener)?
                .handle(handle)
                .acceptor(limiter);
            limits.configure(server).serve(service).await?
        }
    }
    // Every request has finished: collectors need not wait for this process any more.
    if let Err(e) = store.retire_writer().await {
        tracing::warn!(error = %e, "could not remove this process's presence record");
    }
    tracing::info!("stowage stopped");
    Ok(())
}

/// Says at start whether access control is on; loudly when it is not.
fn announce_access(auth: &stowage_auth::Auth, config: &ServeConfig) {
    let policy = auth.policy();
    if auth.enabled() {
        tracing::info!(
            users = policy.users.len(),
            robots = policy.robots.len(),
            namespaces = policy.namespaces.len(),
            service = %auth.config().service,
            "access control is on"
        );
        return;
    }
    let exposed = !config.listen.ip().is_loopback();
    tracing::warn!(
        listen = %config.listen,
        "ACCESS CONTROL IS OFF: no user exists, so anyone who reaches this port may push, \
         delete and read everything. Create one (`stowage admin user create NAME`) or name \
         bootstrap admins in [auth] admins; it takes effect without a restart"
    );
    if exposed {
        eprintln!(
            "stowage: WARNING: listening on {} with access control off: anyone on the network may push and delete",
            config.listen
        );
    }
}

/// Re-reads the access policy every `auth.refresh` (so changes made through other
/// servers or the CLI are obeyed within that bound) and writes tokens' last-use times
/// once a minute.
fn spawn_auth_refresh(auth: stowage_auth::Auth) {
    tokio::spawn(async move {
        let every = auth.config().refresh;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = std::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(e) = auth.refresh().await {
                tracing::warn!(error = %e, "re-reading the access policy failed; keeping the last one read");
            }
            if last_flush.elapsed() >= Duration::from_secs(60) {
                last_flush = std::time::Instant::now();
                if let Err(e) = auth.flush_usage().await {
                    tracing::warn!(error = %e, "recording tokens' last use failed");
                }
            }
        }
    });
}

/// Keeps this process's view of a shared store current: the garbage collector's state
/// (writes check it anyway, but a fresh view keeps existence checks and dedup honest
/// without a read on the request path) and packs other processes wrote (for dedup).
fn spawn_store_refresh(store: Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(stowage_storage::collection::REFRESH / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            if let Err(e) = store.refresh_collection_view().await {
                tracing::warn!(error = %e, "reading the garbage collector's state failed");
            }
            if n.is_multiple_of(60)
                && let Err(e) = store.refresh_index().await
            {
                tracing::warn!(error = %e, "refreshing the dedup index failed");
            }
        }
    });
}

/// `gc.every`: collects in-process on a schedule, recording each run in the metrics.
/// A run that finds another collector running simply skips its turn.
fn spawn_gc_schedule(
    store: Store,
    options: stowage_gc::Options,
    every: Duration,
    metrics: crate::metrics::GcMetrics,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let started = std::time::Instant::now();
            let result = stowage_gc::collect(&store, &options, &stowage_gc::Silent).await;
            metrics.record(&result, started.elapsed().as_secs_f64());
            match &result {
                Ok(r) => tracing::info!(
                    manifests = r.manifests.deleted,
                    blobs = r.blobs.deleted,
                    packs = r.packs.deleted,
                    uploads = r.uploads.deleted,
                    reclaimed_bytes = r.reclaimed_bytes,
                    rescued = r.rescued,
                    seconds = started.elapsed().as_secs_f64(),
                    "garbage collection done"
                ),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
