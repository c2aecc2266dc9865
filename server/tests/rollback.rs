//! `stowage tag NS/NAME:TAG --to DIGEST`: a tag pushed three times by skopeo through
//! `stowage serve` is rolled back on the store to its first image, which the restarted
//! server then serves for the tag; a digest from outside its history is refused. The
//! `--server` form goes to a running server's rollback endpoint, and to a stand-in that
//! records exactly what the CLI sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use stowage_tests::oci::{Image, ImageSpec, Layout, OCI_MANIFEST, tar};
use stowage_tests::server::{Server, fresh_storage};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/test (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stowage(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("STOWAGE_STORAGE")
        .env_remove("STOWAGE_SERVER")
        .env_remove("STOWAGE_TOKEN")
        .output()
        .expect("run stowage")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Release `n` of the app: a shared base layer and a layer of its own.
fn release(n: u32) -> Image {
    let base = tar(&[("etc/os-release", b"ID=stowage\n".as_slice())]);
    let app = format!("print('release {n}')\n");
    Image::build(&ImageSpec {
        layers: vec![(base, true), (tar(&[("srv/app.py", app.as_bytes())]), true)],
        labels: BTreeMap::new(),
        env: vec![],
        cmd: vec!["/srv/app.py"],
        architecture: "amd64",
    })
}

/// The digest the server answers for `repo:tag`, from a plain GET of the manifest.
fn served_digest(server: &Server, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let url = format!("{}/v2/{repo}/manifests/{tag}", server.url());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .header(reqwest::header::ACCEPT, OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let digest = resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        (digest, resp.bytes().await.unwrap().to_vec())
    })
}

#[test]
fn a_tag_pushed_three_times_rolls_back_to_its_first_image() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _guard) = fresh_storage(false);
    let images: Vec<Image> = (1..=3).map(release).collect();
    let src = dir.path().join("src");
    let mut layout = Layout::new(&src);
    for (i, image) in images.iter().enumerate() {
        layout.add_image(image, &format!("r{}", i + 1));
    }
    let digests: Vec<String> = images
        .iter()
        .map(|i| i.manifest.digest.to_string())
        .collect();
    assert_eq!(
        digests
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );

    let server = Server::start(BIN.as_ref(), &storage, &[]);
    let reference = format!("docker://{}/repo/app:v1", server.addr);
    for i in 1..=3 {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:r{i}", src.display()),
            &reference,
        ]);
    }
    assert_eq!(served_digest(&server, "repo/app", "v1").0, digests[2]);
    // The second release is deleted (the tag, elsewhere by then, stays).
    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/repo/app@{}", server.addr, digests[1]),
    ]);
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");

    // Back to the first image, on the store.
    let out = stowage(&[
        "--storage",
        &storage,
        "tag",
        "repo/app:v1",
        "--to",
        &digests[0],
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim_end(),
        format!("repo/app:v1 -> {} (generation 4)", digests[0])
    );
    // Again: already there, nothing moves. --json shows the record and who moved it.
    let out = stowage(&[
        "--storage",
        &storage,
        "tag",
        "repo/app:v1",
        "--to",
        &digests[0],
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["repository"], "repo/app");
    assert_eq!(record["tag"], "v1");
    assert_eq!(record["generation"], 4);
    let history: Vec<(String, String)> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["digest"].as_str().unwrap().to_string(),
                e["by"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let who = |d: &String, by: &str| (d.clone(), by.to_string());
    assert_eq!(
        history,
        vec![
            who(&digests[0], "store-operator"),
            who(&digests[2], "anonymous"),
            who(&digests[1], "anonymous"),
            who(&digests[0], "anonymous"),
        ]
    );

    // Refused, clearly, and nothing moves: a digest the tag never had, an image deleted
    // since, a string that is not a digest, a tag that does not exist, a reference that is not NS/NAME:TAG.
    let made_up = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for (args, says) in [
        (
            vec!["tag", "repo/app:v1", "--to", made_up.as_str()],
            "is not in the history of tag repo/app:v1",
        ),
        (
            vec!["tag", "repo/app:v1", "--to", digests[1].as_str()],
            "the image was garbage collected",
        ),
        (
            vec!["tag", "repo/app:v1", "--to", "sha256:abc"],
            "is not a digest",
        ),
        (
            vec!["tag", "repo/app:v2", "--to", digests[0].as_str()],
            "tag v2 not found in repository repo/app",
        ),
        (
            vec!["tag", "repo/app", "--to", digests[0].as_str()],
            "expected NS/NAME:TAG",
        ),
        (
            vec!["tag", "Repo/app:v1", "--to", digests[0].as_str()],
            "invalid repository name",
        ),
    ] {
        let mut full = vec!["--storage", storage.as_str()];
        full.extend(&args);
        let out = stowage(&full);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("stowage: "), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // The restarted server answers the first image for the tag.
    let server = Server::start(BIN.as_ref(), &storage, &[]);
    let (digest, body) = served_digest(&server, "repo/app", "v1");
    assert_eq!(digest, digests[0]);
    assert!(
        body == images[0].manifest.bytes,
        "the first manifest, as pushed"
    );
    let reference = format!("docker://{}/repo/app:v1", server.addr);
    let out = skopeo(&["inspect", "--tls-verify=false", &reference]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], digests[0]);
    let layers: Vec<String> = serde_json::from_value(v["Layers"].clone()).unwrap();
    let want: Vec<String> = images[0]
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(layers, want);
}

/// What the stand-in server saw of a request.
#[derive(Debug, Clone, Default)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// `--server URL --token T`: the CLI posts `{"digest"}` to the image stream tag's
/// rollback endpoint with the Bearer token, prints the summary (or `--json` the
/// answer), and turns a `kind: Status` error into a clear message and exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_server_the_rollback_endpoint_is_called() {
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;

    let good = format!("sha256:{}", "a".repeat(64));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let app = {
        let (seen, good) = (seen.clone(), good.clone());
        axum::Router::new().route(
            "/apis/image.openshift.io/v1/namespaces/{*rest}",
            axum::routing::post(
                move |uri: Uri, headers: HeaderMap, Json(body): Json<serde_json::Value>| {
                    let (seen, good) = (seen.clone(), good.clone());
                    async move {
                        seen.lock().unwrap().push(Seen {
                            path: uri.path().to_string(),
                            authorization: headers
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string()),
                            body: body.clone(),
                        });
                        if body["digest"] == good.as_str() {
                            Json(serde_json::json!({
                                "kind": "ImageStreamTag",
                                "apiVersion": "image.openshift.io/v1",
                                "metadata": {"name": "app:v1", "namespace": "repo", "resourceVersion": "5"},
                                "generation": 5,
                                "image": {"metadata": {"name": good}, "dockerImageReference": format!("h/repo/app@{good}")},
                            }))
                            .into_response()
                        } else {
                            (
                                StatusCode::BAD_REQUEST,
                                Json(serde_json::json!({
                                    "kind": "Status",
                                    "apiVersion": "v1",
                                    "metadata": {},
                                    "status": "Failure",
                                    "message": format!("{} is not in the history of tag repo/app:v1", body["digest"].as_str().unwrap_or("")),
                                    "reason": "BadRequest",
                                    "code": 400,
                                })),
                            )
                                .into_response()
                        }
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(BIN)
            .args(&args)
            .env_remove("STOWAGE_STORAGE")
            .env_remove("STOWAGE_SERVER")
            .env_remove("STOWAGE_TOKEN")
            .output()
            .await
            .unwrap()
    };
    let args = |digest: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["tag", "repo/app:v1", "--to", digest, "--server", &url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let out = run(args(&good, &["--token", "s3cret"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim_end(),
        format!("repo/app:v1 -> {good} (generation 5)")
    );
    let out = run(args(&good, &["--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["kind"], "ImageStreamTag");
    assert_eq!(answer["generation"], 5);

    let bad = format!("sha256:{}", "b".repeat(64));
    let out = run(args(&bad, &["--token", "s3cret"])).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("stowage: cannot roll back repo/app:v1"),
        "{err}"
    );
    assert!(err.contains("400"), "{err}");
    assert!(
        err.contains(&format!("{bad} is not in the history of tag repo/app:v1")),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A name with a slash after the namespace goes as one path segment.
    let out = run(vec![
        "tag".into(),
        "repo/team/app:v1".into(),
        "--to".into(),
        good.clone(),
        "--server".into(),
        url.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let path = "/apis/image.openshift.io/v1/namespaces/repo/imagestreamtags/app:v1/rollback";
    assert_eq!(seen[0].path, path);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(seen[0].body, serde_json::json!({ "digest": good }));
    assert_eq!(seen[1].authorization, None, "no token, no Authorization");
    assert_eq!(seen[2].body, serde_json::json!({ "digest": bad }));
    assert_eq!(
        seen[3].path,
        "/apis/image.openshift.io/v1/namespaces/repo/imagestreamtags/team%2Fapp:v1/rollback"
    );
    served.abort();
}

/// The same through a running server's rollback endpoint (access control off): the tag
/// moves back, the server serves the first image for it at once, and a digest from
/// outside the history is refused with the server's message.
#[test]
fn through_a_running_server_the_tag_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _guard) = fresh_storage(false);
    let images: Vec<Image> = (1..=2).map(release).collect();
    let src = dir.path().join("src");
    let mut layout = Layout::new(&src);
    for (i, image) in images.iter().enumerate() {
        layout.add_image(image, &format!("r{}", i + 1));
    }
    let server = Server::start(BIN.as_ref(), &storage, &[]);
    for i in 1..=2 {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:r{i}", src.display()),
            &format!("docker://{}/repo/app:v1", server.addr),
        ]);
    }
    let first = images[0].manifest.digest.to_string();
    let url = server.url();
    let out = stowage(&["tag", "repo/app:v1", "--to", &first, "--server", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim_end(),
        format!("repo/app:v1 -> {first} (generation 3)")
    );
    assert_eq!(served_digest(&server, "repo/app", "v1").0, first);

    let made_up = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let out = stowage(&["tag", "repo/app:v1", "--to", &made_up, "--server", &url]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("stowage: cannot roll back repo/app:v1"),
        "{err}"
    );
    assert!(
        err.contains("is not in the history of tag repo/app:v1"),
        "{err}"
    );
    assert_eq!(served_digest(&server, "repo/app", "v1").0, first);
}
