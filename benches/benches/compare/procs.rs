//! The processes the comparison runs: Stowage and Distribution servers and moto (an
//! S3-compatible test server), each behind a guard that stops it, by PID, when dropped,
//! panics included; and the measurements taken from outside them (peak RSS, bytes on
//! disk).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Credentials moto accepts, and the region both registries are told to use.
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// A child process that is stopped (SIGTERM, then SIGKILL after a grace period) when
/// this guard is dropped or [`Proc::stop`] is called.
pub struct Proc {
    name: String,
    child: Child,
    stopped: bool,
}

impl Proc {
    /// Guards `child`, called `name` in messages.
    pub fn new(name: impl Into<String>, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child,
            stopped: false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited: {status}", self.name),
            None => Ok(()),
        }
    }

    /// Stops the process: SIGTERM, up to ten seconds to exit, then SIGKILL.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        // Through kill(1): the workspace forbids the unsafe a libc::kill call needs.
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("  {} (pid {pid}) ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A loopback port nobody listens on (there is a small window before it is used).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The status code of `GET path` on `127.0.0.1:port`, over a fresh connection.
pub fn http_status(port: u16, path: &str) -> Result<u16> {
    http_status_with(port, path, &[])
}

/// The status code of `GET path` on `127.0.0.1:port` with extra request `headers`
/// (`Accept`, for manifests), over a fresh connection. Only the status line is read.
pub fn http_status_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {line:?}"))
}

/// Waits until `GET path` on `port` answers `want`, or the process exits, or `limit`.
fn wait_http(proc: &mut Proc, port: u16, path: &str, want: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        proc.check_alive()?;
        match http_status(port, path) {
            Ok(code) if code == want => return Ok(()),
            Ok(code) => last = format!("status {code}"),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{} not ready after {limit:?}: {last}", proc.name)
}

/// Which registry a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stowage.
    Stowage,
    /// CNCF Distribution.
    Distribution,
}

impl Kind {
    /// Its name in tables, logs and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stowage => "stowage",
            Kind::Distribution => "distribution",
        }
    }
}

/// Where a server keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory.
    Dir(PathBuf),
    /// A bucket on the S3-compatible server at `endpoint`.
    S3 {
        /// `http://127.0.0.1:PORT`.
        endpoint: String,
        /// Bucket, created beforehand.
        bucket: String,
    },
}

/// A running registry.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Starts `stowage serve` on a free loopback port; logs go to `log`.
pub fn start_stowage(bin: &Path, storage: &Storage, log: &Path) -> Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--storage"]);
    match storage {
        Storage::Dir(dir) => {
            cmd.arg(dir);
        }
        Storage::S3 { endpoint, bucket } => {
            cmd.arg(format!("s3://{bucket}/stowage"))
                .args(["--s3-endpoint", endpoint])
                .envs(S3_ENV);
        }
    }
    let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut proc = Proc::new("stowage", child);
    // Read the first line here, then keep draining stdout so the server never blocks.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => {
            let _ = proc.check_alive();
            bail!(
                "stowage exited before listening; see {}: {}",
                log.display(),
                tail(log)
            )
        }
        Err(_) => bail!("stowage printed nothing in 60 s; see {}", log.display()),
    };
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("unexpected first line from stowage: {line:?}"))?
        .trim()
        .to_string();
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in {line:?}"))?;
    wait_http(&mut proc, port, "/v2/", 200, Duration::from_secs(30))?;
    Ok(Server {
        proc,
        url: format!("http://{addr}"),
    })
}

/// The YAML configuration of Distribution for `storage`, listening on `port`. On S3
/// its files are under the bucket's [`DISTRIBUTION_S3_ROOT`] prefix.
pub fn distribution_config(storage: &Storage, port: u16) -> String {
    let driver = match storage {
        Storage::Dir(dir) => format!(
            "  filesystem:\n    rootdirectory: {}\n",
            dir.to_str().expect("UTF-8 temporary path")
        ),
        // Path-style addressing follows from `regionendpoint` in 2.8's s3-aws driver.
        Storage::S3 { endpoint, bucket } => format!(
            "  s3:\n    region: us-east-1\n    regionendpoint: {endpoint}\n    \
             bucket: {bucket}\n    accesskey: testing\n    secretkey: testing\n    \
             secure: false\n    v4auth: true\n    rootdirectory: /{DISTRIBUTION_S3_ROOT}\n"
        ),
    };
    format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n{driver}\
         \x20 delete:\n    enabled: true\n\
         \x20 cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: stowage-compare-harness\n"
    )
}

/// Starts `docker-registry serve` with a configuration written to `config_dir`.
pub fn start_distribution(storage: &Storage, config_dir: &Path, log: &Path) -> Result<Server> {
    let port = free_port()?;
    let config = config_dir.join("distribution.yml");
    std::fs::write(&config, distribution_config(storage, port))?;
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(DISTRIBUTION)
        .arg("serve")
        .arg(&config)
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting docker-registry")?;
    let mut proc = Proc::new("distribution", child);
    if let Err(e) = wait_http(&mut proc, port, "/v2/", 200, Duration::from_secs(30)) {
        bail!("{e}; see {}: {}", log.display(), tail(log));
    }
    Ok(Server {
        proc,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// The prefix of Distribution's files in an S3 bucket (its `rootdirectory`).
pub const DISTRIBUTION_S3_ROOT: &str = "distribution";

/// Distribution's binary, from Debian's `docker-registry`.
pub const DISTRIBUTION: &str = "/usr/bin/docker-registry";

/// What `docker-registry --version` says, for the record of a run.
pub fn distribution_version() -> Option<String> {
    let out = Command::new(DISTRIBUTION).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs Debian's `docker-registry` if its binary is missing.
pub fn ensure_distribution() -> Result<()> {
    if Path::new(DISTRIBUTION).exists() {
        return Ok(());
    }
    eprintln!("installing docker-registry from Debian");
    let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let apt = |args: &[&str]| -> Result<bool> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        Ok(cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success())
    };
    if !apt(&["install", "-y", "-qq", "docker-registry"])? {
        apt(&["update", "-qq"])?;
        if !apt(&["install", "-y", "-qq", "docker-registry"])? {
            bail!("apt-get install docker-registry failed");
        }
    }
    Ok(())
}

/// Creates the Python venv with moto's server under the workspace if it is missing;
/// returns the venv's directory.
pub fn ensure_moto(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv-test");
    if venv.join("bin/moto_server").exists() {
        return Ok(venv);
    }
    eprintln!("installing moto into {}", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "moto[server]"])
            .status()?
            .success();
    if !ok {
        bail!("could not install moto into {}", venv.display());
    }
    Ok(venv)
}

/// A moto S3 server on a free loopback port.
pub struct Moto {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    venv: PathBuf,
}

impl Moto {
    /// Starts moto from `venv`; logs go to `log`.
    pub fn start(venv: &Path, log: &Path) -> Result<Moto> {
        let port = free_port()?;
        let out = File::create(log)?;
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting moto_server")?;
        let mut proc = Proc::new("moto", child);
        wait_http(&mut proc, port, "/", 200, Duration::from_secs(60))?;
        Ok(Moto {
            proc,
            endpoint: format!("http://127.0.0.1:{port}"),
            venv: venv.to_path_buf(),
        })
    }

    /// Creates `bucket` with boto3.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let script = format!(
            "import boto3\n\
             boto3.client('s3', endpoint_url='{}', region_name='us-east-1')\
             .create_bucket(Bucket='{bucket}')\n",
            self.endpoint
        );
        let out = Command::new(self.venv.join("bin/python"))
            .args(["-c", &script])
            .env_remove("AWS_CA_BUNDLE")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()?;
        if !out.status.success() {
            bail!(
                "creating bucket {bucket} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Total size of the files under `dir` (apparent sizes; symlinks not followed).
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (cargo passes its environment
/// on to the benchmarks it runs), else `target/` in the workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the release server binary (waiting for the build lock if need be) and
/// returns a copy of it in `<target>/<copy_dir>/`, so that a concurrent rebuild of
/// `target/release/stowage` cannot swap the binary in the middle of a benchmark.
pub fn build_stowage(root: &Path, copy_dir: &str) -> Result<PathBuf> {
    eprintln!("building the release stowage binary");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "stowage-server",
            "--bin",
            "stowage",
        ])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p stowage-server failed: {status}");
    }
    let target = target_dir(root);
    let built = target.join("release/stowage");
    let dir = target.join(copy_dir);
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("stowage");
    let tmp = dir.join("stowage.tmp");
    std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&tmp, &copy)?;
    Ok(copy)
}
