//! The checker's end of one carrier connection to the server under test: raw bytes out
//! (in the pieces a case chooses, through a writer task so a write never blocks a read),
//! raw bytes in, and how the connection ended. Every wait is bounded by the caller's
//! limit; what is read is capped at [`MAX_READ`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tunnelbed_carrier::BoxStream;

/// Most bytes a case keeps from the server (a longer answer ends the read with an error).
pub const MAX_READ: usize = 16 << 20;

/// How the server's side of the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// A clean end (TCP FIN, WebSocket close).
    Eof,
    /// An error (reset, broken carrier), with its text.
    Error(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => write!(f, "closed (EOF)"),
            End::Error(e) => write!(f, "closed ({e})"),
        }
    }
}

enum Out {
    Bytes(Vec<u8>),
    Shutdown,
}

/// One connection: what it read so far and how it ended, if it did.
pub struct Conn {
    rd: ReadHalf<BoxStream>,
    out: mpsc::UnboundedSender<Out>,
    write_error: Arc<Mutex<Option<String>>>,
    /// Every byte read so far.
    pub got: Vec<u8>,
    /// Set once the server's side ended.
    pub end: Option<End>,
}

impl Conn {
    /// Wraps a carrier; a writer task owns its write half.
    pub fn new(carrier: BoxStream) -> Conn {
        let (rd, mut wr) = tokio::io::split(carrier);
        let (out, mut rx) = mpsc::unbounded_channel::<Out>();
        let write_error = Arc::new(Mutex::new(None));
        let err = write_error.clone();
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                let r = match o {
                    Out::Bytes(b) => {
                        async {
                            wr.write_all(&b).await?;
                            wr.flush().await
                        }
                        .await
                    }
                    Out::Shutdown => wr.shutdown().await,
                };
                if let Err(e) = r {
                    if let Ok(mut g) = err.lock() {
                        *g = Some(e.to_string());
                    }
                    return;
                }
            }
        });
        Conn {
            rd,
            out,
            write_error,
            got: Vec::new(),
            end: None,
        }
    }

    /// Queues bytes for the server (written in this piece, in order).
    pub fn send(&self, b: impl Into<Vec<u8>>) {
        let _ = self.out.send(Out::Bytes(b.into()));
    }

    /// Ends our side (TCP FIN; a WebSocket close) after what is queued.
    pub fn shutdown(&self) {
        let _ = self.out.send(Out::Shutdown);
    }

    /// The first write error, if a write failed.
    pub fn write_error(&self) -> Option<String> {
        self.write_error.lock().ok().and_then(|g| g.clone())
    }

    /// Reads until `cond` holds on what was read, the server's side ends, or `within`
    /// passes; returns whether `cond` holds.
    pub async fn read_until(&mut self, within: Duration, cond: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 64 * 1024];
        while !cond(&self.got) && self.end.is_none() {
            match tokio::time::timeout_at(deadline, self.rd.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) => self.end = Some(End::Eof),
                Ok(Ok(n)) => {
                    if self.got.len() + n > MAX_READ {
                        self.end = Some(End::Error(format!(
                            "checker stopped reading after {MAX_READ} bytes"
                        )));
                    } else {
                        self.got.extend_from_slice(&buf[..n]);
                    }
                }
                Ok(Err(e)) => self.end = Some(End::Error(e.to_string())),
            }
        }
        cond(&self.got)
    }

    /// Reads until the server's side ends or `within` passes; returns whether it ended.
    pub async fn wait_end(&mut self, within: Duration) -> bool {
        self.read_until(within, |_| false).await;
        self.end.is_some()
    }

    /// A short account of what was read and how the connection stands, for details.
    pub fn summary(&self) -> String {
        let head: String = self
            .got
            .iter()
            .take(24)
            .map(|b| format!("{b:02x}"))
            .collect();
        let more = if self.got.len() > 24 { "…" } else { "" };
        let end = match &self.end {
            Some(e) => e.to_string(),
            None => "still open".into(),
        };
        format!("{} bytes read [{head}{more}], {end}", self.got.len())
    }
}
