//! What travels inside a sealed envelope, and the node manifest.
//!
//! Frames are encoded with postcard. The envelope version covers the frame
//! set: a new field of an existing frame means a new envelope version. A
//! new frame kind is appended as the last variant instead, so it leaves
//! the encoding of the others as it was: a node that cannot read it drops
//! and counts it (`undecodable`), and every kind added this way must be
//! one the mesh works without (as [`Frame::Summary`] is: SWIM still
//! converges without it, only slower).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::envelope::MAX_PLAINTEXT;
use crate::id::NodeId;

/// A member of the mesh as SWIM sees it: who, where, and which life.
///
/// `boot` grows on every start of the node and `bump` every time the node
/// rejoins after being declared down, so the newest life of a node always
/// wins over the records of older ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Peer {
    /// The stable node id.
    pub id: NodeId,
    /// Where the node receives datagrams (its advertise address).
    pub addr: SocketAddr,
    /// The node's start epoch.
    pub boot: u64,
    /// Rejoins within this start.
    pub bump: u16,
}

impl foca::Identity for Peer {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Peer {
            bump: self.bump.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot, self.bump) > (adversary.boot, adversary.bump)
    }
}

/// CPU and memory a node offers, detected at start.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_milli: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// What a node says about itself; gossiped to every member.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeManifest {
    /// Manifest format version ([`NodeManifest::FORMAT`]).
    pub format: u16,
    /// The node id.
    pub id: NodeId,
    /// The start epoch this manifest belongs to.
    pub boot: u64,
    /// The operator's name for the node.
    pub name: String,
    /// Tags for placement, `key=value`.
    pub tags: BTreeMap<String, String>,
    /// Detected capacity.
    pub capacity: Capacity,
    /// The mesh address peers use.
    pub mesh_addr: SocketAddr,
    /// The HTTP API address, if any.
    pub api_addr: Option<String>,
    /// The edge gateway address, if any.
    pub edge_addr: Option<String>,
    /// The Myco version the node runs.
    pub version: String,
    /// The id of the cluster key the node seals with, as hex.
    pub key_id: String,
    /// The format versions the node reads (format 2 on).
    pub speaks: crate::compat::Speaks,
}

/// Limits that keep a manifest inside one datagram.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// More tags than [`NodeManifest::MAX_TAGS`].
    #[error("at most {} tags per node", NodeManifest::MAX_TAGS)]
    TooManyTags,
    /// A name, tag key or value longer than [`NodeManifest::MAX_FIELD`].
    #[error("node name, tag keys and tag values are at most {max} bytes: {0:?}", max = NodeManifest::MAX_FIELD)]
    FieldTooLong(String),
    /// The encoded manifest does not fit a datagram.
    #[error("the node manifest is {0} bytes encoded; it must fit in {max} (use fewer or shorter tags)", max = NodeManifest::MAX_ENCODED)]
    TooLarge(usize),
}

impl NodeManifest {
    /// The manifest format this build writes.
    pub const FORMAT: u16 = 2;
    /// Most tags a node may carry.
    pub const MAX_TAGS: usize = 16;
    /// Longest name, tag key or tag value, in bytes.
    pub const MAX_FIELD: usize = 63;
    /// Largest encoded manifest: a datagram less the envelope and frame tag.
    pub const MAX_ENCODED: usize = MAX_PLAINTEXT - 8;

    /// Checks the limits; the agent refuses to start on a manifest that fails.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.tags.len() > Self::MAX_TAGS {
            return Err(ManifestError::TooManyTags);
        }
        let fields = std::iter::once(&self.name).chain(self.tags.iter().flat_map(|(k, v)| [k, v]));
        if let Some(long) = fields.into_iter().find(|f| f.len() > Self::MAX_FIELD) {
            return Err(ManifestError::FieldTooLong(long.clone()));
        }
        let len = Frame::Manifest(self.clone()).encode().len();
        if len > Self::MAX_ENCODED {
            return Err(ManifestError::TooLarge(len));
        }
        Ok(())
    }
}

/// A slice of the sender's member list, for push-pull: the members it
/// holds up whose ids fall in `[from, to)`, in id order, the sender
/// among them if its id falls there. A push asks the receiver to answer
/// with the up members of that range the slice lacks (or lists in an
/// older life); the answer is a summary that is not a push.
///
/// SWIM spreads news by gossip and learns the rest by probing; a pair that
/// missed each other's news otherwise waits for a probe round (nodes × the
/// probe period). Slices keep every summary inside one datagram.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The first id the slice covers.
    pub from: NodeId,
    /// The first id past the slice, or `None` if it runs to the largest id.
    pub to: Option<NodeId>,
    /// Whether the receiver should answer with what the slice lacks.
    pub push: bool,
    /// Up members, in id order.
    pub members: Vec<Peer>,
}

impl Summary {
    /// Bytes a summary's frame takes besides its members, at most: the
    /// frame tag, `from`, `to`, `push` and the member count (a varint of
    /// at most 2 bytes, as fewer than 16,384 members fit a datagram).
    pub const OVERHEAD: usize = 1 + 8 + 9 + 1 + 2;
    /// Bytes the members of one summary may take, so the frame fits a
    /// datagram.
    pub const MEMBER_BUDGET: usize = MAX_PLAINTEXT - Self::OVERHEAD;

    /// The encoded length of `peer` in a summary.
    pub fn member_len(peer: &Peer) -> usize {
        // The largest peer (IPv6 address, widest varints) is 41 bytes.
        let mut buf = [0u8; 64];
        postcard::to_slice(peer, &mut buf)
            .map(|b| b.len())
            .expect("a peer encodes in 64 bytes")
    }

    /// Whether `id` falls in the range this summary covers.
    pub fn covers(&self, id: NodeId) -> bool {
        id >= self.from && self.to.is_none_or(|to| id < to)
    }
}

/// One message between nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Frame {
    /// A SWIM packet for foca, opaque here.
    Swim(#[serde(with = "crate::bytes")] Vec<u8>),
    /// "Who are you?" sent to a join address whose node id is unknown.
    Hello(Peer),
    /// The answer to a hello: the identity to announce to.
    HelloAck(Peer),
    /// Asks the receiver for its manifest.
    ManifestRequest,
    /// A node's manifest.
    Manifest(NodeManifest),
    /// The sender is leaving the mesh on purpose.
    Leave(Peer),
    /// A slice of the sender's member list (push-pull); appended last.
    Summary(Summary),
}

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable frame: {0}")]
pub struct FrameError(#[from] postcard::Error);

impl Frame {
    /// Encodes the frame for sealing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("frames always encode")
    }

    /// Decodes a frame from an opened envelope; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let (frame, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(FrameError(postcard::Error::DeserializeBadEncoding));
        }
        Ok(frame)
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Swim(_) => "swim",
            Frame::Hello(_) => "hello",
            Frame::HelloAck(_) => "hello_ack",
            Frame::ManifestRequest => "manifest_request",
            Frame::Manifest(_) => "manifest",
            Frame::Leave(_) => "leave",
            Frame::Summary(_) => "summary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest() -> NodeManifest {
        NodeManifest {
            format: NodeManifest::FORMAT,
            id: NodeId::from_u64(1),
            boot: 1,
            name: "n1".into(),
            tags: BTreeMap::from([("zone".into(), "a".into())]),
            capacity: Capacity {
                cpu_milli: 4000,
                memory_mb: 8192,
            },
            mesh_addr: "127.0.0.1:7946".parse().unwrap(),
            api_addr: Some("127.0.0.1:7070".into()),
            edge_addr: Some("0.0.0.0:8080".into()),
            version: crate::MYCO_VERSION.into(),
            key_id: "01020304".into(),
            speaks: crate::compat::THIS_BUILD,
        }
    }

    #[test]
    fn frames_round_trip_and_trailing_bytes_are_refused() {
        let f = Frame::Manifest(manifest());
        let mut bytes = f.encode();
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
        bytes.push(0);
        assert!(Frame::decode(&bytes).is_err());
        assert!(Frame::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn manifest_limits_hold() {
        assert_eq!(manifest().validate(), Ok(()));
        let mut m = manifest();
        m.tags = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(m.validate(), Err(ManifestError::TooManyTags));
        let mut m = manifest();
        m.name = "x".repeat(64);
        assert!(matches!(m.validate(), Err(ManifestError::FieldTooLong(_))));
        // Field limits alone would allow ~2 KiB of tags: the encoded size check catches it.
        let mut m = manifest();
        m.tags = (0..16)
            .map(|i| (format!("{i:0>63}"), "v".repeat(63)))
            .collect();
        assert!(
            matches!(m.validate(), Err(ManifestError::TooLarge(n)) if n > NodeManifest::MAX_ENCODED)
        );
    }

    #[test]
    fn a_full_summary_of_the_widest_peers_fits_a_datagram() {
        let widest = Peer {
            id: NodeId([0xff; 8]),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            boot: u64::MAX,
            bump: u16::MAX,
        };
        let len = Summary::member_len(&widest);
        let count = Summary::MEMBER_BUDGET / len;
        let s = Summary {
            from: NodeId([0xff; 8]),
            to: Some(NodeId([0xff; 8])),
            push: true,
            members: vec![widest; count],
        };
        let f = Frame::Summary(s.clone());
        let bytes = f.encode();
        assert!(bytes.len() <= MAX_PLAINTEXT, "{} bytes", bytes.len());
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
        assert!(count >= 30, "only {count} of the widest peers fit");
    }

    #[test]
    fn a_summary_covers_its_half_open_range() {
        let s = Summary {
            from: NodeId::from_u64(10),
            to: Some(NodeId::from_u64(20)),
            push: false,
            members: Vec::new(),
        };
        assert!(s.covers(NodeId::from_u64(10)) && s.covers(NodeId::from_u64(19)));
        assert!(!s.covers(NodeId::from_u64(9)) && !s.covers(NodeId::from_u64(20)));
        let open = Summary { to: None, ..s };
        assert!(open.covers(NodeId([0xff; 8])));
    }

    #[test]
    fn frames_appended_later_leave_the_others_encoded_as_before() {
        // Older nodes read every frame but the last: the tags of the
        // frames they know must not move.
        assert_eq!(Frame::ManifestRequest.encode(), vec![3]);
        let leave = Frame::Leave(Peer {
            id: NodeId::from_u64(1),
            addr: "127.0.0.1:1".parse().unwrap(),
            boot: 1,
            bump: 0,
        });
        assert_eq!(leave.encode()[0], 5);
    }

    #[test]
    fn newer_life_wins_address_conflicts() {
        use foca::Identity;
        let old = Peer {
            id: NodeId::from_u64(1),
            addr: "127.0.0.1:1".parse().unwrap(),
            boot: 5,
            bump: 9,
        };
        let new = Peer {
            boot: 6,
            bump: 0,
            ..old
        };
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert!(old.renew().unwrap().win_addr_conflict(&old));
    }
}
