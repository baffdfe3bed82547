//! Carriers: the ordered byte streams proxy protocols run over — `tcp://`, `tls://`
//! (rustls), `ws://` and `wss://` (tokio-tungstenite, one binary message per write),
//! `h2c://` and `h2://` (one HTTP/2 request whose two bodies are the stream, the `h2`
//! crate), `h3://` (the same over HTTP/3 and QUIC: quinn and the `h3` crate) and
//! `http://` and `https://` (a `POST` answered `200`, then raw bytes). Each is set up
//! over a TCP stream (or, for `h3://`, a UDP socket) from any `Net`, so the same code
//! runs for real and in simulation, and each is handed back as one boxed byte stream.

pub mod http1;
pub mod http2;
pub mod http3;
pub mod quic_udp;
pub mod seeded;
pub mod tls;
pub mod url;
pub mod ws;

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tunnelbed_netio::{Net, TcpConn};

pub use crate::url::{CarrierKind, CarrierUrl};

/// Any ordered, reliable byte stream a protocol session can run over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// A carrier stream of whatever kind.
pub type BoxStream = Box<dyn ByteStream>;

/// Client side: opens a carrier to `url` over `net`.
pub async fn connect<N: Net>(
    net: &N,
    url: &CarrierUrl,
    tls: &tls::ClientTls,
) -> io::Result<BoxStream> {
    if url.kind == CarrierKind::H3 {
        let seed = http3::QuicSeed(net.quic_seed());
        return Ok(Box::new(http3::client(net, url, tls, &seed).await?));
    }
    let addrs = net.resolve(&url.host, url.port).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match net.connect_tcp(a).await {
            Ok(tcp) => return wrap_client(tcp, url, tls).await,
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn wrap_client<S: TcpConn>(
    tcp: S,
    url: &CarrierUrl,
    tls: &tls::ClientTls,
) -> io::Result<BoxStream> {
    Ok(match url.kind {
        CarrierKind::Tcp => Box::new(tcp),
        CarrierKind::Tls => Box::new(tls.connect(&url.host, tcp).await?),
        CarrierKind::Ws => Box::new(ws::client(tcp, url).await?),
        CarrierKind::Wss => {
            let t = tls.connect(&url.host, tcp).await?;
            Box::new(ws::client(t, url).await?)
        }
        CarrierKind::H2c => Box::new(http2::client(tcp, url).await?),
        CarrierKind::H2 => {
            let t = tls.connect_h2(&url.host, tcp).await?;
            Box::new(http2::client(t, url).await?)
        }
        CarrierKind::Http => Box::new(http1::client(tcp, url).await?),
        CarrierKind::Https => {
            let t = tls.connect(&url.host, tcp).await?;
            Box::new(http1::client(t, url).await?)
        }
        CarrierKind::H3 => return Err(not_tcp()),
    })
}

/// Server side: finishes the carrier handshake on an accepted TCP stream (every kind
/// but `h3://`, which has its own listener).
pub async fn accept<S: TcpConn>(
    tcp: S,
    kind: CarrierKind,
    tls: Option<&tls::ServerTls>,
) -> io::Result<BoxStream> {
    let need_tls = || {
        tls.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "tls://, wss://, h2:// and https:// listeners need a certificate",
            )
        })
    };
    Ok(match kind {
        CarrierKind::Tcp => Box::new(tcp),
        CarrierKind::Tls => Box::new(need_tls()?.accept(tcp).await?),
        CarrierKind::Ws => Box::new(ws::server(tcp).await?),
        CarrierKind::Wss => {
            let t = need_tls()?.accept(tcp).await?;
            Box::new(ws::server(t).await?)
        }
        CarrierKind::H2c => Box::new(http2::server(tcp).await?),
        CarrierKind::H2 => {
            let t = need_tls()?.accept_h2(tcp).await?;
            Box::new(http2::server(t).await?)
        }
        CarrierKind::Http => Box::new(http1::server(tcp).await?),
        CarrierKind::Https => {
            let t = need_tls()?.accept(tcp).await?;
            Box::new(http1::server(t).await?)
        }
        CarrierKind::H3 => return Err(not_tcp()),
    })
}

fn not_tcp() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "h3:// runs over UDP: accept it with http3::H3Listener, not on a TCP stream",
    )
}
