//! The cluster key and the key ring that lets it rotate without downtime.
//!
//! A cluster key is 32 random bytes, written as base64 on one line. Nodes
//! never use it directly: the datagram key is derived from it with HKDF, so
//! later transports (QUIC certificates, stream keys) derive their own keys
//! from the same secret without reusing one.
//!
//! A key ring holds one primary key, used to seal, and any number of
//! secondary keys, accepted when opening. Rotation: add the new key as a
//! secondary on every node, then make it primary everywhere, then drop the
//! old one. At every step each pair of nodes shares a key they both accept.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use sha2::Sha256;

/// The 4-byte id of a cluster key, carried in every envelope so a receiver
/// picks the right key without trial decryption.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a cluster key or key file could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not base64, or does not decode to 32 bytes.
    #[error("a cluster key is 32 bytes in base64 on one line (as `myco cluster key` prints it)")]
    Malformed,
    /// The key file has no key in it.
    #[error("the key file holds no key: put the cluster key on its first line")]
    Empty,
}

/// A cluster key: the shared secret every member holds.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Wraps 32 secret bytes (from a CSPRNG, in the shell).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClusterKey(bytes)
    }

    /// Parses the one-line base64 form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Malformed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(ClusterKey(bytes))
    }

    /// The one-line base64 form, as written to key files.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The public id of this key (safe to log and to gossip).
    pub fn id(&self) -> KeyId {
        let mut out = [0u8; 4];
        self.derive(b"myco key-id v1", &mut out);
        KeyId(out)
    }

    /// Derives a purpose-bound subkey; `label` names the purpose and version.
    pub fn derive(&self, label: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(b"myco cluster key"), &self.0)
            .expand(label, out)
            .expect("HKDF output lengths used here are far below the limit");
    }

    pub(crate) fn datagram_cipher(&self) -> XChaCha20Poly1305 {
        let mut key = [0u8; 32];
        self.derive(b"myco datagram v1", &mut key);
        XChaCha20Poly1305::new(&key.into())
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself.
        write!(f, "ClusterKey({})", self.id())
    }
}

/// The keys a node seals with (the primary) and opens with (all of them).
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(KeyId, ClusterKey, XChaCha20Poly1305)>,
}

impl KeyRing {
    /// A ring with one key, which is the primary.
    pub fn new(primary: ClusterKey) -> Self {
        let mut ring = KeyRing { keys: Vec::new() };
        ring.push(primary);
        ring
    }

    /// Parses a key file: one base64 key per line, the first one primary;
    /// blank lines and lines starting with `#` are ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(ClusterKey::parse);
        let mut ring = KeyRing::new(keys.next().ok_or(KeyError::Empty)??);
        for key in keys {
            ring.push(key?);
        }
        Ok(ring)
    }

    /// Adds a secondary key, accepted for opening only.
    pub fn push(&mut self, key: ClusterKey) {
        let id = key.id();
        if self.keys.iter().all(|(k, _, _)| *k != id) {
            let cipher = key.datagram_cipher();
            self.keys.push((id, key, cipher));
        }
    }

    /// The key used to seal outgoing datagrams.
    pub fn primary(&self) -> &ClusterKey {
        &self.keys[0].1
    }

    /// The primary key's id.
    pub fn primary_id(&self) -> KeyId {
        self.keys[0].0
    }

    /// Every key, primary first.
    pub fn keys(&self) -> Vec<ClusterKey> {
        self.keys.iter().map(|(_, k, _)| k.clone()).collect()
    }

    /// Ids of every key this ring accepts.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _, _)| *id)
    }

    pub(crate) fn primary_cipher(&self) -> (KeyId, &XChaCha20Poly1305) {
        (self.keys[0].0, &self.keys[0].2)
    }

    pub(crate) fn cipher(&self, id: KeyId) -> Option<&XChaCha20Poly1305> {
        self.keys
            .iter()
            .find(|(k, _, _)| *k == id)
            .map(|(_, _, c)| c)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips_and_ids_differ() {
        let a = ClusterKey::from_bytes([1; 32]);
        let b = ClusterKey::from_bytes([2; 32]);
        assert_eq!(ClusterKey::parse(&a.to_base64()).unwrap(), a);
        assert_ne!(a.id(), b.id());
        assert_eq!(ClusterKey::parse("not base64!"), Err(KeyError::Malformed));
        assert_eq!(ClusterKey::parse("AAAA"), Err(KeyError::Malformed));
    }

    #[test]
    fn key_file_first_line_is_primary() {
        let a = ClusterKey::from_bytes([1; 32]);
        let b = ClusterKey::from_bytes([2; 32]);
        let text = format!("# rotating\n{}\n\n{}\n", b.to_base64(), a.to_base64());
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.primary_id(), b.id());
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![b.id(), a.id()]);
        assert!(matches!(
            KeyRing::parse("# nothing\n"),
            Err(KeyError::Empty)
        ));
    }
}
