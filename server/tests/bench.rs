//! `stowage bench` against the real server: each workload's JSON report counts what
//! it did (requests, bytes, what Stowage stored), pulls verify digests, and a failed
//! request makes the command fail with the status in its report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use stowage_tests::server::Server;

fn bench(args: &[&str]) -> (bool, serde_json::Value) {
    let (ok, report, _) = bench_with_stderr(args);
    (ok, report)
}

/// [`bench`], with what the command printed on standard error.
fn bench_with_stderr(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("STOWAGE_BENCH_USERNAME")
        .env_remove("STOWAGE_BENCH_PASSWORD")
        .env_remove("STOWAGE_BENCH_TOKEN")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), report, stderr)
}

/// The stowage CLI on a store (no server), with `stdin`; its standard output.
fn stowage(storage: &str, args: &[&str], stdin: &str) -> String {
    stowage_tests::server::stowage_cli(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        storage,
        args,
        Some(stdin),
    )
}

#[test]
fn push_pull_versions_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        &[],
    );
    let url = server.url();
    let mib = 1u64 << 20;

    // 3 blobs of 1 MiB, monolithic (POST + PUT each), then config and manifest.
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--count",
        "3",
        "--size",
        "1MiB",
        "--tag",
        "t",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}));
    assert_eq!(r["latency_ms"]["upload_start"]["count"], 4);
    assert_eq!(r["latency_ms"]["upload_finish"]["count"], 4);
    assert_eq!(r["latency_ms"]["manifest_put"]["count"], 1);
    let stored = r["stored_bytes"].as_u64().unwrap();
    assert!((3 * mib..4 * mib).contains(&stored), "stored {stored}");

    // Chunked: 2 blobs of 3 MiB in 1 MiB PATCHes. The same seed: nothing new stored.
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--repo",
        "bench/chunked",
        "--count",
        "2",
        "--size",
        "3MiB",
        "--chunk-size",
        "1MiB",
        "--seed",
        "9",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["latency_ms"]["upload_chunk"]["count"], 6);
    assert_eq!(r["bytes"], 6 * mib);
    let (ok, r) = bench(&[
        "push",
        "--registry",
        &url,
        "--repo",
        "bench/again",
        "--count",
        "2",
        "--size",
        "3MiB",
        "--seed",
        "9",
    ]);
    assert!(ok, "{r}");
    assert_eq!(r["stored_bytes"], 0, "identical content is deduplicated");

    // Pull: every layer, digests verified.
    let (ok, r) = bench(&["pull", "--registry", &url, "--tag", "t"]);
    assert!(ok, "{r}");
    // The three layers and the manifest's few hundred bytes.
    let bytes = r["bytes"].as_u64().unwrap();
    assert!(
        (3 * mib + 100..3 * mib + 4096).contains(&bytes),
        "pulled {bytes}"
    );
    assert_eq!(r["latency_ms"]["blob_get"]["count"], 3);

    // Versions sharing most content store far less than their sum.
    let (ok, r) = bench(&[
        "versions",
        "--registry",
        &url,
        "--repo",
        "bench/v",
        "--versions",
        "4",
        "--size",
        "4MiB",
    ]);
    assert!(ok, "{r}");
    let stored = r["stored_bytes"].as_u64().unwrap();
    assert!(stored < 8 * mib, "4 versions of 4 MiB stored {stored}");

    let (ok, r) = bench(&[
        "manifests",
        "--registry",
        &url,
        "--tag",
        "t",
        "--seconds",
        "1",
        "--connections",
        "4",
    ]);
    assert!(ok, "{r}");
    assert!(r["latency_ms"]["manifest_head"]["count"].as_u64().unwrap() > 0);
    assert!(r["latency_ms"]["manifest_get"]["count"].as_u64().unwrap() > 0);

    // A failure is reported by status and fails the command.
    let (ok, r) = bench(&["pull", "--registry", &url, "--tag", "missing"]);
    assert!(!ok);
    assert_eq!(r["errors"]["404"], 1);
}

/// A registry that wants credentials: Basic, or a Bearer token from its token
/// endpoint (which itself wants Basic). Serves one manifest; counts refusals.
async fn guarded_registry(bearer: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;
    use std::sync::atomic::{AtomicU64, Ordering};
    let refused = std::sync::Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let basic = "Basic dXNlcjpzZWNyZXQ="; // user:secret
    let challenge = if bearer {
        format!(r#"Bearer realm="{base}/token",service="test",scope="repository:bench/blobs:pull""#)
    } else {
        r#"Basic realm="test""#.to_string()
    };
    let counter = refused.clone();
    let manifest = move |headers: HeaderMap| {
        let (challenge, counter) = (challenge.clone(), counter.clone());
        async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let ok = if bearer {
                auth == Some("Bearer t0ken")
            } else {
                auth == Some(basic)
            };
            if ok {
                (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/vnd.oci.image.manifest.v1+json",
                    )],
                    "{}".to_string(),
                )
                    .into_response()
            } else {
                counter.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, challenge)],
                    String::new(),
                )
                    .into_response()
            }
        }
    };
    let token = move |headers: HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
        let q = q.unwrap_or_default();
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if auth != Some(basic) || !q.contains("service=test") || !q.contains("scope=repository") {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        (StatusCode::OK, r#"{"token":"t0ken"}"#.to_string())
    };
    use axum::response::IntoResponse as _;
    let app = axum::Router::new()
        .route(
            "/v2/bench/blobs/manifests/t",
            get(manifest.clone()).head(manifest),
        )
        .route("/token", get(token));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, refused)
}

/// [`bench`] off the async runtime, which keeps serving the mock registry.
async fn bench_in_background(args: &[&str]) -> (bool, serde_json::Value) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || bench(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_token_auth() {
    for bearer in [false, true] {
        let (url, refused) = guarded_registry(bearer).await;
        let args = [
            "manifests",
            "--registry",
            &url,
            "--tag",
            "t",
            "--seconds",
            "1",
            "--connections",
            "1",
        ];
        // Without credentials every request is refused.
        let (ok, r) = bench_in_background(&args).await;
        assert!(
            !ok && r["errors"]["401"].as_u64().unwrap() > 0,
            "bearer={bearer}: {r}"
        );
        // With them: one challenge answered, then every request succeeds.
        let before = refused.load(std::sync::atomic::Ordering::Relaxed);
        let mut with_creds = args.to_vec();
        with_creds.extend(["--username", "user", "--password", "secret"]);
        let (ok, r) = bench_in_background(&with_creds).await;
        assert!(ok, "bearer={bearer}: {r}");
        assert!(r["requests"].as_u64().unwrap() > 10);
        let challenges = refused.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(
            challenges, 1,
            "bearer={bearer}: credentials are kept after the first challenge"
        );
    }
}

/// A token registry whose tokens expire every 40 requests, and whose base (`GET /v2/`)
/// challenges: the client logs in before its first request (asking the scope the
/// request needs), and on a 401 fetches one new token for all its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_fetched_up_front_and_again_when_they_expire() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse as _;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Counts {
        /// Generation of the token now valid (tokens are `tok-N`).
        valid: AtomicU64,
        served: AtomicU64,
        fetched: AtomicU64,
        refused: AtomicU64,
        scopes: std::sync::Mutex<Vec<String>>,
    }
    let counts = Arc::new(Counts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let challenge = format!(r#"Bearer realm="{base}/token",service="test""#);
    let unauthorized = move || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge.clone())],
            String::new(),
        )
            .into_response()
    };
    let (c, deny) = (counts.clone(), unauthorized.clone());
    let manifest = move |headers: HeaderMap| {
        let (c, deny) = (c.clone(), deny.clone());
        async move {
            let want = format!("Bearer tok-{}", c.valid.load(Ordering::SeqCst));
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if auth != Some(want.as_str()) {
                c.refused.fetch_add(1, Ordering::SeqCst);
                return deny();
            }
            if c.served.fetch_add(1, Ordering::SeqCst) % 40 == 39 {
                c.valid.fetch_add(1, Ordering::SeqCst);
            }
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json",
                )],
                "{}".to_string(),
            )
                .into_response()
        }
    };
    let c = counts.clone();
    let token = move |headers: HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery| {
        let c = c.clone();
        async move {
            let basic = "Basic dW51c2VkOnN0d190MGtlbg=="; // unused:stw_t0ken
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if auth != Some(basic) {
                return (StatusCode::UNAUTHORIZED, String::new());
            }
            let q = q.unwrap_or_default();
            c.scopes.lock().unwrap().push(q);
            c.fetched.fetch_add(1, Ordering::SeqCst);
            let body =
                serde_json::json!({"token": format!("tok-{}", c.valid.load(Ordering::SeqCst))});
            (StatusCode::OK, body.to_string())
        }
    };
    let app = axum::Router::new()
        .route("/v2/", get(move || async move { unauthorized() }))
        .route(
            "/v2/bench/blobs/manifests/t",
            get(manifest.clone()).head(manifest),
        )
        .route("/token", get(token));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (ok, r) = bench_in_background(&[
        "manifests",
        "--registry",
        &base,
        "--tag",
        "t",
        "--seconds",
        "1",
        "--connections",
        "4",
        "--token",
        "stw_t0ken",
    ])
    .await;
    assert!(ok, "{r}");
    let served = counts.served.load(Ordering::SeqCst);
    let generations = counts.valid.load(Ordering::SeqCst);
    let fetched = counts.fetched.load(Ordering::SeqCst);
    assert!(generations >= 2, "served {served}: {r}");
    assert_eq!(r["requests"].as_u64().unwrap(), served);
    // One fetch up front, then one per expiry (or one fewer if the run ended first):
    // connections refused together share it.
    assert!(
        (generations..=generations + 1).contains(&fetched),
        "{fetched} token fetches for {generations} expiries"
    );
    let scopes = counts.scopes.lock().unwrap();
    assert!(
        scopes[0].contains("service=test")
            && scopes[0].contains("scope=repository%3Abench%2Fblobs%3Apull"),
        "{scopes:?}"
    );
}

/// Against Stowage with access control on: `--token` (and `--username` with
/// `--password`) go through the Docker token flow, to a private namespace as to a
/// public one; without credentials the private namespace refuses every request and
/// the command says why; a push where the token may not push is denied.
#[test]
fn token_flow_against_stowage_access_control() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    stowage(store, &["admin", "user", "create", "alice"], "");
    stowage(
        store,
        &["admin", "user", "create", "bob", "--password-stdin"],
        "b0b-secret\n",
    );
    stowage(
        store,
        &["admin", "namespace", "create", "team", "--private"],
        "",
    );
    stowage(
        store,
        &["admin", "namespace", "create", "pub", "--public"],
        "",
    );
    for (action, ns, user) in [
        ("push", "team", "alice"),
        ("push", "pub", "alice"),
        ("pull", "team", "bob"),
    ] {
        stowage(
            store,
            &["admin", "grant", action, "--namespace", ns, "--user", user],
            "",
        );
    }
    let token = stowage(
        store,
        &[
            "token", "create", "--user", "alice", "--access", "push", "--quiet",
        ],
        "",
    )
    .trim()
    .to_string();
    let server = Server::start(env!("CARGO_BIN_EXE_stowage").as_ref(), store, &[]);
    let url = server.url();
    let manifests = |repo: &'static str| {
        vec![
            "manifests",
            "--registry",
            &url,
            "--repo",
            repo,
            "--tag",
            "t",
            "--seconds",
            "1",
            "--connections",
            "4",
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let run = |args: &[String], extra: &[&str]| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        bench_with_stderr(&all)
    };

    for repo in ["team/bench", "pub/bench"] {
        let (ok, r) = bench(&[
            "push",
            "--registry",
            &url,
            "--repo",
            repo,
            "--count",
            "2",
            "--size",
            "64KiB",
            "--tag",
            "t",
            "--token",
            &token,
        ]);
        assert!(ok, "push to {repo} with the token: {r}");
        assert_eq!(r["latency_ms"]["upload_start"]["count"], 3, "{r}");
        assert_eq!(r["latency_ms"]["manifest_put"]["count"], 1, "{r}");
    }

    let private = manifests("team/bench");
    for creds in [
        vec!["--token", token.as_str()],
        vec!["--username", "bob", "--password", "b0b-secret"],
    ] {
        let (ok, r, err) = run(&private, &creds);
        assert!(ok, "{creds:?}: {r}\n{err}");
        assert_eq!(r["errors"], serde_json::json!({}));
        assert!(r["latency_ms"]["manifest_head"]["count"].as_u64().unwrap() > 0);
        assert!(r["latency_ms"]["manifest_get"]["count"].as_u64().unwrap() > 0);
    }

    // No credentials: every request to the private namespace is refused, and the
    // command fails saying credentials are wanted.
    let (ok, r, err) = run(&private, &[]);
    assert!(!ok, "{r}");
    assert!(r["errors"]["401"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["requests"], 0, "{r}");
    assert!(err.contains("wants credentials"), "{err}");

    // The public namespace: anonymous and with the token alike.
    let public = manifests("pub/bench");
    for creds in [vec![], vec!["--token", token.as_str()]] {
        let (ok, r, err) = run(&public, &creds);
        assert!(ok, "{creds:?}: {r}\n{err}");
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    }

    // Where the token may not push: denied, and said so.
    let (ok, r, err) = bench_with_stderr(&[
        "push",
        "--registry",
        &url,
        "--repo",
        "other/bench",
        "--count",
        "1",
        "--size",
        "1KiB",
        "--token",
        &token,
    ]);
    assert!(!ok, "{r}");
    assert_eq!(r["errors"]["403"], 1, "{r}");
    assert!(err.contains("do not grant"), "{err}");
}

/// `--insecure` reaches a TLS registry with a self-signed certificate.
#[test]
fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = stowage_tests::server::self_signed_cert(dir.path());
    let store = dir.path().join("store");
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}", server.addr);
    let push = [
        "push",
        "--registry",
        &url,
        "--count",
        "2",
        "--size",
        "256KiB",
        "--tag",
        "t",
    ];
    let (ok, r) = bench(&push);
    assert!(
        !ok && r["errors"]["transport"].as_u64().unwrap() > 0,
        "untrusted certificate: {r}"
    );
    let mut insecure = push.to_vec();
    insecure.push("--insecure");
    let (ok, r) = bench(&insecure);
    assert!(ok, "{r}");
    let (ok, r) = bench(&["pull", "--registry", &url, "--tag", "t", "--insecure"]);
    assert!(ok, "{r}");
    assert_eq!(r["latency_ms"]["blob_get"]["count"], 2);
}
