//! The real Docker CLI and daemon (and podman) against `stowage serve` with access
//! control on: the policy set up with `stowage admin` / `stowage token` on the store,
//! then a login with a personal token, a push to a namespace the token may push to, a
//! push elsewhere refused, a logout, an anonymous pull of a public namespace allowed
//! and of a private one refused, and logins with a wrong token refused.
//!
//! scripts/test installs Debian's docker.io and podman and starts a Docker daemon of
//! its own (exporting `DOCKER_HOST`). Without a reachable daemon (or without podman)
//! the test says so and skips, except under CI (`CI` set), where that is a failure.
//! Docker treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default, so the
//! daemon needs no flag for the test server's random port; podman is told with
//! `--tls-verify=false`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use stowage_tests::oci::tar;
use stowage_tests::server::{Server, fresh_storage};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// Runs the stowage CLI on the store (no server); its standard output.
fn stowage(storage: &str, args: &[&str]) -> String {
    stowage_tests::server::stowage_cli(BIN.as_ref(), storage, args, None)
}

/// Whether this is a CI run, where a missing tool is a failure rather than a skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Docker's CLI or podman, with state of its own in a temporary directory (so a login
/// leaves the user's credentials alone, and podman's images the user's store).
struct Client {
    program: &'static str,
    /// Holds the client's state; removed with it.
    _dir: tempfile::TempDir,
    /// Arguments before the subcommand.
    global: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Local image references to remove at the end, whatever happens.
    created: RefCell<Vec<String>>,
}

impl Client {
    /// The Docker CLI, if it reaches a daemon (the one `DOCKER_HOST` names).
    fn docker() -> Result<Client, String> {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![("DOCKER_CONFIG", dir.path().display().to_string())];
        let client = Client {
            program: "docker",
            _dir: dir,
            global: vec![],
            env,
            created: RefCell::default(),
        };
        client
            .probe(&["version", "--format", "{{.Server.Version}}"])
            .map_err(|e| {
                format!(
                    "no Docker daemon (DOCKER_HOST={:?}): {e}",
                    std::env::var("DOCKER_HOST").unwrap_or_default()
                )
            })?;
        Ok(client)
    }

    /// podman with a store of its own (vfs: works on any file system).
    fn podman() -> Result<Client, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p).display().to_string();
        let global = vec![
            "--root".into(),
            path("root"),
            "--runroot".into(),
            path("run"),
            "--storage-driver".into(),
            "vfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        // podman insists that a given auth file exists.
        std::fs::write(path("auth.json"), "{}").unwrap();
        let env = vec![("REGISTRY_AUTH_FILE", path("auth.json"))];
        let client = Client {
            program: "podman",
            _dir: dir,
            global,
            env,
            created: RefCell::default(),
        };
        client
            .probe(&["version"])
            .map_err(|e| format!("no podman: {e}"))?;
        Ok(client)
    }

    fn probe(&self, args: &[&str]) -> Result<(), String> {
        match self.command(args).output() {
            Err(e) => Err(format!("cannot run {}: {e}", self.program)),
            Ok(out) if !out.status.success() => {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
            Ok(_) => Ok(()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.global);
        if let Some((sub, rest)) = args.split_first() {
            cmd.arg(sub);
            // podman wants HTTPS unless told; Docker takes loopback as insecure.
            if self.program == "podman" && ["login", "push", "pull"].contains(sub) {
                cmd.arg("--tls-verify=false");
            }
            cmd.args(rest);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the client with `stdin`; the outcome and everything it printed.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (Output, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/test installs it)", self.program));
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    /// Runs the client and expects success; what it printed.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (out, text) = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{text}",
            self.program
        );
        text
    }

    /// Runs the client and expects a refusal by the registry; what it printed.
    fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (out, text) = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "{} {args:?} should have failed:\n{text}",
            self.program
        );
        let t = text.to_ascii_lowercase();
        assert!(
            [
                "denied",
                "unauthorized",
                "authentication required",
                "forbidden",
                "invalid username/password",
            ]
            .iter()
            .any(|w| t.contains(w)),
            "{} {args:?} failed, but not as a refusal:\n{text}",
            self.program
        );
        text
    }

    fn login(&self, registry: &str, token: &str) -> (Output, String) {
        self.run(
            &["login", "-u", "unused", "--password-stdin", registry],
            Some(token),
        )
    }

    /// The local image id of `reference` (its config's digest).
    fn image_id(&self, reference: &str) -> String {
        let id = self.ok(
            &["image", "inspect", "--format", "{{.Id}}", reference],
            None,
        );
        id.trim().trim_start_matches("sha256:").to_string()
    }

    /// Tags `from` as `to` and remembers `to` for removal.
    fn tag(&self, from: &str, to: &str) {
        self.created(to);
        self.ok(&["tag", from, to], None);
    }

    /// Remembers a local reference to remove when done.
    fn created(&self, reference: &str) {
        self.created.borrow_mut().push(reference.to_string());
    }

    /// Removes a local reference now (it may already be gone).
    fn rmi(&self, reference: &str) {
        let _ = self.run(&["rmi", "--force", reference], None);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for reference in self.created.take() {
            self.rmi(&reference);
        }
    }
}

/// The client, or a skip (outside CI) with the reason.
fn client_or_skip(test: &str, client: Result<Client, String>) -> Option<Client> {
    match client {
        Ok(c) => Some(c),
        Err(why) if in_ci() => panic!("{why}\nCI runs must have it (scripts/test sets it up)"),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: {why}\n  run scripts/test (it installs docker.io and podman \
                 and starts a Docker daemon) or set DOCKER_HOST"
            );
            None
        }
    }
}

#[test]
fn login_push_pull_and_refusals_with_docker() {
    if let Some(docker) =
        client_or_skip("login_push_pull_and_refusals_with_docker", Client::docker())
    {
        login_push_pull_and_refusals(&docker);
    }
}

#[test]
fn login_push_pull_and_refusals_with_podman() {
    if let Some(podman) =
        client_or_skip("login_push_pull_and_refusals_with_podman", Client::podman())
    {
        login_push_pull_and_refusals(&podman);
    }
}

fn login_push_pull_and_refusals(client: &Client) {
    let (storage, _guard) = fresh_storage(false);
    stowage(&storage, &["admin", "user", "create", "alice"]);
    stowage(
        &storage,
        &["admin", "namespace", "create", "team", "--private"],
    );
    stowage(
        &storage,
        &["admin", "namespace", "create", "pub", "--public"],
    );
    for ns in ["team", "pub"] {
        stowage(
            &storage,
            &[
                "admin",
                "grant",
                "push",
                "--namespace",
                ns,
                "--user",
                "alice",
            ],
        );
    }
    let token = stowage(
        &storage,
        &[
            "token", "create", "--user", "alice", "--access", "push", "--quiet",
        ],
    )
    .trim()
    .to_string();
    assert!(token.starts_with("stw_"), "{token}");
    let server = Server::start(BIN.as_ref(), &storage, &[]);
    let registry = server.addr.clone();

    // A tiny image with content of its own: an import of a one-file tar.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(
        &rootfs,
        tar(&[("hello.txt", format!("hello from {unique}\n").as_bytes())]),
    )
    .unwrap();
    let team = format!("{registry}/team/app-{unique}:v1");
    let public = format!("{registry}/pub/app-{unique}:v1");
    let other = format!("{registry}/other/app-{unique}:v1");
    client.created(&team);
    client.ok(&["import", rootfs.to_str().unwrap(), &team], None);
    let id = client.image_id(&team);
    client.tag(&team, &public);
    client.tag(&team, &other);

    // Anonymous pushes are refused, even to the public namespace.
    client.refused(&["push", &public], None);

    // A wrong token does not log in (nor does something that is no token).
    let last = if token.ends_with('A') { "B" } else { "A" };
    let wrong = format!("{}{last}", &token[..token.len() - 1]);
    for bad in [wrong.as_str(), "not-a-token"] {
        let (out, text) = client.login(&registry, bad);
        assert!(!out.status.success(), "login with {bad:?}:\n{text}");
    }
    client.refused(
        &["login", "-u", "unused", "--password-stdin", &registry],
        Some(&wrong),
    );

    // The token logs in, and pushes where it may.
    let (out, text) = client.login(&registry, &token);
    assert!(out.status.success(), "login:\n{text}");
    assert!(text.contains("Login Succeeded"), "{text}");
    client.ok(&["push", &team], None);
    client.ok(&["push", &public], None);

    // Not where it may not.
    client.refused(&["push", &other], None);

    // While logged in, the private image pulls back.
    for r in [&team, &public, &other] {
        client.rmi(r);
    }
    client.ok(&["pull", &team], None);
    assert_eq!(client.image_id(&team), id);
    client.rmi(&team);

    // Anonymous: the public image pulls, the private one does not.
    let text = client.ok(&["logout", &registry], None);
    assert!(text.contains("login credentials"), "{text}");
    client.ok(&["pull", &public], None);
    assert_eq!(client.image_id(&public), id, "the image imported came back");
    let text = client.refused(&["pull", &team], None);
    assert!(!text.contains(&token), "{text}");

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
