//! skopeo (Debian's) against `stowage serve`: copy an image in with its digests
//! preserved, inspect it, list its tags, copy it back out byte for byte, delete it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use stowage_tests::oci::{Image, ImageSpec, Layout, tar};
use stowage_tests::server::{Server, fresh_storage};

fn skopeo(args: &[&str]) -> std::process::Output {
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

fn sample_image() -> Image {
    let base = tar(&[
        ("etc/os-release", b"ID=stowage\n"),
        ("bin/sh", &[0x7f, b'E', b'L', b'F']),
    ]);
    let app = tar(&[("srv/app.py", b"print('hello')\n")]);
    Image::build(&ImageSpec {
        layers: vec![(base, true), (app, false)],
        labels: BTreeMap::from([
            ("maintainer", "TripleO Project"),
            ("build-date", "20170529"),
        ]),
        env: vec!["PATH=/usr/bin:/bin", "KOLLA_BASE_DISTRO=centos"],
        cmd: vec!["kolla_start"],
        architecture: "amd64",
    })
}

#[test]
fn copy_inspect_list_copy_back_and_delete_on_local_disk() {
    copy_inspect_list_copy_back_and_delete(false);
}

#[test]
fn copy_inspect_list_copy_back_and_delete_on_s3() {
    copy_inspect_list_copy_back_and_delete(true);
}

fn copy_inspect_list_copy_back_and_delete(s3: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _guard) = fresh_storage(s3);
    let server = Server::start(env!("CARGO_BIN_EXE_stowage").as_ref(), &storage, &[]);
    let image = sample_image();
    let src = dir.path().join("src");
    Layout::new(&src).add_image(&image, "v1");
    let reference = format!("docker://{}/tripleo/centos-binary-aodh-api", server.addr);

    for tag in ["latest", "v1"] {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:v1", src.display()),
            &format!("{reference}:{tag}"),
        ]);
    }

    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("{reference}:latest"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["Name"],
        format!("{}/tripleo/centos-binary-aodh-api", server.addr)
    );
    // skopeo 1.9 (Debian 12) no longer prints the seed's "Tag" field; newer and older
    // versions that do must show the tag asked for.
    if !v["Tag"].is_null() {
        assert_eq!(v["Tag"], "latest");
    }
    assert_eq!(v["Digest"], image.manifest.digest.to_string());
    let mut tags: Vec<String> = serde_json::from_value(v["RepoTags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, vec!["latest", "v1"]);
    assert_eq!(v["Created"], "2017-05-29T21:29:21.715464885Z");
    assert_eq!(v["DockerVersion"], "1.12.6");
    assert_eq!(v["Labels"]["maintainer"], "TripleO Project");
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Env"][1], "KOLLA_BASE_DISTRO=centos");
    let layers: Vec<String> = serde_json::from_value(v["Layers"].clone()).unwrap();
    let want: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(layers, want);

    let out = skopeo(&["list-tags", "--tls-verify=false", &reference]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Tags"].as_array().unwrap().len(), 2);

    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("{reference}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    for blob in image.blobs() {
        let got = std::fs::read(back.join("blobs/sha256").join(blob.digest.hex())).unwrap();
        assert!(
            got == blob.bytes,
            "{} differs after the round trip",
            blob.digest
        );
    }

    skopeo(&["delete", "--tls-verify=false", &format!("{reference}:v1")]);
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("{reference}:v1")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "deleted tag still inspectable");
}

/// A multi-platform index copied in with `--all`, read back raw, and copied out whole.
#[test]
fn copy_an_index_with_all_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _guard) = fresh_storage(false);
    let server = Server::start(env!("CARGO_BIN_EXE_stowage").as_ref(), &storage, &[]);
    let base = tar(&[("etc/os-release", b"ID=stowage\n".as_slice())]);
    let build = |arch: &str| {
        Image::build(&ImageSpec {
            layers: vec![
                (base.clone(), true),
                (tar(&[("app", arch.as_bytes())]), true),
            ],
            labels: BTreeMap::new(),
            env: vec![],
            cmd: vec!["/app"],
            architecture: arch,
        })
    };
    let (amd64, arm64) = (build("amd64"), build("arm64"));
    let index =
        stowage_tests::oci::index(&[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")]);
    let src = dir.path().join("src");
    Layout::new(&src).add_index(&index, &[&amd64, &arm64], "multi");
    let reference = format!("docker://{}/multi/app:multi", server.addr);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:multi", src.display()),
        &reference,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
    assert!(raw.stdout == index.bytes, "the index is served as pushed");

    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--preserve-digests",
        &reference,
        &format!("oci:{}:multi", back.display()),
    ]);
    for blob in std::iter::once(&index)
        .chain(amd64.blobs())
        .chain(arm64.blobs())
    {
        let got = std::fs::read(back.join("blobs/sha256").join(blob.digest.hex())).unwrap();
        assert!(
            got == blob.bytes,
            "{} differs after the round trip",
            blob.digest
        );
    }
}
