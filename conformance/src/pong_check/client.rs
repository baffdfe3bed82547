//! The checker's side of one pong connection: a carrier to the remote under test, raw
//! bytes out, frames in.
//!
//! Writes go through a task of their own so that reading never waits on writing: a remote
//! that echoes while we are still sending (or that stops reading) cannot deadlock the
//! checker. Everything read is decoded with the crate's codec and recorded per stream in
//! [`Seen`]; what is kept is capped ([`MAX_KEPT`]), and a frame with a bad `len` from the
//! remote is reported, never trusted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tunnelbed_carrier::BoxStream;
use tunnelbed_pong::wire::{self, frame_type, RawFrame};

pub use crate::framework::text::{cut, secs};

/// Bytes of stream data one connection keeps before the case is stopped.
pub const MAX_KEPT: usize = 8 << 20;
/// Size of one read from the carrier.
const READ_CHUNK: usize = 64 * 1024;

/// An rst as received: the code byte and the description, decoded leniently (a
/// description that is not UTF-8 is shown lossily and flagged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RstSeen {
    /// The code byte (any value; unknown codes are kept as they came).
    pub code: u8,
    /// The description (lossy UTF-8).
    pub description: String,
    /// Whether the description was valid UTF-8.
    pub utf8: bool,
}

impl RstSeen {
    /// Parses an rst payload: `None` when it is empty.
    pub fn parse(p: &[u8]) -> Option<RstSeen> {
        let (&code, desc) = p.split_first()?;
        Some(RstSeen {
            code,
            description: String::from_utf8_lossy(desc).into_owned(),
            utf8: std::str::from_utf8(desc).is_ok(),
        })
    }

    /// The seed's name for the code, or a note that the seed does not define it.
    pub fn code_name(&self) -> String {
        match wire::RstCode::from_u8(self.code) {
            wire::RstCode::Other(c) => format!("{c} (not a code of the seed)"),
            c => format!("{} ({})", c.to_u8(), c.description()),
        }
    }
}

impl fmt::Display for RstSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.code_name())?;
        if !self.description.is_empty() {
            write!(f, " {:?}", cut(&self.description, 60))?;
        }
        if !self.utf8 {
            write!(f, " [description not UTF-8]")?;
        }
        Ok(())
    }
}

/// How the remote ended a stream (finish is tracked apart: it ends one direction only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// close.
    Close,
    /// rst, with its payload when there was one.
    Rst(Option<RstSeen>),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Close => write!(f, "close"),
            End::Rst(None) => write!(f, "rst without payload"),
            End::Rst(Some(r)) => write!(f, "rst {r}"),
        }
    }
}

/// What the remote sent on one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamSeen {
    /// Data payloads, concatenated.
    pub data: Vec<u8>,
    /// Size of each data frame, in order (datagram boundaries on relay streams).
    pub frame_sizes: Vec<usize>,
    /// The remote sent finish.
    pub fin: bool,
    /// Data frames that came after the remote's own finish.
    pub data_after_fin: usize,
    /// close or rst, the first one.
    pub end: Option<End>,
    /// Frames that came after `end`.
    pub after_end: usize,
    /// Types other than data/finish/close/rst the remote sent on this stream.
    pub other_types: Vec<u8>,
}

impl StreamSeen {
    /// Whether the remote said anything at all on this stream.
    pub fn answered(&self) -> bool {
        !self.data.is_empty()
            || !self.frame_sizes.is_empty()
            || self.fin
            || self.end.is_some()
            || !self.other_types.is_empty()
    }

    /// A short account of what arrived, for details.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.frame_sizes.is_empty() {
            parts.push(format!(
                "{} B data in {} frame(s)",
                self.data.len(),
                self.frame_sizes.len()
            ));
        }
        if self.fin {
            parts.push("finish".into());
        }
        if let Some(e) = &self.end {
            parts.push(e.to_string());
        }
        if !self.other_types.is_empty() {
            parts.push(format!("types {:02x?}", self.other_types));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Everything the remote sent on one connection, by stream.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Per stream id.
    pub streams: BTreeMap<u32, StreamSeen>,
    /// Frames received.
    pub frames: u64,
    /// Raw carrier bytes received (before framing).
    pub bytes_in: u64,
    kept: usize,
}

impl Seen {
    /// The stream's record (empty if nothing came for it).
    pub fn stream(&self, sid: u32) -> StreamSeen {
        self.streams.get(&sid).cloned().unwrap_or_default()
    }

    /// Bytes of data received on `sid`.
    pub fn data_len(&self, sid: u32) -> usize {
        self.streams.get(&sid).map_or(0, |s| s.data.len())
    }

    /// Whether the remote ended (close/rst) or finished `sid`.
    pub fn done(&self, sid: u32) -> bool {
        self.streams
            .get(&sid)
            .is_some_and(|s| s.fin || s.end.is_some())
    }

    /// Whether `sid` was ended with close or rst.
    pub fn ended(&self, sid: u32) -> bool {
        self.streams.get(&sid).is_some_and(|s| s.end.is_some())
    }

    fn record(&mut self, f: RawFrame) -> Result<(), Stop> {
        self.frames += 1;
        let s = self.streams.entry(f.stream_id).or_default();
        if s.end.is_some() {
            s.after_end += 1;
        }
        match f.kind {
            frame_type::DATA => {
                if self.kept + f.payload.len() > MAX_KEPT {
                    return Err(Stop::TooMuch);
                }
                self.kept += f.payload.len();
                if s.fin {
                    s.data_after_fin += 1;
                }
                s.data.extend_from_slice(&f.payload);
                s.frame_sizes.push(f.payload.len());
            }
            frame_type::FINISH => s.fin = true,
            frame_type::CLOSE => {
                s.end.get_or_insert(End::Close);
            }
            frame_type::RST => {
                s.end.get_or_insert(End::Rst(RstSeen::parse(&f.payload)));
            }
            k => {
                if s.other_types.len() < 16 {
                    s.other_types.push(k);
                }
            }
        }
        Ok(())
    }
}

/// Why waiting for the remote stopped before the condition held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing more within the wait.
    Timeout(Duration),
    /// The carrier ended (EOF, reset or another read error).
    Closed(String),
    /// The remote sent bytes that cannot be split into frames.
    Malformed(String),
    /// The remote sent more stream data than [`MAX_KEPT`].
    TooMuch,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Timeout(d) => write!(f, "no answer within {}", secs(*d)),
            Stop::Closed(how) => write!(f, "connection closed by the remote ({how})"),
            Stop::Malformed(e) => write!(f, "the remote sent a malformed frame: {e}"),
            Stop::TooMuch => write!(f, "the remote sent more than {MAX_KEPT} bytes of data"),
        }
    }
}

/// One pong connection to the remote under test.
pub struct Client {
    rd: ReadHalf<BoxStream>,
    tx: mpsc::UnboundedSender<Bytes>,
    write_error: Arc<Mutex<Option<String>>>,
    buf: BytesMut,
    scratch: Vec<u8>,
    /// Set once the carrier ended or the framing broke; later waits return it at once.
    stopped: Option<Stop>,
    /// What the remote sent so far.
    pub seen: Seen,
    /// Frames sent, for logs.
    label: String,
}

impl Client {
    /// Wraps a carrier stream; `label` prefixes the logs (the case id).
    pub fn new(carrier: BoxStream, label: &str) -> Client {
        let (rd, mut wr) = tokio::io::split(carrier);
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let write_error = Arc::new(Mutex::new(None));
        let we = write_error.clone();
        let lbl = label.to_string();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                let r = async {
                    wr.write_all(&b).await?;
                    wr.flush().await
                }
                .await;
                if let Err(e) = r {
                    tracing::debug!("{lbl}: write failed: {e}");
                    if let Ok(mut g) = we.lock() {
                        g.get_or_insert(e.to_string());
                    }
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        Client {
            rd,
            tx,
            write_error,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0u8; READ_CHUNK],
            stopped: None,
            seen: Seen::default(),
            label: label.to_string(),
        }
    }

    /// Queues bytes for one write (they leave in this order, each as one write: one
    /// WebSocket message on ws:// and wss://).
    pub fn send_bytes(&self, b: impl Into<Bytes>) {
        let b = b.into();
        tracing::trace!("{}: send {} B", self.label, b.len());
        // The writer only stops after a write error, which `write_error` reports.
        let _ = self.tx.send(b);
    }

    /// Queues one frame with any type byte and payload (payload at most 65500 bytes).
    pub fn send_frame(&self, sid: u32, kind: u8, payload: &[u8]) {
        self.send_bytes(frame(sid, kind, payload));
    }

    /// The first write error, if a write failed.
    pub fn write_error(&self) -> Option<String> {
        self.write_error.lock().ok().and_then(|g| g.clone())
    }

    /// Reads and records frames until `cond` holds on what was seen, or `within` passes,
    /// or the connection ends.
    pub async fn pump_until(
        &mut self,
        within: Duration,
        mut cond: impl FnMut(&Seen) -> bool,
    ) -> Result<(), Stop> {
        let deadline = Instant::now() + within;
        loop {
            if cond(&self.seen) {
                return Ok(());
            }
            if let Some(s) = &self.stopped {
                return Err(s.clone());
            }
            let n = match tokio::time::timeout_at(deadline, self.rd.read(&mut self.scratch)).await {
                Err(_) => return Err(Stop::Timeout(within)),
                Ok(Ok(0)) => {
                    let mut how = "EOF".to_string();
                    if let Some(w) = self.write_error() {
                        how.push_str(&format!("; our write failed: {w}"));
                    }
                    return Err(self.stop(Stop::Closed(how)));
                }
                Ok(Err(e)) => return Err(self.stop(Stop::Closed(e.to_string()))),
                Ok(Ok(n)) => n,
            };
            self.seen.bytes_in += n as u64;
            self.buf.extend_from_slice(&self.scratch[..n]);
            // Split off every complete frame; what stays is at most one partial frame
            // (len is checked against the limit first), so `buf` stays bounded.
            loop {
                match RawFrame::decode(&self.buf) {
                    Ok(Some((f, used))) => {
                        let _ = self.buf.split_to(used);
                        tracing::trace!(
                            "{}: recv s{} {} {} B",
                            self.label,
                            f.stream_id,
                            wire::kind_name(f.kind),
                            f.payload.len()
                        );
                        if let Err(s) = self.seen.record(f) {
                            return Err(self.stop(s));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let head = &self.buf[..self.buf.len().min(7)];
                        let m = format!("{e} (header bytes {head:02x?})");
                        return Err(self.stop(Stop::Malformed(m)));
                    }
                }
            }
        }
    }

    /// Waits `within` for the remote to end the connection, recording frames meanwhile.
    /// `Ok(how)` when it ended; `Err(Stop::Timeout)` if it is still open.
    pub async fn wait_closed(&mut self, within: Duration) -> Result<String, Stop> {
        self.wait_closed_or(within, |_| false).await.map(|h| {
            // `or` never holds here, so `h` is set.
            h.unwrap_or_default()
        })
    }

    /// Like [`Client::wait_closed`], but also stops (with `Ok(None)`) as soon as `or`
    /// holds: evidence that the remote went on.
    pub async fn wait_closed_or(
        &mut self,
        within: Duration,
        or: impl FnMut(&Seen) -> bool,
    ) -> Result<Option<String>, Stop> {
        match self.pump_until(within, or).await {
            Ok(()) => Ok(None),
            Err(Stop::Closed(how)) => Ok(Some(how)),
            Err(e) => Err(e),
        }
    }

    fn stop(&mut self, s: Stop) -> Stop {
        tracing::debug!("{}: {s}", self.label);
        self.stopped = Some(s.clone());
        s
    }
}

/// One frame's bytes, header included; the payload must fit (at most 65500 bytes).
pub fn frame(sid: u32, kind: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    if wire::encode_raw(&mut b, sid, kind, payload).is_err() {
        // Only our own case code builds frames; an oversized payload is cut to the limit
        // rather than panicking.
        b.clear();
        let _ = wire::encode_raw(&mut b, sid, kind, &payload[..wire::MAX_PAYLOAD]);
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rst_parse_is_lenient() {
        assert_eq!(RstSeen::parse(&[]), None);
        let r = RstSeen::parse(&[42, 0xff, b'a']).unwrap();
        assert_eq!(r.code, 42);
        assert!(!r.utf8);
        assert!(r.code_name().contains("not a code of the seed"));
        let r = RstSeen::parse(&[5]).unwrap();
        assert_eq!(r.to_string(), "code 5 (refused by dst)");
    }

    #[test]
    fn seen_records_per_stream() {
        let mut s = Seen::default();
        let f = |sid, kind, p: &[u8]| RawFrame {
            stream_id: sid,
            kind,
            payload: Bytes::copy_from_slice(p),
        };
        s.record(f(1, 0, b"ab")).unwrap();
        s.record(f(1, 7, b"")).unwrap();
        s.record(f(1, 0, b"c")).unwrap();
        s.record(f(3, 9, &[9, b'x'])).unwrap();
        s.record(f(3, 8, b"")).unwrap();
        s.record(f(5, 0x33, b"")).unwrap();
        let one = s.stream(1);
        assert_eq!(one.data, b"abc");
        assert_eq!(one.frame_sizes, [2, 1]);
        assert!(one.fin);
        assert_eq!(one.data_after_fin, 1);
        let three = s.stream(3);
        assert_eq!(
            three.end,
            Some(End::Rst(Some(RstSeen {
                code: 9,
                description: "x".into(),
                utf8: true
            })))
        );
        assert_eq!(three.after_end, 1);
        assert_eq!(s.stream(5).other_types, [0x33]);
        assert!(s.done(1) && s.ended(3) && !s.done(5));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(Duration::from_secs(5)), "5s");
        assert_eq!(secs(Duration::from_millis(300)), "300ms");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5s");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
