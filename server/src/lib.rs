//! Stowage's front end: the OCI Distribution API over the storage engine. The binary
//! (`src/main.rs`) wires configuration and the operator commands around it.

pub mod accept;
pub mod address;
pub mod api;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod imagestreams;
pub mod metrics;
pub mod route;
pub mod serve;

pub use api::{AppState, Deletes, router};
pub use error::{ApiError, ErrorCode};
