//! A `stowage serve` process on a loopback port, for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Where a test server keeps its data: a fresh local directory (kept alive by the
/// returned guard) or a fresh prefix in the test S3 bucket.
pub fn fresh_storage(s3: bool) -> (String, Option<tempfile::TempDir>) {
    if s3 {
        let bucket =
            std::env::var("STOWAGE_TEST_S3_BUCKET").unwrap_or_else(|_| "stowage-test".into());
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        (format!("s3://{bucket}/{prefix}"), None)
    } else {
        let dir = tempfile::tempdir().expect("tempdir");
        (dir.path().join("store").display().to_string(), Some(dir))
    }
}

/// For an `s3://` store, points a stowage command at the test S3 server (moto, which
/// takes any credentials).
fn point_at_test_s3(cmd: &mut Command, storage: &str) {
    if storage.starts_with("s3://") {
        let endpoint = std::env::var("STOWAGE_TEST_S3_ENDPOINT")
            .expect("S3 tests need STOWAGE_TEST_S3_ENDPOINT: run scripts/test");
        cmd.args(["--s3-endpoint", &endpoint])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1");
    }
}

/// Runs the stowage CLI `bin` on a store (no server) with `args` and `stdin`, free of
/// the caller's STOWAGE_* settings; panics with its stderr if it fails, else its stdout.
pub fn stowage_cli(bin: &Path, storage: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut cmd = Command::new(bin);
    cmd.args(["--storage", storage]).args(args);
    point_at_test_s3(&mut cmd, storage);
    for var in [
        "STOWAGE_CONFIG",
        "STOWAGE_SERVER",
        "STOWAGE_TOKEN",
        "STOWAGE_USERNAME",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stowage");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait for stowage");
    assert!(
        out.status.success(),
        "stowage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A running server; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its log, read as it is written: a server whose stderr pipe fills up stops.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `bin serve` on a free loopback port with `--storage storage` and `extra`
    /// arguments, and waits until it listens.
    pub fn start(bin: &Path, storage: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--storage", storage])
            .args(extra)
            .env_remove("STOWAGE_CONFIG");
        point_at_test_s3(&mut cmd, storage);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stowage serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("stowage serve did not start: {line:?}"))
            .to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Server {
            child: Some(child),
            addr,
            log,
            log_reader: Some(log_reader),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and returns the exit status and everything logged.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("wait");
        if let Some(r) = self.log_reader.take() {
            let _ = r.join();
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir` (made
/// with the `openssl` command): `(cert, key)`.
pub fn self_signed_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // A leaf, not a CA: rustls refuses a CA certificate used as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}
