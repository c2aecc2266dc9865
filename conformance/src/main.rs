//! `stowage-conformance`: runs the conformance cases against a registry URL.

fn main() {}
