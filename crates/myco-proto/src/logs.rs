//! Reading an instance's logs from the node that runs it, over the stream
//! transport ([`crate::channel::Channel::Jobs`]).
//!
//! The asking node sends [`LogMessage::Open`]; the serving node answers
//! with numbered [`LogMessage::Chunk`]s and one [`LogMessage::End`]. The
//! asker acknowledges what it has passed on ([`LogMessage::Ack`]), which is
//! both the flow control (the server keeps at most [`WINDOW`] chunks
//! unacknowledged, so a slow HTTP client slows the server instead of
//! filling queues) and, repeated every [`KEEPALIVE_SECS`], the proof that
//! the asker still listens: a follower not acknowledged for
//! [`ABANDON_SECS`] is ended. [`LogMessage::Close`] ends it at once.
//!
//! Every message starts with a version byte ([`LOG_PROTO`]); a message of
//! another version, with trailing bytes or undecodable is refused by
//! [`LogMessage::decode`] (the receiver counts and drops it).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The version byte in front of every log message.
pub const LOG_PROTO: u8 = 1;
/// Chunks a server sends ahead of the asker's acknowledgement.
pub const WINDOW: u64 = 8;
/// Text bytes per chunk, at most (a line longer than this is one chunk).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How often an asker repeats its acknowledgement while it listens.
pub const KEEPALIVE_SECS: u64 = 5;
/// Silence after which a server gives up on an asker.
pub const ABANDON_SECS: u64 = 20;

/// Why a server did not (or no longer) serve a request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum LogRefusal {
    /// No such instance on this node.
    NotFound,
    /// Too many readers on this node; try later.
    Busy,
    /// The request was not valid (e.g. a bad instance id).
    Invalid(String),
}

/// A log message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum LogMessage {
    /// Asks for the last `tail` lines of each stream of `instance` (of
    /// `job`), then, with `follow`, new lines until closed. With `label`
    /// every line starts with `[INSTANCE] `. Answers go to `reply_to` (the
    /// asker's mesh address), tagged with `request`.
    Open {
        /// Chosen by the asker, unique among its requests.
        request: u64,
        /// The job.
        job: String,
        /// The instance id.
        instance: String,
        /// Lines of each stream to start with.
        tail: u32,
        /// Keep sending new lines.
        follow: bool,
        /// Prefix lines with the instance id.
        label: bool,
        /// Where to answer.
        reply_to: SocketAddr,
    },
    /// Text of the answer: whole lines, `\n`-terminated, numbered from 0.
    Chunk {
        /// The request.
        request: u64,
        /// Its place in the answer.
        seq: u64,
        /// The lines.
        text: String,
    },
    /// The answer is complete (or refused).
    End {
        /// The request.
        request: u64,
        /// Chunks sent before this one.
        chunks: u64,
        /// Why not, when refused.
        refused: Option<LogRefusal>,
    },
    /// The asker has passed on chunks below `next`, and still listens.
    Ack {
        /// The request.
        request: u64,
        /// The next chunk it expects.
        next: u64,
        /// The asker's mesh address (the request is keyed by it).
        from: SocketAddr,
    },
    /// The asker is gone: stop.
    Close {
        /// The request.
        request: u64,
        /// The asker's mesh address.
        from: SocketAddr,
    },
}

impl LogMessage {
    /// Encodes the message behind its version byte.
    pub fn encode(&self) -> Vec<u8> {
        crate::versioned::encode(LOG_PROTO, self)
    }

    /// Decodes a message; `None` for another version, trailing bytes or
    /// garbage.
    pub fn decode(bytes: &[u8]) -> Option<LogMessage> {
        crate::versioned::decode(LOG_PROTO, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_bytes_are_refused() {
        let m = LogMessage::Open {
            request: 7,
            job: "web".into(),
            instance: "web-0-v1-abc".into(),
            tail: 10,
            follow: true,
            label: false,
            reply_to: "127.0.0.1:7946".parse().unwrap(),
        };
        let bytes = m.encode();
        assert_eq!(bytes[0], LOG_PROTO);
        assert_eq!(LogMessage::decode(&bytes), Some(m));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(LogMessage::decode(&long), None);
        assert_eq!(LogMessage::decode(&bytes[..bytes.len() - 1]), None);
        let mut other = bytes.clone();
        other[0] = LOG_PROTO + 1;
        assert_eq!(LogMessage::decode(&other), None);
        assert_eq!(LogMessage::decode(&[]), None);
        assert_eq!(LogMessage::decode(&[LOG_PROTO, 0xff, 0xff]), None);
    }
}
