//! The fixed part of a spore: magic, version, manifest and signature.

use std::io::{self, Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::SporeError;
use crate::keys::check_public_key;
use crate::manifest::Manifest;
use crate::{FORMAT_VERSION, MAGIC, MAX_MANIFEST_BYTES, SIGNATURE_CONTEXT};

/// Magic + version byte + manifest length.
pub(crate) const PREFIX_LEN: usize = MAGIC.len() + 1 + 4;
/// Ed25519 signature length.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// The message actually signed: a domain-separation prefix keeps a spore
/// signature from being valid for any other use of the same key.
fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNATURE_CONTEXT, manifest].concat()
}

/// Signs `manifest_bytes` and writes everything up to the payload.
pub(crate) fn write_head(
    out: &mut impl Write,
    manifest_bytes: &[u8],
    key: &SigningKey,
) -> io::Result<()> {
    let len = u32::try_from(manifest_bytes.len())
        .ok()
        .filter(|&l| l <= MAX_MANIFEST_BYTES)
        .ok_or_else(|| io::Error::other("manifest exceeds 64 KiB"))?;
    let signature = key.sign(&signed_message(manifest_bytes));
    out.write_all(MAGIC)?;
    out.write_all(&[FORMAT_VERSION as u8])?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(manifest_bytes)?;
    out.write_all(&signature.to_bytes())
}

/// The parsed fixed part of a spore; nothing in it is trusted yet.
pub(crate) struct Head {
    pub manifest: Manifest,
    pub publisher: VerifyingKey,
    pub signature_valid: bool,
    /// Bytes consumed so far (prefix + manifest + signature).
    pub len: u64,
}

/// Reads and parses the fixed part, hashing every byte read into `hasher`.
pub(crate) fn read_head(r: &mut impl Read, hasher: &mut Sha256) -> Result<Head, SporeError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let n = read_full(r, &mut prefix)?;
    hasher.update(&prefix[..n]);
    // Report "not a spore" rather than "truncated" for short non-spore input.
    let magic_part = n.min(MAGIC.len());
    if prefix[..magic_part] != MAGIC[..magic_part] {
        return Err(SporeError::BadMagic);
    }
    if n < PREFIX_LEN {
        return Err(SporeError::Truncated);
    }
    let version = prefix[MAGIC.len()];
    if u32::from(version) != FORMAT_VERSION {
        return Err(SporeError::UnsupportedVersion(version));
    }
    let len = u32::from_be_bytes(prefix[MAGIC.len() + 1..].try_into().expect("4 bytes"));
    if len > MAX_MANIFEST_BYTES {
        return Err(SporeError::ManifestTooLarge(len));
    }
    let mut rest = vec![0u8; len as usize + SIGNATURE_LEN];
    let n = read_full(r, &mut rest)?;
    hasher.update(&rest[..n]);
    if n < rest.len() {
        return Err(SporeError::Truncated);
    }
    let (manifest_bytes, sig_bytes) = rest.split_at(len as usize);
    let manifest = parse_manifest(manifest_bytes)?;
    let publisher = hex::decode(manifest.publisher.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or("not 64 hex digits")
        .and_then(|b| check_public_key(&b))
        .map_err(|why| SporeError::BadManifest(format!("publisher key: {why}")))?;
    let signature = Signature::from_bytes(sig_bytes.try_into().expect("64 bytes"));
    // verify_strict also rejects weak keys and non-canonical signatures, so a
    // byte flip in the signature can never yield another valid signature.
    let signature_valid = publisher
        .verify_strict(&signed_message(manifest_bytes), &signature)
        .is_ok();
    Ok(Head {
        manifest,
        publisher,
        signature_valid,
        len: (PREFIX_LEN + rest.len()) as u64,
    })
}

fn parse_manifest(bytes: &[u8]) -> Result<Manifest, SporeError> {
    // Look at `format` alone first: a future format may change other fields,
    // and "upgrade myco" is more useful than a missing-field error.
    #[derive(serde::Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let bad = |e: serde_json::Error| SporeError::BadManifest(format!("invalid JSON: {e}"));
    let f: FormatOnly = serde_json::from_slice(bytes).map_err(bad)?;
    if f.format != FORMAT_VERSION {
        return Err(SporeError::BadManifest(format!(
            "manifest format {} is not supported (expected {FORMAT_VERSION}); upgrade myco",
            f.format
        )));
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(bad)?;
    manifest.validate().map_err(SporeError::BadManifest)?;
    Ok(manifest)
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
