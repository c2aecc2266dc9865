//! `stowage login/logout/get/describe`: the client of the image-stream API
//! (docs/imagestreams.md), talking HTTP(S) to any Stowage server, with the tables and
//! descriptions `oc get imagestreams`, `oc describe is` and `oc describe istag` print.
//!
//! Logins (a token per server) are kept in `credentials.json` (mode 0600) in
//! `$STOWAGE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/stowage`, else `~/.config/stowage`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::output;

/// What a stream's name keeps unencoded in a URL path segment (its `/` are encoded).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');
/// The API's prefix on the server.
const API: &str = "/apis/image.openshift.io/v1";
/// Streams asked for per page of a listing.
const PAGE: u64 = 500;
/// Tags `get imagestreams` shows before `+ N more...`, as oc does.
const TAGS_SHOWN: usize = 3;

/// `stowage login SERVER --token T`.
#[derive(Args, Debug, Clone)]
pub struct LoginArgs {
    /// The server, e.g. https://registry.example.com (https:// unless a scheme is given).
    server: String,
    /// A personal token (`stowage token create`).
    #[arg(long, env = "STOWAGE_TOKEN", hide_env_values = true)]
    token: String,
}

/// `stowage logout [SERVER]`.
#[derive(Args, Debug, Clone)]
pub struct LogoutArgs {
    /// The server to forget [default: the only or last login].
    server: Option<String>,
}

/// Where and as whom the image-stream API is read.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The namespace (project).
    #[arg(short = 'n', long, env = "STOWAGE_NAMESPACE")]
    namespace: String,
    /// The server [default: the only or last `stowage login`].
    #[arg(long, env = "STOWAGE_SERVER")]
    server: Option<String>,
    /// Bearer token [default: the saved login's].
    #[arg(long, env = "STOWAGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Image streams asked for per request of a listing (pages are followed to the end).
    #[arg(long, default_value_t = PAGE, value_parser = clap::value_parser!(u64).range(1..=1000))]
    chunk_size: u64,
}

/// Arguments of a `get`.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// One of them (NAME, or NAME:TAG for tags) instead of all.
    name: Option<String>,
    #[command(flatten)]
    conn: Conn,
    /// Output format: json (the API's objects) or name [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT")]
    output: Option<String>,
}

/// `stowage get KIND`.
#[derive(Subcommand, Debug, Clone)]
pub enum GetKind {
    /// Image streams: NAME, DOCKER REPO, TAGS, UPDATED.
    #[command(visible_alias = "is", alias = "imagestream")]
    Imagestreams(GetArgs),
    /// Image stream tags: NAME, IMAGE REF, UPDATED.
    #[command(
        visible_alias = "imagestreamtags",
        aliases = ["istag", "imagestreamtag"]
    )]
    Istags(GetArgs),
}

/// `stowage describe KIND NAME`.
#[derive(Subcommand, Debug, Clone)]
pub enum DescribeKind {
    /// An image stream: its tags and their history [default: every stream].
    #[command(visible_alias = "is", alias = "imagestreams")]
    Imagestream {
        /// The stream.
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// An image stream tag: its image, size, config.
    #[command(
        visible_alias = "imagestreamtag",
        aliases = ["istags", "imagestreamtags"]
    )]
    Istag {
        /// NAME:TAG.
        #[arg(value_name = "NAME:TAG")]
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

// ---------------------------------------------------------------------------------------
// Saved logins.

/// One saved login.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Login {
    token: String,
    /// Who the server said the token belongs to.
    #[serde(default)]
    principal: String,
}

/// `credentials.json`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
struct Credentials {
    /// The last server logged in to.
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    servers: BTreeMap<String, Login>,
}

fn config_dir() -> anyhow::Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("STOWAGE_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("stowage"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("stowage")),
        None => anyhow::bail!(
            "no place for saved logins: set STOWAGE_CONFIG_DIR, XDG_CONFIG_HOME or HOME"
        ),
    }
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.json"))
}

impl Credentials {
    fn load() -> anyhow::Result<Credentials> {
        let path = credentials_path()?;
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a credentials file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only (0600), replacing it atomically.
    fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        let dir = config_dir()?;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("credentials.json");
        let tmp = dir.join(format!(".credentials.json.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> std::io::Result<()> {
            let mut f = options.open(&tmp)?;
            #[cfg(unix)]
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            f.write_all(&serde_json::to_vec_pretty(self).unwrap_or_default())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        Ok(path)
    }

    /// The server to use without `--server`: the last login, or the only one.
    fn default_server(&self) -> Option<&str> {
        self.current
            .as_deref()
            .filter(|c| self.servers.contains_key(*c))
            .or_else(|| match self.servers.len() {
                1 => self.servers.keys().next().map(String::as_str),
                _ => None,
            })
    }
}

/// A server's address as saved and used: a scheme (https:// by default), no trailing `/`.
fn normalize_server(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", s.trim_end_matches('/'))
    };
    let url = url::Url::parse(&with_scheme)
        .with_context(|| format!("{s:?} is not a server address (e.g. https://host:port)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("{s:?} is not a server address (e.g. https://host:port)");
    }
    Ok(with_scheme)
}

// ---------------------------------------------------------------------------------------
// HTTP.

/// A server to read from, as someone (or anonymously).
struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    /// Streams per page of a listing.
    page: u64,
}

impl Client {
    fn new(server: String, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            server,
            token,
            page: PAGE,
        })
    }

    /// From `--server`/`--token` or the saved login.
    fn for_conn(conn: &Conn) -> anyhow::Result<Client> {
        let creds = Credentials::load()?;
        let server = match &conn.server {
            Some(s) => normalize_server(s)?,
            None => creds.default_server().map(str::to_string).ok_or_else(|| {
                anyhow::anyhow!(
                    "no server: give --server URL, or log in with stowage login SERVER --token T"
                )
            })?,
        };
        let token = conn
            .token
            .clone()
            .or_else(|| creds.servers.get(&server).map(|l| l.token.clone()));
        let mut client = Client::new(server, token)?;
        client.page = conn.chunk_size;
        Ok(client)
    }

    /// GET `path` as JSON; errors say what went wrong in the user's terms.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "timed out".to_string()
            } else {
                // reqwest's own message names the URL; the innermost cause says why.
                let mut cause: &dyn std::error::Error = &e;
                while let Some(s) = cause.source() {
                    cause = s;
                }
                cause.to_string()
            };
            anyhow::anyhow!("cannot reach the server at {}: {why}", self.server)
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of GET {url}"))?;
        if status.is_success() {
            return serde_json::from_str(&body).with_context(|| {
                format!(
                    "the answer of GET {url} is not JSON (is {} a Stowage server?): {:.200}",
                    self.server, body
                )
            });
        }
        let message = error_message(&body);
        match status.as_u16() {
            401 => anyhow::bail!(
                "{}: unauthorized ({message}): {}; log in with stowage login {} --token T",
                self.server,
                if self.token.is_some() {
                    "the token was refused (revoked or expired?)"
                } else {
                    "no credentials were given"
                },
                self.server
            ),
            403 => anyhow::bail!(
                "{}: forbidden: {message} (the token's account may not read this; ask for \
                 pull on the namespace)",
                self.server
            ),
            404 => anyhow::bail!("{message}"),
            _ => anyhow::bail!("GET {url}: {status}: {message}"),
        }
    }

    /// Every item of a paged list, following `metadata.continue`.
    async fn list(&self, ns: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("{API}/namespaces/{ns}/{kind}?limit={}", self.page);
            if let Some(c) = &next {
                path.push_str("&continue=");
                path.extend(url::form_urlencoded::byte_serialize(c.as_bytes()));
            }
            let page = self.get(&path).await?;
            items.extend(page["items"].as_array().into_iter().flatten().cloned());
            match page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                Some(c) if next.as_deref() != Some(c) => next = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(items)
    }
}

/// What an error answer says: a `kind: Status` message, a registry error, or the body.
pub(crate) fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["message"].is_string() => v["message"].as_str().unwrap_or("").to_string(),
        Ok(v) if v["errors"][0]["message"].is_string() => {
            v["errors"][0]["message"].as_str().unwrap_or("").to_string()
        }
        _ if body.trim().is_empty() => "(no message)".to_string(),
        _ => body.trim().chars().take(500).collect(),
    }
}

fn check_namespace(ns: &str) -> anyhow::Result<()> {
    if !stowage_auth::policy::valid_namespace(ns) {
        anyhow::bail!("{ns:?} is not a namespace");
    }
    Ok(())
}

fn split_tag(name_tag: &str) -> anyhow::Result<(&str, &str)> {
    match name_tag.rsplit_once(':') {
        Some((n, t)) if !n.is_empty() && !t.is_empty() && !t.contains('/') => Ok((n, t)),
        _ => anyhow::bail!("{name_tag:?} is not NAME:TAG (e.g. centos-binary-aodh-api:latest)"),
    }
}

fn stream_path(ns: &str, name: &str) -> String {
    format!(
        "{API}/namespaces/{ns}/imagestreams/{}",
        utf8_percent_encode(name, SEGMENT)
    )
}

fn stream_tag_path(ns: &str, name: &str, tag: &str) -> String {
    format!(
        "{API}/namespaces/{ns}/imagestreamtags/{}:{}",
        utf8_percent_encode(name, SEGMENT),
        utf8_percent_encode(tag, SEGMENT)
    )
}

// ---------------------------------------------------------------------------------------
// Commands.

/// `stowage login SERVER --token T`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let server = normalize_server(&args.server)?;
    let token = args.token.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("--token is empty");
    }
    let client = Client::new(server.clone(), Some(token.clone()))?;
    let me = client.get("/stowage/v1/whoami").await?;
    let principal = me["principal"].as_str().unwrap_or("").to_string();
    let auth_enabled = me["auth_enabled"].as_bool().unwrap_or(true);
    if auth_enabled && (principal.is_empty() || principal == "anonymous") {
        anyhow::bail!("{server} did not accept the token (it answered as {principal:?})");
    }
    let mut creds = Credentials::load()?;
    creds.servers.insert(
        server.clone(),
        Login {
            token,
            principal: principal.clone(),
        },
    );
    creds.current = Some(server.clone());
    let path = creds.save()?;
    if auth_enabled {
        println!("Logged into {server} as {principal}.");
    } else {
        println!("Logged into {server} (the server does not check credentials).");
    }
    let namespaces: Vec<&str> = me["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    if !namespaces.is_empty() {
        println!("You have access to: {}", namespaces.join(", "));
    }
    eprintln!("Token saved in {}.", path.display());
    Ok(())
}

/// `stowage logout [SERVER]`.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let mut creds = Credentials::load()?;
    let server = match &args.server {
        Some(s) => normalize_server(s)?,
        None => creds
            .default_server()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("not logged in: name the server to log out from"))?,
    };
    let Some(login) = creds.servers.remove(&server) else {
        anyhow::bail!("not logged in to {server}");
    };
    if creds.current.as_deref() == Some(server.as_str()) {
        creds.current = None;
    }
    creds.save()?;
    if login.principal.is_empty() {
        println!("Logged out of {server}.");
    } else {
        println!("Logged {} out of {server}.", login.principal);
    }
    Ok(())
}

enum Format {
    Table,
    Json,
    Name,
}

fn format_of(o: Option<&str>) -> anyhow::Result<Format> {
    match o {
        None | Some("table") => Ok(Format::Table),
        Some("json") => Ok(Format::Json),
        Some("name") => Ok(Format::Name),
        Some("yaml") => anyhow::bail!(
            "-o yaml is not available in this build (it needs a YAML library); use -o json"
        ),
        Some(o) => anyhow::bail!("unknown output format {o:?}: use json or name"),
    }
}

/// A list as `-o json` prints it: the API's items, all pages in one.
fn list_object(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "image.openshift.io/v1",
        "metadata": {},
        "items": items,
    })
}

/// `stowage get KIND`.
pub async fn get(kind: GetKind) -> anyhow::Result<()> {
    let (args, streams) = match &kind {
        GetKind::Imagestreams(a) => (a, true),
        GetKind::Istags(a) => (a, false),
    };
    let format = format_of(args.output.as_deref())?;
    let ns = &args.conn.namespace;
    check_namespace(ns)?;
    let client = Client::for_conn(&args.conn)?;
    let now = Utc::now();
    let (items, single) = match (&args.name, streams) {
        (Some(name), true) => (vec![client.get(&stream_path(ns, name)).await?], true),
        (Some(name_tag), false) => {
            let (name, tag) = split_tag(name_tag)?;
            (
                vec![client.get(&stream_tag_path(ns, name, tag)).await?],
                true,
            )
        }
        (None, true) => (client.list(ns, "imagestreams").await?, false),
        (None, false) => (client.list(ns, "imagestreamtags").await?, false),
    };
    match format {
        Format::Json => {
            let v = match (single, streams) {
                (true, _) => items.into_iter().next().unwrap_or(Value::Null),
                (false, true) => list_object("ImageStreamList", items),
                (false, false) => list_object("ImageStreamTagList", items),
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        Format::Name => {
            let prefix = if streams {
                "imagestream.image.openshift.io"
            } else {
                "imagestreamtag.image.openshift.io"
            };
            for i in &items {
                println!("{prefix}/{}", str_of(&i["metadata"]["name"]));
            }
            return Ok(());
        }
        Format::Table => {}
    }
    if items.is_empty() {
        eprintln!("No resources found in {ns} namespace.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = if streams {
        let mut rows = vec![vec![
            "NAME".to_string(),
            "DOCKER REPO".to_string(),
            "TAGS".to_string(),
            "UPDATED".to_string(),
        ]];
        rows.extend(items.iter().map(|s| stream_row(s, now)));
        rows
    } else {
        let mut rows = vec![vec![
            "NAME".to_string(),
            "IMAGE REF".to_string(),
            "UPDATED".to_string(),
        ]];
        rows.extend(items.iter().map(|t| {
            vec![
                str_of(&t["metadata"]["name"]),
                str_of(&t["image"]["dockerImageReference"]),
                ago(&t["metadata"]["creationTimestamp"], now),
            ]
        }));
        rows
    };
    print!("{}", table(&rows));
    Ok(())
}

/// `stowage describe KIND NAME`.
pub async fn describe(kind: DescribeKind) -> anyhow::Result<()> {
    let now = Utc::now();
    match kind {
        DescribeKind::Imagestream { name, conn } => {
            check_namespace(&conn.namespace)?;
            let client = Client::for_conn(&conn)?;
            let streams = match name {
                Some(n) => vec![client.get(&stream_path(&conn.namespace, &n)).await?],
                None => client.list(&conn.namespace, "imagestreams").await?,
            };
            let texts: Vec<String> = streams.iter().map(|s| describe_stream(s, now)).collect();
            print!("{}", texts.join("\n\n"));
        }
        DescribeKind::Istag { name, conn } => {
            check_namespace(&conn.namespace)?;
            let (stream, tag) = split_tag(&name)?;
            let client = Client::for_conn(&conn)?;
            let t = client
                .get(&stream_tag_path(&conn.namespace, stream, tag))
                .await?;
            print!("{}", describe_stream_tag(&t, now));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rendering.

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `2 hours ago`, or `<unknown>` for no time.
fn ago(v: &Value, now: DateTime<Utc>) -> String {
    match time_of(v) {
        Some(t) => format!("{} ago", output::age(now - t)),
        None => "<unknown>".to_string(),
    }
}

/// Columns padded to their widest cell, three spaces apart, as oc's tables.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A stream's tags with the time each last moved, most recent first (name on ties).
fn tags_by_update(stream: &Value) -> Vec<(String, Option<DateTime<Utc>>)> {
    let mut tags: Vec<(String, Option<DateTime<Utc>>)> = stream["status"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (str_of(&t["tag"]), time_of(&t["items"][0]["created"])))
        .collect();
    tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    tags
}

fn stream_row(s: &Value, now: DateTime<Utc>) -> Vec<String> {
    let tags = tags_by_update(s);
    let shown: Vec<&str> = tags
        .iter()
        .take(TAGS_SHOWN)
        .map(|(t, _)| t.as_str())
        .collect();
    let more = tags.len().saturating_sub(TAGS_SHOWN);
    let mut tags_cell = shown.join(",");
    if more > 0 {
        tags_cell.push_str(&format!(" + {more} more..."));
    }
    let repo = match &s["status"]["publicDockerImageRepository"] {
        Value::String(r) if !r.is_empty() => r.clone(),
        _ => str_of(&s["status"]["dockerImageRepository"]),
    };
    let updated = match tags.first().and_then(|(_, t)| *t) {
        Some(t) => format!("{} ago", output::age(now - t)),
        None => String::new(),
    };
    vec![str_of(&s["metadata"]["name"]), repo, tags_cell, updated]
}

/// `Label:` padded to `width`, then the value.
fn field(out: &mut String, width: usize, label: &str, value: &str) {
    let label = format!("{label}:");
    out.push_str(&format!("{label:<width$}{value}\n"));
}

fn none_if_empty(s: String) -> String {
    if s.trim().is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// `oc describe is`: the stream, then each tag (latest first) with its history.
fn describe_stream(s: &Value, now: DateTime<Utc>) -> String {
    const W: usize = 18;
    let mut out = String::new();
    let tags: Vec<&Value> = {
        let mut t: Vec<&Value> = s["status"]["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        t.sort_by_key(|t| (t["tag"] != "latest", str_of(&t["tag"])));
        t
    };
    let unique: BTreeSet<String> = tags
        .iter()
        .flat_map(|t| t["items"].as_array().into_iter().flatten())
        .map(|i| str_of(&i["image"]))
        .collect();
    let repo = match &s["status"]["publicDockerImageRepository"] {
        Value::String(r) if !r.is_empty() => r.clone(),
        _ => str_of(&s["status"]["dockerImageRepository"]),
    };
    field(&mut out, W, "Name", &str_of(&s["metadata"]["name"]));
    field(
        &mut out,
        W,
        "Namespace",
        &str_of(&s["metadata"]["namespace"]),
    );
    field(
        &mut out,
        W,
        "Created",
        &ago(&s["metadata"]["creationTimestamp"], now),
    );
    field(&mut out, W, "Labels", "<none>");
    field(&mut out, W, "Annotations", "<none>");
    field(&mut out, W, "Docker Pull Spec", &repo);
    field(&mut out, W, "Unique Images", &unique.len().to_string());
    field(&mut out, W, "Tags", &tags.len().to_string());
    for t in tags {
        out.push('\n');
        out.push_str(&str_of(&t["tag"]));
        out.push_str("\n  pushed image\n\n");
        for (i, item) in t["items"].as_array().into_iter().flatten().enumerate() {
            let mark = if i == 0 { "* " } else { "  " };
            out.push_str(&format!(
                "  {mark}{}\n",
                str_of(&item["dockerImageReference"])
            ));
            let by = match item["pushedBy"].as_str() {
                Some(b) => format!(" by {b}"),
                None => String::new(),
            };
            out.push_str(&format!("      {}{by}\n", ago(&item["created"], now)));
        }
    }
    out
}

/// The image fields of `oc describe istag` for one image's metadata and layers.
fn describe_image(out: &mut String, meta: &Value, layers: &Value, now: DateTime<Utc>) {
    const W: usize = 15;
    let sizes: Vec<u64> = layers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["size"].as_u64())
        .collect();
    let total = meta["Size"]
        .as_u64()
        .unwrap_or_else(|| sizes.iter().sum::<u64>());
    let size = match (sizes.first(), sizes.last()) {
        (Some(first), Some(last)) => format!(
            "{} (first layer {}, last binary layer {})",
            output::bytes(total),
            output::bytes(*first),
            output::bytes(*last)
        ),
        _ => output::bytes(total),
    };
    field(out, W, "Image Size", &size);
    let created = match meta["Created"] {
        Value::Null => "<none>".to_string(),
        ref c => ago(c, now),
    };
    field(out, W, "Image Created", &created);
    field(out, W, "Author", &none_if_empty(str_of(&meta["Author"])));
    field(
        out,
        W,
        "Arch",
        &none_if_empty(str_of(&meta["Architecture"])),
    );
    let config = &meta["Config"];
    let words = |v: &Value| {
        none_if_empty(
            v.as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    field(out, W, "Command", &words(&config["Cmd"]));
    field(out, W, "Entrypoint", &words(&config["Entrypoint"]));
    field(
        out,
        W,
        "Working Dir",
        &none_if_empty(str_of(&config["WorkingDir"])),
    );
    field(out, W, "User", &none_if_empty(str_of(&config["User"])));
    let ports: Vec<&String> = config["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    field(
        out,
        W,
        "Exposes Ports",
        &none_if_empty(
            ports
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    );
    let labels: Vec<String> = config["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", str_of(v)))
                .collect()
        })
        .unwrap_or_default();
    list_field(out, W, "Docker Labels", &labels);
    let env: Vec<String> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    list_field(out, W, "Environment", &env);
}

/// `Label:` then one entry per indented line, or `<none>`.
fn list_field(out: &mut String, width: usize, label: &str, entries: &[String]) {
    if entries.is_empty() {
        field(out, width, label, "<none>");
        return;
    }
    out.push_str(&format!("{label}:\n"));
    for e in entries {
        out.push_str(&format!("    {e}\n"));
    }
}

/// `oc describe istag`.
fn describe_stream_tag(t: &Value, now: DateTime<Utc>) -> String {
    const W: usize = 15;
    let image = &t["image"];
    let mut out = String::new();
    let digest = str_of(&image["metadata"]["name"]);
    field(&mut out, W, "Name", &digest);
    field(
        &mut out,
        W,
        "Namespace",
        &none_if_empty(str_of(&t["metadata"]["namespace"])),
    );
    field(
        &mut out,
        W,
        "Created",
        &ago(&image["metadata"]["creationTimestamp"], now),
    );
    field(&mut out, W, "Labels", "<none>");
    field(&mut out, W, "Annotations", "<none>");
    field(
        &mut out,
        W,
        "Docker Image",
        &str_of(&image["dockerImageReference"]),
    );
    field(&mut out, W, "Image Name", &digest);
    if image["collected"] == true {
        field(
            &mut out,
            W,
            "Image",
            "<collected> (garbage collected: no metadata)",
        );
        return out;
    }
    if let Some(platforms) = image["dockerImageManifests"].as_array() {
        field(
            &mut out,
            W,
            "Media Type",
            &str_of(&image["dockerImageManifestMediaType"]),
        );
        out.push_str(&format!("Manifests:     {}\n", platforms.len()));
        for p in platforms {
            let mut platform = format!("{}/{}", str_of(&p["os"]), str_of(&p["architecture"]));
            if let Some(v) = p["variant"].as_str() {
                platform.push('/');
                platform.push_str(v);
            }
            out.push_str(&format!("\n{platform}: {}\n", str_of(&p["digest"])));
            if p["dockerImageMetadata"].is_object() {
                let mut sub = String::new();
                describe_image(
                    &mut sub,
                    &p["dockerImageMetadata"],
                    &p["dockerImageLayers"],
                    now,
                );
                for line in sub.lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            } else {
                out.push_str("  <not in this registry>\n");
            }
        }
        return out;
    }
    describe_image(
        &mut out,
        &image["dockerImageMetadata"],
        &image["dockerImageLayers"],
        now,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_get_a_scheme_and_lose_the_slash() {
        assert_eq!(normalize_server("h:5000/").unwrap(), "https://h:5000");
        assert_eq!(
            normalize_server("http://127.0.0.1:1").unwrap(),
            "http://127.0.0.1:1"
        );
        assert!(normalize_server("ftp://h").is_err());
        assert!(normalize_server("http://").is_err());
    }

    #[test]
    fn the_default_server_is_the_last_or_only_login() {
        let login = |t: &str| Login {
            token: t.into(),
            principal: String::new(),
        };
        let mut c = Credentials::default();
        assert_eq!(c.default_server(), None);
        c.servers.insert("https://a".into(), login("1"));
        assert_eq!(c.default_server(), Some("https://a"));
        c.servers.insert("https://b".into(), login("2"));
        assert_eq!(c.default_server(), None);
        c.current = Some("https://b".into());
        assert_eq!(c.default_server(), Some("https://b"));
    }

    #[test]
    fn tables_pad_columns_like_oc() {
        let rows = vec![
            vec!["NAME".to_string(), "TAGS".to_string()],
            vec!["centos".to_string(), "latest".to_string()],
        ];
        assert_eq!(table(&rows), "NAME     TAGS\ncentos   latest\n");
    }

    #[test]
    fn tags_are_most_recent_first_and_truncated() {
        let now = Utc::now();
        let s = json!({
            "metadata": {"name": "aodh"},
            "status": {"dockerImageRepository": "h/ns/aodh", "tags": [
                {"tag": "a", "items": [{"created": "2020-01-01T00:00:00Z"}]},
                {"tag": "b", "items": [{"created": "2020-01-03T00:00:00Z"}]},
                {"tag": "c", "items": [{"created": "2020-01-02T00:00:00Z"}]},
                {"tag": "d", "items": [{"created": "2019-01-02T00:00:00Z"}]},
            ]}
        });
        let row = stream_row(&s, now);
        assert_eq!(row[0], "aodh");
        assert_eq!(row[1], "h/ns/aodh");
        assert_eq!(row[2], "b,c,a + 1 more...");
        assert!(row[3].ends_with(" years ago"), "{}", row[3]);
    }
}
