//! Load generation against any OCI registry (Stowage or another): blob pushes,
//! monolithic or chunked, pulls with digest verification, image versions that share
//! most of their content, and manifest requests, each measured per request kind.

pub mod data;

pub mod client;
pub mod measure;
pub mod workload;

pub use client::{Registry, Target};
pub use measure::{Kind, Report};
