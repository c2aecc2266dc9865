//! `stowage login/get/describe` (the image-stream CLI) against a real server on local
//! disk with images pushed by skopeo: the login saved in a 0600 file, the tables and
//! descriptions checked against the images' real configs, `-o json` against the API's
//! own objects, and the errors a user meets (a bad token, a missing stream, no server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use stowage_tests::oci::{Image, ImageSpec, Layout, tar};
use stowage_tests::server::{Server, fresh_storage};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// An operator command on the store.
fn admin(storage: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["--storage", storage])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The CLI as a user runs it: saved logins in `config`, no server or token from the
/// environment.
fn user(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("STOWAGE_CONFIG_DIR", config)
        .env_remove("STOWAGE_SERVER")
        .env_remove("STOWAGE_TOKEN")
        .env_remove("STOWAGE_NAMESPACE")
        .output()
        .unwrap()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = user(config, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A failing command's message (exit code 1, `stowage: ...`, no panic).
fn fails(config: &Path, args: &[&str]) -> String {
    let out = user(config, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("stowage: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

fn image(version: &str) -> Image {
    Image::build(&ImageSpec {
        layers: vec![
            (tar(&[("etc/os-release", b"ID=centos\n")]), true),
            (tar(&[("srv/version", version.as_bytes())]), false),
        ],
        labels: BTreeMap::from([("maintainer", "TripleO Project"), ("rdo_version", version)]),
        env: vec!["PATH=/usr/bin:/bin", "KOLLA_BASE_DISTRO=centos"],
        cmd: vec!["kolla_start"],
        architecture: "amd64",
    })
}

fn push(src: &str, dest: &str, token: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("unused:{token}"),
            src,
            dest,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes as the CLI prints them (server/src/output.rs): `1023 B`, `1.5 KiB`.
fn human(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < 5 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", ["B", "KiB", "MiB", "GiB", "TiB", "PiB"][unit])
}

/// `text` with every `N units ago` as `<age>`: outputs compared across seconds.
fn no_ages(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" ago") {
            Some(i) => {
                let mut words = l[..i].rsplitn(3, ' ');
                let (_unit, _n, rest) = (words.next(), words.next(), words.next().unwrap_or(""));
                format!("{rest} <age>{}\n", &l[i + 4..])
            }
            None => format!("{l}\n"),
        })
        .collect()
}

/// `Label:   value` of a description.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} in\n{text}"))
        .trim()
}

/// The indented lines under `Label:`.
fn block(text: &str, label: &str) -> Vec<String> {
    let prefix = format!("{label}:");
    text.lines()
        .skip_while(|l| !l.starts_with(&prefix))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_image_streams_like_oc() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (storage, _guard) = fresh_storage(false);
    admin(&storage, &["admin", "user", "create", "alice"]);
    admin(&storage, &["admin", "user", "create", "bob"]);
    admin(
        &storage,
        &["admin", "namespace", "create", "tripleo", "--private"],
    );
    admin(
        &storage,
        &[
            "admin",
            "grant",
            "push",
            "--namespace",
            "tripleo",
            "--user",
            "alice",
        ],
    );
    let token = admin(&storage, &["token", "create", "--user", "alice", "--quiet"])
        .trim()
        .to_string();
    let bob = admin(&storage, &["token", "create", "--user", "bob", "--quiet"])
        .trim()
        .to_string();
    let server = Server::start(BIN.as_ref(), &storage, &[]);
    let a = server.addr.clone();
    let url = format!("http://{a}");

    // aodh:latest moved twice, aodh:v1 on the first image.
    let versions = ["v1", "v2"].map(image);
    for (i, img) in versions.iter().enumerate() {
        let src = dir.path().join(format!("src{i}"));
        Layout::new(&src).add_image(img, "t");
        let src = format!("oci:{}:t", src.display());
        push(&src, &format!("docker://{a}/tripleo/aodh:latest"), &token);
        if i == 0 {
            push(&src, &format!("docker://{a}/tripleo/aodh:v1"), &token);
        }
    }
    // A second stream, so that listings page (--chunk-size 1).
    let src = dir.path().join("src0");
    push(
        &format!("oci:{}:t", src.display()),
        &format!("docker://{a}/tripleo/base:1.0"),
        &token,
    );
    let newest = &versions[1];
    let newest_digest = newest.manifest.digest.to_string();
    let oldest_digest = versions[0].manifest.digest.to_string();

    // Before any login: no server to talk to.
    let e = fails(&config, &["get", "is", "-n", "tripleo"]);
    assert!(e.contains("stowage login"), "{e}");

    // A bad token is refused at login, and nothing is saved.
    let e = fails(&config, &["login", &url, "--token", "not-a-token"]);
    assert!(e.contains("unauthorized"), "{e}");
    assert!(e.contains("stowage login"), "{e}");
    assert!(!config.join("credentials.json").exists());

    // Login: who we are, the token saved 0600.
    let out = ok(&config, &["login", &url, "--token", &token]);
    assert!(out.contains("as user:alice"), "{out}");
    let creds = config.join("credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert_eq!(saved["servers"][&url]["token"], token.as_str());
    assert_eq!(saved["current"], url.as_str());

    // get is: the table, without --server (the saved login).
    let out = ok(&config, &["get", "imagestreams", "-n", "tripleo"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].starts_with("base "), "{out}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, ["NAME", "DOCKER REPO", "TAGS", "UPDATED"], "{out}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "aodh", "{out}");
    assert_eq!(row[1], format!("{a}/tripleo/aodh"), "{out}");
    assert_eq!(row[2], "latest,v1", "most recently moved first: {out}");
    assert!(
        lines[1].ends_with(" ago") && lines[1].contains("second"),
        "{out}"
    );
    // The columns line up.
    assert_eq!(lines[0].find("DOCKER REPO"), lines[1].find(&a));
    assert_eq!(
        no_ages(&out),
        no_ages(&ok(&config, &["get", "is", "-n", "tripleo"]))
    );
    // One stream per request: the pages are followed to the end.
    assert_eq!(
        no_ages(&out),
        no_ages(&ok(
            &config,
            &["get", "is", "-n", "tripleo", "--chunk-size", "1"]
        ))
    );

    // describe is: the seed's fields, every tag with its history newest first.
    let out = ok(&config, &["describe", "is", "aodh", "-n", "tripleo"]);
    assert_eq!(field(&out, "Name"), "aodh");
    assert_eq!(field(&out, "Namespace"), "tripleo");
    assert!(field(&out, "Created").ends_with(" ago"), "{out}");
    assert_eq!(field(&out, "Docker Pull Spec"), format!("{a}/tripleo/aodh"));
    assert_eq!(field(&out, "Unique Images"), "2");
    assert_eq!(field(&out, "Tags"), "2");
    let refs: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('@'))
        .map(str::trim)
        .collect();
    assert_eq!(
        refs,
        [
            format!("* {a}/tripleo/aodh@{newest_digest}"),
            format!("{a}/tripleo/aodh@{oldest_digest}"),
            format!("* {a}/tripleo/aodh@{oldest_digest}"),
        ],
        "latest first, its history newest first, then v1:\n{out}"
    );
    assert!(out.contains("\nlatest\n  pushed image\n"), "{out}");
    assert!(out.contains("ago by user:alice"), "{out}");
    // The alias reads the same.
    assert_eq!(
        no_ages(&out),
        no_ages(&ok(
            &config,
            &["describe", "imagestream", "aodh", "-n", "tripleo"]
        ))
    );

    // describe istag: every field against the image's real config.
    let out = ok(
        &config,
        &["describe", "istag", "aodh:latest", "-n", "tripleo"],
    );
    let cfg: Value = serde_json::from_slice(&newest.config.bytes).unwrap();
    assert_eq!(field(&out, "Name"), newest_digest);
    assert_eq!(field(&out, "Image Name"), newest_digest);
    assert_eq!(field(&out, "Namespace"), "tripleo");
    assert_eq!(
        field(&out, "Docker Image"),
        format!("{a}/tripleo/aodh@{newest_digest}")
    );
    let sizes: Vec<u64> = newest.layers.iter().map(|l| l.bytes.len() as u64).collect();
    let total: u64 = sizes.iter().sum();
    assert_eq!(
        field(&out, "Image Size"),
        format!(
            "{} (first layer {}, last binary layer {})",
            human(total),
            human(sizes[0]),
            human(sizes[sizes.len() - 1])
        )
    );
    assert!(
        field(&out, "Image Created").ends_with(" years ago"),
        "{out}"
    );
    assert_eq!(field(&out, "Author"), "<none>");
    assert_eq!(field(&out, "Arch"), cfg["architecture"].as_str().unwrap());
    let cmd: Vec<&str> = cfg["config"]["Cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(field(&out, "Command"), cmd.join(" "));
    assert_eq!(field(&out, "Entrypoint"), "<none>");
    assert_eq!(
        field(&out, "Working Dir"),
        cfg["config"]["WorkingDir"].as_str().unwrap()
    );
    assert_eq!(field(&out, "User"), cfg["config"]["User"].as_str().unwrap());
    let ports: Vec<&String> = cfg["config"]["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(field(&out, "Exposes Ports"), ports[0].as_str());
    let labels: Vec<String> = cfg["config"]["Labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    assert_eq!(block(&out, "Docker Labels"), labels, "{out}");
    let env: Vec<String> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(block(&out, "Environment"), env, "{out}");
    assert_eq!(
        no_ages(&out),
        no_ages(&ok(
            &config,
            &["describe", "imagestreamtag", "aodh:latest", "-n", "tripleo"]
        ))
    );

    // get istags: NAME, IMAGE REF, UPDATED.
    let out = ok(&config, &["get", "istags", "-n", "tripleo"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(rows[0], ["NAME", "IMAGE REF", "UPDATED"], "{out}");
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(rows[3][0], "base:1.0");
    assert_eq!(
        no_ages(&out),
        no_ages(&ok(
            &config,
            &["get", "istags", "-n", "tripleo", "--chunk-size", "1"]
        ))
    );
    assert_eq!(rows[1][0], "aodh:latest");
    assert_eq!(rows[1][1], format!("{a}/tripleo/aodh@{newest_digest}"));
    assert!(rows[1][2].ends_with(" ago"), "{out}");
    assert_eq!(rows[2][0], "aodh:v1");
    assert_eq!(rows[2][1], format!("{a}/tripleo/aodh@{oldest_digest}"));

    // -o json: the API's own objects (a list: every page's items).
    let http = reqwest::Client::new();
    let api = |path: &str| {
        let r = http
            .get(format!(
                "{url}/apis/image.openshift.io/v1/namespaces/tripleo/{path}"
            ))
            .bearer_auth(&token);
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let got: Value = serde_json::from_str(&ok(
        &config,
        &["get", "is", "aodh", "-n", "tripleo", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(got, api("imagestreams/aodh").await);
    let got: Value = serde_json::from_str(&ok(
        &config,
        &["get", "istags", "aodh:v1", "-n", "tripleo", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(got, api("imagestreamtags/aodh:v1").await);
    let got: Value =
        serde_json::from_str(&ok(&config, &["get", "is", "-n", "tripleo", "-o", "json"])).unwrap();
    assert_eq!(got["kind"], "ImageStreamList");
    assert_eq!(got["items"], api("imagestreams").await["items"]);
    assert_eq!(got["items"].as_array().unwrap().len(), 2);
    let paged: Value = serde_json::from_str(&ok(
        &config,
        &[
            "get",
            "is",
            "-n",
            "tripleo",
            "-o",
            "json",
            "--chunk-size",
            "1",
        ],
    ))
    .unwrap();
    assert_eq!(paged, got);
    let e = fails(&config, &["get", "is", "-n", "tripleo", "-o", "yaml"]);
    assert!(e.contains("-o json"), "{e}");

    // Errors: a missing stream (the Status message), a token without access, a revoked
    // one, an unreachable server.
    let e = fails(&config, &["describe", "is", "nothing", "-n", "tripleo"]);
    assert!(e.contains("imagestreams \"nothing\" not found"), "{e}");
    let e = fails(
        &config,
        &["describe", "istag", "aodh:nope", "-n", "tripleo"],
    );
    assert!(e.contains("not found"), "{e}");
    let e = fails(
        &config,
        &[
            "get", "is", "-n", "tripleo", "--server", &url, "--token", &bob,
        ],
    );
    assert!(e.contains("forbidden"), "bob may not read tripleo: {e}");
    let e = fails(
        &config,
        &["get", "is", "-n", "tripleo", "--token", "stowage_bad_token"],
    );
    assert!(e.contains("unauthorized"), "{e}");
    assert!(e.contains(&format!("stowage login {url} --token T")), "{e}");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = fails(&config, &["get", "is", "-n", "tripleo", "--server", &dead]);
    assert!(e.contains("cannot reach the server at"), "{e}");
    assert!(e.contains(&dead), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");

    // The blob `get` still works beside the new kinds.
    let e = fails(&config, &["--storage", &storage, "get", "sha256:abc"]);
    assert!(!e.contains("imagestream"), "{e}");

    // Logout forgets the token; then there is no server again.
    let out = ok(&config, &["logout", &url]);
    assert!(out.contains("user:alice"), "{out}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert!(saved["servers"].get(&url).is_none(), "{saved}");
    let e = fails(&config, &["get", "is", "-n", "tripleo"]);
    assert!(e.contains("stowage login"), "{e}");
    // Anonymous, through --server: the private namespace asks for a login.
    let e = fails(&config, &["get", "is", "-n", "tripleo", "--server", &url]);
    assert!(e.contains("unauthorized"), "{e}");
    assert!(e.contains("no credentials"), "{e}");
    drop(server);
}
