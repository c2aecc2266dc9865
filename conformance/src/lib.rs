//! A black-box conformance run of the OCI Distribution Specification v1.1: only HTTP,
//! no code shared with the server, so it checks the registry as clients see it.
