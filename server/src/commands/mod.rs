//! Operator commands on the storage engine.

pub mod access;
pub mod bench;
mod blob;
mod fsck;
pub mod gc;
mod inspect;
pub mod tag;
pub mod view;

pub use blob::{get, put};
pub use fsck::fsck;
pub use inspect::{stats, uploads};
