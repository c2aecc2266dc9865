//! `stowage stats` and `stowage uploads`: what a store holds and what is in flight.

use stowage_storage::{Store, StoreOptions};

use crate::output;

/// Prints logical against physical bytes, so an operator sees what deduplication saves.
pub async fn stats(options: StoreOptions, json: bool) -> anyhow::Result<()> {
    let store = Store::open(options).await?;
    let s = store.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let ratio = if s.physical_bytes == 0 {
        1.0
    } else {
        s.logical_bytes as f64 / s.physical_bytes as f64
    };
    println!("store           {}", store.description());
    println!("blobs           {}", s.blobs);
    println!(
        "logical         {}  (sum of blob sizes)",
        output::bytes(s.logical_bytes)
    );
    println!(
        "physical        {}  ({} in {} pack{}, {} inline)",
        output::bytes(s.physical_bytes),
        output::bytes(s.pack_bytes),
        s.packs,
        if s.packs == 1 { "" } else { "s" },
        output::bytes(s.inline_bytes)
    );
    println!("dedup ratio     {ratio:.2}x");
    println!("indexed chunks  {}", s.indexed_chunks);
    Ok(())
}

/// Lists open upload sessions, oldest first, with their age.
pub async fn uploads(options: StoreOptions, json: bool) -> anyhow::Result<()> {
    let store = Store::open(options).await?;
    let sessions = store.list_uploads().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(());
    }
    let now = chrono::Utc::now();
    println!(
        "{:<36}  {:<30}  {:>10}  {:<12}  IDLE",
        "ID", "REPOSITORY", "RECEIVED", "STARTED"
    );
    for s in sessions {
        println!(
            "{:<36}  {:<30}  {:>10}  {:<12}  {}",
            s.id,
            s.repo,
            output::bytes(s.offset),
            format!("{} ago", output::age(now - s.created)),
            output::age(now - s.updated)
        );
    }
    Ok(())
}
