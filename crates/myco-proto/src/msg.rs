//! App messaging between nodes on [`crate::channel::Channel::Msg`]:
//! at-most-once, no persistence (NATS-core semantics).
//!
//! Each node tells the others which topics it has subscribers that answer
//! requests for ([`MsgMessage::Topics`], sent on change and repeated as a
//! heartbeat), so a request knows at once whether anyone anywhere can
//! answer. A publish goes to every live node ([`MsgMessage::Publish`]),
//! which hands it to its subscribers connected at that moment. A request
//! goes to one node with a subscriber that answers
//! ([`MsgMessage::Request`]); that subscriber answers through its own
//! node, which sends [`MsgMessage::Reply`] back.
//!
//! Every message starts with a version byte ([`MSG_PROTO`]); another
//! version, trailing bytes or garbage are refused by [`MsgMessage::decode`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The version byte in front of every messaging message.
pub const MSG_PROTO: u8 = 1;
/// Largest message body, in bytes.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest topic name.
pub const MAX_TOPIC: usize = 128;
/// Most topics one node announces (its subscribers are bounded too).
pub const MAX_TOPICS: usize = 1024;

/// Checks a topic name: 1 to [`MAX_TOPIC`] of `a-z A-Z 0-9 . _ - :`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "topic {:?} is not valid: use 1 to {MAX_TOPIC} of a-z A-Z 0-9 . _ - :",
            topic.chars().take(140).collect::<String>()
        ))
    }
}

/// `POST /v1/msg/{topic}`: the answer of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Published {
    /// The nodes it was sent to (this one included when it has subscribers).
    pub nodes: usize,
    /// The subscribers it reached, as Redis' `PUBLISH` counts them: those
    /// of this node that took it, plus those the other nodes it was sent
    /// to last announced for the topic (at most about a second old, so a
    /// subscriber that came since may get it uncounted, and one whose
    /// queue is full is counted though it loses it; a node of an older
    /// release counts as one when it has a subscriber that answers). 0
    /// when no subscriber is known anywhere. Absent from older nodes.
    #[serde(default)]
    pub receivers: usize,
}

/// How many subscribers a node has for one topic, in [`MsgMessage::Subscribers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSubscribers {
    /// The topic.
    pub topic: String,
    /// Its subscribers on the sending node.
    pub subscribers: u32,
}

/// What became of a request at the node it was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyStatus {
    /// A subscriber answered; the body is its answer.
    Answered,
    /// The node had no subscriber for the topic any more.
    NoSubscriber,
}

/// A messaging message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgMessage {
    /// The topics the sender has subscribers that answer requests for now
    /// (all of them): where requests may go. Subscribers that only take
    /// published messages (Redis clients) are not announced here.
    Topics {
        /// The sender's stream address.
        from: SocketAddr,
        /// The topics.
        topics: Vec<String>,
    },
    /// A message for the receiver's subscribers of `topic`.
    Publish {
        /// The topic.
        topic: String,
        /// The body.
        #[serde(with = "crate::bytes")]
        body: Vec<u8>,
        /// The publishing node.
        origin: NodeId,
    },
    /// A request for one of the receiver's subscribers of `topic`.
    Request {
        /// Chosen by the asker.
        request: u64,
        /// The topic.
        topic: String,
        /// The body.
        #[serde(with = "crate::bytes")]
        body: Vec<u8>,
        /// The asking node.
        origin: NodeId,
        /// Where the reply goes.
        reply_to: SocketAddr,
        /// Milliseconds the asker still waits (the answerer forgets the
        /// request after it).
        timeout_ms: u64,
    },
    /// The answer to a request.
    Reply {
        /// The request.
        request: u64,
        /// What became of it.
        status: ReplyStatus,
        /// The answer.
        #[serde(with = "crate::bytes")]
        body: Vec<u8>,
    },
    /// Messages on `topic` the sender published for the receiver and could
    /// not send (its stream queue to the receiver was full): the receiver
    /// counts them as lost for its subscribers of `topic`, which are told.
    /// Appended last, so the other variants keep their bytes; an older
    /// node drops it (counted) and only the count goes missing.
    Lost {
        /// The topic.
        topic: String,
        /// The publishing node.
        origin: NodeId,
        /// How many of its messages on `topic` were not sent.
        lost: u64,
    },
    /// How many subscribers the sender has now, per topic (all of its
    /// topics): what a publish there reaches, so the publishing node can
    /// answer with its receivers. Sent beside [`MsgMessage::Topics`] (on
    /// change and as a heartbeat). Appended last, so the other variants
    /// keep their bytes; an older node drops it (counted) and goes on
    /// routing requests by `Topics`.
    Subscribers {
        /// The sender's stream address.
        from: SocketAddr,
        /// The topics and their subscriber counts (at most [`MAX_TOPICS`]).
        topics: Vec<TopicSubscribers>,
    },
}

impl MsgMessage {
    /// Encodes the message behind its version byte.
    pub fn encode(&self) -> Vec<u8> {
        crate::versioned::encode(MSG_PROTO, self)
    }

    /// Decodes a message; `None` for another version, trailing bytes or
    /// garbage.
    pub fn decode(bytes: &[u8]) -> Option<MsgMessage> {
        crate::versioned::decode(MSG_PROTO, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lost_notice_is_appended_so_older_variants_keep_their_bytes() {
        let lost = MsgMessage::Lost {
            topic: "flood".into(),
            origin: NodeId([2; 8]),
            lost: 7,
        };
        let bytes = lost.encode();
        // Version byte, then the variant index: after the four older ones.
        assert_eq!(&bytes[..2], &[MSG_PROTO, 4]);
        assert_eq!(MsgMessage::decode(&bytes), Some(lost));
    }

    #[test]
    fn the_subscriber_counts_are_appended_so_older_variants_keep_their_bytes() {
        let counts = MsgMessage::Subscribers {
            from: "127.0.0.1:7946".parse().unwrap(),
            topics: vec![TopicSubscribers {
                topic: "news".into(),
                subscribers: 3,
            }],
        };
        let bytes = counts.encode();
        // Version byte, then the variant index: after the five older ones.
        assert_eq!(&bytes[..2], &[MSG_PROTO, 5]);
        assert_eq!(MsgMessage::decode(&bytes), Some(counts));
    }

    #[test]
    fn round_trip_and_bad_bytes_are_refused() {
        let m = MsgMessage::Request {
            request: 3,
            topic: "echo".into(),
            body: b"ping".to_vec(),
            origin: NodeId([2; 8]),
            reply_to: "127.0.0.1:7946".parse().unwrap(),
            timeout_ms: 1000,
        };
        let bytes = m.encode();
        assert_eq!(MsgMessage::decode(&bytes), Some(m));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(MsgMessage::decode(&long), None);
        assert_eq!(MsgMessage::decode(&bytes[..bytes.len() - 1]), None);
        let mut other = bytes.clone();
        other[0] = MSG_PROTO + 1;
        assert_eq!(MsgMessage::decode(&other), None);
        assert_eq!(MsgMessage::decode(&[]), None);
        assert_eq!(MsgMessage::decode(&[MSG_PROTO, 0xff, 0xff]), None);
    }

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("greetings").is_ok());
        assert!(check_topic("a:b.c_d-e").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(&"t".repeat(MAX_TOPIC + 1)).is_err());
    }
}
