//! The four cache messages every forwarded read and write sends (`Put`,
//! `Get`, `Answer`, `Ack`), written and read by hand in exactly postcard's
//! bytes. The other variants go through serde.
//!
//! Why: serde reads a node id and an IPv4 address as tuples, one visited
//! element per byte, at about 360 instructions each at the release
//! profile's opt-level; encoding sized every message in one serde pass and
//! wrote it in another. A forwarded GET decoded and encoded two of these
//! messages on each node, some 7,500 instructions of its 60,000
//! (BENCHMARKS.md, "Twentieth pass"). By hand each is a few hundred.
//!
//! The reader accepts a subset of what postcard accepts (minimal varints
//! only) and anything else falls back to serde, so a message decodes to
//! the same value either way. Tests pin both directions: the bytes written
//! equal postcard's for every case, and mutated bytes the reader accepts
//! decode the same through serde.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{CACHE_PROTO, CacheEntry, CacheMessage};
use crate::id::NodeId;
use crate::state::Timestamp;

/// Variant indexes, in declaration order (postcard writes the index).
const PUT: u64 = 0;
const GET: u64 = 1;
const ANSWER: u64 = 2;
const ACK: u64 = 3;

/// A message's bytes besides its strings and value, at most: version,
/// variant and request; two string lengths; an entry's timestamp, value
/// flag and length, expiry flag and expiry; a flag; an address (variant,
/// 16 octets, port). A varint is at most 10 bytes.
const MOST_FIXED: usize = 1 + 1 + 10 + 2 * 10 + (10 + 5 + 8 + 1 + 10 + 1 + 10) + 1 + (1 + 16 + 3);

/// The message's bytes, or `None` for a variant serde writes.
pub(super) fn encode(message: &CacheMessage) -> Option<Vec<u8>> {
    let w = match message {
        CacheMessage::Put {
            request,
            bucket,
            key,
            entry,
            ack,
            reply_to,
        } => {
            let variable = bucket.len() + key.len() + value_len(Some(entry));
            let mut w = Writer::start(PUT, *request, variable);
            w.bytes(bucket.as_bytes());
            w.bytes(key.as_bytes());
            w.entry(entry);
            w.0.push(u8::from(*ack));
            w.addr(reply_to);
            w
        }
        CacheMessage::Get {
            request,
            bucket,
            key,
            reply_to,
        } => {
            let mut w = Writer::start(GET, *request, bucket.len() + key.len());
            w.bytes(bucket.as_bytes());
            w.bytes(key.as_bytes());
            w.addr(reply_to);
            w
        }
        CacheMessage::Answer { request, entry } => {
            let mut w = Writer::start(ANSWER, *request, value_len(entry.as_ref()));
            match entry {
                None => w.0.push(0),
                Some(e) => {
                    w.0.push(1);
                    w.entry(e);
                }
            }
            w
        }
        CacheMessage::Ack { request, stored } => {
            let mut w = Writer::start(ACK, *request, 0);
            w.0.push(u8::from(*stored));
            w
        }
        _ => return None,
    };
    Some(w.0)
}

fn value_len(entry: Option<&CacheEntry>) -> usize {
    entry.and_then(|e| e.value.as_ref()).map_or(0, Vec::len)
}

/// The message, or `None`: another variant, another version, or bytes
/// this reader does not take (serde then decides).
pub(super) fn decode(bytes: &[u8]) -> Option<CacheMessage> {
    let mut r = Reader(bytes);
    if r.byte()? != CACHE_PROTO {
        return None;
    }
    let message = match r.varint()? {
        PUT => CacheMessage::Put {
            request: r.varint()?,
            bucket: r.string()?,
            key: r.string()?,
            entry: r.entry()?,
            ack: r.flag()?,
            reply_to: r.addr()?,
        },
        GET => CacheMessage::Get {
            request: r.varint()?,
            bucket: r.string()?,
            key: r.string()?,
            reply_to: r.addr()?,
        },
        ANSWER => CacheMessage::Answer {
            request: r.varint()?,
            entry: if r.flag()? { Some(r.entry()?) } else { None },
        },
        ACK => CacheMessage::Ack {
            request: r.varint()?,
            stored: r.flag()?,
        },
        _ => return None,
    };
    r.0.is_empty().then_some(message)
}

struct Writer(Vec<u8>);

impl Writer {
    /// A message's head, with room for the rest of it when its strings
    /// and value take `variable` bytes (no growing while it is written).
    fn start(variant: u64, request: u64, variable: usize) -> Writer {
        let mut w = Writer(Vec::with_capacity(MOST_FIXED + variable));
        w.0.push(CACHE_PROTO);
        w.varint(variant);
        w.varint(request);
        w
    }

    /// Into a local buffer, then one copy: a push per byte was a call
    /// per byte at the release profile's opt-level.
    fn varint(&mut self, mut v: u64) {
        let mut buf = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            buf[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        self.0.extend_from_slice(&buf[..=n]);
    }

    /// A length, then the bytes (a string, or a byte buffer).
    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn entry(&mut self, e: &CacheEntry) {
        self.varint(e.ts.wall_ms);
        self.varint(u64::from(e.ts.logical));
        self.0.extend_from_slice(&e.ts.node.0);
        match &e.value {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.bytes(v);
            }
        }
        match e.expires_at_ms {
            None => self.0.push(0),
            Some(at) => {
                self.0.push(1);
                self.varint(at);
            }
        }
    }

    /// serde's compact form: the variant, the octets, the port.
    fn addr(&mut self, a: &SocketAddr) {
        match a {
            SocketAddr::V4(a) => {
                self.0.push(0);
                self.0.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                self.0.push(1);
                self.0.extend_from_slice(&a.ip().octets());
            }
        }
        self.varint(u64::from(a.port()));
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// A minimal varint of up to 64 bits; anything longer, padded or
    /// overflowing is left to serde.
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().take(10).enumerate() {
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return None;
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                // A last byte of 0 after others is padding.
                return (i == 0 || b != 0).then_some(v);
            }
        }
        None
    }

    #[inline(always)]
    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn buf(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.buf()?).ok().map(str::to_string)
    }

    fn entry(&mut self) -> Option<CacheEntry> {
        let ts = Timestamp {
            wall_ms: self.varint()?,
            logical: u32::try_from(self.varint()?).ok()?,
            node: NodeId(self.take(8)?.try_into().ok()?),
        };
        let value = if self.flag()? {
            Some(self.buf()?.to_vec())
        } else {
            None
        };
        let expires_at_ms = if self.flag()? {
            Some(self.varint()?)
        } else {
            None
        };
        Some(CacheEntry {
            ts,
            value,
            expires_at_ms,
        })
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let v6 = self.flag()?;
        Some(if v6 {
            let ip: [u8; 16] = self.take(16)?.try_into().ok()?;
            let port = u16::try_from(self.varint()?).ok()?;
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        } else {
            let ip: [u8; 4] = self.take(4)?.try_into().ok()?;
            let port = u16::try_from(self.varint()?).ok()?;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioned;

    /// The bytes of a message's strings and value.
    fn variable(m: &CacheMessage) -> usize {
        match m {
            CacheMessage::Put {
                bucket, key, entry, ..
            } => bucket.len() + key.len() + value_len(Some(entry)),
            CacheMessage::Get { bucket, key, .. } => bucket.len() + key.len(),
            CacheMessage::Answer { entry, .. } => value_len(entry.as_ref()),
            _ => 0,
        }
    }

    /// A small deterministic generator (no rand in this crate).
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Numbers around every varint length's edges.
        fn number(&mut self) -> u64 {
            match self.below(4) {
                0 => self.below(300),
                1 => u64::MAX - self.below(3),
                2 => (1u64 << (7 * self.below(10))).wrapping_sub(self.below(2)),
                _ => self.next(),
            }
        }

        fn text(&mut self) -> String {
            let pieces = ["a", "key", ":", "é", "日本", "\u{1F344}", "0"];
            let n = match self.below(8) {
                0 => 0,
                7 => 200,
                n => n,
            };
            (0..n)
                .map(|_| pieces[self.below(pieces.len() as u64) as usize])
                .collect()
        }

        fn entry(&mut self) -> CacheEntry {
            CacheEntry {
                ts: Timestamp {
                    wall_ms: self.number(),
                    logical: self.number() as u32,
                    node: NodeId::from_u64(self.next()),
                },
                value: match self.below(4) {
                    0 => None,
                    1 => Some(Vec::new()),
                    2 => Some(vec![self.next() as u8; 200]),
                    _ => Some(self.text().into_bytes()),
                },
                expires_at_ms: (self.below(2) == 0).then(|| self.number()),
            }
        }

        fn addr(&mut self) -> SocketAddr {
            let port = self.number() as u16;
            if self.below(2) == 0 {
                SocketAddr::from((Ipv4Addr::from(self.next() as u32), port))
            } else {
                SocketAddr::from((Ipv6Addr::from(u128::from(self.next()) << 64), port))
            }
        }

        fn message(&mut self) -> CacheMessage {
            match self.below(4) {
                0 => CacheMessage::Put {
                    request: self.number(),
                    bucket: self.text(),
                    key: self.text(),
                    entry: self.entry(),
                    ack: self.below(2) == 0,
                    reply_to: self.addr(),
                },
                1 => CacheMessage::Get {
                    request: self.number(),
                    bucket: self.text(),
                    key: self.text(),
                    reply_to: self.addr(),
                },
                2 => CacheMessage::Answer {
                    request: self.number(),
                    entry: (self.below(3) > 0).then(|| self.entry()),
                },
                _ => CacheMessage::Ack {
                    request: self.number(),
                    stored: self.below(2) == 0,
                },
            }
        }
    }

    fn serde_decode(bytes: &[u8]) -> Option<CacheMessage> {
        versioned::decode(CACHE_PROTO, bytes)
    }

    #[test]
    fn the_bytes_are_postcards_and_read_back() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let m = g.message();
            let by_hand = encode(&m).expect("one of the four");
            assert_eq!(by_hand, versioned::encode(CACHE_PROTO, &m), "{m:?}");
            assert!(
                by_hand.len() <= MOST_FIXED + variable(&m),
                "outgrew its room: {m:?}"
            );
            assert_eq!(decode(&by_hand).as_ref(), Some(&m));
            let mut other = by_hand;
            other[0] = CACHE_PROTO + 1;
            assert_eq!(decode(&other), None);
        }
    }

    /// Whatever the reader accepts, serde reads as the same message, so
    /// falling back to serde on the rest changes no outcome.
    #[test]
    fn what_the_reader_accepts_serde_reads_the_same() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = versioned::encode(CACHE_PROTO, &g.message());
            match g.below(4) {
                0 => {
                    let at = g.below(bytes.len() as u64) as usize;
                    bytes[at] = g.next() as u8;
                }
                1 => bytes.truncate(g.below(bytes.len() as u64) as usize),
                2 => bytes.push(g.next() as u8),
                _ => {
                    let at = 1 + g.below(bytes.len() as u64 - 1) as usize;
                    bytes[at] ^= 1 << g.below(8);
                }
            }
            match decode(&bytes) {
                Some(m) => {
                    accepted += 1;
                    assert_eq!(serde_decode(&bytes), Some(m), "{bytes:?}");
                }
                None => refused += 1,
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "{accepted} {refused}");
    }

    #[test]
    fn padded_varints_and_other_variants_are_left_to_serde() {
        let ack = CacheMessage::Ack {
            request: 7,
            stored: true,
        };
        // 7 as two bytes (0x87 0x00): postcard reads it, the reader does not.
        let padded = [CACHE_PROTO, 3, 0x87, 0x00, 1];
        assert_eq!(decode(&padded), None);
        assert_eq!(CacheMessage::decode(&padded), Some(ack.clone()));
        assert_eq!(decode(&[CACHE_PROTO, 3, 7, 1]), Some(ack));
        let exists = CacheMessage::Exists {
            request: 1,
            bucket: "b".into(),
            reply_to: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(encode(&exists), None);
        let bytes = exists.encode();
        assert_eq!(decode(&bytes), None);
        assert_eq!(CacheMessage::decode(&bytes), Some(exists));
    }
}
