//! The engine suite: one set of cases, run against every backend (memory, local disk,
//! and S3 served by a real moto server). A case is an `async fn(Kind)`; the macro at the
//! bottom instantiates each for each backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_storage::testkit as common;

use bytes::Bytes;
use common::{Kind, open, open_small, open_with, random_bytes, read_all, read_range, stream_of};
use stowage_storage::{Algorithm, ChunkingParams, Descriptor, Digest, Error, RepoName, Tag};

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

async fn blobs_round_trip_whole_and_by_range(kind: Kind) {
    let t = open(kind).await;
    let inline_max = t.options.inline_max;
    for (i, len) in [
        0,
        1,
        100,
        inline_max,
        inline_max + 1,
        300_000,
        3 << 20,
        9 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let data = random_bytes(len, i as u64);
        let digest = Digest::sha256(&data);
        let info = t
            .store
            .put_blob(&digest, stream_of(data.clone(), vec![65_536]))
            .await
            .unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(
            t.store.blob(&digest).await.unwrap().unwrap().size,
            len as u64
        );
        assert_eq!(read_all(&t.store, &digest).await, data, "len {len}");
        // Opened once: the size first, then any range of the same recipe.
        let opened = t.store.open_blob(&digest).await.unwrap().unwrap();
        assert_eq!(opened.size(), len as u64);
        let whole: Vec<bytes::Bytes> =
            futures::TryStreamExt::try_collect(opened.read(None).unwrap().stream)
                .await
                .unwrap();
        assert_eq!(whole.concat(), data);
        if len > 10 {
            let (a, b) = (len as u64 / 3, len as u64 - 3);
            assert_eq!(
                read_range(&t.store, &digest, Some(a..b)).await,
                &data[a as usize..b as usize]
            );
            assert_eq!(
                read_range(&t.store, &digest, Some(b..b + 1)).await,
                &data[b as usize..b as usize + 1]
            );
        }
        let past = len as u64 + 1;
        assert!(matches!(
            t.store.read_blob(&digest, Some(0..past)).await.err(),
            Some(Error::RangeNotSatisfiable { .. })
        ));
    }
    let missing = Digest::sha256(b"never stored");
    assert!(t.store.blob(&missing).await.unwrap().is_none());
    assert!(t.store.open_blob(&missing).await.unwrap().is_none());
    assert!(matches!(
        t.store.read_blob(&missing, None).await.err(),
        Some(Error::BlobNotFound(_))
    ));
}

async fn a_wrong_digest_commits_nothing(kind: Kind) {
    let t = open(kind).await;
    let data = random_bytes(2 << 20, 9);
    let actual = Digest::sha256(&data);
    let claimed = Digest::sha256(b"something else");
    let err = t
        .store
        .put_blob(&claimed, stream_of(data.clone(), vec![100_000]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { ref expected, actual: ref a } if *expected == claimed && *a == actual)
    );
    assert!(t.store.blob(&claimed).await.unwrap().is_none());
    assert!(t.store.blob(&actual).await.unwrap().is_none());
    assert_eq!(t.store.stats().await.unwrap().blobs, 0);
}

async fn sha512_blobs_are_verified(kind: Kind) {
    let t = open(kind).await;
    let data = random_bytes(1 << 20, 5);
    let digest = Digest::of(Algorithm::Sha512, &data);
    t.store
        .put_blob(&digest, stream_of(data.clone(), vec![4096]))
        .await
        .unwrap();
    assert_eq!(read_all(&t.store, &digest).await, data);
    let wrong = Digest::of(Algorithm::Sha512, b"x");
    assert!(matches!(
        t.store.put_blob_bytes(&wrong, Bytes::from(data)).await,
        Err(Error::DigestMismatch { .. })
    ));
}

async fn shared_content_is_stored_once(kind: Kind) {
    let t = open(kind).await;
    let a = random_bytes(6 << 20, 1);
    let mut b = a[..3 << 20].to_vec();
    b.extend(random_bytes(100_000, 2));
    b.extend_from_slice(&a[3 << 20..]);
    let (_, sa) = t
        .store
        .put_blob_with_stats(&Digest::sha256(&a), stream_of(a.clone(), vec![1 << 20]))
        .await
        .unwrap();
    assert_eq!(sa.stored_bytes, a.len() as u64);
    let (_, sb) = t
        .store
        .put_blob_with_stats(&Digest::sha256(&b), stream_of(b.clone(), vec![1 << 20]))
        .await
        .unwrap();
    let max_chunk = ChunkingParams::default().max as u64;
    assert!(
        sb.stored_bytes <= 100_000 + 3 * max_chunk,
        "an insertion re-stores only the chunks around it: stored {}",
        sb.stored_bytes
    );
    assert_eq!(sb.stored_bytes + sb.deduplicated_bytes, b.len() as u64);
    let stats = t.store.stats().await.unwrap();
    assert_eq!(stats.logical_bytes, (a.len() + b.len()) as u64);
    assert!(stats.physical_bytes < a.len() as u64 + 100_000 + 4 * max_chunk);
    assert_eq!(read_all(&t.store, &Digest::sha256(&b)).await, b);
}

async fn a_blob_whose_chunks_are_stored_uploads_no_chunk_again(kind: Kind) {
    let t = open(kind).await;
    let a = random_bytes(5 << 20, 3);
    t.store
        .put_blob(&Digest::sha256(&a), stream_of(a.clone(), vec![1 << 20]))
        .await
        .unwrap();
    let before = t.store.stats().await.unwrap();
    // Same content again, and (on disk and S3) the same content plus one byte as a
    // session from a reopened store: another process, which learns the chunks from the
    // pack footers.
    let (_, again) = t
        .store
        .put_blob_with_stats(&Digest::sha256(&a), stream_of(a.clone(), vec![333_333]))
        .await
        .unwrap();
    assert_eq!((again.stored_bytes, again.packs), (0, 0));
    // Small blobs live in their recipe: new the first time, deduplicated after.
    let small = Digest::sha256(b"a small config");
    let body = || stream_of(b"a small config".to_vec(), vec![4]);
    let (_, first) = t.store.put_blob_with_stats(&small, body()).await.unwrap();
    let (_, second) = t.store.put_blob_with_stats(&small, body()).await.unwrap();
    assert_eq!((first.stored_bytes, second.stored_bytes), (14, 0));
    assert_eq!(second.deduplicated_bytes, 14);
    if kind != Kind::Memory {
        let other = t.reopen().await;
        let r = repo("dedup/other");
        let s = other.start_upload(&r).await.unwrap();
        let mut longer = a.clone();
        longer.push(7);
        let d = Digest::sha256(&longer);
        other
            .finish_upload(
                &s.id,
                &r,
                Some(0),
                stream_of(longer.clone(), vec![1 << 20]),
                &d,
            )
            .await
            .unwrap();
        assert_eq!(read_all(&t.store, &d).await, longer);
    }
    let after = t.store.stats().await.unwrap();
    let max_chunk = ChunkingParams::default().max as u64;
    assert!(
        after.pack_bytes - before.pack_bytes <= 2 * max_chunk + 1024,
        "grew by {}",
        after.pack_bytes - before.pack_bytes
    );
}

async fn uploads_resume_across_store_handles(kind: Kind) {
    let t = open_small(kind).await;
    let r = repo("library/app");
    let data = random_bytes(700_000, 4);
    let digest = Digest::sha256(&data);
    let s = t.store.start_upload(&r).await.unwrap();
    assert_eq!(s.offset, 0);
    let st = t
        .store
        .append_upload(
            &s.id,
            &r,
            0,
            stream_of(data[..100_001].to_vec(), vec![7_000]),
        )
        .await
        .unwrap();
    assert_eq!(st.offset, 100_001);
    // Another handle (another process, for disk and S3) continues the session.
    let other = if kind == Kind::Memory {
        t.store.clone()
    } else {
        t.reopen().await
    };
    assert_eq!(
        other.upload_status(&s.id, &r).await.unwrap().offset,
        100_001
    );
    let st = other
        .append_upload(
            &s.id,
            &r,
            100_001,
            stream_of(data[100_001..400_000].to_vec(), vec![50_000]),
        )
        .await
        .unwrap();
    assert_eq!(st.offset, 400_000);
    let info = t
        .store
        .finish_upload(
            &s.id,
            &r,
            Some(400_000),
            stream_of(data[400_000..].to_vec(), vec![1 << 20]),
            &digest,
        )
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(read_all(&other, &digest).await, data);
    assert!(
        t.store
            .repository(&r)
            .blob(&digest)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        t.store.upload_status(&s.id, &r).await,
        Err(Error::UploadNotFound(_))
    ));
}

async fn concurrent_appends_to_one_session_cannot_both_win(kind: Kind) {
    let t = open_small(kind).await;
    let r = repo("race/session");
    let s = t.store.start_upload(&r).await.unwrap();
    let other = if kind == Kind::Memory {
        t.store.clone()
    } else {
        t.reopen().await
    };
    let data = [random_bytes(300_000, 1), random_bytes(300_000, 2)];
    let (a, b) = tokio::join!(
        t.store
            .append_upload(&s.id, &r, 0, stream_of(data[0].clone(), vec![10_000])),
        other.append_upload(&s.id, &r, 0, stream_of(data[1].clone(), vec![10_000])),
    );
    let winner = match (&a, &b) {
        (Ok(_), Err(Error::Conflict { .. } | Error::OffsetMismatch { .. })) => 0,
        (Err(Error::Conflict { .. } | Error::OffsetMismatch { .. }), Ok(_)) => 1,
        other => panic!("exactly one append must win: {other:?}"),
    };
    let digest = Digest::sha256(&data[winner]);
    t.store
        .finish_upload(&s.id, &r, Some(300_000), stream_of(vec![], vec![]), &digest)
        .await
        .unwrap();
    assert_eq!(read_all(&t.store, &digest).await, data[winner]);
}

async fn out_of_order_appends_are_rejected_with_the_current_offset(kind: Kind) {
    let t = open(kind).await;
    let r = repo("a/b");
    let s = t.store.start_upload(&r).await.unwrap();
    t.store
        .append_upload(&s.id, &r, 0, stream_of(vec![1; 1000], vec![1000]))
        .await
        .unwrap();
    for bad in [0, 999, 1001] {
        match t
            .store
            .append_upload(&s.id, &r, bad, stream_of(vec![2; 10], vec![10]))
            .await
        {
            Err(Error::OffsetMismatch {
                current, requested, ..
            }) => {
                assert_eq!((current, requested), (1000, bad));
            }
            other => panic!("append at {bad}: {other:?}"),
        }
    }
    assert!(matches!(
        t.store.upload_status(&s.id, &repo("other/repo")).await,
        Err(Error::UploadRepositoryMismatch { .. })
    ));
    assert_eq!(t.store.upload_status(&s.id, &r).await.unwrap().offset, 1000);
}

async fn sessions_are_listed_with_age_and_cancelled(kind: Kind) {
    let t = open(kind).await;
    let r = repo("ns/repo");
    let a = t.store.start_upload(&r).await.unwrap();
    let b = t.store.start_upload(&r).await.unwrap();
    t.store
        .append_upload(
            &b.id,
            &r,
            0,
            stream_of(random_bytes(300_000, 1), vec![300_000]),
        )
        .await
        .unwrap();
    let listed = t.store.list_uploads().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.created <= s.updated));
    let lb = listed.iter().find(|s| s.id == b.id).unwrap();
    assert_eq!(lb.offset, 300_000);
    t.store.cancel_upload(&b.id, &r).await.unwrap();
    assert!(matches!(
        t.store
            .append_upload(&b.id, &r, 300_000, stream_of(vec![1], vec![1]))
            .await,
        Err(Error::UploadNotFound(_))
    ));
    let listed = t.store.list_uploads().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&a.id]
    );
}

async fn a_failed_finish_leaves_the_session_usable(kind: Kind) {
    let t = open(kind).await;
    let r = repo("x/y");
    let data = random_bytes(400_000, 8);
    let s = t.store.start_upload(&r).await.unwrap();
    t.store
        .append_upload(&s.id, &r, 0, stream_of(data.clone(), vec![64_000]))
        .await
        .unwrap();
    let wrong = Digest::sha256(b"nope");
    assert!(matches!(
        t.store
            .finish_upload(&s.id, &r, None, stream_of(vec![], vec![]), &wrong)
            .await,
        Err(Error::DigestMismatch { .. })
    ));
    assert!(t.store.blob(&wrong).await.unwrap().is_none());
    // The client can still finish with the right digest (here: as sha512, which the
    // session did not hash while streaming, so the stored bytes are hashed again).
    let d512 = Digest::of(Algorithm::Sha512, &data);
    t.store
        .finish_upload(&s.id, &r, Some(400_000), stream_of(vec![], vec![]), &d512)
        .await
        .unwrap();
    assert_eq!(read_all(&t.store, &d512).await, data);
}

async fn manifests_keep_their_media_type_and_links_gate_access(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("library/alpine"));
    let body = Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
    );
    let digest = Digest::sha256(&body);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    r.put_manifest(&digest, mt, body.clone(), None, &Default::default())
        .await
        .unwrap();
    let m = r.manifest(&digest).await.unwrap().unwrap();
    assert_eq!(
        (m.link.media_type.as_str(), m.bytes.clone(), m.link.size),
        (mt, body.clone(), body.len() as u64)
    );
    assert_eq!(r.manifests().await.unwrap(), vec![digest.clone()]);
    let other = t.store.repository(&repo("library/other"));
    assert!(
        other.manifest(&digest).await.unwrap().is_none(),
        "not linked there"
    );
    assert!(matches!(
        r.put_manifest(
            &Digest::sha256(b"x"),
            mt,
            body.clone(),
            None,
            &Default::default()
        )
        .await,
        Err(Error::DigestMismatch { .. })
    ));
    // Deleting a manifest takes the tags pointing at it, and only those.
    let other_body = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let other_digest = Digest::sha256(&other_body);
    r.put_manifest(&other_digest, mt, other_body, None, &Default::default())
        .await
        .unwrap();
    for (t, d) in [("a", &digest), ("b", &digest), ("c", &other_digest)] {
        r.set_tag(&Tag::parse(t).unwrap(), d).await.unwrap();
    }
    assert!(r.delete_manifest(&digest).await.unwrap());
    assert!(!r.delete_manifest(&digest).await.unwrap());
    assert!(r.manifest(&digest).await.unwrap().is_none());
    assert_eq!(r.tags().await.unwrap(), vec![Tag::parse("c").unwrap()]);
    // Blob links: a blob is servable only where it was pushed or linked.
    let layer = random_bytes(50_000, 1);
    let ld = Digest::sha256(&layer);
    assert!(matches!(
        other.link_blob(&ld).await,
        Err(Error::BlobNotFound(_))
    ));
    r.put_blob(&ld, stream_of(layer, vec![10_000]))
        .await
        .unwrap();
    assert!(r.blob(&ld).await.unwrap().is_some());
    assert!(other.blob(&ld).await.unwrap().is_none());
    other.link_blob(&ld).await.unwrap();
    assert_eq!(other.blobs().await.unwrap(), vec![ld.clone()]);
    assert!(other.unlink_blob(&ld).await.unwrap());
    assert!(other.blob(&ld).await.unwrap().is_none());
    assert!(r.blob(&ld).await.unwrap().is_some());
}

async fn tags_keep_history_and_swap_atomically(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("tripleo/centos-binary-aodh-api"));
    let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
    let latest = tag("latest");
    r.set_tag(&latest, &a).await.unwrap();
    r.set_tag(&latest, &b).await.unwrap();
    let rec = r.set_tag(&latest, &a).await.unwrap();
    assert_eq!(rec.current(), &a);
    let history: Vec<_> = rec.history.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(history, vec![a.clone(), b.clone(), a.clone()]);
    assert!(rec.history.windows(2).all(|w| w[0].created >= w[1].created));
    // Setting the current digest again is not a move.
    assert_eq!(r.set_tag(&latest, &a).await.unwrap().history.len(), 3);
    assert!(matches!(
        r.compare_and_set_tag(&latest, Some(&b), &b).await,
        Err(Error::Conflict { .. })
    ));
    r.compare_and_set_tag(&latest, Some(&a), &b).await.unwrap();
    assert!(matches!(
        r.compare_and_set_tag(&tag("new"), Some(&a), &b).await,
        Err(Error::Conflict { .. })
    ));
    r.compare_and_set_tag(&tag("new"), None, &b).await.unwrap();
    assert!(matches!(
        r.compare_and_set_tag(&tag("new"), None, &a).await,
        Err(Error::Conflict { .. })
    ));
    r.set_tag(&tag("1.0"), &a).await.unwrap();
    let names: Vec<String> = r
        .tags()
        .await
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(names, vec!["1.0", "latest", "new"]);
    assert!(r.delete_tag(&latest).await.unwrap());
    assert!(!r.delete_tag(&latest).await.unwrap());
    assert!(r.tag(&latest).await.unwrap().is_none());
}

async fn concurrent_tag_updates_lose_nothing(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("race/tags"));
    let latest = tag("latest");
    let tasks: Vec<_> = (0..8u32)
        .map(|w| {
            let r = r.clone();
            let latest = latest.clone();
            tokio::spawn(async move {
                for i in 0..5u32 {
                    let d = Digest::sha256(format!("{w}-{i}").as_bytes());
                    r.set_tag(&latest, &d).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rec = r.tag(&latest).await.unwrap().unwrap();
    assert_eq!(rec.history.len(), 40, "every update is in the history once");
    assert_eq!(rec.generation, 40);
    let mut seen: Vec<_> = rec.history.iter().map(|e| e.digest.to_string()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40);
}

async fn referrers_are_indexed_by_subject(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("sig/app"));
    let subject_body = Bytes::from_static(b"{\"subject manifest\":1}");
    let subject = Digest::sha256(&subject_body);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    r.put_manifest(&subject, mt, subject_body, None, &Default::default())
        .await
        .unwrap();
    let mut made = Vec::new();
    for (i, at) in ["application/vnd.dev.sigstore", "application/spdx+json"]
        .iter()
        .enumerate()
    {
        let body = Bytes::from(format!("{{\"referrer\":{i}}}"));
        let d = Digest::sha256(&body);
        let desc = Descriptor {
            media_type: mt.into(),
            digest: d.clone(),
            size: body.len() as u64,
            artifact_type: Some((*at).into()),
            annotations: None,
        };
        r.put_manifest(&d, mt, body, Some((&subject, &desc)), &Default::default())
            .await
            .unwrap();
        made.push(desc);
    }
    made.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(r.referrers(&subject).await.unwrap(), made);
    assert!(
        r.referrers(&Digest::sha256(b"other"))
            .await
            .unwrap()
            .is_empty()
    );
    let other = t.store.repository(&repo("sig/other"));
    assert!(other.referrers(&subject).await.unwrap().is_empty());
    r.delete_manifest(&made[0].digest).await.unwrap();
    assert_eq!(r.referrers(&subject).await.unwrap(), vec![made[1].clone()]);
}

/// An image manifest pushed with a subject and no `artifactType` is listed among its
/// subject's referrers with its config's media type as `artifactType`, whatever that
/// media type is (an ordinary image config too: distribution spec, "Listing
/// Referrers"), and the listing can be filtered on it. An index without one has none.
/// Both ways a descriptor reaches the engine are covered: built from
/// `manifest::parse` (as the server does) and given without an artifact type.
async fn referrers_without_artifact_type_take_the_config_media_type(kind: Kind) {
    use stowage_storage::manifest::{self, OCI_INDEX, OCI_MANIFEST};
    let t = open(kind).await;
    let r = t.store.repository(&repo("sig/plain"));
    let subject_body = Bytes::from_static(b"{\"subject manifest\":1}");
    let subject = Digest::sha256(&subject_body);
    r.put_manifest(
        &subject,
        OCI_MANIFEST,
        subject_body,
        None,
        &Default::default(),
    )
    .await
    .unwrap();
    let sd = format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":22}}"#);
    let image = |config_type: &str, extra: &str| {
        let config = Digest::sha256(config_type.as_bytes());
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{config}","size":{}}},"layers":[],"subject":{sd}{extra}}}"#,
            config_type.len()
        ))
    };
    let oci_config = "application/vnd.oci.image.config.v1+json";
    let docker_config = "application/vnd.docker.container.image.v1+json";
    let custom_config = "application/vnd.example.config.v1+json";
    // (body, media type, artifactType the listing must show)
    let cases: Vec<(Bytes, &str, Option<&str>)> = vec![
        (image(oci_config, ""), OCI_MANIFEST, Some(oci_config)),
        (image(docker_config, ""), OCI_MANIFEST, Some(docker_config)),
        (image(custom_config, ""), OCI_MANIFEST, Some(custom_config)),
        // An empty artifactType counts as none.
        (
            image(
                oci_config,
                r#","artifactType":"","annotations":{"empty":"at"}"#,
            ),
            OCI_MANIFEST,
            Some(oci_config),
        ),
        (
            image(
                oci_config,
                r#","artifactType":"application/vnd.example.sig""#,
            ),
            OCI_MANIFEST,
            Some("application/vnd.example.sig"),
        ),
        (
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"subject":{sd}}}"#
            )),
            OCI_INDEX,
            None,
        ),
    ];
    let mut expected = Vec::new();
    for (i, (body, mt, at)) in cases.into_iter().enumerate() {
        let d = Digest::sha256(&body);
        let parsed = manifest::parse(mt, &body).unwrap();
        assert_eq!(parsed.artifact_type.as_deref(), at, "parse, case {i}");
        let mut desc = Descriptor {
            media_type: mt.into(),
            digest: d.clone(),
            size: body.len() as u64,
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
        };
        // Every other one as a caller that leaves the artifact type to the engine.
        if i % 2 == 1 {
            desc.artifact_type = None;
        }
        r.put_manifest(&d, mt, body, Some((&subject, &desc)), &Default::default())
            .await
            .unwrap();
        desc.artifact_type = at.map(str::to_owned);
        expected.push(desc);
    }
    expected.sort_by(|a, b| a.digest.cmp(&b.digest));
    let listed = r.referrers(&subject).await.unwrap();
    assert_eq!(listed, expected);
    // Filtering on artifactType (as the referrers endpoint does) finds the images
    // with an ordinary image config.
    let with_oci_config: Vec<_> = listed
        .iter()
        .filter(|d| d.artifact_type.as_deref() == Some(oci_config))
        .collect();
    assert_eq!(with_oci_config.len(), 2, "{listed:#?}");
}

/// `blob_bytes_limited` reads a blob whole only up to a size, deciding from the
/// recipe before reading any data: a blob larger than the limit is `None`, however
/// its bytes are stored (inline or in chunks); a missing blob is `BlobNotFound`.
async fn whole_blob_reads_are_bounded(kind: Kind) {
    let t = open_small(kind).await;
    let inline_max = t.options.inline_max as u64;
    for (i, len) in [0u64, 1, inline_max, inline_max + 1, 100_000, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(len as usize, 900 + i as u64);
        let d = Digest::sha256(&data);
        t.store
            .put_blob(&d, stream_of(data.clone(), vec![7_000]))
            .await
            .unwrap();
        for max in [len, len + 1, u64::MAX] {
            let got = t.store.blob_bytes_limited(&d, max).await.unwrap();
            assert_eq!(got.as_deref(), Some(&data[..]), "len {len}, max {max}");
        }
        if len > 0 {
            for max in [0, len - 1] {
                assert_eq!(
                    t.store.blob_bytes_limited(&d, max).await.unwrap(),
                    None,
                    "len {len}, max {max}"
                );
            }
        }
    }
    assert!(matches!(
        t.store
            .blob_bytes_limited(&Digest::sha256(b"never stored"), 1 << 20)
            .await,
        Err(Error::BlobNotFound(_))
    ));
}

async fn the_catalog_lists_repositories_by_namespace(kind: Kind) {
    let t = open(kind).await;
    let names = [
        "tripleo/a",
        "tripleo/b/c",
        "tripleo/b",
        "developer/centos",
        "z",
    ];
    for n in names {
        t.store
            .repository(&repo(n))
            .set_tag(&tag("latest"), &Digest::sha256(n.as_bytes()))
            .await
            .unwrap();
    }
    let all: Vec<String> = t
        .store
        .repositories(None, None, None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        all,
        vec![
            "developer/centos",
            "tripleo/a",
            "tripleo/b",
            "tripleo/b/c",
            "z"
        ]
    );
    let ns: Vec<String> = t
        .store
        .repositories(Some("tripleo"), None, None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(ns, vec!["tripleo/a", "tripleo/b", "tripleo/b/c"]);
    let page: Vec<String> = t
        .store
        .repositories(None, Some("tripleo/a"), Some(2))
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(page, vec!["tripleo/b", "tripleo/b/c"]);
}

async fn a_store_keeps_its_chunking_parameters(kind: Kind) {
    let custom = ChunkingParams {
        min: 8192,
        avg: 32768,
        max: 131072,
        normalization: 2,
    };
    let t = open_with(kind, |o| o.chunking = Some(custom)).await;
    assert_eq!(t.store.identity().chunking, custom);
    if kind == Kind::Memory {
        return; // Every memory:// store is new; there is nothing to reopen.
    }
    let mut other = t.options.clone();
    other.chunking = Some(ChunkingParams::default());
    assert!(matches!(
        stowage_storage::Store::open(other).await,
        Err(Error::IncompatibleStore(_))
    ));
    let mut unspecified = t.options.clone();
    unspecified.chunking = None;
    let reopened = stowage_storage::Store::open(unspecified.clone())
        .await
        .unwrap();
    assert_eq!(reopened.identity().chunking, custom);
    // A lost identity is not silently replaced (the default would not match the packs).
    if let Some(dir) = &t.dir {
        let blob = random_bytes(100_000, 5);
        reopened
            .put_blob(&Digest::sha256(&blob), stream_of(blob, vec![65_536]))
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("stowage.json")).unwrap();
        let err = stowage_storage::Store::open(unspecified).await.unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. }) && err.to_string().contains("stowage.json"),
            "{err}"
        );
    }
}

async fn many_small_packs_read_back(kind: Kind) {
    let t = open_small(kind).await;
    let data = random_bytes(1 << 20, 77);
    let d = Digest::sha256(&data);
    let (_, stats) = t
        .store
        .put_blob_with_stats(&d, stream_of(data.clone(), vec![10_000, 3, 70_000]))
        .await
        .unwrap();
    assert!(stats.packs >= 10, "{stats:?}");
    assert!(stats.chunks >= 100, "{stats:?}");
    assert_eq!(read_all(&t.store, &d).await, data);
    for (a, b) in [(0, 1), (4095, 4097), (500_000, 1 << 20), (12_345, 678_901)] {
        assert_eq!(
            read_range(&t.store, &d, Some(a..b)).await,
            &data[a as usize..b as usize]
        );
    }
}

/// Deleting a manifest takes the tags pointing at it, but never a tag another writer
/// moves to another manifest meanwhile: whichever comes first, every moved tag ends up
/// at its new target (moved before the delete looks: not deleted; after: set afresh).
async fn deleting_a_manifest_keeps_tags_moved_away_meanwhile(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("race/delete"));
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let (old, new) = (
        Bytes::from_static(br#"{"schemaVersion":2,"annotations":{"v":"old"}}"#),
        Bytes::from_static(br#"{"schemaVersion":2,"annotations":{"v":"new"}}"#),
    );
    let (a, b) = (Digest::sha256(&old), Digest::sha256(&new));
    r.put_manifest(&b, mt, new, None, &Default::default())
        .await
        .unwrap();
    let tags: Vec<Tag> = (0..16).map(|i| tag(&format!("t{i:02}"))).collect();
    let rounds = if kind == Kind::S3 { 2 } else { 6 };
    for round in 0..rounds {
        r.put_manifest(&a, mt, old.clone(), None, &Default::default())
            .await
            .unwrap();
        for t in &tags {
            r.set_tag(t, &a).await.unwrap();
        }
        let mover = {
            let (r, tags, b) = (r.clone(), tags.clone(), b.clone());
            tokio::spawn(async move {
                for t in &tags {
                    r.set_tag(t, &b).await.unwrap();
                }
            })
        };
        assert!(r.delete_manifest(&a).await.unwrap());
        mover.await.unwrap();
        for t in &tags {
            let rec = r.tag(t).await.unwrap();
            assert_eq!(
                rec.as_ref().map(|rec| rec.current()),
                Some(&b),
                "round {round}: tag {t} moved to the new manifest was lost"
            );
        }
    }
}

/// Puts three distinct (empty) image manifests in `r`; their digests.
async fn three_manifests(r: &stowage_storage::Repository) -> [Digest; 3] {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let mut out = Vec::new();
    for v in ["one", "two", "three"] {
        let body = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","annotations":{{"v":"{v}"}}}}"#
        ));
        let d = Digest::sha256(&body);
        r.put_manifest(&d, mt, body, None, &Default::default())
            .await
            .unwrap();
        out.push(d);
    }
    out.try_into().unwrap()
}

/// A tag moved three times rolls back to its first image: one more history entry, by
/// whoever did it, a new generation; rolling back to the current image changes nothing.
async fn a_tag_rolls_back_to_an_image_from_its_history(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("roll/app"));
    let [a, b, c] = three_manifests(&r).await;
    let v1 = tag("v1");
    assert!(matches!(
        r.rollback_tag(&v1, &a, Some("user:alice")).await,
        Err(Error::TagNotFound { .. })
    ));
    for d in [&a, &b, &c] {
        r.set_tag_by(&v1, d, Some("user:ci")).await.unwrap();
    }
    let before = r.tag(&v1).await.unwrap().unwrap();
    assert_eq!((before.current(), before.history.len()), (&c, 3));

    let rec = r.rollback_tag(&v1, &a, Some("user:alice")).await.unwrap();
    assert_eq!(rec.current(), &a);
    assert_eq!(rec.history.len(), 4, "the rollback is one more move");
    assert!(rec.generation > before.generation);
    assert_eq!(rec.history[0].by.as_deref(), Some("user:alice"));
    let history: Vec<_> = rec.history.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(history, vec![a.clone(), c.clone(), b.clone(), a.clone()]);
    assert_eq!(r.tag(&v1).await.unwrap().unwrap(), rec, "as stored");

    // To where it is already: no move, no new generation.
    let again = r.rollback_tag(&v1, &a, Some("user:bob")).await.unwrap();
    assert_eq!(again, rec);
    assert_eq!(r.tag(&v1).await.unwrap().unwrap(), rec);
    // And forward again, to the image it was rolled back from.
    let fwd = r.rollback_tag(&v1, &c, None).await.unwrap();
    assert_eq!((fwd.current(), fwd.history.len()), (&c, 5));
    assert_eq!(fwd.generation, rec.generation + 1);
}

/// A digest the tag never pointed to is refused, even one of a manifest in the
/// repository, and the tag stays where it was.
async fn a_rollback_to_a_digest_not_in_the_history_is_refused(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("roll/app"));
    let [a, b, c] = three_manifests(&r).await;
    let v1 = tag("v1");
    r.set_tag(&v1, &a).await.unwrap();
    r.set_tag(&v1, &b).await.unwrap();
    let before = r.tag(&v1).await.unwrap().unwrap();
    for d in [c.clone(), Digest::sha256(b"never pushed")] {
        let err = r
            .rollback_tag(&v1, &d, Some("user:alice"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotInHistory { digest, .. } if digest == &d),
            "{err}"
        );
        assert!(err.is_client_error());
        assert!(err.to_string().contains("roll/app:v1"), "{err}");
    }
    // The history of another tag does not count.
    r.set_tag(&tag("v2"), &c).await.unwrap();
    assert!(matches!(
        r.rollback_tag(&v1, &c, None).await,
        Err(Error::NotInHistory { .. })
    ));
    assert_eq!(r.tag(&v1).await.unwrap().unwrap(), before, "unchanged");
}

/// An image from the history whose manifest is gone (deleted, or collected) is refused,
/// and the tag stays where it was.
async fn a_rollback_to_a_deleted_image_is_refused(kind: Kind) {
    let t = open(kind).await;
    let r = t.store.repository(&repo("roll/app"));
    let [a, b, c] = three_manifests(&r).await;
    let v1 = tag("v1");
    for d in [&a, &b, &c] {
        r.set_tag(&v1, d).await.unwrap();
    }
    assert!(r.delete_manifest(&a).await.unwrap());
    let before = r.tag(&v1).await.unwrap().unwrap();
    assert_eq!(before.current(), &c, "a tag that moved away stays");
    let err = r
        .rollback_tag(&v1, &a, Some("user:alice"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ManifestNotFound { digest, .. } if digest == &a),
        "{err}"
    );
    assert_eq!(r.tag(&v1).await.unwrap().unwrap(), before, "unchanged");
    // The image still there is fine.
    assert_eq!(r.rollback_tag(&v1, &b, None).await.unwrap().current(), &b);
}

/// The catalog pages in name order although the backend lists keys in another
/// (`a-b/_repo` before `a/_repo` before `a/0/_repo`... ), from any `last` and with
/// any page size, and its stream can be stopped early.
async fn the_catalog_pages_in_name_order_from_any_point(kind: Kind) {
    let t = open(kind).await;
    let names = [
        "a", "a-b", "a.b", "a/0", "a/0/1", "a/b", "a0", "a-b/c", "a_b", "a--b", "ab", "a/1x", "b",
        "b/a",
    ];
    for n in names {
        t.store
            .repository(&repo(n))
            .set_tag(&tag("latest"), &Digest::sha256(n.as_bytes()))
            .await
            .unwrap();
    }
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    let list = |ns: Option<&str>, after: Option<&str>, limit: Option<usize>| {
        let store = t.store.clone();
        let (ns, after) = (ns.map(str::to_owned), after.map(str::to_owned));
        async move {
            store
                .repositories(ns.as_deref(), after.as_deref(), limit)
                .await
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(list(None, None, None).await, sorted);
    let mut afters: Vec<&str> = names.to_vec();
    afters.extend([
        "", "0", "a/", "a-", "a/0/", "aa", "zz", "A", "a%2Fb", "a//b", "\u{e9}",
    ]);
    for after in afters {
        let rest: Vec<String> = sorted
            .iter()
            .filter(|n| n.as_str() > after)
            .cloned()
            .collect();
        for limit in [Some(1), Some(3), None] {
            let want: Vec<String> = rest
                .iter()
                .take(limit.unwrap_or(usize::MAX))
                .cloned()
                .collect();
            assert_eq!(
                list(None, Some(after), limit).await,
                want,
                "after {after:?}, limit {limit:?}"
            );
        }
    }
    // Paging with `last` walks the whole catalog once.
    let mut paged = Vec::new();
    loop {
        let page = list(None, paged.last().map(String::as_str), Some(2)).await;
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, sorted);
    let ns = list(Some("a"), None, None).await;
    let want: Vec<String> = sorted
        .iter()
        .filter(|n| *n == "a" || n.starts_with("a/"))
        .cloned()
        .collect();
    assert_eq!(ns, want);
    assert_eq!(list(Some("a"), Some("a/0"), Some(1)).await, vec!["a/0/1"]);
    assert!(list(None, None, Some(0)).await.is_empty());
    // The stream: filtered by the caller and stopped once it has enough.
    let first_two_with_b: Vec<String> =
        futures::TryStreamExt::try_collect(futures::StreamExt::take(
            futures::TryStreamExt::try_filter(t.store.repositories_stream(None, None), |n| {
                std::future::ready(n.as_str().contains('b'))
            }),
            2,
        ))
        .await
        .map(|v: Vec<RepoName>| v.iter().map(|n| n.to_string()).collect())
        .unwrap();
    assert_eq!(first_two_with_b, vec!["a--b", "a-b"]);
}

stowage_storage::on_every_backend!(
    blobs_round_trip_whole_and_by_range,
    a_wrong_digest_commits_nothing,
    sha512_blobs_are_verified,
    shared_content_is_stored_once,
    a_blob_whose_chunks_are_stored_uploads_no_chunk_again,
    uploads_resume_across_store_handles,
    out_of_order_appends_are_rejected_with_the_current_offset,
    concurrent_appends_to_one_session_cannot_both_win,
    sessions_are_listed_with_age_and_cancelled,
    a_failed_finish_leaves_the_session_usable,
    manifests_keep_their_media_type_and_links_gate_access,
    tags_keep_history_and_swap_atomically,
    concurrent_tag_updates_lose_nothing,
    referrers_are_indexed_by_subject,
    referrers_without_artifact_type_take_the_config_media_type,
    whole_blob_reads_are_bounded,
    the_catalog_lists_repositories_by_namespace,
    deleting_a_manifest_keeps_tags_moved_away_meanwhile,
    the_catalog_pages_in_name_order_from_any_point,
    a_store_keeps_its_chunking_parameters,
    many_small_packs_read_back,
    a_tag_rolls_back_to_an_image_from_its_history,
    a_rollback_to_a_digest_not_in_the_history_is_refused,
    a_rollback_to_a_deleted_image_is_refused,
);

/// A byte flipped in a pack on disk (bit rot) is refused on read, never served; the
/// chunk's CRC in the recipe catches it, for whole reads and ranges alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_pack_is_refused_not_served() {
    let t = open(Kind::Local).await;
    let root = t.dir.as_ref().unwrap().path().to_path_buf();
    let data = random_bytes(300_000, 42);
    let d = Digest::sha256(&data);
    t.store
        .put_blob(&d, stream_of(data.clone(), vec![50_000]))
        .await
        .unwrap();
    assert_eq!(read_all(&t.store, &d).await, data);
    let packs: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .collect();
    assert_eq!(packs.len(), 1, "one pack: {packs:?}");
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    bytes[200_000] ^= 0x01;
    std::fs::write(&packs[0], &bytes).unwrap();
    // A fresh handle, so nothing is served from memory.
    let store = stowage_storage::Store::open(t.options.clone())
        .await
        .unwrap();
    let read = store.read_blob(&d, None).await.unwrap();
    let result: Result<Vec<_>, _> = futures::TryStreamExt::try_collect(read.stream).await;
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
    let far = store.read_blob(&d, Some(199_000..201_000)).await.unwrap();
    let result: Result<Vec<_>, _> = futures::TryStreamExt::try_collect(far.stream).await;
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// At most `max_concurrent_writes` writes run at once: with one allowed, a second write
/// waits until the first (whose body is still arriving) ends, then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_limit_wait_their_turn() {
    let t =
        stowage_storage::testkit::open_with(Kind::Memory, |o| o.max_concurrent_writes = 1).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let first_data = random_bytes(100_000, 1);
    let first_digest = Digest::sha256(&first_data);
    let store = t.store.clone();
    let first = tokio::spawn(async move {
        let body =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        store.put_blob(&first_digest, body).await
    });
    tx.send(Ok(bytes::Bytes::copy_from_slice(&first_data[..50_000])))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let second_data = random_bytes(100_000, 2);
    let second_digest = Digest::sha256(&second_data);
    let store = t.store.clone();
    let mut second = tokio::spawn(async move {
        store
            .put_blob(&second_digest, stream_of(second_data, vec![10_000]))
            .await
    });
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "the second write ran while the first held the only turn"
    );
    tx.send(Ok(bytes::Bytes::copy_from_slice(&first_data[50_000..])))
        .await
        .unwrap();
    drop(tx);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}
