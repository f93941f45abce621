//! Putting chunks that arrive out of order (several holders, a deep
//! window) back in order, so the file is written and hashed as one
//! stream: verification runs while the bytes arrive, not after.
//!
//! The fetch never asks for a chunk more than [`InOrder::ahead`] bytes
//! past the first one it lacks, so what waits here is bounded by the
//! window, whatever the holders send.

use std::collections::BTreeMap;

/// Chunks (any bytes: a fetch keeps them in their receive buffers, see
/// [`super::chunk`]) held until every byte before them has arrived.
#[derive(Debug)]
pub(super) struct InOrder<T = Vec<u8>> {
    /// The first byte not yet released.
    next: u64,
    /// Chunks past `next`, by offset.
    waiting: BTreeMap<u64, T>,
    /// Bytes in `waiting`.
    held: usize,
}

/// Why a chunk was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Rejected {
    /// It starts before `next` (already released) or where another
    /// waiting chunk starts: a late duplicate.
    #[error("chunk at {0} already received")]
    Duplicate(u64),
    /// It is empty: it cannot advance anything.
    #[error("empty chunk at {0}")]
    Empty(u64),
}

impl<T: AsRef<[u8]>> InOrder<T> {
    /// Expects bytes from `start` (0, or the size of a partial file resumed).
    pub(super) fn new(start: u64) -> InOrder<T> {
        InOrder {
            next: start,
            waiting: BTreeMap::new(),
            held: 0,
        }
    }

    /// The first byte not yet released: everything before it is written.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// Bytes held out of order.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// How far past [`InOrder::next`] `offset` lies.
    pub(super) fn ahead(&self, offset: u64) -> u64 {
        offset.saturating_sub(self.next)
    }

    /// Takes the chunk at `offset` and returns every chunk that is now
    /// contiguous from [`InOrder::next`], in order (empty if a gap remains).
    pub(super) fn push(&mut self, offset: u64, data: T) -> Result<Vec<T>, Rejected> {
        if data.as_ref().is_empty() {
            return Err(Rejected::Empty(offset));
        }
        if offset < self.next || self.waiting.contains_key(&offset) {
            return Err(Rejected::Duplicate(offset));
        }
        self.held += data.as_ref().len();
        self.waiting.insert(offset, data);
        let mut ready = Vec::new();
        while let Some(data) = self.waiting.remove(&self.next) {
            let len = data.as_ref().len();
            self.held -= len;
            self.next += len as u64;
            ready.push(data);
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(bytes: &[u8], size: usize) -> Vec<(u64, Vec<u8>)> {
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, c)| ((i * size) as u64, c.to_vec()))
            .collect()
    }

    #[test]
    fn any_arrival_order_releases_the_file_in_order() {
        let file: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let parts = chunks(&file, 1000);
        // Several orders: reversed, interleaved, a rotation.
        let orders: Vec<Vec<usize>> = vec![
            (0..parts.len()).rev().collect(),
            (0..parts.len())
                .step_by(2)
                .chain((1..parts.len()).step_by(2))
                .collect(),
            (3..parts.len()).chain(0..3).collect(),
        ];
        for order in orders {
            let mut io = InOrder::new(0);
            let mut stream = Vec::new();
            for &i in &order {
                let (offset, data) = parts[i].clone();
                for run in io.push(offset, data).expect("each chunk once") {
                    stream.extend_from_slice(&run);
                }
            }
            assert!(stream == file, "order {order:?}");
            assert_eq!(io.next(), file.len() as u64);
            assert_eq!(io.held(), 0);
        }
    }

    #[test]
    fn nothing_is_released_across_a_gap() {
        let mut io = InOrder::new(0);
        assert_eq!(io.push(10, vec![2; 10]).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(io.push(20, vec![3; 5]).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(io.held(), 15);
        assert_eq!(io.ahead(20), 20);
        let out = io.push(0, vec![1; 10]).unwrap();
        assert_eq!(out, vec![vec![1; 10], vec![2; 10], vec![3; 5]]);
        assert_eq!(io.next(), 25);
        assert_eq!(io.held(), 0);
    }

    #[test]
    fn duplicates_and_empty_chunks_are_refused_and_change_nothing() {
        let mut io = InOrder::new(100);
        assert_eq!(io.push(50, vec![1]), Err(Rejected::Duplicate(50)));
        assert_eq!(io.push(110, vec![1; 10]).unwrap().len(), 0);
        assert_eq!(io.push(110, vec![9; 10]), Err(Rejected::Duplicate(110)));
        assert_eq!(io.push(100, vec![]), Err(Rejected::Empty(100)));
        assert_eq!(io.held(), 10);
        let out = io.push(100, vec![0; 10]).unwrap();
        assert_eq!(out, vec![vec![0; 10], vec![1; 10]], "the first copy kept");
    }
}
