//! A node's own mark in `Table::NODES`: that it is draining (handing its
//! instances off before it leaves), so placement on every node stops
//! choosing it and its peers stop waiting for it to take their slots.
//!
//! The mark names the start epoch (`boot`) it was made in: a node that
//! restarts is a new life the mark does not cover, so a mark is never
//! cleared, only outdated. Written only by the node it names. Older
//! releases store and replicate the table without reading it.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The format this build writes; the record's first byte.
pub const NODE_MARK_FORMAT: u8 = 1;

/// One node's mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMark {
    /// The start epoch of the life that is draining.
    pub draining_boot: u64,
    /// When it started draining (wall ms).
    pub since_ms: u64,
}

impl NodeMark {
    /// The mark of a node draining in life `boot` since `since_ms`.
    pub fn draining(boot: u64, since_ms: u64) -> NodeMark {
        NodeMark {
            draining_boot: boot,
            since_ms,
        }
    }

    /// The key of `node`'s mark in `Table::NODES`: its id in hex.
    pub fn key(node: NodeId) -> String {
        node.to_string()
    }

    /// Encodes the mark: [`NODE_MARK_FORMAT`], then postcard.
    pub fn encode(&self) -> Vec<u8> {
        crate::versioned::encode(NODE_MARK_FORMAT, self)
    }

    /// Decodes a mark; `None` for another format, trailing bytes or garbage.
    pub fn decode(bytes: &[u8]) -> Option<NodeMark> {
        crate::versioned::decode(NODE_MARK_FORMAT, bytes)
    }

    /// Whether this mark says the life `boot` is draining.
    pub fn drains(&self, boot: u64) -> bool {
        self.draining_boot == boot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_other_bytes_are_refused() {
        let m = NodeMark::draining(7, 1_000);
        let bytes = m.encode();
        assert_eq!(bytes[0], NODE_MARK_FORMAT);
        assert_eq!(NodeMark::decode(&bytes), Some(m.clone()));
        assert!(m.drains(7) && !m.drains(8), "another life is not covered");
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(NodeMark::decode(&long), None);
        assert_eq!(NodeMark::decode(&[2, 0, 0]), None);
        assert_eq!(NodeMark::decode(&[]), None);
    }
}
