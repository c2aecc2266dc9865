//! `stowage put` and `stowage get`: blobs in and out of a store from the command line.

use std::path::PathBuf;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use stowage_storage::{Algorithm, Digest, Store, StoreOptions};
use tokio::io::AsyncWriteExt;

use crate::output;

/// Stores each file and reports its digest, size and what was deduplicated.
pub async fn put(
    options: StoreOptions,
    files: Vec<PathBuf>,
    sha512: bool,
    json: bool,
) -> anyhow::Result<()> {
    let store = Store::open(options).await?;
    let algorithm = if sha512 {
        Algorithm::Sha512
    } else {
        Algorithm::Sha256
    };
    let (mut total, mut stored) = (0u64, 0u64);
    for path in &files {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(len).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )?
                .progress_chars("=> "),
            )
        };
        bar.set_message(path.display().to_string());
        let progress = bar.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .inspect_ok(move |b| progress.inc(b.len() as u64));
        let (info, stats) = store
            .put_blob_content(algorithm, body)
            .await
            .with_context(|| format!("storing {}", path.display()))?;
        bar.finish_and_clear();
        total += info.size;
        stored += stats.stored_bytes;
        if json {
            let line = serde_json::json!({
                "file": path, "digest": info.digest, "size": info.size,
                "stored_bytes": stats.stored_bytes, "deduplicated_bytes": stats.deduplicated_bytes,
            });
            println!("{line}");
        } else {
            println!(
                "{}  {}  {}  ({} new, {} deduplicated)",
                info.digest,
                output::bytes(info.size),
                path.display(),
                output::bytes(stats.stored_bytes),
                output::bytes(stats.deduplicated_bytes)
            );
        }
    }
    if !json && files.len() > 1 {
        println!(
            "{} files, {} read, {} new data stored",
            files.len(),
            output::bytes(total),
            output::bytes(stored)
        );
    }
    Ok(())
}

/// Writes a blob, verified chunk by chunk, to a file or standard output.
pub async fn get(
    options: StoreOptions,
    digest: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let digest = Digest::parse(digest)?;
    let store = Store::open(options).await?;
    let mut read = store.read_blob(&digest, None).await?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &output {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    while let Some(part) = read.stream.next().await {
        out.write_all(&part?).await?;
    }
    out.flush().await?;
    Ok(())
}
