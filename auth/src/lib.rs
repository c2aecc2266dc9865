//! Stowage's access model: users (with Argon2id passwords), robot accounts, teams,
//! public and private namespaces, grants of pull/push/delete/admin on namespaces or
//! globs of them, personal tokens and the registry tokens of the Docker token flow.
//! Everything lives in the store beside the images (`auth/...` records), so replicas
//! agree with no database; [`Auth`] caches it so that a decision costs no store read.
//!
//! - [`policy`]: the data and the pure decision ([`Policy::rights`]);
//! - [`token`]: personal tokens; [`jwt`]: signed registry tokens;
//! - [`Auth`]: the store-backed, cached model a server or the CLI holds;
//! - [`ops`]: administrative operations and who may carry them out.

mod error;
pub mod jwt;
pub mod ops;
pub mod policy;
pub mod secret;
mod service;
pub mod token;

pub use error::{AuthError, Result};
pub use ops::Op;
pub use policy::{Action, Policy, Principal, Rights, Subject, Visibility};
pub use service::{Auth, AuthConfig, Caller, Issued};
pub use token::{TokenAccess, TokenRecord};
