//! Readers and writers that hash and count the bytes passing through, so
//! digests are computed while streaming instead of over a buffered copy.

use std::io::{self, Read, Write};

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

/// Reads at most `remaining` payload bytes from `inner`, feeding them to both
/// the whole-file hasher and the payload hasher. It never reads past the
/// declared payload, so trailing data can be detected afterwards.
pub(crate) struct PayloadReader<'a, R> {
    pub inner: &'a mut R,
    pub remaining: u64,
    pub file_hasher: &'a mut Sha256,
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
        self.file_hasher.update(&buf[..n]);
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
