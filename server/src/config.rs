//! `stowage serve` configuration: built-in defaults, then a TOML file, then `STOWAGE_*`
//! environment variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use stowage_storage::{BackendConfig, StoreOptions};

/// The configuration file's contents. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// The address clients use to reach the registry (for links it returns).
    pub public_url: Option<String>,
    /// Where blobs and metadata live.
    pub storage: Option<BackendConfig>,
    /// Accept manifests whose blobs are not in the repository (partial mirrors).
    pub allow_sparse_manifests: Option<bool>,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: Option<usize>,
    /// Which DELETE requests are served.
    pub delete: Option<crate::api::Deletes>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public address, if set.
    pub public_url: Option<String>,
    /// Store to open.
    pub store: StoreOptions,
    /// See [`FileConfig::allow_sparse_manifests`].
    pub allow_sparse_manifests: bool,
    /// See [`FileConfig::max_manifest_bytes`].
    pub max_manifest_bytes: usize,
    /// See [`FileConfig::delete`].
    pub deletes: crate::api::Deletes,
}

/// Values given on the command line or in the environment (clap merges those two).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `STOWAGE_LISTEN`.
    pub listen: Option<String>,
    /// `--storage` / `STOWAGE_STORAGE`.
    pub storage: Option<String>,
    /// `--s3-endpoint` / `STOWAGE_S3_ENDPOINT`.
    pub s3_endpoint: Option<String>,
    /// `--public-url` / `STOWAGE_PUBLIC_URL`.
    pub public_url: Option<String>,
}

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default store: a directory beside where the registry runs.
pub const DEFAULT_STORAGE: &str = "./data";

impl ServeConfig {
    /// Merges file and overrides over the defaults.
    pub fn resolve(file: FileConfig, over: Overrides) -> anyhow::Result<Self> {
        let listen = over
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| anyhow::anyhow!("listen address {listen:?} is not ADDR:PORT"))?;
        let mut backend = file.storage.unwrap_or_default();
        if let Some(url) = over.storage {
            backend.url = url;
        }
        if backend.url.is_empty() {
            backend.url = DEFAULT_STORAGE.into();
        }
        if over.s3_endpoint.is_some() {
            backend.s3.endpoint = over.s3_endpoint;
        }
        let mut store = StoreOptions::new(backend.url.clone());
        store.backend = backend;
        Ok(ServeConfig {
            listen,
            public_url: over.public_url.or(file.public_url),
            store,
            allow_sparse_manifests: file.allow_sparse_manifests.unwrap_or(false),
            max_manifest_bytes: file.max_manifest_bytes.unwrap_or(4 << 20),
            deletes: file.delete.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let none = ServeConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(none.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(none.store.backend.url, DEFAULT_STORAGE);
        assert!(!none.allow_sparse_manifests);

        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:6000"
            allow_sparse_manifests = true
            [delete]
            blobs = false
            [storage]
            url = "s3://bucket/prefix"
            [storage.s3]
            endpoint = "http://127.0.0.1:9000"
            region = "eu-west-1"
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.store.backend.url, "s3://bucket/prefix");
        assert_eq!(c.store.backend.s3.region.as_deref(), Some("eu-west-1"));
        assert!(c.allow_sparse_manifests);
        assert!(!c.deletes.blobs && c.deletes.tags && c.deletes.manifests);

        let c = ServeConfig::resolve(
            file,
            Overrides {
                listen: Some("127.0.0.1:7000".into()),
                storage: Some("/srv/stowage".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.store.backend.url, "/srv/stowage");
        assert!(
            toml::from_str::<FileConfig>("nonsense = 1").is_err(),
            "unknown keys are errors"
        );
        assert!(
            ServeConfig::resolve(
                FileConfig {
                    listen: Some("x".into()),
                    ..Default::default()
                },
                Overrides::default()
            )
            .is_err()
        );
    }
}
