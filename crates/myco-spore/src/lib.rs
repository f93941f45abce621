//! Spores: signed, content-addressed workload packages.
//!
//! A `.spore` file is a small header, a canonical-JSON [`Manifest`] signed
//! with the publisher's Ed25519 key, and a zstd-compressed tar payload whose
//! SHA-256 the manifest records. The byte layout is specified in
//! `FORMAT.md` next to this crate's `Cargo.toml`.
//!
//! - [`pack`] writes a spore from a file or directory.
//! - [`inspect`] shows the manifest without trusting it.
//! - [`verify`] checks everything in one streaming pass.
//! - [`extract`] verifies, then unpacks safely.
//! - [`write_initramfs`] makes the initramfs of a microVM spore.
//!
//! The crate is pure: no clock reads, no randomness, no network. Callers
//! pass the creation time and key material.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod container;
mod entry;
mod error;
mod extract;
mod hashio;
mod initramfs;
mod keys;
mod manifest;
mod pack;
mod payload;
mod verify;

#[cfg(test)]
mod tests;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{KeyError, PackError, SporeError};
pub use extract::extract;
pub use initramfs::{MAX_INITRAMFS_FILE, write_initramfs};
pub use keys::{
    SECRET_TAG, check_public_key, parse_public_key, public_key_path, read_public_key,
    read_signing_key, write_keypair,
};
pub use manifest::{Health, Manifest, MicroVm, Resources};
pub use pack::{PackInfo, PackMeta, pack};
pub use verify::{Inspected, Limits, Verified, inspect, verify};

/// The first bytes of every spore.
pub const MAGIC: &[u8; 9] = b"MYCOSPORE";
/// The container format version (header byte) and manifest `format` value.
pub const FORMAT_VERSION: u32 = 1;
/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u32 = 64 * 1024;
/// Prefix of the signed message, so spore signatures cannot be confused
/// with signatures the same key makes for anything else.
pub const SIGNATURE_CONTEXT: &[u8] = b"myco spore manifest v1\0";
