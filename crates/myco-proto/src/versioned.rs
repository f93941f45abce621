//! Stream messages behind one version byte, so a node can tell another
//! build's message from garbage: the logs, cache and messaging channels
//! encode and decode through here.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `version`, then `message` in postcard, in one allocation of the exact
/// size: encoding into a growing vector and then copying it behind the
/// version byte took three or more allocations and two copies of every
/// message (a forwarded cache GET showed them).
pub fn encode<T: Serialize>(version: u8, message: &T) -> Vec<u8> {
    // `serialized_size` sits in postcard's `experimental` module (stable
    // across 1.x so far); the test below would catch a size or byte drift.
    let size =
        postcard::experimental::serialized_size(message).expect("stream messages always encode");
    let mut out = Vec::with_capacity(1 + size);
    out.push(version);
    postcard::to_extend(message, out).expect("stream messages always encode")
}

/// The message behind `version`; `None` for another version, trailing
/// bytes or garbage.
pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Option<T> {
    let (&v, rest) = bytes.split_first()?;
    if v != version {
        return None;
    }
    let (m, tail) = postcard::take_from_bytes(rest).ok()?;
    tail.is_empty().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Sample {
        id: u64,
        name: String,
        body: Vec<u8>,
        tags: Vec<(String, Option<u32>)>,
    }

    fn sample(body: usize) -> Sample {
        Sample {
            id: u64::MAX - 3,
            name: "bucket:key".into(),
            body: (0..body).map(|i| i as u8).collect(),
            tags: vec![("a".into(), Some(300)), ("b".into(), None)],
        }
    }

    #[test]
    fn the_bytes_are_the_version_then_postcard_in_one_exact_allocation() {
        for body in [0, 1, 127, 128, 70_000] {
            let m = sample(body);
            let out = encode(7, &m);
            let mut expected = vec![7];
            expected.extend(postcard::to_stdvec(&m).unwrap());
            assert_eq!(out, expected, "body of {body} bytes");
            assert_eq!(out.capacity(), out.len(), "body of {body} bytes");
            assert_eq!(decode::<Sample>(7, &out), Some(m));
            assert_eq!(decode::<Sample>(8, &out), None);
        }
    }
}
