//! Node identity as seen on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A node's stable id: the first 8 bytes of SHA-256 over its Ed25519 public
/// key, shown as 16 lowercase hex digits. Stable for as long as the node keeps
/// its data dir, because the key lives there.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub [u8; 8]);

impl NodeId {
    /// Derives the id from an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        NodeId(id)
    }

    /// The id as a `u64`, handy as a seed or a sort key.
    pub fn as_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// An id made from a number; the simulator names its nodes this way.
    pub fn from_u64(n: u64) -> Self {
        NodeId(n.to_be_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A string that is not 16 hex digits was given as a node id.
#[derive(Debug, thiserror::Error)]
#[error("not a node id (want 16 hex digits): {0:?}")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseNodeIdError(s.to_string()))?;
        Ok(NodeId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text() {
        let id = NodeId::from_public_key(&[7u8; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!("xyz".parse::<NodeId>().is_err());
    }

    #[test]
    fn different_keys_give_different_ids() {
        assert_ne!(
            NodeId::from_public_key(&[1u8; 32]),
            NodeId::from_public_key(&[2u8; 32])
        );
    }
}
