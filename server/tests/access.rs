//! Access control end to end: the policy set up with `stowage admin` / `stowage token`
//! on the store, two `stowage serve` processes on it, and real clients (skopeo through
//! the Docker token flow and Basic, the `oci-client` crate, plain HTTP) on local disk
//! and S3: pushes allowed and denied, anonymous pulls and listing of a public namespace,
//! a private one refused and absent from the catalog, revoked, expired, pull-only and
//! namespace-limited tokens, mounts and deletes without the right, and a policy change
//! made through one server obeyed by the other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use stowage_tests::oci::{Image, ImageSpec, Layout, tar};
use stowage_tests::server::{Server, fresh_storage};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// Runs the stowage CLI on the store; its standard output.
fn cli(storage: &str, args: &[&str], stdin: Option<&str>) -> String {
    stowage_tests::server::stowage_cli(BIN.as_ref(), storage, args, stdin)
}

fn token(storage: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", "--quiet"];
    all.extend_from_slice(args);
    let t = cli(storage, &all, None).trim().to_string();
    assert!(t.starts_with("stw_"), "{t}");
    t
}

/// skopeo with arguments; whether it succeeded and what it said.
fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn image(seed: &str) -> Image {
    let layer = tar(&[("etc/motd", seed.as_bytes())]);
    Image::build(&ImageSpec {
        layers: vec![(layer, true)],
        labels: BTreeMap::from([("seed", seed)]),
        env: vec!["PATH=/usr/bin"],
        cmd: vec!["/app"],
        architecture: "amd64",
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    _storage_guard: Option<tempfile::TempDir>,
    storage: String,
    a: Server,
    b: Server,
    src: String,
    push: String,
    pull_only: String,
    pub_only: String,
    root: String,
    carol: String,
}

fn setup(s3: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (storage, guard) = fresh_storage(s3);
    let st = storage.as_str();
    cli(st, &["admin", "user", "create", "root", "--admin"], None);
    cli(st, &["admin", "user", "create", "alice"], None);
    cli(
        st,
        &["admin", "user", "create", "bob", "--password-stdin"],
        Some("bob's long password\n"),
    );
    cli(st, &["admin", "user", "create", "carol"], None);
    cli(
        st,
        &["admin", "namespace", "create", "team", "--private"],
        None,
    );
    cli(
        st,
        &["admin", "namespace", "create", "pub", "--public"],
        None,
    );
    cli(
        st,
        &["admin", "namespace", "create", "carolns", "--private"],
        None,
    );
    cli(
        st,
        &[
            "admin",
            "grant",
            "push",
            "--namespace",
            "team",
            "--user",
            "alice",
        ],
        None,
    );
    cli(
        st,
        &[
            "admin",
            "grant",
            "push",
            "--namespace",
            "pub",
            "--user",
            "alice",
        ],
        None,
    );
    cli(
        st,
        &[
            "admin",
            "grant",
            "pull",
            "--namespace",
            "team",
            "--user",
            "bob",
        ],
        None,
    );
    cli(
        st,
        &[
            "admin",
            "grant",
            "push",
            "--namespace",
            "carolns",
            "--user",
            "carol",
        ],
        None,
    );
    let push = token(st, &["--user", "alice", "--access", "push"]);
    let pull_only = token(st, &["--user", "alice", "--access", "pull"]);
    let pub_only = token(st, &["--user", "alice", "--namespace", "pub"]);
    let root = token(st, &["--user", "root"]);
    let carol = token(st, &["--user", "carol"]);
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        "[auth]\nrefresh = \"1s\"\nfailed_login_limit = 0\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let a = Server::start(BIN.as_ref(), st, &["--config", &config]);
    let b = Server::start(BIN.as_ref(), st, &["--config", &config]);
    let src = dir.path().join("src");
    Layout::new(&src).add_image(&image("one"), "v1");
    Setup {
        src: format!("oci:{}:v1", src.display()),
        _dir: dir,
        _storage_guard: guard,
        storage,
        a,
        b,
        push,
        pull_only,
        pub_only,
        root,
        carol,
    }
}

fn creds(token: &str) -> String {
    format!("unused:{token}")
}

/// Polls until `f` holds (a change made elsewhere is obeyed within the refresh bound).
async fn eventually(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_on_local_disk() {
    access_control(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_on_s3() {
    access_control(true).await;
}

async fn access_control(s3: bool) {
    let s = setup(s3);
    let (a, b) = (s.a.addr.clone(), s.b.addr.clone());
    let http = reqwest::Client::new();

    // skopeo through the token flow: push where granted, refused elsewhere.
    let push = creds(&s.push);
    for repo in ["team/app", "pub/app"] {
        let (ok, out) = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &push,
            &s.src,
            &format!("docker://{a}/{repo}:v1"),
        ]);
        assert!(ok, "push to {repo}: {out}");
    }
    let (ok, out) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &push,
        &s.src,
        &format!("docker://{a}/other/app:v1"),
    ]);
    assert!(!ok, "push to a namespace without a grant succeeded: {out}");
    assert!(
        out.contains("denied") || out.contains("unauthorized") || out.contains("403"),
        "{out}"
    );

    // The tag's history says who moved it.
    let store = stowage_storage::Store::open(stowage_storage::testkit::options_for_url(&s.storage))
        .await
        .unwrap();
    let record = store
        .repository(&stowage_storage::RepoName::parse("team/app").unwrap())
        .tag(&stowage_storage::Tag::parse("v1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.history[0].by.as_deref(), Some("user:alice"));

    // Anonymous: pull and list a public namespace, not a private one.
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{b}/pub/app:v1"),
    ]);
    assert!(ok, "anonymous inspect of a public image: {out}");
    let (ok, out) = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{b}/pub/app"),
    ]);
    assert!(ok && out.contains("v1"), "anonymous list-tags: {out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{b}/team/app:v1"),
    ]);
    assert!(!ok, "anonymous inspect of a private image succeeded: {out}");
    let catalog = |auth: Option<&str>| {
        let mut r = http.get(format!("http://{b}/v2/_catalog"));
        if let Some(t) = auth {
            r = r.basic_auth("unused", Some(t));
        }
        let r = r.send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["repositories"].clone()
        }
    };
    assert_eq!(catalog(None).await, serde_json::json!(["pub/app"]));
    assert_eq!(
        catalog(Some(&s.push)).await,
        serde_json::json!(["pub/app", "team/app"])
    );
    assert_eq!(
        catalog(Some(&s.pub_only)).await,
        serde_json::json!(["pub/app"])
    );

    // Pages are filtered before they are cut: one name a page, all of them in order,
    // and an anonymous walk never meets the private ones.
    for (token, want) in [
        (Some(s.push.as_str()), vec!["pub/app", "team/app"]),
        (None, vec!["pub/app"]),
    ] {
        let mut seen = Vec::new();
        let mut next = Some(format!("http://{b}/v2/_catalog?n=1"));
        while let Some(url) = next.take() {
            let mut r = http.get(&url);
            if let Some(t) = token {
                r = r.basic_auth("unused", Some(t));
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            if let Some(link) = r.headers().get("link") {
                let l = link.to_str().unwrap();
                let path = &l[l.find('<').unwrap() + 1..l.find('>').unwrap()];
                next = Some(format!("http://{b}{path}"));
            }
            let v: serde_json::Value = r.json().await.unwrap();
            let page = v["repositories"].as_array().unwrap().clone();
            assert!(page.len() <= 1, "{v}");
            seen.extend(page.into_iter().map(|n| n.as_str().unwrap().to_string()));
            assert!(seen.len() <= 10, "paging does not end: {seen:?}");
        }
        assert_eq!(seen, want);
    }

    // skopeo login, and a password through Basic.
    let authfile = s._dir.path().join("auth.json");
    let authfile = authfile.display().to_string();
    let (ok, out) = skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        "-u",
        "unused",
        "-p",
        &s.pull_only,
        &a,
    ]);
    assert!(ok, "skopeo login: {out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        &format!("docker://{a}/team/app:v1"),
    ]);
    assert!(ok, "inspect with the login's token: {out}");
    let (ok, out) = skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        "-u",
        "unused",
        "-p",
        "stw_00000000000000000000_notarealtokenatallnotatall",
        &a,
    ]);
    assert!(!ok, "login with a made-up token succeeded: {out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "bob:bob's long password",
        &format!("docker://{a}/team/app:v1"),
    ]);
    assert!(ok, "password login: {out}");
    let (ok, _) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "bob:wrong",
        &format!("docker://{a}/team/app:v1"),
    ]);
    assert!(!ok, "a wrong password got in");

    // The OAuth2 side of the token endpoint: a password grant with a refresh token,
    // then the refresh grant; the tokens work, a refresh token alone grants nothing.
    let oauth = |form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let a = a.clone();
        async move {
            let r = http
                .post(format!("http://{a}/auth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
                        .finish(),
                )
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let scope = ("scope", "repository:team/app:pull".to_string());
    let (status, v) = oauth(vec![
        ("grant_type", "password".into()),
        ("username", "bob".into()),
        ("password", "bob's long password".into()),
        ("service", "stowage".into()),
        ("client_id", "test".into()),
        ("access_type", "offline".into()),
        scope.clone(),
    ])
    .await;
    assert_eq!(status, 200, "{v}");
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let (status, v) = oauth(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("service", "stowage".into()),
        scope.clone(),
    ])
    .await;
    assert_eq!(status, 200, "{v}");
    let manifest = |bearer: String| {
        let http = http.clone();
        let a = a.clone();
        async move {
            http.get(format!("http://{a}/v2/team/app/manifests/v1"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        manifest(v["token"].as_str().unwrap().to_string()).await,
        200
    );
    assert_eq!(manifest(refresh).await, 401);
    let (status, _) = oauth(vec![
        ("grant_type", "password".into()),
        ("username", "bob".into()),
        ("password", "not it".into()),
        scope,
    ])
    .await;
    assert_eq!(status, 401);

    // A pull-only token cannot push; a namespace-limited one cannot read elsewhere.
    let (ok, out) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(&s.pull_only),
        &s.src,
        &format!("docker://{a}/team/app2:v1"),
    ]);
    assert!(!ok, "a pull-only token pushed: {out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds(&s.pub_only),
        &format!("docker://{a}/team/app:v1"),
    ]);
    assert!(!ok, "a token limited to pub read team: {out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds(&s.pub_only),
        &format!("docker://{a}/pub/app:v1"),
    ]);
    assert!(ok, "a token limited to pub reading pub: {out}");

    // The oci-client crate, with Basic credentials through its own token flow.
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let team: Reference = format!("{a}/team/app:v1").parse().unwrap();
    let alice = RegistryAuth::Basic("unused".into(), s.push.clone());
    let (manifest, digest) = client.pull_manifest(&team, &alice).await.unwrap();
    assert!(digest.starts_with("sha256:"), "{manifest:?}");
    // A fresh client: oci-client caches registry tokens by scope, not by credentials.
    let fresh = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    assert!(
        fresh
            .pull_manifest(&team, &RegistryAuth::Anonymous)
            .await
            .is_err(),
        "anonymous oci-client read a private manifest"
    );
    let public: Reference = format!("{a}/pub/app:v1").parse().unwrap();
    fresh
        .pull_manifest(&public, &RegistryAuth::Anonymous)
        .await
        .unwrap();

    // DELETE needs `delete`: alice holds push only.
    let r = http
        .delete(format!("http://{a}/v2/team/app/manifests/{digest}"))
        .basic_auth("unused", Some(&s.push))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("DENIED"));

    // A mount from a repository the caller may not pull is a plain upload session.
    let layer = image("one").layers[0].digest.to_string();
    let r = http
        .post(format!(
            "http://{a}/v2/carolns/app/blobs/uploads/?mount={layer}&from=team/app"
        ))
        .basic_auth("unused", Some(&s.carol))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        202,
        "mount from a private repository was not refused"
    );
    let r = http
        .post(format!(
            "http://{a}/v2/carolns/app/blobs/uploads/?mount={layer}"
        ))
        .basic_auth("unused", Some(&s.carol))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "mount without from crossed namespaces");
    let r = http
        .post(format!(
            "http://{a}/v2/team/app2/blobs/uploads/?mount={layer}&from=team/app"
        ))
        .basic_auth("unused", Some(&s.push))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "mount within reach");

    // Revocation on the store reaches both servers within the refresh bound.
    let revocable = token(&s.storage, &["--user", "alice"]);
    let inspect_team = |addr: String, t: String| async move {
        skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &creds(&t),
            &format!("docker://{addr}/team/app:v1"),
        ])
        .0
    };
    assert!(inspect_team(a.clone(), revocable.clone()).await);
    assert!(inspect_team(b.clone(), revocable.clone()).await);
    cli(&s.storage, &["token", "revoke", &revocable], None);
    for addr in [&a, &b] {
        eventually(
            "a revoked token refused",
            Duration::from_secs(8),
            async || !inspect_team(addr.clone(), revocable.clone()).await,
        )
        .await;
    }
    let listed = cli(
        &s.storage,
        &["token", "list", "--user", "alice", "--json"],
        None,
    );
    assert!(
        listed.contains("revoked") && !listed.contains(&revocable),
        "{listed}"
    );

    // An expired token is refused.
    let short = token(&s.storage, &["--user", "alice", "--expires", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !inspect_team(a.clone(), short).await,
        "an expired token got in"
    );

    // A policy change through server A's admin API: at once on A, soon on B.
    let r = http
        .post(format!("http://{a}/stowage/v1/admin"))
        .bearer_auth(&s.root)
        .json(&serde_json::json!({"op": "namespace-set", "name": "pub", "visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let anonymous_tags = |addr: String| {
        let http = http.clone();
        async move {
            http.get(format!("http://{addr}/v2/pub/app/tags/list"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(anonymous_tags(a.clone()).await, 401);
    eventually(
        "server B obeys the change",
        Duration::from_secs(8),
        async || anonymous_tags(b.clone()).await == 401,
    )
    .await;
    // Only admins may change policy through the API.
    let r = http
        .post(format!("http://{a}/stowage/v1/admin"))
        .bearer_auth(&s.push)
        .json(&serde_json::json!({"op": "namespace-set", "name": "pub", "visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The CLI through a server's admin API acts as the token's account, by the same
    // rules: root may create a namespace, alice may not; alice may make her own token,
    // and the printed login line names the registry.
    let url = format!("http://{a}");
    let through = |token: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--server", &url, "--token", token])
            .env_remove("STOWAGE_STORAGE")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = through(
        &s.root,
        &["admin", "namespace", "create", "viacli", "--public"],
    );
    assert!(ok, "{out}");
    let (ok, out) = through(
        &s.push,
        &["admin", "namespace", "create", "notmine", "--public"],
    );
    assert!(!ok && out.contains("403"), "{out}");
    let (ok, out) = through(
        &s.push,
        &[
            "token",
            "create",
            "--access",
            "pull",
            "--description",
            "mine",
        ],
    );
    assert!(
        ok && out.contains("docker login -u unused -p stw_") && out.contains(&a),
        "{out}"
    );
    let shown = cli(&s.storage, &["admin", "show"], None);
    assert!(
        shown.contains("viacli") && !shown.contains("notmine"),
        "{shown}"
    );
}

/// With no account in the store the registry is open: it says so at start, serves
/// anyone, and ignores credentials a client sends anyway; creating the first user
/// turns access control on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_registry_says_so_and_ignores_credentials() {
    let (storage, _guard) = fresh_storage(false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(&config, "[auth]\nrefresh = \"1s\"\n").unwrap();
    let server = Server::start(
        BIN.as_ref(),
        &storage,
        &["--config", config.to_str().unwrap()],
    );
    let http = reqwest::Client::new();
    let base = server.url();
    for auth in [
        None,
        Some("stw_00000000000000000000_notarealtokenatallnotatall"),
    ] {
        let mut r = http.get(format!("{base}/v2/"));
        if let Some(t) = auth {
            r = r.basic_auth("unused", Some(t));
        }
        assert_eq!(r.send().await.unwrap().status(), 200, "{auth:?}");
    }
    cli(&storage, &["admin", "user", "create", "alice"], None);
    let start = std::time::Instant::now();
    loop {
        let status = http
            .get(format!("{base}/v2/"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(8), "still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, log) = server.stop();
    assert!(log.contains("ACCESS CONTROL IS OFF"), "{log}");
}
