//! The image-stream API against images pushed by skopeo, on local disk and S3: a
//! namespace's streams paged, a stream's tags with their history (a tag moved three
//! times, newest first, who pushed), an image stream tag's metadata checked field by
//! field against the image's real manifest and config, an index's platforms, both API
//! paths, `kind: Status` errors, and a private namespace hidden from anonymous callers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use stowage_tests::oci::{Image, ImageSpec, Layout, tar};
use stowage_tests::server::{Server, fresh_storage};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

fn cli(storage: &str, args: &[&str]) -> String {
    stowage_tests::server::stowage_cli(BIN.as_ref(), storage, args, None)
}

fn image(version: &str, arch: &str) -> Image {
    Image::build(&ImageSpec {
        layers: vec![
            (tar(&[("etc/os-release", b"ID=centos\n")]), true),
            (tar(&[("srv/version", version.as_bytes())]), false),
        ],
        labels: BTreeMap::from([("maintainer", "TripleO Project"), ("rdo_version", version)]),
        env: vec!["PATH=/usr/bin:/bin", "KOLLA_BASE_DISTRO=centos"],
        cmd: vec!["kolla_start"],
        architecture: arch,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_streams_on_local_disk() {
    image_streams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_streams_on_s3() {
    image_streams(true).await;
}

async fn image_streams(s3: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _guard) = fresh_storage(s3);
    cli(&storage, &["admin", "user", "create", "alice"]);
    cli(
        &storage,
        &["admin", "namespace", "create", "tripleo", "--private"],
    );
    cli(
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
    let token = cli(&storage, &["token", "create", "--user", "alice", "--quiet"])
        .trim()
        .to_string();
    // No public URL: the address clients used (the Host header) is the one shown.
    let server = Server::start(BIN.as_ref(), &storage, &[]);
    let a = &server.addr;

    // aodh:latest moved three times; aodh:v1 on the first image; multi: an index.
    let versions = ["v1", "v2", "v3"].map(|v| image(v, "amd64"));
    for (i, img) in versions.iter().enumerate() {
        let src = dir.path().join(format!("src{i}"));
        Layout::new(&src).add_image(img, "t");
        let src = format!("oci:{}:t", src.display());
        push(&src, &format!("docker://{a}/tripleo/aodh:latest"), &token);
        if i == 0 {
            push(&src, &format!("docker://{a}/tripleo/aodh:v1"), &token);
        }
    }
    let (amd64, arm64) = (image("m", "amd64"), image("m", "arm64"));
    let index =
        stowage_tests::oci::index(&[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")]);
    let src = dir.path().join("multi");
    Layout::new(&src).add_index(&index, &[&amd64, &arm64], "multi");
    push(
        &format!("oci:{}:multi", src.display()),
        &format!("docker://{a}/tripleo/multi:latest"),
        &token,
    );

    let http = reqwest::Client::new();
    let get = |path: String, auth: bool| {
        let mut r = http.get(format!("http://{a}{path}"));
        if auth {
            r = r.bearer_auth(&token);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    // The list, paged one stream at a time, on both paths.
    for base in ["/oapi/v1", "/apis/image.openshift.io/v1"] {
        let (s, first) = get(
            format!("{base}/namespaces/tripleo/imagestreams?limit=1"),
            true,
        )
        .await;
        assert_eq!(s, 200, "{first}");
        assert_eq!(first["kind"], "ImageStreamList");
        assert_eq!(first["items"].as_array().unwrap().len(), 1);
        assert_eq!(first["items"][0]["metadata"]["name"], "aodh");
        let next = first["metadata"]["continue"].as_str().unwrap();
        let (_, second) = get(
            format!("{base}/namespaces/tripleo/imagestreams?limit=1&continue={next}"),
            true,
        )
        .await;
        assert_eq!(second["items"][0]["metadata"]["name"], "multi");
        assert!(second["metadata"].get("continue").is_none(), "{second}");
    }

    // A stream: its tags with their history, newest first.
    let (s, aodh) = get("/oapi/v1/namespaces/tripleo/imagestreams/aodh".into(), true).await;
    assert_eq!(s, 200, "{aodh}");
    assert_eq!(aodh["kind"], "ImageStream");
    assert_eq!(aodh["apiVersion"], "v1");
    assert_eq!(aodh["metadata"]["namespace"], "tripleo");
    assert_eq!(
        aodh["status"]["dockerImageRepository"],
        format!("{a}/tripleo/aodh")
    );
    assert_eq!(
        aodh["status"]["publicDockerImageRepository"],
        format!("{a}/tripleo/aodh")
    );
    let tags = aodh["status"]["tags"].as_array().unwrap();
    let latest = tags.iter().find(|t| t["tag"] == "latest").unwrap();
    let items = latest["items"].as_array().unwrap();
    let want: Vec<String> = versions
        .iter()
        .rev()
        .map(|i| i.manifest.digest.to_string())
        .collect();
    let got: Vec<&str> = items.iter().map(|i| i["image"].as_str().unwrap()).collect();
    assert_eq!(got, want, "history newest first");
    assert_eq!(
        items[0]["dockerImageReference"],
        format!("{a}/tripleo/aodh@{}", want[0])
    );
    assert_eq!(items[0]["pushedBy"], "user:alice");
    let v1 = tags.iter().find(|t| t["tag"] == "v1").unwrap();
    assert_eq!(
        v1["items"][0]["image"],
        versions[0].manifest.digest.to_string()
    );

    // An image stream tag, field by field against the real manifest and config.
    let (s, istag) = get(
        "/apis/image.openshift.io/v1/namespaces/tripleo/imagestreamtags/aodh:latest".into(),
        true,
    )
    .await;
    assert_eq!(s, 200, "{istag}");
    assert_eq!(istag["kind"], "ImageStreamTag");
    assert_eq!(istag["apiVersion"], "image.openshift.io/v1");
    assert_eq!(istag["metadata"]["name"], "aodh:latest");
    let img = &istag["image"];
    let newest = &versions[2];
    let config: Value = serde_json::from_slice(&newest.config.bytes).unwrap();
    assert_eq!(img["metadata"]["name"], newest.manifest.digest.to_string());
    assert_eq!(
        img["dockerImageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let meta = &img["dockerImageMetadata"];
    for (field, key) in [
        ("Architecture", "architecture"),
        ("Created", "created"),
        ("Os", "os"),
    ] {
        assert_eq!(meta[field], config[key], "{field}");
    }
    for key in ["Env", "Cmd", "WorkingDir", "User", "ExposedPorts", "Labels"] {
        assert_eq!(meta["Config"][key], config["config"][key], "Config.{key}");
    }
    assert!(
        meta["Config"].get("Entrypoint").is_none(),
        "no source: omitted, not invented"
    );
    assert!(meta.get("Author").is_none());
    let sizes: u64 = newest.layers.iter().map(|l| l.bytes.len() as u64).sum();
    assert_eq!(meta["Size"], sizes);
    let layers = img["dockerImageLayers"].as_array().unwrap();
    assert_eq!(layers.len(), newest.layers.len());
    for (got, want) in layers.iter().zip(&newest.layers) {
        assert_eq!(got["name"], want.digest.to_string());
        assert_eq!(got["size"], want.bytes.len() as u64);
        assert_eq!(got["mediaType"], want.media_type);
    }

    // An index: each platform with its metadata.
    let (s, multi) = get(
        "/oapi/v1/namespaces/tripleo/imagestreamtags/multi:latest".into(),
        true,
    )
    .await;
    assert_eq!(s, 200, "{multi}");
    let platforms = multi["image"]["dockerImageManifests"].as_array().unwrap();
    let archs: Vec<&str> = platforms
        .iter()
        .map(|p| p["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(platforms[1]["digest"], arm64.manifest.digest.to_string());
    assert_eq!(platforms[1]["dockerImageMetadata"]["Architecture"], "arm64");

    // The tags list of a namespace.
    let (s, istags) = get("/oapi/v1/namespaces/tripleo/imagestreamtags".into(), true).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = istags["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aodh:latest", "aodh:v1", "multi:latest"]);

    // Errors are Status objects; the private namespace is closed to anonymous callers.
    let (s, e) = get(
        "/oapi/v1/namespaces/tripleo/imagestreams/aodh".into(),
        false,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(e["kind"], "Status");
    assert_eq!(e["code"], 401);
    let (s, e) = get(
        "/oapi/v1/namespaces/tripleo/imagestreams/nothing".into(),
        true,
    )
    .await;
    assert_eq!((s, e["reason"].as_str()), (404, Some("NotFound")));
    let (s, e) = get(
        "/oapi/v1/namespaces/tripleo/imagestreamtags/aodh:nope".into(),
        true,
    )
    .await;
    assert_eq!((s, e["kind"].as_str()), (404, Some("Status")));
    let (s, _) = get("/oapi/v1/namespaces/Tripleo/imagestreams".into(), true).await;
    assert_eq!(s, 400);

    // Rollback through the API: the tag moves back to its first image (a new history
    // entry), a pull by tag answers it; a digest not in the history is refused, and so
    // is a caller without push.
    let rollback = |digest: String, auth: bool| {
        let mut r = http
            .post(format!(
                "http://{a}/apis/image.openshift.io/v1/namespaces/tripleo/imagestreamtags/aodh:latest/rollback"
            ))
            .json(&serde_json::json!({ "digest": digest }));
        if auth {
            r = r.bearer_auth(&token);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let first = versions[0].manifest.digest.to_string();
    let (s, v) = rollback(first.clone(), false).await;
    assert_eq!((s, v["kind"].as_str()), (401, Some("Status")));
    let (s, v) = rollback(first.clone(), true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["image"]["metadata"]["name"], first);
    let r = http
        .get(format!("http://{a}/v2/tripleo/aodh/manifests/latest"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], first.as_str());
    let (_, aodh) = get("/oapi/v1/namespaces/tripleo/imagestreams/aodh".into(), true).await;
    let latest = aodh["status"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "latest")
        .unwrap()
        .clone();
    assert_eq!(latest["items"].as_array().unwrap().len(), 4);
    assert_eq!(latest["items"][0]["image"], first);
    let (s, v) = rollback(arm64.manifest.digest.to_string(), true).await;
    assert_eq!((s, v["kind"].as_str()), (400, Some("Status")), "{v}");
}
