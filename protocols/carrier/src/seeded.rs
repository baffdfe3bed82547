//! Seeded randomness for TLS and QUIC, so a simulated run over `h3://` replays byte for
//! byte (same seed, same pcap). Only the simulator uses this: real endpoints draw from
//! the OS.
//!
//! What draws randomness, and what replaces it here:
//! - rustls: its provider's `SecureRandom` (client and server randoms) becomes a
//!   seeded ChaCha20 stream; the ring key exchange draws from the OS directly, so X25519
//!   is re-implemented as a [`SupportedKxGroup`] taking its private key from that stream;
//!   the server key is Ed25519 (its signatures are deterministic, ECDSA's are not), made
//!   from the seed with a certificate whose serial comes from the key; session tickets
//!   and resumption are off (a resumed handshake would depend on the wall clock).
//! - quinn: the endpoint's RNG seed, its stateless-reset key, the server's token key,
//!   the connection ids and the client's first destination id all come from the seed
//!   ([`QuicSeeds`]).

use std::sync::{Arc, Mutex};

use quinn::{ConnectionId, ConnectionIdGenerator, EndpointConfig};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::agreement;
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup};
use rustls::NamedGroup;

/// A seeded ChaCha20 stream shared by everything one seed drives.
#[derive(Debug)]
pub struct SeededRng(Mutex<ChaCha20Rng>);

impl SeededRng {
    /// The stream for `seed`.
    pub fn new(seed: [u8; 32]) -> Arc<Self> {
        Arc::new(Self(Mutex::new(ChaCha20Rng::from_seed(seed))))
    }

    /// Fills `buf` from the stream.
    pub fn fill(&self, buf: &mut [u8]) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.fill_bytes(buf);
    }

    /// 32 fresh bytes.
    pub fn seed32(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }
}

impl rustls::crypto::SecureRandom for SeededRng {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        SeededRng::fill(self, buf);
        Ok(())
    }
}

/// X25519 whose private keys come from a [`SeededRng`].
#[derive(Debug)]
struct SeededX25519 {
    rng: Arc<SeededRng>,
}

struct SeededKx {
    key: agreement::EphemeralPrivateKey,
    public: Vec<u8>,
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let seed = self.rng.seed32();
        // ring takes randomness only through its sealed `SecureRandom`; its fixed-slice
        // source is the one way to give it ours (exactly the 32 bytes X25519 asks for).
        #[allow(deprecated)]
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &seed };
        let key = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &fixed)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = key
            .compute_public_key()
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?
            .as_ref()
            .to_vec();
        Ok(Box::new(SeededKx { key, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for SeededKx {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.key, &peer, |s: &[u8]| SharedSecret::from(s))
            .map_err(|_| rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::InvalidKeyShare))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// The ring provider with its randomness and key exchange taken from `rng`. The
/// provider wants `'static` references, so the two small objects are leaked: one per
/// simulated endpoint configuration.
pub fn provider(rng: Arc<SeededRng>) -> Arc<CryptoProvider> {
    let random: &'static SeededRng = Box::leak(Box::new(SeededRng(Mutex::new(
        ChaCha20Rng::from_seed(rng.seed32()),
    ))));
    let kx: &'static SeededX25519 = Box::leak(Box::new(SeededX25519 { rng }));
    Arc::new(CryptoProvider {
        kx_groups: vec![kx],
        secure_random: random,
        ..rustls::crypto::ring::default_provider()
    })
}

/// PKCS#8 v1 wrapping of an Ed25519 private key (RFC 8410): this prefix, then the 32
/// key bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key (PKCS#8 DER) made from 32 bytes of `rng`.
pub fn ed25519_pkcs8(rng: &SeededRng) -> Vec<u8> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&rng.seed32());
    der
}

/// Connection ids from a shared seeded stream.
struct SeededCids {
    rng: Arc<SeededRng>,
}

/// Length of the connection ids we issue (quinn's default).
const CID_LEN: usize = 8;

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut b = [0u8; CID_LEN];
        self.rng.fill(&mut b);
        ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Everything one seeded QUIC endpoint draws, from one seed.
pub struct QuicSeeds {
    rng: Arc<SeededRng>,
}

impl QuicSeeds {
    /// The stream for `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            rng: SeededRng::new(seed),
        }
    }

    /// The endpoint settings: RNG seed, reset key and connection ids from the seed.
    pub fn endpoint_config(&self) -> EndpointConfig {
        let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.rng.seed32());
        let mut cfg = EndpointConfig::new(Arc::new(reset));
        cfg.rng_seed(Some(self.rng.seed32()));
        let cids = SeededRng::new(self.rng.seed32());
        cfg.cid_generator(move || {
            Box::new(SeededCids { rng: cids.clone() }) as Box<dyn ConnectionIdGenerator>
        });
        cfg
    }

    /// The server's address-validation token key, from the seed.
    pub fn token_key(&self) -> Arc<dyn quinn::crypto::HandshakeTokenKey> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]);
        Arc::new(salt.extract(&self.rng.seed32()))
    }

    /// The client's first destination connection id, from the seed.
    pub fn initial_dst_cid(&self) -> Arc<dyn Fn() -> ConnectionId + Send + Sync> {
        let rng = SeededRng::new(self.rng.seed32());
        Arc::new(move || {
            let mut b = [0u8; 16];
            rng.fill(&mut b);
            ConnectionId::new(&b)
        })
    }
}
