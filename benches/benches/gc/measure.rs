//! Running a process to completion while measuring it from outside: wall time, and peak
//! RSS by polling `/proc/<pid>/status` (VmHWM only grows, so the last reading before the
//! exit is the peak up to a few milliseconds before it; the workspace forbids the unsafe
//! a `wait4` through libc would need). And a loop of garbage collections run back to
//! back, for measuring pushes while a collection is going on.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::procs;

/// How often the process is polled.
const POLL: Duration = Duration::from_millis(5);

/// A finished process, as measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Exited with status 0.
    pub ok: bool,
    /// Its exit status, for messages.
    pub status: String,
    /// Wall time from spawn to exit.
    pub seconds: f64,
    /// Peak resident set, KiB.
    pub peak_rss_kib: u64,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// The last lines of its stderr.
    pub stderr_tail: String,
}

impl Measured {
    /// Fails with the process's status and stderr if it did not succeed.
    pub fn check(&self, what: &str) -> Result<()> {
        if !self.ok {
            bail!("{what} failed ({}): {}", self.status, self.stderr_tail);
        }
        Ok(())
    }
}

/// Runs `cmd` to completion (at most `limit`), stdout and stderr to `<logs>/<name>.out`
/// and `.err`.
pub fn run_measured(
    cmd: &mut Command,
    logs: &Path,
    name: &str,
    limit: Duration,
) -> Result<Measured> {
    let out_path = logs.join(format!("{name}.out"));
    let err_path = logs.join(format!("{name}.err"));
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Ok(kib) = procs::peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {limit:?}");
        }
        thread::sleep(POLL);
    };
    let seconds = start.elapsed().as_secs_f64();
    Ok(Measured {
        ok: status.success(),
        status: status.to_string(),
        seconds,
        peak_rss_kib: peak,
        stdout: std::fs::read_to_string(&out_path)?,
        stderr_tail: procs::tail(&err_path),
    })
}

/// One collection of a [`GcLoop`].
#[derive(Debug, Clone)]
pub struct Span {
    /// When the process was spawned.
    pub start: Instant,
    /// When it exited (`None`: still running).
    pub end: Option<Instant>,
    /// Its failure, if it failed.
    pub error: Option<String>,
}

/// `stowage gc` run back to back on a thread until stopped. A run is never interrupted
/// (a killed collector would hold the store for a minute): stopping waits for the
/// current one to end.
pub struct GcLoop {
    stop: Arc<AtomicBool>,
    spans: Arc<Mutex<Vec<Span>>>,
    thread: thread::JoinHandle<()>,
}

impl GcLoop {
    /// Starts the loop; `command()` makes each run's command, whose output goes to
    /// `<logs>/<name>-<n>.err`.
    pub fn start(
        command: impl Fn() -> Command + Send + 'static,
        logs: &Path,
        name: &str,
    ) -> GcLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let spans: Arc<Mutex<Vec<Span>>> = Arc::new(Mutex::new(Vec::new()));
        let (logs, name) = (logs.to_path_buf(), name.to_owned());
        let thread = thread::spawn({
            let (stop, spans) = (stop.clone(), spans.clone());
            move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let err = logs.join(format!("{name}-{n}.err"));
                    let spawned = File::create(&err)
                        .map_err(anyhow::Error::from)
                        .and_then(|f| {
                            command()
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(f)
                                .spawn()
                                .map_err(Into::into)
                        });
                    let index = {
                        let mut s = spans.lock().unwrap_or_else(|e| e.into_inner());
                        s.push(Span {
                            start: Instant::now(),
                            end: None,
                            error: None,
                        });
                        s.len() - 1
                    };
                    let error = match spawned.and_then(|mut c| Ok(c.wait()?)) {
                        Ok(status) if status.success() => None,
                        Ok(status) => Some(format!("{status}: {}", procs::tail(&err))),
                        Err(e) => Some(format!("{e:#}")),
                    };
                    let mut s = spans.lock().unwrap_or_else(|e| e.into_inner());
                    s[index].end = Some(Instant::now());
                    s[index].error = error;
                    n += 1;
                }
            }
        });
        GcLoop {
            stop,
            spans,
            thread,
        }
    }

    /// Waits until run number `n` (from 0) has started; fails if a run failed or after
    /// `limit`.
    pub fn wait_started(&self, n: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let s = self.spans.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = s.iter().find_map(|s| s.error.clone()) {
                    bail!("a collection of the loop failed: {e}");
                }
                if s.len() > n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("collection {n} of the loop did not start within {limit:?}");
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops after the current run and returns every run.
    pub fn stop(self) -> Vec<Span> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let s = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        s.clone()
    }
}
