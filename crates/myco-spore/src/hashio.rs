//! Readers and writers that hash and count the bytes passing through, so
//! digests are computed while streaming instead of over a buffered copy.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread;

use sha2::{Digest, Sha256};

/// Formats a finished SHA-256 as the `sha256:<hex>` digest string.
pub(crate) fn digest_string(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// A writer that hashes and counts everything written to `inner`.
pub(crate) struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The whole-file hash while a spore is verified. Verifying is two SHA-256
/// passes over the same bytes (the file, for its digest; the payload, for
/// the signed manifest), and hashing was most of a fetch's CPU: for a large
/// payload the file's pass runs on a helper thread, beside the payload's
/// pass and the archive walk, so the verifying thread does one. Small
/// payloads (and a failed thread spawn) hash inline.
pub(crate) struct FileHash {
    inline: Option<Sha256>,
    pending: Vec<u8>,
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    helper: Option<thread::JoinHandle<Sha256>>,
}

/// Payloads from this size hash the file on a helper thread.
const OFF_THREAD_FROM: u64 = 4 << 20;
/// Bytes handed to the helper at a time; [`BATCHES`] of them may wait, a
/// bound on the memory the helper adds.
const BATCH: usize = 256 << 10;
const BATCHES: usize = 8;

impl FileHash {
    /// Continues `hasher` (which has seen the head) over a payload of
    /// `payload_size` bytes.
    pub fn new(hasher: Sha256, payload_size: u64) -> FileHash {
        let inline = |hasher| FileHash {
            inline: Some(hasher),
            pending: Vec::new(),
            tx: None,
            helper: None,
        };
        if payload_size < OFF_THREAD_FROM {
            return inline(hasher);
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(BATCHES);
        // The helper gets a copy: if it cannot start, the original hashes inline.
        let mut h = hasher.clone();
        let spawned = thread::Builder::new()
            .name("spore-hash".into())
            .spawn(move || {
                for batch in rx {
                    h.update(&batch);
                }
                h
            });
        match spawned {
            Ok(helper) => FileHash {
                inline: None,
                pending: Vec::with_capacity(BATCH),
                tx: Some(tx),
                helper: Some(helper),
            },
            Err(_) => inline(hasher),
        }
    }

    /// Hashes `bytes` (later, on the helper).
    pub fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(h) = &mut self.inline {
            h.update(bytes);
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        match &self.tx {
            Some(tx) if tx.send(batch).is_ok() => Ok(()),
            _ => Err(io::Error::other("the spore hashing thread stopped")),
        }
    }

    /// The finished hash of everything given.
    pub fn finish(mut self) -> io::Result<Sha256> {
        if let Some(h) = self.inline.take() {
            return Ok(h);
        }
        self.flush()?;
        drop(self.tx.take());
        self.helper
            .take()
            .expect("set with the sender")
            .join()
            .map_err(|_| io::Error::other("the spore hashing thread panicked"))
    }
}

/// Reads at most `remaining` payload bytes from `inner`, feeding them to both
/// the whole-file hasher and the payload hasher. It never reads past the
/// declared payload, so trailing data can be detected afterwards.
pub(crate) struct PayloadReader<'a, R> {
    pub inner: &'a mut R,
    pub remaining: u64,
    pub file_hasher: &'a mut FileHash,
    pub payload_hasher: Sha256,
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.file_hasher.update(&buf[..n])?;
        self.payload_hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Yields exactly `size` bytes of `inner` or fails: a source file that
/// shrinks or grows while packing must not produce a corrupt archive.
pub(crate) struct ExactReader<R> {
    pub inner: R,
    pub left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Probe for growth: a file longer than its header size changed.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, SIZE_CHANGED)),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, SIZE_CHANGED));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Message of the error [`ExactReader`] returns, recognized by the packer.
pub(crate) const SIZE_CHANGED: &str = "file size changed while packing";

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper thread sees every byte, in order, whatever the sizes of
    /// the pieces (batches cut across them): its hash is the inline one.
    #[test]
    fn the_off_thread_file_hash_equals_the_inline_one() {
        let head = b"head bytes";
        let mut x = 1u64;
        let payload: Vec<u8> = (0..(OFF_THREAD_FROM as usize + 3 * BATCH + 17))
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        let mut start = Sha256::new();
        start.update(head);
        let mut off = FileHash::new(start.clone(), payload.len() as u64);
        assert!(off.inline.is_none(), "a large payload hashes on the helper");
        let mut at = 0;
        for piece in [1usize, 4095, BATCH, 3 * BATCH + 7].iter().cycle() {
            if at == payload.len() {
                break;
            }
            let end = (at + piece).min(payload.len());
            off.update(&payload[at..end]).unwrap();
            at = end;
        }
        let mut whole = Sha256::new();
        whole.update(head);
        whole.update(&payload);
        assert_eq!(
            digest_string(off.finish().unwrap()),
            digest_string(whole.clone())
        );
        // A small payload hashes inline, to the same result.
        let mut small = FileHash::new(start, 10);
        assert!(small.inline.is_some());
        small.update(&payload[..10]).unwrap();
        let mut want = Sha256::new();
        want.update(head);
        want.update(&payload[..10]);
        assert_eq!(digest_string(small.finish().unwrap()), digest_string(want));
    }
}
