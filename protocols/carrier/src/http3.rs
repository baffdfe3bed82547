//! The HTTP/3 carrier (`h3://`): QUIC (quinn) with ALPN `h3`, and on it one HTTP/3
//! request (the `h3` crate) whose two bodies are the byte stream, the way the `h2://`
//! carrier uses one HTTP/2 request: the local sends a `POST` to the URL's path with a body
//! that never ends until the local closes, the remote answers `200` at once with a body
//! that streams back. The end of a body is a half-close; a reset stream or a lost
//! connection reads as an error.
//!
//! QUIC runs over a UDP socket from any `Net` ([`crate::quic_udp`]), so the simulator
//! runs this same code over its link model. One carrier is one QUIC connection holding
//! one request; a second request on it is refused with `H3_REQUEST_REJECTED`. The
//! client uses one QUIC endpoint (one UDP socket) per carrier.
//!
//! Bounds: QUIC flow control caps what either side buffers ([`STREAM_WINDOW`] per
//! stream, [`CONN_WINDOW`] per connection, [`SEND_WINDOW`] queued for sending); the peer
//! may open [`MAX_BIDI`] request streams at once and [`MAX_UNI`] unidirectional ones;
//! header sections are capped at [`MAX_FIELD_SECTION`]; a connection with nothing
//! received for [`IDLE_TIMEOUT`] ends (keep-alives every [`KEEP_ALIVE`] keep a quiet
//! carrier up); after the carrier is dropped its connection gets [`LINGER`] to finish.
//! The handshake itself is bounded by the caller (pong's connect and header timeouts).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use http::{Method, Request, Response, StatusCode};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AsyncUdpSocket, Endpoint, EndpointConfig, Runtime, TokioRuntime, TransportConfig, VarInt,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tunnelbed_netio::{Net, UdpSock};

use crate::quic_udp::NetUdp;
use crate::seeded::QuicSeeds;
use crate::tls::{ClientTls, ServerTls};
use crate::url::CarrierUrl;

/// Per-stream receive window: large enough that one carrier fills a fast link.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection receive window (one request per connection, so a little above it).
pub const CONN_WINDOW: u32 = 8 << 20;
/// Bytes one connection may have queued for sending and not yet acknowledged.
pub const SEND_WINDOW: u64 = 8 << 20;
/// Largest header section we accept or send.
pub const MAX_FIELD_SECTION: u64 = 16 << 10;
/// Request streams a client may have open at once on a server: the carrier's one, and
/// one more so that a second request is answered (refused) rather than left waiting.
pub const MAX_BIDI: u32 = 2;
/// Unidirectional streams a peer may open (HTTP/3 control and the two QPACK streams).
pub const MAX_UNI: u32 = 3;
/// A connection with nothing received for this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a quiet connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a dropped carrier's connection may take to close.
pub const LINGER: Duration = Duration::from_secs(10);
/// Largest chunk handed to HTTP/3 per write.
pub const MAX_CHUNK: usize = 64 << 10;
/// `H3_NO_ERROR`: the QUIC application close code for a clean end.
const H3_NO_ERROR: u32 = 0x100;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn conn_err(e: quinn::ConnectionError) -> io::Error {
    match e {
        quinn::ConnectionError::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "h3 carrier: QUIC idle timeout")
        }
        e => io::Error::new(io::ErrorKind::ConnectionAborted, format!("h3 carrier: {e}")),
    }
}

fn stream_err(e: StreamError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, format!("h3 carrier: {e}"))
}

/// Randomness a QUIC endpoint uses. Real endpoints take it from the OS; the simulator
/// gives a seed so that a run replays byte for byte.
#[derive(Clone, Debug, Default)]
pub struct QuicSeed(pub Option<[u8; 32]>);

impl QuicSeed {
    fn seeds(&self) -> Option<QuicSeeds> {
        self.0.map(QuicSeeds::new)
    }
}

fn endpoint_config(seeds: &Option<QuicSeeds>) -> EndpointConfig {
    match seeds {
        Some(s) => s.endpoint_config(),
        None => EndpointConfig::default(),
    }
}

fn transport(server: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONN_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(if server { MAX_BIDI } else { 0 }))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .datagram_receive_buffer_size(None);
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

type ClientSend = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type ClientRecv = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;
type ServerSend = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type ServerRecv = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// The sending half of the carrier's request stream, client or server side.
enum SendSide {
    Client(ClientSend),
    Server(ServerSend),
}

impl SendSide {
    async fn send(&mut self, b: Bytes) -> Result<(), StreamError> {
        match self {
            SendSide::Client(s) => s.send_data(b).await,
            SendSide::Server(s) => s.send_data(b).await,
        }
    }

    async fn finish(&mut self) -> Result<(), StreamError> {
        match self {
            SendSide::Client(s) => s.finish().await,
            SendSide::Server(s) => s.finish().await,
        }
    }
}

/// The receiving half of the carrier's request stream, client or server side.
enum RecvSide {
    Client(ClientRecv),
    Server(ServerRecv),
}

impl RecvSide {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        fn take(mut b: impl Buf) -> Bytes {
            b.copy_to_bytes(b.remaining())
        }
        match self {
            RecvSide::Client(s) => s.poll_recv_data(cx).map(|r| r.map(|o| o.map(take))),
            RecvSide::Server(s) => s.poll_recv_data(cx).map(|r| r.map(|o| o.map(take))),
        }
    }

    /// Reads and drops what is left, until the peer's end of body or an error.
    async fn drain(&mut self) {
        while let Ok(Some(_)) = std::future::poll_fn(|cx| self.poll_data(cx)).await {}
    }
}

type SendFuture = Pin<Box<dyn Future<Output = (SendSide, Result<(), StreamError>)> + Send>>;

/// An HTTP/3 request body and response body seen as one byte stream.
///
/// A write hands at most [`MAX_CHUNK`] bytes to HTTP/3 and returns; the next write,
/// flush or shutdown first waits until that chunk was taken (QUIC flow control), and
/// reports its error if it failed.
pub struct H3Bytes {
    send: Option<SendSide>,
    in_flight: Option<SendFuture>,
    end_sent: bool,
    recv: Option<RecvSide>,
    pending: Bytes,
    eof: bool,
    /// Dropped with the carrier: hands the receiving half to the connection task, which
    /// lingers, then closes the connection.
    back: Option<oneshot::Sender<Option<RecvSide>>>,
}

impl H3Bytes {
    fn new(send: SendSide, recv: RecvSide, back: oneshot::Sender<Option<RecvSide>>) -> Self {
        Self {
            send: Some(send),
            in_flight: None,
            end_sent: false,
            recv: Some(recv),
            pending: Bytes::new(),
            eof: false,
            back: Some(back),
        }
    }

    fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(f) = self.in_flight.as_mut() {
            let (side, r) = ready!(f.as_mut().poll(cx));
            self.in_flight = None;
            self.send = Some(side);
            r.map_err(stream_err)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H3Bytes {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            let _ = back.send(self.recv.take());
        }
    }
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// Client side: resolves `url`'s host, opens a QUIC connection (ALPN `h3`, the
/// certificate checked against the host) from a fresh UDP socket, sends the `POST` to
/// `url`'s path and returns once the remote answered with a 2xx status.
pub async fn client<N: Net>(
    net: &N,
    url: &CarrierUrl,
    tls: &ClientTls,
    seed: &QuicSeed,
) -> io::Result<H3Bytes> {
    let addrs = net.resolve(&url.host, url.port).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match client_at(net, a, url, tls, seed).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// quinn's socket for `sock`: the kernel socket with quinn's own batched I/O (GSO/GRO)
/// when `sock` is a plain OS socket, else [`NetUdp`] (the simulator, or a run that
/// records every datagram), one datagram per call.
fn quic_socket<U: UdpSock>(sock: U) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    match sock.kernel_socket() {
        Some(kernel) => {
            let kernel = kernel?;
            // The duplicate descriptor keeps the socket; this handle goes.
            drop(sock);
            TokioRuntime.wrap_udp_socket(kernel)
        }
        None => Ok(Arc::new(NetUdp::new(sock)?)),
    }
}

async fn client_at<N: Net>(
    net: &N,
    addr: SocketAddr,
    url: &CarrierUrl,
    tls: &ClientTls,
    seed: &QuicSeed,
) -> io::Result<H3Bytes> {
    let seeds = seed.seeds();
    let sock = quic_socket(net.bind_udp(unspecified_like(addr)).await?)?;
    let endpoint = Endpoint::new_with_abstract_socket(
        endpoint_config(&seeds),
        None,
        sock,
        Arc::new(TokioRuntime),
    )?;
    let crypto = QuicClientConfig::try_from(tls.h3_config()).map_err(other)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(false));
    if let Some(s) = &seeds {
        cfg.initial_dst_cid_provider(s.initial_dst_cid());
    }
    let conn = endpoint
        .connect_with(cfg, addr, &url.host)
        .map_err(other)?
        .await
        .map_err(conn_err)?;
    let (mut driver, mut requests) = h3::client::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .send_grease(false)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(other)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{}{}", url.authority(), url.path))
        .body(())
        .map_err(other)?;
    let exchange = async {
        let mut stream = requests.send_request(req).await.map_err(stream_err)?;
        let resp = stream.recv_response().await.map_err(stream_err)?;
        Ok::<_, io::Error>((stream, resp))
    };
    // The connection's driver runs alongside (it reads the server's control stream).
    let r = tokio::select! {
        biased;
        r = exchange => r,
        e = driver.wait_idle() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("h3 carrier: the connection ended before the response: {e}"),
        )),
    };
    let (stream, resp) = match r {
        Ok(x) => x,
        Err(e) => {
            conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
            return Err(e);
        }
    };
    if !resp.status().is_success() {
        conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("h3 carrier: the remote answered {}", resp.status()),
        ));
    }
    let (back, returned) = oneshot::channel::<Option<RecvSide>>();
    tokio::spawn(async move {
        // Holding `requests` keeps the connection open (dropping the last one closes
        // it). Drive the connection until the carrier is dropped or the connection ends.
        let _requests = requests;
        let recv = tokio::select! {
            biased;
            e = driver.wait_idle() => {
                tracing::debug!("h3 carrier (client): connection ended: {e}");
                return;
            }
            r = returned => r.ok().flatten(),
        };
        // Linger: read the remote's body to its end (so everything it sent arrived),
        // then close the connection; all of it bounded.
        let _ = tokio::time::timeout(LINGER, async {
            let drain = async {
                if let Some(mut recv) = recv {
                    recv.drain().await;
                }
            };
            tokio::select! {
                biased;
                _ = driver.wait_idle() => {}
                _ = drain => {}
            }
        })
        .await;
        conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
        let _ = tokio::time::timeout(LINGER, endpoint.wait_idle()).await;
    });
    let (send, recv) = stream.split();
    Ok(H3Bytes::new(
        SendSide::Client(send),
        RecvSide::Client(recv),
        back,
    ))
}

/// Server side of `h3://`: a QUIC endpoint on a UDP socket from a `Net`.
pub struct H3Listener {
    endpoint: Endpoint,
}

impl H3Listener {
    /// Binds a UDP socket on `addr` and serves QUIC with `tls`'s certificate (ALPN
    /// `h3`).
    pub async fn bind<N: Net>(
        net: &N,
        addr: SocketAddr,
        tls: &ServerTls,
        seed: &QuicSeed,
    ) -> io::Result<Self> {
        let seeds = seed.seeds();
        let sock = quic_socket(net.bind_udp(addr).await?)?;
        let crypto = Arc::new(QuicServerConfig::try_from(tls.h3_config()).map_err(other)?);
        let mut cfg = match &seeds {
            Some(s) => quinn::ServerConfig::new(crypto, s.token_key()),
            None => quinn::ServerConfig::with_crypto(crypto),
        };
        cfg.transport_config(transport(true));
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config(&seeds),
            Some(cfg),
            sock,
            Arc::new(TokioRuntime),
        )?;
        Ok(Self { endpoint })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Waits for the next connection attempt.
    pub async fn accept(&self) -> io::Result<H3Incoming> {
        match self.endpoint.accept().await {
            Some(i) => Ok(H3Incoming(i)),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "h3 listener: the endpoint closed",
            )),
        }
    }
}

/// A QUIC connection attempt on an [`H3Listener`].
pub struct H3Incoming(quinn::Incoming);

impl H3Incoming {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.0.remote_address()
    }

    /// Finishes the QUIC and HTTP/3 handshakes and takes the first request, which must
    /// be a `POST` (any path); it is answered `200` at once. Other methods get `405`
    /// and an error.
    pub async fn finish(self) -> io::Result<H3Bytes> {
        let conn = self.0.await.map_err(conn_err)?;
        let mut h3c = h3::server::builder()
            .max_field_section_size(MAX_FIELD_SECTION)
            .send_grease(false)
            .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(other)?;
        let resolver = match h3c.accept().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "h3 carrier: the connection closed before a request",
                ))
            }
            Err(e) => return Err(other(e)),
        };
        let (req, mut stream) = resolver.resolve_request().await.map_err(stream_err)?;
        if req.method() != Method::POST {
            let answer = Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .body(())
                .map_err(other)?;
            let _ = stream.send_response(answer).await;
            let _ = stream.finish().await;
            // The answer must reach the client before the connection goes: it closes
            // once it read it; bounded.
            tokio::spawn(async move {
                let _h3 = h3c;
                let _stream = stream;
                let _ = tokio::time::timeout(LINGER, conn.closed()).await;
                conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
            });
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "h3 carrier: {} request refused (only POST carries pong)",
                    req.method()
                ),
            ));
        }
        let ok = Response::builder()
            .status(StatusCode::OK)
            .body(())
            .map_err(other)?;
        stream.send_response(ok).await.map_err(stream_err)?;
        let (send, recv) = stream.split();
        let (back, mut returned) = oneshot::channel::<Option<RecvSide>>();
        tokio::spawn(async move {
            // Polling `accept` drives the connection; further requests are refused.
            let refuse_more = async {
                loop {
                    match h3c.accept().await {
                        Ok(Some(extra)) => {
                            tokio::spawn(async move {
                                if let Ok(Ok((_, mut s))) =
                                    tokio::time::timeout(LINGER, extra.resolve_request()).await
                                {
                                    s.stop_stream(Code::H3_REQUEST_REJECTED);
                                    s.stop_sending(Code::H3_REQUEST_REJECTED);
                                }
                            });
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::debug!("h3 carrier (server): connection ended: {e}");
                            return;
                        }
                    }
                }
            };
            let mut refuse_more = std::pin::pin!(refuse_more);
            tokio::select! {
                biased;
                _ = &mut refuse_more => return,
                _ = &mut returned => {}
            }
            // The carrier is gone and our body ended: the client closes the connection
            // once it read that end; give it a bounded time.
            let _ = tokio::time::timeout(LINGER, async {
                tokio::select! {
                    biased;
                    _ = conn.closed() => {}
                    _ = &mut refuse_more => {}
                }
            })
            .await;
            conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
        });
        Ok(H3Bytes::new(
            SendSide::Server(send),
            RecvSide::Server(recv),
            back,
        ))
    }
}

impl AsyncRead for H3Bytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let Some(recv) = this.recv.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(recv.poll_data(cx)) {
                Ok(Some(b)) => this.pending = b,
                Ok(None) => this.eof = true,
                Err(e) => return Poll::Ready(Err(stream_err(e))),
            }
        }
    }
}

impl AsyncWrite for H3Bytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.end_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_in_flight(cx))?;
        let Some(mut side) = this.send.take() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let n = buf.len().min(MAX_CHUNK);
        let data = Bytes::copy_from_slice(&buf[..n]);
        let mut f: SendFuture = Box::pin(async move {
            let r = side.send(data).await;
            (side, r)
        });
        // Start it now: usually the chunk fits the window and is taken at once.
        match f.as_mut().poll(cx) {
            Poll::Ready((side, r)) => {
                this.send = Some(side);
                r.map_err(stream_err)?;
            }
            Poll::Pending => this.in_flight = Some(f),
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_in_flight(cx)
    }

    /// Ends our body (a QUIC FIN on the request stream): a half-close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_in_flight(cx))?;
        if !this.end_sent {
            this.end_sent = true;
            if let Some(mut side) = this.send.take() {
                this.in_flight = Some(Box::pin(async move {
                    let r = side.finish().await;
                    (side, r)
                }));
                ready!(this.poll_in_flight(cx))?;
            }
        }
        Poll::Ready(Ok(()))
    }
}
