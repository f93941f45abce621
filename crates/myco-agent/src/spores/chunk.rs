//! Chunk bytes kept in the buffer they arrived in.
//!
//! A `Data` message is read off the stream into one buffer; its chunk is a
//! range of it ([`myco_proto::blob::BlobMessage::data_at`]). Holding the
//! buffer and the range, instead of copying the chunk out, saves one copy
//! of every fetched byte on its way to the verifier.

use std::ops::{Deref, Range};

/// A received chunk: `buf[at]`.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    buf: Vec<u8>,
    at: Range<usize>,
}

impl Chunk {
    /// The bytes `at` of `buf` (a range inside it, or empty if not).
    pub(super) fn within(buf: Vec<u8>, at: Range<usize>) -> Chunk {
        let at = if at.start <= at.end && at.end <= buf.len() {
            at
        } else {
            0..0
        };
        Chunk { buf, at }
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(buf: Vec<u8>) -> Chunk {
        let at = 0..buf.len();
        Chunk { buf, at }
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.at.clone()]
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_its_range_and_a_bad_range_is_empty() {
        let c = Chunk::within(vec![1, 2, 3, 4], 1..3);
        assert_eq!(&*c, &[2, 3]);
        assert!(Chunk::within(vec![1, 2], 1..5).is_empty());
        assert_eq!(&*Chunk::from(vec![5, 6]), &[5, 6]);
    }
}
