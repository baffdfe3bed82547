//! `tunnelbed http-source`: a small, fast HTTP/1.1 server that serves deterministic bulk
//! data (`GET /bytes/N`), so downloads through a proxy can be checked by SHA-256 without
//! a file on disk, and measured without Python's http.server becoming the bottleneck.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::EXIT_OK;

/// Arguments of `http-source`, the deterministic HTTP origin the tests download from.
#[derive(Args, Debug)]
pub struct HttpSourceArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks one; printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Largest body served, in bytes.
    #[arg(long, default_value_t = 1 << 34)]
    pub max_bytes: u64,
}

pub use crate::pattern::{expected_sha256, fill_pattern, pattern_byte};

/// Serves `GET /bytes/N` until interrupted.
pub fn run(a: HttpSourceArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let lsn = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        println!("listening {}", lsn.local_addr()?);
        loop {
            let (s, peer) = lsn.accept().await?;
            let max = a.max_bytes;
            tokio::spawn(async move {
                if let Err(e) = serve(s, max).await {
                    tracing::debug!("http-source: {peer}: {e}");
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(ExitCode::from(EXIT_OK))
    })
}

async fn serve(mut s: tokio::net::TcpStream, max: u64) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > 16 * 1024 {
            s.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        }
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let n: Option<u64> = path.strip_prefix("/bytes/").and_then(|x| x.parse().ok());
    let Some(n) = n.filter(|n| *n <= max) else {
        let body = format!("use GET /bytes/N with N <= {max}\n");
        s.write_all(
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        return Ok(());
    };
    s.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(chunk.len() as u64) as usize;
        fill_pattern(off, &mut chunk[..k]);
        s.write_all(&chunk[..k]).await?;
        off += k as u64;
    }
    s.shutdown().await
}
