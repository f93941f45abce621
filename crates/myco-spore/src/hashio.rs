//! Readers and writers that hash and count the bytes passing through, so
//! digests are computed while streaming instead of over a buffered copy.

use std::io::{self, Read, Write};
use std::sync::{Arc, mpsc};
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

/// The two hashes of the payload while a spore is verified: the file's
/// (for its digest; it has seen the head) and the payload's (for the signed
/// manifest). Hashing was most of a fetch's CPU: for a large payload both
/// run on helper threads fed the same batches (one copy, shared), beside
/// the archive walk, so the verifying thread hashes nothing and the two
/// passes run at once. Small payloads (and a failed thread spawn) hash
/// inline.
pub(crate) struct PayloadHashes {
    inline: Option<(Sha256, Sha256)>,
    pending: Vec<u8>,
    helpers: Vec<Helper>,
}

/// A thread hashing the batches it is sent.
struct Helper {
    tx: mpsc::SyncSender<Arc<Vec<u8>>>,
    thread: thread::JoinHandle<Sha256>,
}

impl Helper {
    fn spawn(mut hasher: Sha256) -> Option<Helper> {
        let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(BATCHES);
        let thread = thread::Builder::new()
            .name("spore-hash".into())
            .spawn(move || {
                for batch in rx {
                    hasher.update(&batch[..]);
                }
                hasher
            })
            .ok()?;
        Some(Helper { tx, thread })
    }

    fn join(self) -> io::Result<Sha256> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the spore hashing thread panicked"))
    }
}

/// Payloads from this size hash on helper threads.
const OFF_THREAD_FROM: u64 = 4 << 20;
/// Bytes handed to the helpers at a time; [`BATCHES`] of them may wait
/// for each, a bound on the memory the helpers add.
const BATCH: usize = 256 << 10;
const BATCHES: usize = 8;

impl PayloadHashes {
    /// Continues `file` (which has seen the head) and starts the payload's
    /// hash, over a payload of `payload_size` bytes.
    pub fn new(file: Sha256, payload_size: u64) -> PayloadHashes {
        let inline = |file| PayloadHashes {
            inline: Some((file, Sha256::new())),
            pending: Vec::new(),
            helpers: Vec::new(),
        };
        if payload_size < OFF_THREAD_FROM {
            return inline(file);
        }
        // The helper gets a copy: if a thread cannot start, the original
        // hashes inline (a started helper ends when its sender drops).
        let (Some(f), Some(p)) = (Helper::spawn(file.clone()), Helper::spawn(Sha256::new())) else {
            return inline(file);
        };
        PayloadHashes {
            inline: None,
            pending: Vec::with_capacity(BATCH),
            helpers: vec![f, p],
        }
    }

    /// Hashes `bytes` into both (later, on the helpers).
    pub fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some((f, p)) = &mut self.inline {
            f.update(bytes);
            p.update(bytes);
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let batch = Arc::new(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(BATCH),
        ));
        for h in &self.helpers {
            if h.tx.send(batch.clone()).is_err() {
                return Err(io::Error::other("a spore hashing thread stopped"));
            }
        }
        Ok(())
    }

    /// The finished hashes of everything given: (file, payload).
    pub fn finish(mut self) -> io::Result<(Sha256, Sha256)> {
        if let Some(both) = self.inline.take() {
            return Ok(both);
        }
        self.flush()?;
        let mut helpers = std::mem::take(&mut self.helpers).into_iter();
        let (Some(f), Some(p)) = (helpers.next(), helpers.next()) else {
            unreachable!("two helpers, set together");
        };
        Ok((f.join()?, p.join()?))
    }
}

/// Reads at most `remaining` payload bytes from `inner`, feeding them to both
/// the whole-file hasher and the payload hasher. It never reads past the
/// declared payload, so trailing data can be detected afterwards.
pub(crate) struct PayloadReader<'a, R> {
    pub inner: &'a mut R,
    pub remaining: u64,
    pub hashes: &'a mut PayloadHashes,
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
        self.hashes.update(&buf[..n])?;
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

    /// The helper threads see every byte, in order, whatever the sizes of
    /// the pieces (batches cut across them): their hashes are the inline
    /// ones, the file's continuing the head and the payload's not.
    #[test]
    fn the_off_thread_hashes_equal_the_inline_ones() {
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
        let mut off = PayloadHashes::new(start.clone(), payload.len() as u64);
        assert!(off.inline.is_none(), "a large payload hashes on helpers");
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
        let (file, body) = off.finish().unwrap();
        assert_eq!(digest_string(file), digest_string(whole));
        assert_eq!(
            digest_string(body),
            digest_string(Sha256::new_with_prefix(&payload))
        );
        // A small payload hashes inline, to the same results.
        let mut small = PayloadHashes::new(start, 10);
        assert!(small.inline.is_some());
        small.update(&payload[..10]).unwrap();
        let mut want = Sha256::new();
        want.update(head);
        want.update(&payload[..10]);
        let (file, body) = small.finish().unwrap();
        assert_eq!(digest_string(file), digest_string(want));
        assert_eq!(
            digest_string(body),
            digest_string(Sha256::new_with_prefix(&payload[..10]))
        );
    }
}
