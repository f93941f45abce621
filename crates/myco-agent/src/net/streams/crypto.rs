//! The streams' TLS crypto, cut to what the mesh uses: Ed25519 keys and
//! certificates, X25519 key exchange, the three TLS 1.3 suites.
//!
//! Why not ring's default provider: it also brings ECDSA (P-256, P-384)
//! and RSA, for keys and certificates no node ever presents. They were
//! about 220 KB of the stripped binary (ring's P-256 tables alone 150 KB)
//! against a 10 MB budget, and rcgen's generic `KeyPair` linked them too.
//! Our keys sign with ed25519-dalek (already linked for spores) through
//! rcgen's [`rcgen::SigningKey`]; peers' signatures are checked by webpki
//! with ring's Ed25519. A node of the earlier release offers more groups
//! and schemes, but agrees on these: it puts X25519 first and its
//! certificates are Ed25519.

use std::sync::Arc;

use ed25519_dalek::Signer;
use rustls::SignatureScheme;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey as TlsSigningKey;
use sha2::{Digest, Sha256};

/// PKCS#8 v1 header of an Ed25519 private key (RFC 8410); the 32-byte
/// seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 key pair: a CA's (derived) or a node's leaf (fresh).
pub(super) struct Ed25519Key {
    signing: ed25519_dalek::SigningKey,
    public: [u8; 32],
}

impl Ed25519Key {
    /// The key of a 32-byte seed.
    pub(super) fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = signing.verifying_key().to_bytes();
        Ed25519Key { signing, public }
    }

    /// A fresh key from the operating system's randomness.
    pub(super) fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self::from_seed(&seed))
    }

    /// The private key as PKCS#8 DER, as rustls loads it.
    pub(super) fn pkcs8(&self) -> Vec<u8> {
        [&ED25519_PKCS8_PREFIX[..], self.signing.as_bytes()].concat()
    }

    /// SHA-256 of the key's SubjectPublicKeyInfo, first 20 bytes: what
    /// rcgen derives with its own crypto (key identifiers, default serials),
    /// so certificates stay byte for byte those of the first release.
    pub(super) fn id(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        Sha256::digest(self.subject_public_key_info())[..20].to_vec()
    }

    /// The serial rcgen gives a certificate over this key by default.
    pub(super) fn default_serial(&self) -> rcgen::SerialNumber {
        let mut serial = Sha256::digest(self.public)[..20].to_vec();
        serial[0] &= 0x7f;
        rcgen::SerialNumber::from_slice(&serial)
    }
}

impl rcgen::PublicKeyData for Ed25519Key {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for Ed25519Key {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.signing.sign(msg).to_bytes().to_vec())
    }
}

/// The provider every config and verifier of the streams is built with
/// (explicitly: building with the process default panics if two
/// providers get compiled in).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519],
        signature_verification_algorithms: ED25519_ONLY,
        secure_random: &OsRandom,
        key_provider: &Ed25519Keys,
    })
}

/// Certificate and handshake signatures: Ed25519 alone.
const ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])],
};

#[derive(Debug)]
struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| GetRandomFailed)
    }
}

#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn TlsSigningKey>, rustls::Error> {
        match &key {
            PrivateKeyDer::Pkcs8(der) => rustls::crypto::ring::sign::any_eddsa_type(der),
            _ => Err(rustls::Error::General(
                "the mesh's TLS keys are Ed25519 in PKCS#8".into(),
            )),
        }
    }
}
