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
    /// Largest blob accepted, in bytes (unlimited when unset).
    pub max_blob_bytes: Option<u64>,
    /// Seconds a request body may stall before the request is dropped.
    pub body_timeout_secs: Option<u64>,
    /// Blob writes that chunk and hash at once (each holds ~16 MiB); others wait.
    pub max_concurrent_writes: Option<usize>,
    /// Which DELETE requests are served.
    pub delete: Option<crate::api::Deletes>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Garbage collection: policy for `stowage gc`, and an optional schedule for `serve`.
    pub gc: Option<GcConfig>,
    /// Access control: bootstrap admins, the token service, limits.
    pub auth: Option<AuthSection>,
    /// Connection limits against slow and greedy clients.
    pub limits: Option<LimitsSection>,
}

/// The `[auth]` section. Users, teams, namespaces and grants are not here: they are
/// data in the store (`stowage admin`), so every replica sees the same.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Users who are registry-wide admins whatever the store says (turns access
    /// control on even before any account exists in the store).
    pub admins: Vec<String>,
    /// The token service's name (issuer and audience of registry tokens); default: the
    /// public URL's host, else `stowage`. Replicas of one registry must agree.
    pub service: Option<String>,
    /// Lifetime of registry tokens (default `5m`).
    pub token_ttl: Option<String>,
    /// How often the policy is re-read from the store (default `5s`, at most `10s`).
    pub refresh: Option<String>,
    /// Failed logins allowed per client address per minute (default 20; 0: no limit).
    pub failed_login_limit: Option<u32>,
    /// Let anyone read `/metrics` (default: registry admins only when auth is on).
    pub public_metrics: Option<bool>,
}

/// The `[limits]` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Seconds a client may take to send a request's headers (default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Connections open at once from one client address (default 256; 0: no bound).
    pub max_connections_per_client: Option<usize>,
    /// Connections open at once in all (default: 3/4 of the descriptor limit).
    pub max_connections: Option<usize>,
}

/// Access control settings, resolved.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The access model's settings.
    pub model: stowage_auth::AuthConfig,
    /// Failed logins per address per minute.
    pub failed_login_limit: u32,
    /// `/metrics` for anyone.
    pub public_metrics: bool,
}

/// The `[gc]` section. Durations are text: `"90s"`, `"15m"`, `"24h"`, `"7d"`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Delete manifests no kept tag revision reaches (default true).
    pub delete_untagged: Option<bool>,
    /// Revisions of each tag's history kept (default 3).
    pub keep_tag_revisions: Option<usize>,
    /// Keep manifests and tag revisions younger than this.
    pub keep_younger_than: Option<String>,
    /// Nothing younger than this is deleted (default 1h).
    pub grace: Option<String>,
    /// Upload sessions idle this long are removed (default 24h).
    pub upload_expiry: Option<String>,
    /// Longest a server's metadata write may take to land (default 30s).
    pub write_deadline: Option<String>,
    /// Listings and reads in flight (default 32).
    pub concurrency: Option<usize>,
    /// `serve` runs a collection this often (off when unset).
    pub every: Option<String>,
    /// Rules by namespace (or longer name prefix), overriding the ones above.
    pub namespaces: std::collections::BTreeMap<String, stowage_gc::Rules>,
}

/// Command-line overrides of the `[gc]` section.
#[derive(Debug, Clone, Default)]
pub struct GcOverrides {
    /// Keep untagged manifests.
    pub keep_untagged: bool,
    /// Revisions of each tag kept.
    pub keep_tag_revisions: Option<usize>,
    /// Keep what is younger than this.
    pub keep_younger_than: Option<std::time::Duration>,
    /// Grace period.
    pub grace: Option<std::time::Duration>,
    /// Upload expiry.
    pub upload_expiry: Option<std::time::Duration>,
    /// Write deadline.
    pub write_deadline: Option<std::time::Duration>,
    /// Concurrency.
    pub concurrency: Option<usize>,
    /// Report only.
    pub dry_run: bool,
}

impl GcConfig {
    /// The collector's options: defaults, then this section, then `over`.
    pub fn options(&self, over: &GcOverrides) -> anyhow::Result<stowage_gc::Options> {
        let duration = |field: &str,
                        v: &Option<String>|
         -> anyhow::Result<Option<std::time::Duration>> {
            v.as_deref()
                .map(|t| {
                    stowage_gc::parse_duration(t).map_err(|e| anyhow::anyhow!("gc.{field}: {e}"))
                })
                .transpose()
        };
        let mut o = stowage_gc::Options::default();
        let rules = &mut o.policy.default;
        if let Some(v) = self.delete_untagged {
            rules.delete_untagged = v;
        }
        if let Some(v) = self.keep_tag_revisions {
            rules.keep_tag_revisions = v;
        }
        if let Some(v) = duration("keep_younger_than", &self.keep_younger_than)? {
            rules.keep_younger_than = Some(v);
        }
        if over.keep_untagged {
            rules.delete_untagged = false;
        }
        if let Some(v) = over.keep_tag_revisions {
            rules.keep_tag_revisions = v;
        }
        if let Some(v) = over.keep_younger_than {
            rules.keep_younger_than = Some(v);
        }
        anyhow::ensure!(
            rules.keep_tag_revisions >= 1,
            "keep_tag_revisions must be at least 1 (the current revision)"
        );
        o.policy.namespaces = self.namespaces.clone();
        for (ns, r) in &o.policy.namespaces {
            anyhow::ensure!(
                r.keep_tag_revisions >= 1,
                "gc.namespaces.{ns}.keep_tag_revisions must be at least 1"
            );
        }
        if let Some(v) = over.grace.or(duration("grace", &self.grace)?) {
            o.grace = v;
        }
        if let Some(v) = over
            .upload_expiry
            .or(duration("upload_expiry", &self.upload_expiry)?)
        {
            o.upload_expiry = v;
        }
        if let Some(v) = over
            .write_deadline
            .or(duration("write_deadline", &self.write_deadline)?)
        {
            o.write_deadline = v;
        }
        if let Some(v) = over.concurrency.or(self.concurrency) {
            anyhow::ensure!(v > 0, "gc concurrency must be at least 1");
            o.concurrency = v;
        }
        o.dry_run = over.dry_run;
        Ok(o)
    }

    /// How often `serve` collects, if it does.
    pub fn schedule(&self) -> anyhow::Result<Option<std::time::Duration>> {
        self.every
            .as_deref()
            .map(|t| stowage_gc::parse_duration(t).map_err(|e| anyhow::anyhow!("gc.every: {e}")))
            .transpose()
    }
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
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
    /// See [`FileConfig::max_blob_bytes`].
    pub max_blob_bytes: Option<u64>,
    /// See [`FileConfig::body_timeout_secs`].
    pub body_timeout: std::time::Duration,
    /// See [`FileConfig::delete`].
    pub deletes: crate::api::Deletes,
    /// See [`FileConfig::tls`].
    pub tls: Option<TlsConfig>,
    /// Collect in-process with these options this often (`gc.every`).
    pub gc: Option<(stowage_gc::Options, std::time::Duration)>,
    /// See [`FileConfig::auth`].
    pub auth: AuthSettings,
    /// See [`FileConfig::limits`].
    pub conn: crate::conn::ConnLimits,
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
    /// `--tls-cert` / `STOWAGE_TLS_CERT`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// `--tls-key` / `STOWAGE_TLS_KEY`.
    pub tls_key: Option<std::path::PathBuf>,
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
        if let Some(n) = file.max_concurrent_writes {
            anyhow::ensure!(n > 0, "max_concurrent_writes must be at least 1");
            store.max_concurrent_writes = n;
        }
        let public_url = over.public_url.or(file.public_url);
        if let Some(u) = &public_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| anyhow::anyhow!("public URL {u:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https") && parsed.query().is_none(),
                "public URL {u:?} must be http(s)://host[:port][/path]"
            );
        }
        let tls = match (over.tls_cert, over.tls_key, file.tls) {
            (Some(cert), Some(key), _) => Some(TlsConfig { cert, key }),
            (None, None, file) => file,
            _ => anyhow::bail!("TLS needs both a certificate and a key"),
        };
        let gc = match &file.gc {
            Some(g) => match g.schedule()? {
                Some(every) => {
                    let mut options = g.options(&GcOverrides::default())?;
                    options.host = format!("stowage serve on {listen}");
                    Some((options, every))
                }
                None => None,
            },
            None => None,
        };
        let auth = resolve_auth(file.auth.unwrap_or_default(), public_url.as_deref())?;
        let mut conn = crate::conn::ConnLimits::default();
        if let Some(l) = file.limits {
            if let Some(s) = l.header_read_timeout_secs {
                anyhow::ensure!(s > 0, "limits.header_read_timeout_secs must be at least 1");
                conn.header_read_timeout = std::time::Duration::from_secs(s);
            }
            if let Some(n) = l.max_connections_per_client {
                conn.per_client = n;
            }
            if let Some(n) = l.max_connections {
                conn.max_connections = n;
            }
        }
        Ok(ServeConfig {
            auth,
            conn,
            gc,
            listen,
            public_url,
            store,
            allow_sparse_manifests: file.allow_sparse_manifests.unwrap_or(false),
            max_manifest_bytes: file.max_manifest_bytes.unwrap_or(4 << 20),
            max_blob_bytes: file.max_blob_bytes,
            body_timeout: std::time::Duration::from_secs(file.body_timeout_secs.unwrap_or(300)),
            deletes: file.delete.unwrap_or_default(),
            tls,
        })
    }
}

/// Resolves the `[auth]` section over its defaults.
pub fn resolve_auth(a: AuthSection, public_url: Option<&str>) -> anyhow::Result<AuthSettings> {
    let mut model = stowage_auth::AuthConfig::default();
    for admin in &a.admins {
        anyhow::ensure!(
            stowage_auth::policy::valid_account(admin),
            "auth.admins: {admin:?} is not a valid user name"
        );
    }
    model.admins = a.admins;
    model.service = match (a.service, public_url) {
        (Some(s), _) => s,
        (None, Some(u)) => crate::address::registry_host(u),
        (None, None) => "stowage".into(),
    };
    let duration =
        |field: &str, v: &Option<String>| -> anyhow::Result<Option<std::time::Duration>> {
            v.as_deref()
                .map(|t| {
                    stowage_gc::parse_duration(t).map_err(|e| anyhow::anyhow!("auth.{field}: {e}"))
                })
                .transpose()
        };
    if let Some(t) = duration("token_ttl", &a.token_ttl)? {
        anyhow::ensure!(
            t.as_secs() >= 30 && t.as_secs() <= 86_400,
            "auth.token_ttl must be between 30s and 1d"
        );
        model.token_ttl = t;
    }
    if let Some(r) = duration("refresh", &a.refresh)? {
        anyhow::ensure!(
            r.as_secs() >= 1 && r.as_secs() <= 10,
            "auth.refresh must be between 1s and 10s (the bound on how late a change made elsewhere is obeyed)"
        );
        model.refresh = r;
    }
    Ok(AuthSettings {
        model,
        failed_login_limit: a.failed_login_limit.unwrap_or(20),
        public_metrics: a.public_metrics.unwrap_or(false),
    })
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
        for bad in [
            Overrides {
                public_url: Some("registry.example.com".into()),
                ..Default::default()
            },
            Overrides {
                tls_cert: Some("cert.pem".into()),
                ..Default::default()
            },
        ] {
            assert!(ServeConfig::resolve(FileConfig::default(), bad).is_err());
        }
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

    #[test]
    fn the_gc_section_sets_policy_and_schedule() {
        let file: FileConfig = toml::from_str(
            r#"
            [gc]
            keep_tag_revisions = 5
            keep_younger_than = "7d"
            grace = "2h"
            every = "6h"
            [gc.namespaces.ci]
            keep_tag_revisions = 1
            keep_younger_than = "1d"
            [gc.namespaces."archive/keep"]
            delete_untagged = false
            "#,
        )
        .unwrap();
        let serve = ServeConfig::resolve(file.clone(), Overrides::default()).unwrap();
        let (options, every) = serve.gc.unwrap();
        assert_eq!(every, std::time::Duration::from_secs(6 * 3600));
        assert_eq!(options.grace, std::time::Duration::from_secs(2 * 3600));
        assert_eq!(options.policy.default.keep_tag_revisions, 5);
        assert_eq!(
            options.policy.default.keep_younger_than,
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        let ci = options.policy.namespaces["ci"];
        assert_eq!(ci.keep_tag_revisions, 1);
        assert!(!options.policy.namespaces["archive/keep"].delete_untagged);
        // Flags win over the file.
        let over = GcOverrides {
            keep_untagged: true,
            keep_tag_revisions: Some(2),
            ..GcOverrides::default()
        };
        let o = file.gc.as_ref().unwrap().options(&over).unwrap();
        assert!(!o.policy.default.delete_untagged);
        assert_eq!(o.policy.default.keep_tag_revisions, 2);
        // Nonsense is refused with the field named.
        let bad: FileConfig = toml::from_str("[gc]\ngrace = \"soon\"\n").unwrap();
        let err = bad
            .gc
            .unwrap()
            .options(&GcOverrides::default())
            .unwrap_err();
        assert!(err.to_string().contains("gc.grace"), "{err}");
        let zero: FileConfig = toml::from_str("[gc]\nkeep_tag_revisions = 0\n").unwrap();
        assert!(zero.gc.unwrap().options(&GcOverrides::default()).is_err());
        assert!(toml::from_str::<FileConfig>("[gc]\nkeep_everything = true\n").is_err());
    }
}
