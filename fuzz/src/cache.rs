//! Targets over the cache and messaging decoders: the stream messages of
//! `Channel::Cache` and `Channel::Msg`, and Redis-protocol requests.

use myco_proto::NodeId;
use myco_proto::Timestamp;
use myco_proto::cache::{CACHE_PROTO, CacheEntry, CacheMessage};
use myco_proto::msg::{MsgMessage, ReplyStatus, TopicSubscribers};
use myco_proto::versioned;

/// A cache message off a stream's cache channel. The messages a forward
/// sends are read and written by hand (`myco_proto::cache::wire`): every
/// input must decode as serde decodes it, and every message encode to
/// serde's bytes.
pub fn cache_message(data: &[u8]) {
    let decoded = CacheMessage::decode(data);
    assert_eq!(decoded, versioned::decode(CACHE_PROTO, data));
    if let Some(m) = decoded {
        let bytes = m.encode();
        assert_eq!(bytes, versioned::encode(CACHE_PROTO, &m));
        assert_eq!(CacheMessage::decode(&bytes), Some(m));
    }
}

/// A messaging message off a stream's msg channel.
pub fn msg_message(data: &[u8]) {
    if let Some(m) = MsgMessage::decode(data) {
        assert_eq!(MsgMessage::decode(&m.encode()), Some(m));
    }
}

/// Bytes from a Redis client: parsed command after command, as the
/// connection does; a command never takes more bytes than there are.
pub fn resp_request(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        match myco_proto::resp::parse(&data[at..]) {
            Ok(Some((_, used))) => {
                assert!(used > 0 && at + used <= data.len());
                at += used;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Seeds: valid encodings of each.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let addr = "127.0.0.1:7946".parse().unwrap();
    let entry = CacheEntry {
        ts: Timestamp {
            wall_ms: 1_700_000_000_000,
            logical: 2,
            node: NodeId([3; 8]),
        },
        value: Some(b"value".to_vec()),
        expires_at_ms: Some(1_700_000_060_000),
    };
    let cache = [
        CacheMessage::Put {
            request: 1,
            bucket: "sessions".into(),
            key: "k1".into(),
            entry: entry.clone(),
            ack: true,
            reply_to: addr,
        },
        CacheMessage::Get {
            request: 2,
            bucket: "sessions".into(),
            key: "k1".into(),
            reply_to: addr,
        },
        CacheMessage::Answer {
            request: 2,
            entry: Some(entry),
        },
        CacheMessage::Ack {
            request: 1,
            stored: true,
        },
    ];
    let msg = [
        MsgMessage::Topics {
            from: addr,
            topics: vec!["greetings".into(), "echo".into()],
        },
        MsgMessage::Publish {
            topic: "greetings".into(),
            body: b"hello".to_vec(),
            origin: NodeId([4; 8]),
        },
        MsgMessage::Request {
            request: 9,
            topic: "echo".into(),
            body: b"ping".to_vec(),
            origin: NodeId([4; 8]),
            reply_to: addr,
            timeout_ms: 1000,
        },
        MsgMessage::Reply {
            request: 9,
            status: ReplyStatus::Answered,
            body: b"pong".to_vec(),
        },
        MsgMessage::Subscribers {
            from: addr,
            topics: vec![TopicSubscribers {
                topic: "greetings".into(),
                subscribers: 2,
            }],
        },
    ];
    let mut out = Vec::new();
    for (i, m) in cache.iter().enumerate() {
        out.push(("cache_message", format!("{i:02}"), m.encode()));
    }
    for (i, m) in msg.iter().enumerate() {
        out.push(("msg_message", format!("{i:02}"), m.encode()));
    }
    out.push((
        "resp_request",
        "inline-quotes".into(),
        b"SET k \"a b\\x41\\n\" 'it\\'s'\r\nGET k\n".to_vec(),
    ));
    out.push((
        "resp_request",
        "pipeline".into(),
        b"*3\r\n$3\r\nSET\r\n$4\r\na:bc\r\n$2\r\nhi\r\n*2\r\n$3\r\nGET\r\n$4\r\na:bc\r\nPING\r\n"
            .to_vec(),
    ));
    out
}
