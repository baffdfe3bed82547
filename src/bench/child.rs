//! Child processes of a benchmark: started with their output piped, waited for until
//! they say what the bench needs (a `listening ADDR` banner, a settings line), every
//! wait bounded, and killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a child may take to print what [`spawn_until`] waits for.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of a child's output kept after [`spawn_until`] returns, for [`Proc::ask`];
/// later lines are dropped (still drained) so a chatty child costs no memory.
const KEPT_LINES: usize = 256;

/// A running child: killed (and reaped) when dropped. It keeps the child's stdin open,
/// so a child that exits when its stdin closes lives as long as this.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// The child's process id (for `/proc/PID/...` figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `question` as a line to the child's stdin and returns the first line after
    /// it on the piped output that starts with `answer`, waiting at most `timeout` (a
    /// child that takes questions on stdin, as `bench pong --child` does).
    pub fn ask(
        &mut self,
        question: &str,
        answer: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        while self.lines.try_recv().is_ok() {}
        let stdin = self.stdin.as_mut().context("the child's stdin is closed")?;
        writeln!(stdin, "{question}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("asking child {} {question:?}", self.pid()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(answer) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!(
                    "child {} gave no {answer:?} line within {timeout:?} after {question:?}",
                    self.pid()
                ),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which output of the child to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipe {
    /// Standard output (standard error stays as the caller set it; inherited by default).
    Stdout,
    /// Standard error (standard output stays as the caller set it).
    Stderr,
}

/// Starts `cmd` and reads `pipe` line by line until a line satisfies `until`, at most
/// [`START_TIMEOUT`]; returns the child and the lines read, the matching one last. The
/// rest of the output is drained in the background so the child never blocks on a full
/// pipe. Fails, with the lines seen, when the child ends or stays silent first.
pub fn spawn_until(
    mut cmd: Command,
    pipe: Pipe,
    until: impl Fn(&str) -> bool,
) -> anyhow::Result<(Proc, Vec<String>)> {
    match pipe {
        Pipe::Stdout => cmd.stdout(Stdio::piped()),
        Pipe::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let out: Box<dyn Read + Send> = match pipe {
        Pipe::Stdout => Box::new(child.stdout.take().context("no stdout")?),
        Pipe::Stderr => Box::new(child.stderr.take().context("no stderr")?),
    };
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::sync_channel(KEPT_LINES);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // Nobody reading (or too far behind): drop the line, keep draining.
            let _ = tx.try_send(line);
        }
    });
    // Owned from here, so an early return kills the child.
    let proc = Proc {
        child,
        stdin,
        lines: rx,
    };
    let mut seen = Vec::new();
    loop {
        match proc.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                let done = until(&line);
                seen.push(line);
                if done {
                    return Ok((proc, seen));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "{cmd:?} printed nothing awaited within {START_TIMEOUT:?}; it printed {seen:?}"
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{cmd:?} ended before printing what was awaited; it printed {seen:?}")
            }
        }
    }
}

/// Starts `cmd` and returns it with the second word of its first line on `pipe`: the
/// address its `listening ADDR` (or `netem: ADDR -> ...`) banner names.
pub fn spawn_banner(cmd: Command, pipe: Pipe) -> anyhow::Result<(Proc, String)> {
    let (p, lines) = spawn_until(cmd, pipe, |_| true)?;
    let line = lines.last().map(String::as_str).unwrap_or("");
    let addr = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no address in the banner {line:?}"))?
        .to_string();
    Ok((p, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_line_and_names_what_it_saw_when_missing() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo one; echo 'listening 127.0.0.1:9 now'; echo three",
        ]);
        let (_p, lines) = spawn_until(c, Pipe::Stdout, |l| l.starts_with("listening")).unwrap();
        assert_eq!(lines, ["one", "listening 127.0.0.1:9 now"]);
        let mut c = Command::new("sh");
        c.args(["-c", "echo 'listening 127.0.0.1:9' >&2"]);
        assert_eq!(spawn_banner(c, Pipe::Stderr).unwrap().1, "127.0.0.1:9");
        let mut c = Command::new("sh");
        c.args(["-c", "echo nope"]);
        let e = spawn_until(c, Pipe::Stdout, |l| l == "yes").err().unwrap();
        assert!(e.to_string().contains("ended before") && e.to_string().contains("nope"));
    }
}
