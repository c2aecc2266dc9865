//! The writer's half of the collection protocol, driven step by step (no timing): a
//! proposed candidate that a commit reuses is rescued before the commit; a sealed object
//! is absent to existence checks, refused as a manifest's reference, never a dedup
//! source, and a write that recreates it waits until the run is done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use stowage_storage::collection::{ObjectRef, ObjectSet, Phase, Run, RunError};
use stowage_storage::testkit::{self as kit, Kind};
use stowage_storage::{Digest, Error, References, RepoName};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest_naming(blobs: &[&Digest]) -> Vec<u8> {
    let layers: Vec<String> = blobs
        .iter()
        .map(|d| format!("{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":1}}"))
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":1}},\"layers\":[{}]}}",
        blobs[0],
        layers.join(",")
    )
    .into_bytes()
}

async fn protocol(kind: Kind) {
    let t = kit::open_small(kind).await;
    let writer = match kind {
        Kind::Memory => t.store.clone(),
        _ => t.reopen().await,
    };
    let r = RepoName::parse("proto/app").unwrap();
    let kept = kit::random_bytes(40_000, 1);
    let doomed = kit::random_bytes(40_000, 2);
    let (kept_d, doomed_d) = (Digest::sha256(&kept), Digest::sha256(&doomed));
    for (d, data) in [(&kept_d, &kept), (&doomed_d, &doomed)] {
        t.store
            .repository(&r)
            .put_blob(d, kit::stream_of(data.clone(), vec![8192]))
            .await
            .unwrap();
    }
    let doomed_packs = t.store.recipe_packs(&doomed_d).await.unwrap().unwrap();
    assert!(!doomed_packs.is_empty());

    let mut run = Run::begin(&t.store, "test").await.unwrap();
    let proposed: ObjectSet = [
        ObjectRef::BlobLink(r.clone(), kept_d.clone()),
        ObjectRef::Recipe(kept_d.clone()),
    ]
    .into_iter()
    .collect();
    run.propose(&proposed).await.unwrap();
    writer.refresh_collection_view().await.unwrap();
    // A manifest naming a proposed blob: accepted, and the blob rescued first.
    let m = manifest_naming(&[&kept_d]);
    let md = Digest::sha256(&m);
    let refs = References {
        blobs: vec![kept_d.clone()],
        manifests: vec![],
        required: true,
    };
    writer
        .repository(&r)
        .put_manifest(&md, OCI_MANIFEST, Bytes::from(m), None, &refs)
        .await
        .unwrap();
    let rescued = run.rescues().await.unwrap();
    assert!(
        rescued.contains(&ObjectRef::Recipe(kept_d.clone())),
        "{rescued:?}"
    );
    assert!(rescued.contains(&ObjectRef::BlobLink(r.clone(), kept_d.clone())));

    // Sealed: gone for existence checks and manifests, not a dedup source.
    let mut sealed: ObjectSet = [
        ObjectRef::BlobLink(r.clone(), doomed_d.clone()),
        ObjectRef::Recipe(doomed_d.clone()),
    ]
    .into_iter()
    .collect();
    for p in &doomed_packs {
        sealed.insert(ObjectRef::Pack(*p));
    }
    run.seal(&sealed).await.unwrap();
    writer.refresh_collection_view().await.unwrap();
    assert!(writer.blob(&doomed_d).await.unwrap().is_none());
    assert!(
        writer
            .repository(&r)
            .blob(&doomed_d)
            .await
            .unwrap()
            .is_none()
    );
    assert!(writer.repository(&r).blob(&kept_d).await.unwrap().is_some());
    let m2 = manifest_naming(&[&doomed_d]);
    let refs2 = References {
        blobs: vec![doomed_d.clone()],
        manifests: vec![],
        required: true,
    };
    let err = writer
        .repository(&r)
        .put_manifest(
            &Digest::sha256(&m2),
            OCI_MANIFEST,
            Bytes::from(m2),
            None,
            &refs2,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ReferenceUnknown(ref d) if d == &doomed_d),
        "{err}"
    );
    // Content sharing chunks with a sealed pack is stored afresh.
    let mut similar = doomed.clone();
    similar.extend_from_slice(b"a different ending");
    let similar_d = Digest::sha256(&similar);
    writer
        .put_blob(&similar_d, kit::stream_of(similar.clone(), vec![8192]))
        .await
        .unwrap();
    let similar_packs = writer.recipe_packs(&similar_d).await.unwrap().unwrap();
    assert!(
        similar_packs.iter().all(|p| !doomed_packs.contains(p)),
        "a new recipe points into a sealed pack"
    );
    // Pushing the sealed blob again waits for the run to finish.
    let push = tokio::spawn({
        let writer = writer.clone();
        let r = r.clone();
        let (d, data) = (doomed_d.clone(), doomed.clone());
        async move {
            writer
                .repository(&r)
                .put_blob(&d, kit::stream_of(data, vec![8192]))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !push.is_finished(),
        "recreated a sealed blob while the run could delete it"
    );
    run.set_phase(Phase::Deleting).await.unwrap();
    let swept: Vec<(ObjectRef, Option<Digest>)> =
        sealed.iter().map(|r| (r.clone(), None)).collect();
    let mut pending = stowage_storage::PendingDeletes::default();
    t.store
        .delete_collected_many(&swept, &mut pending)
        .await
        .unwrap();
    t.store.sync_deletes(pending).await.unwrap();
    run.set_phase(Phase::Done).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), push)
        .await
        .expect("push still waiting after the run ended")
        .unwrap()
        .unwrap();
    assert_eq!(kit::read_all(&writer, &doomed_d).await, doomed);
    assert!(
        writer
            .repository(&r)
            .blob(&doomed_d)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(kit::read_all(&writer, &similar_d).await, similar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_follow_the_protocol_in_memory() {
    protocol(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_follow_the_protocol_on_local_disk() {
    protocol(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_follow_the_protocol_on_s3() {
    protocol(Kind::S3).await;
}

/// Only one run at a time: a second collector sees the first one's heartbeat move and
/// gives up with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collector_is_refused_while_the_first_beats() {
    let t = kit::open(Kind::Local).await;
    let run = std::sync::Arc::new(tokio::sync::Mutex::new(
        Run::begin(&t.store, "first").await.unwrap(),
    ));
    let beat = tokio::spawn({
        let run = run.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                run.lock().await.heartbeat().await.unwrap();
            }
        }
    });
    let second = Run::begin(&t.reopen().await, "second").await.unwrap_err();
    assert!(
        matches!(second, RunError::Busy { ref host, .. } if host == "first"),
        "{second}"
    );
    beat.abort();
    // Once finished, the next run starts at once.
    run.lock().await.set_phase(Phase::Done).await.unwrap();
    Run::begin(&t.store, "third").await.unwrap();
}

/// Presence: a store that has only read is not a writer, so a run may skip its waits; a
/// process that writes for the first time registers and reads the collector's state
/// afresh, so its first commit rescues what a run proposed before it registered, even
/// though its cached view (from before the proposal) was still young.
async fn presence(kind: Kind) {
    let t = kit::open_small(kind).await;
    let r = RepoName::parse("presence/app").unwrap();
    let m = manifest_naming(&[&Digest::sha256(b"config")]);
    let md = Digest::sha256(&m);
    let refs = References {
        blobs: vec![],
        manifests: vec![],
        required: false,
    };
    t.store
        .repository(&r)
        .put_manifest(&md, OCI_MANIFEST, Bytes::from(m), None, &refs)
        .await
        .unwrap();
    // The writer opens (and so reads the state) before the run proposes.
    let writer = t.reopen().await;
    assert!(writer.repository(&r).manifest(&md).await.unwrap().is_some());
    let mut run = Run::begin(&t.reopen().await, "test").await.unwrap();
    let proposed: ObjectSet = [ObjectRef::Manifest(r.clone(), md.clone())]
        .into_iter()
        .collect();
    run.propose(&proposed).await.unwrap();
    // Only `t.store` has written; the writer and the collector's store have only read.
    assert_eq!(run.live_writers().await.unwrap(), 1);
    // Tagging the proposed manifest: the writer's first commit check registers it, reads
    // the proposal and rescues the manifest.
    writer
        .repository(&r)
        .set_tag(&"v1".parse().unwrap(), &md)
        .await
        .unwrap();
    assert_eq!(run.live_writers().await.unwrap(), 2);
    let rescued = run.rescues().await.unwrap();
    assert!(
        rescued.contains(&ObjectRef::Manifest(r.clone(), md.clone())),
        "{rescued:?}"
    );
    // Retired (a server shut down): no longer waited for.
    t.store.retire_writer().await.unwrap();
    writer.retire_writer().await.unwrap();
    assert_eq!(run.live_writers().await.unwrap(), 0);
    run.set_phase(Phase::Done).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_register_before_they_check_on_local_disk() {
    presence(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_register_before_they_check_on_s3() {
    presence(Kind::S3).await;
}
