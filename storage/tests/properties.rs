//! Property tests of the engine, on every backend: any blob, split into any sequence of
//! appends, reads back byte for byte, whole and by ranges; and two blobs that share
//! content share its chunks. Stores use small chunks (1-16 KiB) so that a few hundred
//! kilobytes make many chunks and several packs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use stowage_storage::testkit as common;

use common::{Kind, open_small, random_bytes, read_all, read_range, small_chunks, stream_of};
use proptest::prelude::*;
use stowage_storage::{Digest, RepoName};

#[derive(Debug, Clone)]
struct BlobCase {
    data: Vec<u8>,
    /// Lengths of the appends (cycled); the last piece goes with the final PUT.
    pieces: Vec<usize>,
    ranges: Vec<(u64, u64)>,
}

fn blob_case() -> impl Strategy<Value = BlobCase> {
    (
        0usize..300_000,
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec(1usize..60_000, 1..6),
        prop::collection::vec((any::<u64>(), any::<u64>()), 1..4),
    )
        .prop_map(|(len, seed, repetitive, pieces, ranges)| {
            // Repetitive data makes a blob reuse its own chunks.
            let data = if repetitive {
                random_bytes(37_000, seed)
                    .into_iter()
                    .cycle()
                    .take(len)
                    .collect()
            } else {
                random_bytes(len, seed)
            };
            BlobCase {
                data,
                pieces,
                ranges,
            }
        })
}

fn check_blob_case(kind: Kind, case: BlobCase) {
    common::runtime().block_on(async move {
        let t = open_small(kind).await;
        let repo = RepoName::parse("prop/blob").unwrap();
        let digest = Digest::sha256(&case.data);
        let session = t.store.start_upload(&repo).await.unwrap();
        // Appends of the given sizes, each in frames of odd sizes; the remainder goes
        // with the final request.
        let mut offset = 0usize;
        let mut i = 0;
        while offset < case.data.len() && i < case.pieces.len() {
            let end = (offset + case.pieces[i]).min(case.data.len());
            let part = case.data[offset..end].to_vec();
            let st = t
                .store
                .append_upload(
                    &session.id,
                    &repo,
                    offset as u64,
                    stream_of(part, vec![4093, 17]),
                )
                .await
                .unwrap();
            assert_eq!(st.offset, end as u64);
            offset = end;
            i += 1;
        }
        let rest = case.data[offset..].to_vec();
        let info = t
            .store
            .finish_upload(
                &session.id,
                &repo,
                Some(offset as u64),
                stream_of(rest, vec![65_536]),
                &digest,
            )
            .await
            .unwrap();
        assert_eq!(info.size, case.data.len() as u64);
        assert_eq!(read_all(&t.store, &digest).await, case.data);
        let len = case.data.len() as u64;
        if len > 0 {
            for (a, b) in case.ranges {
                let (a, b) = (a % len, b % len);
                let (start, end) = (a.min(b), a.max(b) + 1);
                assert_eq!(
                    read_range(&t.store, &digest, Some(start..end)).await,
                    &case.data[start as usize..end as usize]
                );
            }
        }
    });
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, Vec<u8>),
}

fn edit_case() -> impl Strategy<Value = (Vec<u8>, Edit)> {
    (
        50_000usize..250_000,
        any::<u64>(),
        0u8..3,
        any::<usize>(),
        1usize..5_000,
    )
        .prop_map(|(len, seed, kind, at, n)| {
            let base = random_bytes(len, seed);
            let at = at % len;
            let patch = random_bytes(n, seed ^ 0xabcdef);
            let edit = match kind {
                0 => Edit::Insert(at, patch),
                1 => Edit::Delete(at, n.min(len - at)),
                _ => Edit::Replace(at.min(len - n.min(len)), patch),
            };
            (base, edit)
        })
}

fn check_shared_chunks(kind: Kind, base: Vec<u8>, edit: Edit) {
    common::runtime().block_on(async move {
        let t = open_small(kind).await;
        let mut edited = base.clone();
        let changed = match &edit {
            Edit::Insert(at, p) => {
                edited.splice(*at..*at, p.iter().copied());
                p.len()
            }
            Edit::Delete(at, n) => {
                edited.drain(*at..*at + *n);
                0
            }
            Edit::Replace(at, p) => {
                let end = (*at + p.len()).min(edited.len());
                edited.splice(*at..end, p.iter().copied().take(end - at));
                p.len()
            }
        };
        t.store
            .put_blob(
                &Digest::sha256(&base),
                stream_of(base.clone(), vec![50_000]),
            )
            .await
            .unwrap();
        let (_, stats) = t
            .store
            .put_blob_with_stats(
                &Digest::sha256(&edited),
                stream_of(edited.clone(), vec![50_000]),
            )
            .await
            .unwrap();
        // Boundaries resynchronise within a few chunks of an edit, so everything else
        // is found in the store rather than written again.
        let max = u64::from(small_chunks().max);
        assert!(
            stats.stored_bytes <= changed as u64 + 3 * max,
            "{edit:?}: stored {} of {} bytes",
            stats.stored_bytes,
            edited.len()
        );
        assert_eq!(
            stats.stored_bytes + stats.deduplicated_bytes,
            edited.len() as u64
        );
        assert_eq!(read_all(&t.store, &Digest::sha256(&edited)).await, edited);
    });
}

macro_rules! property_suite {
    ($module:ident, $kind:expr, $cases:expr) => {
        mod $module {
            use super::*;
            proptest! {
                #![proptest_config(ProptestConfig { cases: $cases, ..ProptestConfig::default() })]
                #[test]
                fn any_blob_in_any_appends_reads_back(case in blob_case()) {
                    check_blob_case($kind, case);
                }

                #[test]
                fn edited_blobs_share_chunks_with_the_original((base, edit) in edit_case()) {
                    check_shared_chunks($kind, base, edit);
                }
            }
        }
    };
}

property_suite!(memory, Kind::Memory, 48);
property_suite!(local, Kind::Local, 16);
property_suite!(s3, Kind::S3, 8);
