//! Operator commands on the storage engine.

pub mod bench;
mod blob;
mod inspect;

pub use blob::{get, put};
pub use inspect::{stats, uploads};
