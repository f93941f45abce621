//! Byte buffers on the wire as one run of bytes, not a sequence of numbers.
//!
//! serde sees a `Vec<u8>` as a sequence: postcard then reads and writes it
//! one element at a time through the visitor, which made decoding a 1 MiB
//! replication frame of 64 KiB values the mesh loop's biggest cost (half
//! its time in a profile of a write burst) and SWIM acks waited behind it.
//! Postcard encodes a byte string exactly as it encodes a sequence of `u8`
//! (a varint length, then the raw bytes), so these helpers change the cost,
//! not the wire format: `same_bytes_on_the_wire` pins that. Other formats
//! that read a sequence (JSON arrays) still decode.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

struct BufVisitor;

impl<'de> Visitor<'de> for BufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The size hint comes from the input: cap what it may reserve.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// `#[serde(with = "crate::bytes")]` for a `Vec<u8>`.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BufVisitor)
}

/// `#[serde(with = "crate::bytes::option")]` for an `Option<Vec<u8>>`.
pub mod option {
    use serde::de::{Deserializer, Visitor};
    use serde::{Serialize, Serializer};

    /// A byte string inside `Some`.
    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// See the module docs.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("optional bytes")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// See the module docs.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(OptVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsSeq {
        a: Option<Vec<u8>>,
        b: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsBytes {
        #[serde(with = "crate::bytes::option")]
        a: Option<Vec<u8>>,
        #[serde(with = "crate::bytes")]
        b: Vec<u8>,
    }

    #[test]
    fn same_bytes_on_the_wire() {
        for (a, b) in [
            (Some(vec![0u8, 1, 255, 128, 7]), vec![9u8; 300]),
            (None, Vec::new()),
            (Some(Vec::new()), (0..=255).collect()),
        ] {
            let seq = postcard::to_stdvec(&AsSeq {
                a: a.clone(),
                b: b.clone(),
            })
            .unwrap();
            let bytes = postcard::to_stdvec(&AsBytes {
                a: a.clone(),
                b: b.clone(),
            })
            .unwrap();
            assert_eq!(seq, bytes);
            let back: AsBytes = postcard::from_bytes(&seq).unwrap();
            assert_eq!(back, AsBytes { a, b });
        }
    }

    #[test]
    fn a_length_past_the_input_is_an_error_not_an_allocation() {
        // Varint length 2^28 with three bytes after it.
        let bad = [0x01, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3];
        assert!(postcard::from_bytes::<AsBytes>(&bad).is_err());
    }

    #[test]
    fn json_arrays_still_decode() {
        let v: AsBytes = serde_json::from_str(r#"{"a":[1,2],"b":[3]}"#).unwrap();
        assert_eq!(
            v,
            AsBytes {
                a: Some(vec![1, 2]),
                b: vec![3]
            }
        );
        let n: AsBytes = serde_json::from_str(r#"{"a":null,"b":[]}"#).unwrap();
        assert_eq!(n.a, None);
    }
}
