//! The collector's rules, each on every backend (memory, local disk, S3 on moto): what a
//! policy keeps, what a run deletes, and how a run and writers meet while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use stowage_gc::{Options, Policy, Report, Rules, Silent, collect};
use stowage_storage::collection::Phase;
use stowage_storage::testkit::{self as kit, Kind, TestStore};
use stowage_storage::{Descriptor, Digest, References, RepoName, Store, Tag};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

/// Collect everything unreachable at once: no grace, short waits.
fn options(rules: Rules) -> Options {
    Options {
        policy: Policy {
            default: rules,
            ..Policy::default()
        },
        grace: Duration::ZERO,
        // Nothing writes while these runs go, except in the online case, which sets its own.
        write_deadline: Duration::ZERO,
        ..Options::default()
    }
}

fn strict() -> Rules {
    Rules {
        delete_untagged: true,
        keep_tag_revisions: 1,
        keep_younger_than: None,
    }
}

async fn gc(store: &Store, options: &Options) -> Report {
    collect(store, options, &Silent).await.expect("gc run")
}

/// A store whose packs are small, so layers span several packs.
async fn open(kind: Kind) -> TestStore {
    kit::open_small(kind).await
}

/// An image: config + layers, pushed into `r`. Returns the manifest digest.
async fn push_image(store: &Store, r: &RepoName, layers: &[Vec<u8>], seed: u64) -> Digest {
    let repo = store.repository(r);
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let config_d = Digest::sha256(config.as_bytes());
    repo.put_blob(
        &config_d,
        kit::stream_of(config.clone().into_bytes(), vec![4096]),
    )
    .await
    .unwrap();
    let mut layer_descs = Vec::new();
    for l in layers {
        let d = Digest::sha256(l);
        repo.put_blob(&d, kit::stream_of(l.clone(), vec![65_536]))
            .await
            .unwrap();
        layer_descs.push(format!(
            "{{\"mediaType\":\"{OCI_LAYER}\",\"digest\":\"{d}\",\"size\":{}}}",
            l.len()
        ));
    }
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"{OCI_CONFIG}\",\"digest\":\"{config_d}\",\"size\":{}}},\"layers\":[{}]}}",
        config.len(),
        layer_descs.join(",")
    );
    put_manifest(store, r, manifest.into_bytes(), OCI_MANIFEST, None).await
}

async fn put_manifest(
    store: &Store,
    r: &RepoName,
    bytes: Vec<u8>,
    media_type: &str,
    subject: Option<&Digest>,
) -> Digest {
    let d = Digest::sha256(&bytes);
    let desc = Descriptor {
        media_type: media_type.into(),
        digest: d.clone(),
        size: bytes.len() as u64,
        artifact_type: None,
        annotations: None,
    };
    store
        .repository(r)
        .put_manifest(
            &d,
            media_type,
            Bytes::from(bytes),
            subject.map(|s| (s, &desc)),
            &References::default(),
        )
        .await
        .unwrap();
    d
}

async fn index_of(store: &Store, r: &RepoName, children: &[Digest]) -> Digest {
    let entries: Vec<String> = children
        .iter()
        .map(|c| {
            format!(
                "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{c}\",\"size\":1,\"platform\":{{\"os\":\"linux\",\"architecture\":\"amd64\"}}}}"
            )
        })
        .collect();
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        entries.join(",")
    );
    put_manifest(store, r, index.into_bytes(), OCI_INDEX, None).await
}

async fn signature_of(store: &Store, r: &RepoName, subject: &Digest, seed: u64) -> Digest {
    let sig = format!("signature {seed}");
    let sig_d = Digest::sha256(sig.as_bytes());
    store
        .repository(r)
        .put_blob(&sig_d, kit::stream_of(sig.clone().into_bytes(), vec![4096]))
        .await
        .unwrap();
    let empty = "{}";
    let empty_d = Digest::sha256(empty.as_bytes());
    store
        .repository(r)
        .put_blob(
            &empty_d,
            kit::stream_of(empty.as_bytes().to_vec(), vec![16]),
        )
        .await
        .unwrap();
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"application/vnd.example.sig\",\"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty_d}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/octet-stream\",\"digest\":\"{sig_d}\",\"size\":{}}}],\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{subject}\",\"size\":1}}}}",
        sig.len()
    );
    put_manifest(store, r, m.into_bytes(), OCI_MANIFEST, Some(subject)).await
}

async fn has_manifest(store: &Store, r: &RepoName, d: &Digest) -> bool {
    store.repository(r).manifest(d).await.unwrap().is_some()
}

async fn has_blob(store: &Store, d: &Digest) -> bool {
    store.blob(d).await.unwrap().is_some()
}

fn layer(len: usize, seed: u64) -> Vec<u8> {
    kit::random_bytes(len, seed)
}

// ----- cases -----

async fn untagged_manifests_go_and_tagged_images_stay_whole(kind: Kind) {
    let t = open(kind).await;
    let r = repo("team/app");
    let shared = layer(150_000, 1);
    let only_a = layer(120_000, 2);
    let only_b = layer(130_000, 3);
    let a = push_image(&t.store, &r, &[shared.clone(), only_a.clone()], 1).await;
    t.store
        .repository(&r)
        .set_tag(&tag("v1"), &a)
        .await
        .unwrap();
    let b = push_image(&t.store, &r, &[shared.clone(), only_b.clone()], 2).await;
    let packs_before = t.store.stats().await.unwrap().packs;

    let report = gc(&t.store, &options(strict())).await;

    assert!(has_manifest(&t.store, &r, &a).await);
    assert!(
        !has_manifest(&t.store, &r, &b).await,
        "untagged manifest kept"
    );
    assert!(
        !has_blob(&t.store, &b).await,
        "untagged manifest's bytes kept"
    );
    assert!(!has_blob(&t.store, &Digest::sha256(&only_b)).await);
    assert_eq!(
        kit::read_all(&t.store, &Digest::sha256(&shared)).await,
        shared
    );
    assert_eq!(
        kit::read_all(&t.store, &Digest::sha256(&only_a)).await,
        only_a
    );
    let repo_blobs = t.store.repository(&r).blobs().await.unwrap();
    assert!(repo_blobs.contains(&Digest::sha256(&shared)));
    assert!(!repo_blobs.contains(&Digest::sha256(&only_b)));
    assert_eq!(report.manifests.deleted, 1, "{report:?}");
    // B's config, its own layer, its manifest bytes.
    assert_eq!(report.blobs.deleted, 3, "{report:?}");
    assert!(report.packs.deleted >= 1, "{report:?}");
    assert!(t.store.stats().await.unwrap().packs < packs_before);
    assert!(report.reclaimed_bytes >= 130_000, "{report:?}");

    // A second run finds nothing more.
    let again = gc(&t.store, &options(strict())).await;
    assert_eq!(
        again.manifests.deleted + again.blobs.deleted + again.packs.deleted,
        0,
        "{again:?}"
    );
}

async fn tag_history_keeps_the_last_revisions(kind: Kind) {
    let t = open(kind).await;
    let r = repo("hist");
    let repo_h = t.store.repository(&r);
    let mut images = Vec::new();
    for i in 0..4 {
        let d = push_image(&t.store, &r, &[layer(40_000, 10 + i)], 10 + i).await;
        repo_h.set_tag(&tag("latest"), &d).await.unwrap();
        images.push(d);
    }
    let rules = Rules {
        keep_tag_revisions: 2,
        ..strict()
    };
    let report = gc(&t.store, &options(rules)).await;
    assert!(!has_manifest(&t.store, &r, &images[0]).await);
    assert!(!has_manifest(&t.store, &r, &images[1]).await);
    assert!(has_manifest(&t.store, &r, &images[2]).await);
    assert!(has_manifest(&t.store, &r, &images[3]).await);
    let history: Vec<Digest> = repo_h
        .tag(&tag("latest"))
        .await
        .unwrap()
        .unwrap()
        .history
        .into_iter()
        .map(|e| e.digest)
        .collect();
    assert_eq!(history, vec![images[3].clone(), images[2].clone()]);
    assert_eq!(report.history_entries_removed, 2, "{report:?}");
}

async fn young_revisions_are_kept_by_age(kind: Kind) {
    let t = open(kind).await;
    let r = repo("aged");
    let repo_h = t.store.repository(&r);
    let old = push_image(&t.store, &r, &[layer(30_000, 20)], 20).await;
    repo_h.set_tag(&tag("latest"), &old).await.unwrap();
    let new = push_image(&t.store, &r, &[layer(30_000, 21)], 21).await;
    repo_h.set_tag(&tag("latest"), &new).await.unwrap();
    let untagged = push_image(&t.store, &r, &[layer(30_000, 22)], 22).await;
    let rules = Rules {
        keep_younger_than: Some(Duration::from_secs(3600)),
        ..strict()
    };
    gc(&t.store, &options(rules)).await;
    for d in [&old, &new, &untagged] {
        assert!(has_manifest(&t.store, &r, d).await, "young {d} deleted");
    }
}

async fn an_index_keeps_its_children_and_subjects_keep_referrers(kind: Kind) {
    let t = open(kind).await;
    let r = repo("multi");
    let amd = push_image(&t.store, &r, &[layer(30_000, 30)], 30).await;
    let arm = push_image(&t.store, &r, &[layer(30_000, 31)], 31).await;
    let index = index_of(&t.store, &r, &[amd.clone(), arm.clone()]).await;
    t.store
        .repository(&r)
        .set_tag(&tag("v1"), &index)
        .await
        .unwrap();
    let live_sig = signature_of(&t.store, &r, &amd, 1).await;
    let orphan = push_image(&t.store, &r, &[layer(30_000, 32)], 32).await;
    let dead_sig = signature_of(&t.store, &r, &orphan, 2).await;

    gc(&t.store, &options(strict())).await;

    for d in [&index, &amd, &arm, &live_sig] {
        assert!(has_manifest(&t.store, &r, d).await, "{d} deleted");
    }
    assert!(!has_manifest(&t.store, &r, &orphan).await);
    assert!(
        !has_manifest(&t.store, &r, &dead_sig).await,
        "referrer outlived its subject"
    );
    let referrers = t.store.repository(&r).referrers(&amd).await.unwrap();
    assert_eq!(referrers.len(), 1);
    assert!(
        t.store
            .repository(&r)
            .referrers(&orphan)
            .await
            .unwrap()
            .is_empty()
    );
    // The live signature's blob stays; the dead one's goes.
    assert!(has_blob(&t.store, &Digest::sha256(b"signature 1")).await);
    assert!(!has_blob(&t.store, &Digest::sha256(b"signature 2")).await);
}

async fn chunks_shared_with_live_blobs_are_never_touched(kind: Kind) {
    let t = open(kind).await;
    let r = repo("dedup");
    // The dead image's layer is written first, so its packs hold the shared chunks the
    // live layer deduplicates against.
    let common = layer(200_000, 40);
    let mut dead_layer = common.clone();
    dead_layer.extend(layer(50_000, 41));
    let mut live_layer = common.clone();
    live_layer.extend(layer(50_000, 42));
    push_image(&t.store, &r, &[dead_layer.clone()], 40).await;
    let live = push_image(&t.store, &r, &[live_layer.clone()], 41).await;
    t.store
        .repository(&r)
        .set_tag(&tag("v1"), &live)
        .await
        .unwrap();
    let report = gc(&t.store, &options(strict())).await;
    assert!(!has_blob(&t.store, &Digest::sha256(&dead_layer)).await);
    assert_eq!(
        kit::read_all(&t.store, &Digest::sha256(&live_layer)).await,
        live_layer
    );
    assert!(report.packs.kept >= 1, "{report:?}");
}

async fn the_grace_period_protects_fresh_content(kind: Kind) {
    let t = open(kind).await;
    let r = repo("fresh");
    let untagged = push_image(&t.store, &r, &[layer(30_000, 50)], 50).await;
    let stray = layer(20_000, 51);
    t.store
        .repository(&r)
        .put_blob(
            &Digest::sha256(&stray),
            kit::stream_of(stray.clone(), vec![4096]),
        )
        .await
        .unwrap();
    let mut o = options(strict());
    o.grace = Duration::from_secs(3600);
    let report = gc(&t.store, &o).await;
    assert!(has_manifest(&t.store, &r, &untagged).await);
    assert!(has_blob(&t.store, &Digest::sha256(&stray)).await);
    assert_eq!(
        report.blobs.deleted + report.packs.deleted + report.manifests.deleted,
        0
    );
    // Without grace the stray blob (never named by a manifest) goes too.
    gc(&t.store, &options(strict())).await;
    assert!(!has_blob(&t.store, &Digest::sha256(&stray)).await);
    assert!(!has_manifest(&t.store, &r, &untagged).await);
}

async fn abandoned_uploads_expire_and_open_ones_survive(kind: Kind) {
    let t = open(kind).await;
    let r = repo("uploads");
    let data = layer(100_000, 60);
    let status = t.store.start_upload(&r).await.unwrap();
    t.store
        .append_upload(
            &status.id,
            &r,
            0,
            kit::stream_of(data[..60_000].to_vec(), vec![8192]),
        )
        .await
        .unwrap();
    // Not expired: the session and the packs its chunks are in survive, and it finishes.
    let report = gc(&t.store, &options(strict())).await;
    assert_eq!(report.uploads.deleted, 0, "{report:?}");
    let d = Digest::sha256(&data);
    t.store
        .finish_upload(
            &status.id,
            &r,
            Some(60_000),
            kit::stream_of(data[60_000..].to_vec(), vec![8192]),
            &d,
        )
        .await
        .unwrap();
    assert_eq!(kit::read_all(&t.store, &d).await, data);

    let stale = t.store.start_upload(&r).await.unwrap();
    t.store
        .append_upload(
            &stale.id,
            &r,
            0,
            kit::stream_of(layer(50_000, 61), vec![8192]),
        )
        .await
        .unwrap();
    let mut o = options(strict());
    o.upload_expiry = Duration::ZERO;
    let report = gc(&t.store, &o).await;
    assert_eq!(report.uploads.deleted, 1, "{report:?}");
    assert!(t.store.list_uploads().await.unwrap().is_empty());
    assert!(t.store.upload_status(&stale.id, &r).await.is_err());
}

async fn a_dry_run_deletes_nothing_and_predicts_the_run(kind: Kind) {
    let t = open(kind).await;
    let r = repo("dry");
    let keep = push_image(&t.store, &r, &[layer(40_000, 70)], 70).await;
    t.store
        .repository(&r)
        .set_tag(&tag("v1"), &keep)
        .await
        .unwrap();
    let gone = push_image(&t.store, &r, &[layer(40_000, 71)], 71).await;
    let mut o = options(strict());
    o.dry_run = true;
    let before = t.store.stats().await.unwrap();
    let dry = gc(&t.store, &o).await;
    assert!(dry.dry_run && dry.run.is_none());
    assert_eq!(t.store.stats().await.unwrap(), before);
    assert!(has_manifest(&t.store, &r, &gone).await);
    assert_eq!(
        t.store.collection_phase().await.unwrap(),
        None,
        "a dry run wrote state"
    );
    let real = gc(&t.store, &options(strict())).await;
    assert_eq!(dry.manifests, real.manifests);
    assert_eq!(dry.blobs, real.blobs);
    assert_eq!(dry.packs, real.packs);
    assert_eq!(real.manifests.deleted, 1);
}

async fn keeping_untagged_collects_only_unreferenced_blobs(kind: Kind) {
    let t = open(kind).await;
    let r = repo("keepall");
    let untagged = push_image(&t.store, &r, &[layer(30_000, 80)], 80).await;
    let stray = layer(20_000, 81);
    t.store
        .repository(&r)
        .put_blob(
            &Digest::sha256(&stray),
            kit::stream_of(stray.clone(), vec![4096]),
        )
        .await
        .unwrap();
    let rules = Rules {
        delete_untagged: false,
        ..strict()
    };
    gc(&t.store, &options(rules)).await;
    assert!(has_manifest(&t.store, &r, &untagged).await);
    assert_eq!(
        kit::read_all(&t.store, &Digest::sha256(&layer(30_000, 80))).await,
        layer(30_000, 80)
    );
    assert!(!has_blob(&t.store, &Digest::sha256(&stray)).await);
}

async fn namespaces_override_the_default_rules(kind: Kind) {
    let t = open(kind).await;
    let kept = repo("archive/app");
    let pruned = repo("ci/app");
    let a = push_image(&t.store, &kept, &[layer(20_000, 90)], 90).await;
    let b = push_image(&t.store, &pruned, &[layer(20_000, 91)], 91).await;
    let mut o = options(strict());
    o.policy.namespaces.insert(
        "archive".into(),
        Rules {
            delete_untagged: false,
            ..strict()
        },
    );
    gc(&t.store, &o).await;
    assert!(has_manifest(&t.store, &kept, &a).await);
    assert!(!has_manifest(&t.store, &pruned, &b).await);
}

/// A writer that reuses a candidate while the run proposes it rescues it; once the run
/// has sealed its set, the sealed content is absent to existence checks, and pushing the
/// same bytes again waits out the sweep and then stores them afresh.
async fn writers_rescue_proposed_content_and_wait_out_sealed_content(kind: Kind) {
    let t = open(kind).await;
    let writer = match kind {
        Kind::Memory => t.store.clone(),
        _ => t.reopen().await,
    };
    let r = repo("online");
    let rescued_layer = layer(60_000, 100);
    let doomed_layer = layer(60_000, 101);
    // Two untagged images: candidates as soon as the run marks.
    let first = push_image(&t.store, &r, std::slice::from_ref(&rescued_layer), 100).await;
    let second = push_image(&t.store, &r, std::slice::from_ref(&doomed_layer), 101).await;
    let mut o = options(strict());
    o.write_deadline = Duration::from_secs(2);
    // Older than the run's write deadline (and S3's one-second clock), so that the
    // re-mark does not count them as written during the run.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let run = tokio::spawn({
        let store = t.store.clone();
        async move { collect(&store, &o, &Silent).await }
    });
    wait_for_phase(&writer, Phase::Proposed).await;
    // Tagging the first image reuses a candidate: rescued.
    writer
        .repository(&r)
        .set_tag(&tag("saved"), &first)
        .await
        .unwrap();
    wait_for_phase(&writer, Phase::Sealed).await;
    let doomed_d = Digest::sha256(&doomed_layer);
    assert!(
        writer
            .repository(&r)
            .blob(&doomed_d)
            .await
            .unwrap()
            .is_none(),
        "sealed blob visible"
    );
    assert!(
        writer
            .repository(&r)
            .manifest(&second)
            .await
            .unwrap()
            .is_none()
    );
    // Pushing the sealed layer again: waits for the sweep, then commits.
    writer
        .repository(&r)
        .put_blob(
            &doomed_d,
            kit::stream_of(doomed_layer.clone(), vec![65_536]),
        )
        .await
        .unwrap();
    let report = run.await.unwrap().expect("gc run");
    assert!(report.rescued >= 3, "{report:?}");
    assert_eq!(report.manifests.deleted, 1, "{report:?}");
    assert!(has_manifest(&t.store, &r, &first).await);
    assert_eq!(
        kit::read_all(&writer, &Digest::sha256(&rescued_layer)).await,
        rescued_layer
    );
    assert_eq!(kit::read_all(&writer, &doomed_d).await, doomed_layer);
    assert!(
        writer
            .repository(&r)
            .blob(&doomed_d)
            .await
            .unwrap()
            .is_some()
    );
    assert!(!has_manifest(&t.store, &r, &second).await);
}

async fn wait_for_phase(store: &Store, phase: Phase) {
    for _ in 0..600 {
        if let Some((_, p)) = store.collection_phase().await.unwrap()
            && p >= phase
        {
            assert!(p < Phase::Done, "run finished before reaching {phase:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run never reached {phase:?}");
}

stowage_storage::on_every_backend!(
    untagged_manifests_go_and_tagged_images_stay_whole,
    tag_history_keeps_the_last_revisions,
    young_revisions_are_kept_by_age,
    an_index_keeps_its_children_and_subjects_keep_referrers,
    chunks_shared_with_live_blobs_are_never_touched,
    the_grace_period_protects_fresh_content,
    abandoned_uploads_expire_and_open_ones_survive,
    a_dry_run_deletes_nothing_and_predicts_the_run,
    keeping_untagged_collects_only_unreferenced_blobs,
    namespaces_override_the_default_rules,
    writers_rescue_proposed_content_and_wait_out_sealed_content,
);
