//! Named channels of the stream transport.
//!
//! Every stream message travels with one header byte naming its channel, so
//! the receiving shell routes it without looking inside: replication goes
//! to the core, blobs to the spore store, and a new kind of message is one
//! more variant here. A byte naming no channel this build knows is counted
//! and dropped by the receiver, never fatal: the length prefix in front of
//! it still says where the next message starts.

/// A stream channel; its discriminant is the header byte on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Channel {
    /// State replication: a [`crate::sync::StreamFrame`] for the core.
    Sync = 1,
    /// Spore transfer: a [`crate::blob::BlobMessage`] for the spore store.
    Blob = 2,
    /// Job messages: reading an instance's logs from its node
    /// ([`crate::logs::LogMessage`]).
    Jobs = 3,
    /// Cache entries read and written on their owners
    /// ([`crate::cache::CacheMessage`]).
    Cache = 4,
    /// App messaging ([`crate::msg::MsgMessage`]).
    Msg = 5,
}

impl Channel {
    /// Every channel, in header-byte order.
    pub const ALL: [Channel; 5] = [
        Channel::Sync,
        Channel::Blob,
        Channel::Jobs,
        Channel::Cache,
        Channel::Msg,
    ];

    /// The header byte.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The channel a header byte names, if this build knows it.
    pub fn from_byte(byte: u8) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.byte() == byte)
    }

    /// A short stable label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Sync => "sync",
            Channel::Blob => "blob",
            Channel::Jobs => "jobs",
            Channel::Cache => "cache",
            Channel::Msg => "msg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_round_trip_and_unknown_ones_are_none() {
        for c in Channel::ALL {
            assert_eq!(Channel::from_byte(c.byte()), Some(c));
        }
        assert_eq!(Channel::Sync.byte(), 1);
        assert_eq!(Channel::Blob.byte(), 2);
        assert_eq!(Channel::from_byte(0), None);
        assert_eq!(Channel::from_byte(0x80), None);
        assert_eq!(Channel::from_byte(6), None);
    }
}
