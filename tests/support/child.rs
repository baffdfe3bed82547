//! Child processes for the real-network tests (ours, curl's origins, v2ray, Candy): every
//! line a child writes is kept, waits are bounded and fail with the child's last lines, and
//! a child is killed on every path out of a test, so a failing test never leaves a server
//! behind. Shared by `pong_real`, `vless_real` and `candy_real` (each uses part of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a `tunnelbed` role may take to print its banner.
pub(crate) const BANNER_WAIT: Duration = Duration::from_secs(20);

/// Lines shown of a child's log in a failure message.
const TAIL_LINES: usize = 25;

/// Everything a child wrote (stdout and stderr, line by line, in arrival order), and a
/// condition variable to wait for a line.
type Log = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A child process, killed on every path out of a test.
pub(crate) struct Proc {
    name: String,
    /// Behind a lock so that waits can take `&self` (a test may wait on one child while
    /// another thread borrows it).
    child: Mutex<Child>,
    log: Log,
}

impl Proc {
    /// Starts `cmd` (stdin closed) and collects its output; panics, naming `cmd`, if it
    /// cannot start.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let log: Log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        fn collect(r: impl Read + Send + 'static, log: Log) {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    log.0.lock().unwrap().push(line);
                    log.1.notify_all();
                }
            });
        }
        collect(child.stdout.take().unwrap(), log.clone());
        collect(child.stderr.take().unwrap(), log.clone());
        Proc {
            name: name.to_string(),
            child: Mutex::new(child),
            log,
        }
    }

    /// Starts `tunnelbed -v ARGS` (info-level logs whatever RUST_LOG says, no colours).
    pub(crate) fn tunnelbed(name: &str, args: &[&str]) -> Proc {
        Proc::spawn(name, tunnelbed_command(args))
    }

    /// Starts `tunnelbed -v ARGS` and waits for its banner (a line containing `banner`);
    /// returns it and the banner's last word (the address or URL it is bound to).
    pub(crate) fn start(name: &str, args: &[&str], banner: &str) -> (Proc, String) {
        let p = Proc::tunnelbed(name, args);
        let line = p.wait_for(banner, BANNER_WAIT);
        let addr = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        (p, addr)
    }

    /// The child's process id (for signals sent by the test).
    pub(crate) fn id(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// The name the child was started under.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The child's exit status if it has exited.
    pub(crate) fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Waits for a line containing `pat` and returns it; panics with the log if the child
    /// exits or `timeout` passes first.
    pub(crate) fn wait_for(&self, pat: &str, timeout: Duration) -> String {
        self.wait_any(&[pat], timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a line containing one of `pats`; an error (with the log) if the child
    /// exits or `timeout` passes first.
    pub(crate) fn wait_any(&self, pats: &[&str], timeout: Duration) -> Result<String, String> {
        let what = format!("a line containing {pats:?}");
        self.wait_until(&what, |l| pats.iter().any(|p| l.contains(p)), timeout)
    }

    /// Waits for a line for which `pred` holds (`what` names it in the failure); panics
    /// with the log if the child exits or `timeout` passes first.
    pub(crate) fn wait_where(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        self.wait_until(what, pred, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let log = self.log.clone();
        let (lines, cv) = &*log;
        let mut g = lines.lock().unwrap();
        loop {
            if let Some(l) = g.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(g);
                return Err(format!(
                    "{}: no {what} within {timeout:?}\n{}",
                    self.name,
                    self.tail()
                ));
            }
            if let Some(st) = self.exited() {
                drop(g);
                // Let the reader threads take the last lines.
                self.drain(Duration::from_secs(2));
                let g = lines.lock().unwrap();
                if let Some(l) = g.iter().find(|l| pred(l)) {
                    return Ok(l.clone());
                }
                drop(g);
                return Err(format!(
                    "{}: exited ({st}) before printing {what}\n{}",
                    self.name,
                    self.tail()
                ));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            g = cv.wait_timeout(g, wait).unwrap().0;
        }
    }

    /// How many lines so far contain `pat`.
    pub(crate) fn count(&self, pat: &str) -> usize {
        let g = self.log.0.lock().unwrap();
        g.iter().filter(|l| l.contains(pat)).count()
    }

    /// Every line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// The last lines of the child's log, for failure messages.
    pub(crate) fn tail(&self) -> String {
        let g = self.log.0.lock().unwrap();
        let from = g.len().saturating_sub(TAIL_LINES);
        let mut s = format!("--- last {} lines of {} ---\n", g.len() - from, self.name);
        for l in &g[from..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Waits (bounded) for the child to exit and returns its output lines; kills it and
    /// panics with its output if it is still running after `timeout`.
    pub(crate) fn finish(&self, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            if self.exited().is_some() {
                self.drain(Duration::from_secs(5));
                return self.lines();
            }
            if Instant::now() > end {
                self.kill();
                panic!(
                    "{}: still running after {timeout:?}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the child exited: waits (at most `limit`) until its pipes have been quiet for
    /// 200 ms, so the reader threads hold every line.
    fn drain(&self, limit: Duration) {
        let end = Instant::now() + limit;
        let (m, cv) = &*self.log;
        let mut g = m.lock().unwrap();
        let mut last = g.len();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let (ng, to) = cv
                .wait_timeout(g, Duration::from_millis(200).min(left))
                .unwrap();
            g = ng;
            if to.timed_out() && g.len() == last {
                return;
            }
            last = g.len();
        }
    }

    /// SIGKILL, as a crash.
    pub(crate) fn kill(&self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tunnelbed -v ARGS` as a command, for callers that add to it before starting it.
pub(crate) fn tunnelbed_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnelbed"));
    cmd.arg("-v")
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// A fresh scratch directory for test binary `suite`, this process and `name`.
pub(crate) fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(suite)
        .join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    d
}
