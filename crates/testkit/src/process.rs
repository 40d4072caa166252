//! Child processes with their output in a log file: killed when their handle drops, and
//! the tail of their log printed when the test is panicking.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::paths::{log_dir, unique_name};

/// A child process with its stderr (and stdout) in a log file; killed on drop, and its log
/// tail printed if the test is panicking.
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    child: Option<Child>,
    /// The log file (stdout and stderr).
    pub log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with output to a fresh log file named after `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = log_dir().join(format!("{}.log", unique_name(name)));
        let f = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            exit: None,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exit = c.try_wait().unwrap();
            }
        }
        self.exit
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = c.kill();
                self.exit = c.wait().ok();
            }
        }
    }

    /// Sends a signal by number (e.g. 2 for SIGINT, 15 for SIGTERM) with `kill(1)`.
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Polls `ready` every `every` until it returns `Some` (a service answering), or panics
    /// with `what` after `timeout`, or at once with the log tail if the process exits first.
    pub fn wait_ready<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> T {
        wait_for(what, timeout, every, || {
            if let Some(s) = self.try_exit() {
                panic!(
                    "{} exited with {s} while waiting for {what}:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            ready()
        })
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        log_text(&self.log)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

/// Waits for a publisher that must be refused (`what` names it): it exits with a failure
/// within 20 s; a success, or one still publishing then, fails the test with its log.
pub fn assert_publisher_refused(p: &mut Proc, what: &str) {
    match p.wait_exit(Duration::from_secs(20)) {
        Some(s) => assert!(
            !s.success(),
            "{what}: the publisher succeeded; log:\n{}",
            p.log_tail(20)
        ),
        None => panic!(
            "{what}: still publishing after 20 s; log:\n{}",
            p.log_tail(20)
        ),
    }
}

/// The text of the log file at `path` (empty when it cannot be read).
pub(crate) fn log_text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// The last `n` lines of the log file at `path`.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = log_text(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "----- {} ({}) exit {:?}, last log lines -----\n{}\n----- end of {} -----",
                self.name,
                self.log.display(),
                self.exit,
                self.log_tail(60),
                self.name
            );
        }
    }
}

/// Polls `f` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(every);
    }
}
