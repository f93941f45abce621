//! Stream messages behind one version byte, so a node can tell another
//! build's message from garbage: the logs, cache and messaging channels
//! encode and decode through here.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `version`, then `message` in postcard.
pub fn encode<T: Serialize>(version: u8, message: &T) -> Vec<u8> {
    let mut out = vec![version];
    out.extend(postcard::to_stdvec(message).expect("stream messages always encode"));
    out
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
