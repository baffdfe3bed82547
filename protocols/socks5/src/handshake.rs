//! Async SOCKS5 handshakes over any byte stream: the server side reads the greeting and
//! the request; the client side (for tests and tools) performs CONNECT.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{
    encode_reply, parse_greeting, parse_reply, parse_request, Addr, Command, Reply, Socks5Error,
    METHOD_NONE, METHOD_NO_AUTH, VERSION,
};

/// Largest handshake accepted (greeting plus request); anything longer is an attack.
const MAX_HANDSHAKE: usize = 1024;

fn invalid(e: Socks5Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_until<S, T>(
    s: &mut S,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, Socks5Error>,
) -> io::Result<T>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(v) = parse(buf).map_err(invalid)? {
            return Ok(v);
        }
        if buf.len() >= MAX_HANDSHAKE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "SOCKS5 handshake too long",
            ));
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed during SOCKS5 handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A parsed client request, plus any bytes the client sent after it (optimistic data).
#[derive(Debug)]
pub struct Request {
    /// CONNECT, BIND or UDP ASSOCIATE.
    pub command: Command,
    /// Destination (CONNECT) or the client's expected UDP source (ASSOCIATE).
    pub addr: Addr,
    /// Bytes that arrived after the request.
    pub early_data: Vec<u8>,
}

/// Server side: negotiates no-auth and reads the request. On a bad request it answers
/// with the matching reply code before returning the error.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Request> {
    let mut buf = Vec::new();
    let (no_auth, used) = read_until(s, &mut buf, parse_greeting).await?;
    buf.drain(..used);
    if !no_auth {
        s.write_all(&[VERSION, METHOD_NONE]).await?;
        return Err(invalid(Socks5Error::NoAcceptableMethod));
    }
    s.write_all(&[VERSION, METHOD_NO_AUTH]).await?;
    match read_until(s, &mut buf, parse_request).await {
        Ok((command, addr, used)) => {
            buf.drain(..used);
            Ok(Request {
                command,
                addr,
                early_data: buf,
            })
        }
        Err(e) => {
            let code = match e.get_ref().and_then(|i| i.downcast_ref::<Socks5Error>()) {
                Some(Socks5Error::Command(_)) => Some(Reply::CommandNotSupported),
                Some(Socks5Error::AddrType(_)) => Some(Reply::AddrTypeNotSupported),
                Some(_) => Some(Reply::GeneralFailure),
                None => None,
            };
            if let Some(code) = code {
                let _ = reply(s, code, &unspecified()).await;
            }
            Err(e)
        }
    }
}

/// `0.0.0.0:0`, the bound address to report when there is none.
pub fn unspecified() -> Addr {
    Addr::Ip(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Sends a reply with `code` and the bound address.
pub async fn reply<S: AsyncWrite + Unpin>(s: &mut S, code: Reply, bound: &Addr) -> io::Result<()> {
    let mut b = BytesMut::new();
    encode_reply(code, bound, &mut b);
    s.write_all(&b).await
}

/// Client side: CONNECT to `target` through the SOCKS5 server on `s`. Returns the reply
/// code (0 is success) and the bound address.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    target: &Addr,
) -> io::Result<(u8, Addr)> {
    request(s, 1, target).await
}

/// Client side: UDP ASSOCIATE; returns the reply code and the relay address.
pub async fn udp_associate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    from: &Addr,
) -> io::Result<(u8, Addr)> {
    request(s, 3, from).await
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cmd: u8,
    target: &Addr,
) -> io::Result<(u8, Addr)> {
    s.write_all(&[VERSION, 1, METHOD_NO_AUTH]).await?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await?;
    if m != [VERSION, METHOD_NO_AUTH] {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "SOCKS5 server refused no-auth",
        ));
    }
    let mut b = BytesMut::new();
    b.extend_from_slice(&[VERSION, cmd, 0]);
    target.encode(&mut b).map_err(invalid)?;
    s.write_all(&b).await?;
    let mut buf = Vec::new();
    let (code, addr, _) = read_until(s, &mut buf, parse_reply).await?;
    Ok((code, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_and_server_agree() {
        let (mut c, mut s) = tokio::io::duplex(4096);
        let target = Addr::Domain("example.test".into(), 443);
        let t2 = target.clone();
        let server = tokio::spawn(async move {
            let r = accept(&mut s).await.unwrap();
            assert_eq!(r.command, Command::Connect);
            assert_eq!(r.addr, t2);
            reply(&mut s, Reply::Succeeded, &unspecified())
                .await
                .unwrap();
            let mut x = [0u8; 5];
            s.read_exact(&mut x).await.unwrap();
            x
        });
        let (code, _) = connect(&mut c, &target).await.unwrap();
        assert_eq!(code, 0);
        c.write_all(b"hello").await.unwrap();
        assert_eq!(&server.await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn unsupported_command_gets_reply_7() {
        let (mut c, mut s) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { accept(&mut s).await });
        c.write_all(&[5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80])
            .await
            .unwrap();
        let mut r = [0u8; 12];
        c.read_exact(&mut r).await.unwrap();
        assert_eq!(&r[..2], &[5, 0]);
        assert_eq!(r[3], 7);
        assert!(server.await.unwrap().is_err());
    }
}
