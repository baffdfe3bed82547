//! TLS for carriers (rustls with the ring provider). Servers use a certificate from files
//! or a self-signed one made at start; clients trust the system-independent roots they
//! are given (a CA file, or the server's self-signed certificate), or — only when asked
//! with `--insecure` — anything.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Server-side TLS settings.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The same certificate offering ALPN `h2` (for `h2://` listeners).
    h2_acceptor: tokio_rustls::TlsAcceptor,
    /// The same certificate offering ALPN `h3` (for `h3://` listeners, over QUIC).
    h3: Arc<ServerConfig>,
    /// The certificate served (DER), so tests and tools can trust it.
    pub cert_der: Vec<u8>,
}

impl ServerTls {
    /// A fresh self-signed certificate for `names` (e.g. `localhost`, `127.0.0.1`).
    pub fn self_signed(names: &[String]) -> io::Result<Self> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(other)?;
        let cert = ck.cert.der().to_vec();
        let key = ck.key_pair.serialize_der();
        Self::from_der(cert, key)
    }

    /// A self-signed Ed25519 certificate for `names` whose key, and every random
    /// value the TLS handshakes draw, come from `seed`: for the simulator, where a run
    /// must replay byte for byte. No session tickets (resumption would read the clock).
    pub fn seeded(names: &[String], seed: [u8; 32]) -> io::Result<Self> {
        let rng = crate::seeded::SeededRng::new(seed);
        let key_der = crate::seeded::ed25519_pkcs8(&rng);
        let kp = rcgen::KeyPair::try_from(key_der.as_slice()).map_err(other)?;
        let cert = rcgen::CertificateParams::new(names.to_vec())
            .map_err(other)?
            .self_signed(&kp)
            .map_err(other)?;
        let cert = cert.der().to_vec();
        let mut cfg = ServerConfig::builder_with_provider(crate::seeded::provider(rng))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.clone())],
                PrivateKeyDer::try_from(key_der).map_err(other)?,
            )
            .map_err(other)?;
        cfg.send_tls13_tickets = 0;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Self::from_config(cfg, cert))
    }

    /// Certificate chain and key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Self> {
        let certs = read_pem_certs(cert)?;
        let first = certs
            .first()
            .ok_or_else(|| other(format!("{}: no certificate", cert.display())))?
            .to_vec();
        use rustls::pki_types::pem::PemObject;
        let key_pem = std::fs::read(key)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| other(format!("{}: {e}", key.display())))?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(other)?;
        Ok(Self::from_config(cfg, first))
    }

    fn from_config(cfg: ServerConfig, cert_der: Vec<u8>) -> Self {
        let mut h2 = cfg.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        let mut h3 = cfg.clone();
        h3.alpn_protocols = vec![b"h3".to_vec()];
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            h2_acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(h2)),
            h3: Arc::new(h3),
            cert_der,
        }
    }

    fn from_der(cert: Vec<u8>, key: Vec<u8>) -> io::Result<Self> {
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.clone())],
                PrivateKeyDer::try_from(key).map_err(other)?,
            )
            .map_err(other)?;
        Ok(Self::from_config(cfg, cert))
    }

    /// The served certificate as PEM, for clients to trust.
    pub fn cert_pem(&self) -> String {
        use std::fmt::Write;
        let b64 = base64_encode(&self.cert_der);
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            let _ = writeln!(s, "{}", String::from_utf8_lossy(line));
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    }

    /// The rustls settings offering ALPN `h3`, for the QUIC endpoint of an `h3://`
    /// listener.
    pub fn h3_config(&self) -> Arc<ServerConfig> {
        self.h3.clone()
    }

    /// Runs the server handshake.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: S,
    ) -> io::Result<tokio_rustls::server::TlsStream<S>> {
        self.acceptor.accept(s).await
    }

    /// Runs the server handshake offering ALPN `h2`; fails unless the client agreed to
    /// it (an HTTP/2 server must not guess).
    pub async fn accept_h2<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: S,
    ) -> io::Result<tokio_rustls::server::TlsStream<S>> {
        let t = self.h2_acceptor.accept(s).await?;
        if t.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client did not offer ALPN h2",
            ));
        }
        Ok(t)
    }
}

fn read_pem_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let data = std::fs::read(path)?;
    CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| other(format!("{}: {e}", path.display())))
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Client-side TLS settings.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// The same trust asking for ALPN `h2` (for `h2://` carriers).
    h2_connector: tokio_rustls::TlsConnector,
    /// The same trust asking for ALPN `h3` (for `h3://` carriers, over QUIC).
    h3: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the certificates in a PEM file (a CA, or a server's self-signed certificate).
    pub fn trusting_pem_file(path: &Path) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        for c in read_pem_certs(path)? {
            roots.add(c).map_err(other)?;
        }
        Self::with_roots(roots)
    }

    /// Trusts one DER certificate.
    pub fn trusting_der(cert: &[u8]) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.to_vec()))
            .map_err(other)?;
        Self::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> io::Result<Self> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_config(cfg))
    }

    fn from_config(cfg: ClientConfig) -> Self {
        let mut h2 = cfg.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        let mut h3 = cfg.clone();
        h3.alpn_protocols = vec![b"h3".to_vec()];
        Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            h2_connector: tokio_rustls::TlsConnector::from(Arc::new(h2)),
            h3: Arc::new(h3),
        }
    }

    /// Accepts any server certificate. Only for tests against throwaway servers.
    pub fn insecure() -> Self {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_no_client_auth();
        Self::from_config(cfg)
    }

    /// The rustls settings asking for ALPN `h3`, for the QUIC connection of an `h3://`
    /// carrier.
    pub fn h3_config(&self) -> Arc<ClientConfig> {
        self.h3.clone()
    }

    /// [`ClientTls::insecure`] with every random value the handshakes draw taken from
    /// `seed`, and no resumption: for the simulator, where a run must replay byte for
    /// byte.
    pub fn insecure_seeded(seed: [u8; 32]) -> io::Result<Self> {
        let rng = crate::seeded::SeededRng::new(seed);
        let mut cfg = ClientConfig::builder_with_provider(crate::seeded::provider(rng))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_no_client_auth();
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Self::from_config(cfg))
    }

    /// Runs the client handshake, checking the certificate against `host`.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        host: &str,
        s: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>> {
        let name = ServerName::try_from(host.to_string()).map_err(other)?;
        self.connector.connect(name, s).await
    }

    /// Runs the client handshake asking for ALPN `h2`; fails unless the server agreed.
    pub async fn connect_h2<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        host: &str,
        s: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>> {
        let name = ServerName::try_from(host.to_string()).map_err(other)?;
        let t = self.h2_connector.connect(name, s).await?;
        if t.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not agree to ALPN h2",
            ));
        }
        Ok(t)
    }
}

#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
