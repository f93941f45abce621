//! Reading spores: [`inspect`] (untrusted look at the manifest) and
//! [`verify`] (everything checked, in one streaming pass).

use std::io::{self, Read};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::container::{read_full, read_head};
use crate::error::SporeError;
use crate::hashio::{PayloadHashes, PayloadReader, digest_string};
use crate::manifest::Manifest;
use crate::payload::{Visit, walk};

/// Size limits applied while reading a spore; exceeding one is
/// [`SporeError::TooLarge`], reported before reading beyond the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `.spore` file (default 1 GiB).
    pub max_spore_bytes: u64,
    /// Largest total size of the files in the payload (default 4 GiB).
    pub max_unpacked_bytes: u64,
    /// Most entries in the payload archive (default 100 000).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spore_bytes: 1 << 30,
            max_unpacked_bytes: 4 << 30,
            max_entries: 100_000,
        }
    }
}

/// What [`inspect`] found. Nothing in it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The manifest as written in the file.
    pub manifest: Manifest,
    /// Whether the signature matches the manifest and the publisher it names
    /// (says nothing about whether that publisher is trusted, nor about the payload).
    pub signature_valid: bool,
}

/// A spore that passed [`verify`] (or [`extract`](crate::extract)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed manifest.
    pub manifest: Manifest,
    /// `sha256:<hex>` of the whole file.
    pub digest: String,
    /// Size of the whole file in bytes.
    pub size: u64,
}

/// Reads the header, manifest and signature, for display. Checks the
/// signature but nothing else: never act on the result without [`verify`].
pub fn inspect(mut reader: impl Read) -> Result<Inspected, SporeError> {
    let head = read_head(&mut reader, &mut Sha256::new())?;
    Ok(Inspected {
        manifest: head.manifest,
        signature_valid: head.signature_valid,
    })
}

/// Verifies a whole spore in one streaming pass: header, manifest, the
/// signature by the manifest's publisher, that publisher's membership of
/// `trusted` (an empty slice checks self-consistency only), the payload's
/// size and SHA-256, and that every archive entry is safe to extract.
pub fn verify(
    reader: impl Read,
    trusted: &[VerifyingKey],
    limits: &Limits,
) -> Result<Verified, SporeError> {
    check(reader, trusted, limits, &mut |_, _| Ok(()))
}

/// [`verify`], with `visit` called for each payload entry as it streams by.
/// Until this returns `Ok`, whatever `visit` did is based on unverified
/// bytes; callers must undo it on error.
pub(crate) fn check(
    mut reader: impl Read,
    trusted: &[VerifyingKey],
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<Verified, SporeError> {
    let mut file_hasher = Sha256::new();
    let head = read_head(&mut reader, &mut file_hasher)?;
    if !head.signature_valid {
        return Err(SporeError::BadSignature);
    }
    if !trusted.is_empty() && !trusted.contains(&head.publisher) {
        return Err(SporeError::Untrusted {
            publisher: head.manifest.publisher,
        });
    }
    let manifest = head.manifest;
    let size = head.len.saturating_add(manifest.payload_size);
    if size > limits.max_spore_bytes {
        return Err(SporeError::TooLarge(format!(
            "the spore is {size} bytes, over the {} byte limit",
            limits.max_spore_bytes
        )));
    }
    let mut hashes = PayloadHashes::new(file_hasher, manifest.payload_size);
    let mut payload = PayloadReader {
        inner: &mut reader,
        remaining: manifest.payload_size,
        hashes: &mut hashes,
    };
    let walked = walk(&mut payload, limits, visit);
    // The archive reader stops at the tar end marker; hash the rest too. A
    // walk failure is reported only after the digest, so tampering shows as
    // tampering rather than as whatever garbage it decoded to.
    io::copy(&mut payload, &mut io::sink())?;
    if payload.remaining > 0 {
        return Err(SporeError::Truncated);
    }
    let (file_hash, payload_hash) = hashes.finish()?;
    if hex::encode(payload_hash.finalize()) != manifest.payload_sha256 {
        return Err(SporeError::PayloadDigestMismatch);
    }
    let tree = walked?;
    if !manifest.command.starts_with('/') && !tree.has_command(&manifest.command) {
        return Err(SporeError::BadManifest(format!(
            "command `{}` is not a file in the payload",
            manifest.command
        )));
    }
    if read_full(&mut reader, &mut [0u8; 1])? > 0 {
        return Err(SporeError::TrailingData);
    }
    Ok(Verified {
        manifest,
        digest: digest_string(file_hash),
        size,
    })
}
