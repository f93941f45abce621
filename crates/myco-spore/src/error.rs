//! Error types, one per operation: [`SporeError`] for reading spores,
//! [`PackError`] for writing them and [`KeyError`] for key files.

use std::io;
use std::path::PathBuf;

/// Why a spore was refused by [`inspect`](crate::inspect),
/// [`verify`](crate::verify) or [`extract`](crate::extract).
///
/// Every refusal has a short, stable label ([`SporeError::reason`]) meant for
/// the `myco_spores_refused_total{reason}` metric.
#[derive(Debug, thiserror::Error)]
pub enum SporeError {
    /// The file does not start with `MYCOSPORE`.
    #[error(
        "not a spore file (bad magic); check that you passed a .spore made by `myco spore pack`"
    )]
    BadMagic,
    /// The container format version is not one this build understands.
    #[error("spore format version {0} is not supported (this build reads version 1); upgrade myco")]
    UnsupportedVersion(u8),
    /// The declared manifest length exceeds [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES).
    #[error("manifest length {0} bytes exceeds the 64 KiB limit; the spore is corrupt or hostile")]
    ManifestTooLarge(u32),
    /// The manifest is not valid JSON, has an unknown `format`, or has invalid fields.
    #[error("bad manifest: {0}; re-pack the spore")]
    BadManifest(String),
    /// The signature does not match the manifest and its publisher key.
    #[error(
        "bad signature: the manifest was not signed by the publisher it names; the spore was tampered with or corrupted"
    )]
    BadSignature,
    /// The publisher is validly signed but not among the trusted keys.
    #[error(
        "publisher {publisher} is not trusted; add its public key with `myco trust add` if you trust it"
    )]
    Untrusted {
        /// Hex of the publisher's Ed25519 public key.
        publisher: String,
    },
    /// The payload bytes do not hash to the manifest's `payload_sha256`
    /// (or the file changed between verification and extraction).
    #[error(
        "payload digest mismatch: the payload was tampered with or corrupted; fetch the spore again"
    )]
    PayloadDigestMismatch,
    /// The file ended before the size its header and manifest declare.
    #[error("spore is truncated; fetch or copy it again")]
    Truncated,
    /// The file has bytes after the end of the payload.
    #[error("spore has trailing bytes after the payload; fetch or copy it again")]
    TrailingData,
    /// A size or count limit ([`Limits`](crate::Limits)) would be exceeded.
    #[error("spore exceeds a limit: {0}; raise the limit if this spore is legitimate")]
    TooLarge(String),
    /// The payload is not a valid zstd-compressed tar archive.
    #[error("payload is not a valid zstd-compressed tar archive: {0}; re-pack the spore")]
    BadPayload(String),
    /// An archive entry could escape the extraction directory or is of a refused type.
    #[error("unsafe entry `{path}`: {why}; the spore must not be used")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Reading the spore or writing the extracted files failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl SporeError {
    /// Short stable label for metrics (`myco_spores_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            SporeError::BadMagic => "bad_magic",
            SporeError::UnsupportedVersion(_) => "unsupported_version",
            SporeError::ManifestTooLarge(_) => "manifest_too_large",
            SporeError::BadManifest(_) => "bad_manifest",
            SporeError::BadSignature => "bad_signature",
            SporeError::Untrusted { .. } => "untrusted",
            SporeError::PayloadDigestMismatch => "payload_digest_mismatch",
            SporeError::Truncated => "truncated",
            SporeError::TrailingData => "trailing_data",
            SporeError::TooLarge(_) => "too_large",
            SporeError::BadPayload(_) => "bad_payload",
            SporeError::UnsafeEntry { .. } => "unsafe_entry",
            SporeError::Io(_) => "io",
        }
    }

    pub(crate) fn unsafe_entry(path: impl Into<String>, why: impl Into<String>) -> Self {
        SporeError::UnsafeEntry {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// Why [`pack`](crate::pack) failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The metadata is invalid (bad name, version or command, …).
    #[error("invalid spore metadata: {0}")]
    BadMeta(String),
    /// The source tree contains something a spore may not carry.
    #[error("cannot pack `{path}`: {why}")]
    UnsafeSource {
        /// The offending path on disk.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A source file changed size while it was being packed.
    #[error("`{0}` changed while it was being packed; pack again once it is stable")]
    SourceChanged(PathBuf),
    /// Reading the source, the temporary payload file, or writing the output failed.
    #[error("I/O error while packing: {0}")]
    Io(#[from] io::Error),
}

/// Why reading or writing a key file failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file `{path}`: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file exists already; keys are never overwritten.
    #[error("key file `{0}` already exists; remove it or choose another path")]
    Exists(PathBuf),
    /// A public key file was given where the secret key is needed.
    #[error("{} is a public key; pass the secret key (the file without .pub)", .0.display())]
    PublicKeyGiven(PathBuf),
    /// A secret key file was given where a public key is needed; it was
    /// not sent anywhere.
    #[error("{} is a secret key (keep it private); pass its public key, {}.pub", .0.display(), .0.display())]
    SecretKeyGiven(PathBuf),
    /// The key file does not contain 64 hex characters (or not a valid key).
    #[error("key file `{path}` is not a key: {why}; expected 64 hex characters on one line")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}
