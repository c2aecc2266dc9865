//! `stowage`, the registry's one binary. Until the HTTP front end lands it carries the
//! operator commands of the storage engine: store and fetch blobs, show what the store
//! holds, list upload sessions, check the store's consistency.

mod commands;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stowage_storage::{S3Options, StoreOptions};

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "Stowage: a container image registry"
)]
struct Cli {
    /// The store: a directory, file:///path, s3://bucket/prefix or memory:// [default: ./data].
    #[arg(long, global = true, env = "STOWAGE_STORAGE")]
    storage: Option<String>,
    /// Endpoint of an S3-compatible server (otherwise AWS_ENDPOINT_URL or AWS itself).
    #[arg(long, global = true, env = "STOWAGE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Log filter, e.g. `info` or `stowage_storage=debug` [default: info for serve, warn otherwise].
    #[arg(long, global = true, env = "STOWAGE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Configuration file (TOML); environment and flags override it.
        #[arg(long, env = "STOWAGE_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:5000].
        #[arg(long, env = "STOWAGE_LISTEN")]
        listen: Option<String>,
        /// The address clients reach the registry at.
        #[arg(long, env = "STOWAGE_PUBLIC_URL")]
        public_url: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
        #[arg(long, env = "STOWAGE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key.
        #[arg(long, env = "STOWAGE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Store files as blobs; prints each digest and what deduplication saved.
    Put {
        /// Files to store.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Name blobs by SHA-512 instead of SHA-256.
        #[arg(long)]
        sha512: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a blob to standard output or a file; or list image streams or their tags
    /// from a server (`stowage get imagestreams -n NS`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Get {
        /// What to list from a server's image-stream API.
        #[command(subcommand)]
        kind: Option<commands::view::GetKind>,
        /// The blob's digest.
        #[arg(required = true)]
        digest: Option<String>,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Describe an image stream or an image stream tag from a server, like `oc describe`.
    Describe {
        #[command(subcommand)]
        kind: commands::view::DescribeKind,
    },
    /// Check a token against a server and save it for get and describe (in a 0600 file).
    Login(commands::view::LoginArgs),
    /// Forget a server's saved token.
    Logout(commands::view::LogoutArgs),
    /// Show what the store holds: logical bytes against physical bytes.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a registry (this one or any other) and measure it.
    Bench {
        #[command(subcommand)]
        workload: commands::bench::BenchCommand,
    },
    /// List open upload sessions with their age.
    Uploads {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete what no kept tag reaches (garbage collection), while servers keep running.
    Gc(commands::gc::GcArgs),
    /// Manage access: users, teams, namespaces, robots, grants (on the store, or
    /// through a server with --server).
    Admin {
        #[command(flatten)]
        target: commands::access::Target,
        #[command(subcommand)]
        command: commands::access::AdminCommand,
    },
    /// Create, list and revoke tokens (on the store, or through a server with --server).
    Token {
        #[command(flatten)]
        target: commands::access::Target,
        #[command(subcommand)]
        command: commands::access::TokenCommand,
    },
    /// Move a tag back (or forward) to an image from its history, recorded in it like a
    /// push (on the store, or through a server with --server).
    ///
    /// Refused if the digest was never the tag's, or its image was deleted or garbage
    /// collected.
    Tag(commands::tag::TagArgs),
    /// Check that every tag, manifest, recipe and chunk is consistent; report, never fix.
    ///
    /// Exits with 1 when anything of severity error is found.
    Fsck {
        /// Also read all data: every chunk against its BLAKE3 id, every blob against its
        /// digest.
        #[arg(long)]
        rehash: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn serve(
    config: Option<PathBuf>,
    overrides: stowage_server::config::Overrides,
) -> anyhow::Result<()> {
    use stowage_server::config::{FileConfig, ServeConfig};
    let file = match config {
        Some(path) => FileConfig::load(&path)?,
        None => FileConfig::default(),
    };
    stowage_server::serve::run(ServeConfig::resolve(file, overrides)?).await
}

impl Cli {
    fn store_options(&self) -> StoreOptions {
        let url = self
            .storage
            .clone()
            .unwrap_or_else(|| stowage_server::config::DEFAULT_STORAGE.into());
        let mut o = StoreOptions::new(url);
        o.backend.s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            ..Default::default()
        };
        o
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            cli.log.as_deref().unwrap_or(default_log),
        ))
        .with_writer(std::io::stderr)
        .init();
    let options = cli.store_options();
    let storage_flag = cli.storage.is_some();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            public_url,
            tls_cert,
            tls_key,
        } => {
            let overrides = stowage_server::config::Overrides {
                listen,
                storage: cli.storage,
                s3_endpoint: cli.s3_endpoint,
                public_url,
                tls_cert,
                tls_key,
            };
            serve(config, overrides).await
        }
        Command::Put {
            files,
            sha512,
            json,
        } => commands::put(options, files, sha512, json).await,
        Command::Get {
            kind: Some(kind), ..
        } => commands::view::get(kind).await,
        Command::Get {
            kind: None,
            digest,
            output,
        } => match digest {
            Some(digest) => commands::get(options, &digest, output).await,
            None => Err(anyhow::anyhow!(
                "give a blob's digest, or a kind: imagestreams, istags"
            )),
        },
        Command::Describe { kind } => commands::view::describe(kind).await,
        Command::Login(args) => commands::view::login(args).await,
        Command::Logout(args) => commands::view::logout(args).await,
        Command::Stats { json } => commands::stats(options, json).await,
        Command::Uploads { json } => commands::uploads(options, json).await,
        Command::Bench { workload } => commands::bench::run(workload).await,
        Command::Gc(args) => commands::gc::gc(options, storage_flag, args).await,
        Command::Admin { target, command } => {
            commands::access::admin(options, target, command).await
        }
        Command::Token { target, command } => {
            commands::access::token(options, target, command).await
        }
        Command::Tag(args) => commands::tag::tag(options, args).await,
        Command::Fsck { rehash, json } => match commands::fsck(options, rehash, json).await {
            // The findings are printed; the exit code says there were errors among them.
            Ok(false) => return std::process::ExitCode::FAILURE,
            other => other.map(drop),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
