//! Publisher key files: `PATH` holds the secret (mode 0600) and `PATH.pub`
//! the public key, each on one line. The public key is 64 hex digits (as
//! trust records and manifests hold it); the secret is the 32-byte seed as
//! [`SECRET_TAG`] and 64 hex digits, so neither file can be taken for the
//! other. Secret files of earlier releases (bare hex) are still read,
//! unless named `*.pub`.
//!
//! The crate draws no randomness: callers pass the 32 secret bytes (the
//! binary gets them from the OS).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::KeyError;

/// What a secret key file starts with, before the seed's 64 hex digits.
pub const SECRET_TAG: &str = "myco-secret-key-v1:";

/// The path of the public key file belonging to secret key file `path`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes the secret key to `path` (mode 0600) and the public key to
/// `path.pub`; refuses to overwrite either. Returns the public key.
pub fn write_keypair(path: &Path, secret: [u8; 32]) -> Result<VerifyingKey, KeyError> {
    let key = SigningKey::from_bytes(&secret);
    let public = key.verifying_key();
    let pub_path = public_key_path(path);
    // Check both first so a clash on `.pub` doesn't leave a lone secret behind.
    for p in [path, pub_path.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists(p.to_path_buf()));
        }
    }
    write_new(path, 0o600, &format!("{SECRET_TAG}{}", hex::encode(secret)))?;
    write_new(&pub_path, 0o644, &hex::encode(public.as_bytes()))?;
    Ok(public)
}

/// Reads a secret key file written by [`write_keypair`], or by an
/// earlier release (bare hex). A bare-hex file named `*.pub` is refused as
/// the public key it is: signing with it would sign with a key nobody
/// trusts.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_text(path)?;
    let hex_text = match text.strip_prefix(SECRET_TAG) {
        Some(h) => h,
        None if path.extension().is_some_and(|e| e == "pub") => {
            return Err(KeyError::PublicKeyGiven(path.to_path_buf()));
        }
        None => &text,
    };
    Ok(SigningKey::from_bytes(&hex32(path, hex_text)?))
}

/// Reads a public key file (64 hex characters, surrounding whitespace
/// ignored). Refuses a secret key file (which would otherwise send the
/// secret on as a public key) and weak keys ([`check_public_key`]).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_text(path)?;
    if text.starts_with(SECRET_TAG) {
        return Err(KeyError::SecretKeyGiven(path.to_path_buf()));
    }
    let bytes = hex32(path, &text)?;
    check_public_key(&bytes).map_err(|why| KeyError::BadKey {
        path: path.to_path_buf(),
        why: why.to_string(),
    })
}

/// Parses a public key given as 64 hex characters (whitespace trimmed), as
/// found in `.pub` files, trust records and manifests' `publisher` field.
/// `None` for anything [`check_public_key`] refuses.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
    check_public_key(&bytes).ok()
}

/// Decodes a publisher key, refusing bytes that are not a curve point and
/// weak keys: the small-order points (the all-zero bytes among them), for
/// which signatures can be forged without a secret (with the identity
/// point as key, `R` = identity and `s` = 0 passes a plain Ed25519 check
/// for every message). No secret key yields one, so only a crafted key is
/// refused.
pub fn check_public_key(bytes: &[u8; 32]) -> Result<VerifyingKey, &'static str> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| "not a valid Ed25519 public key")?;
    if key.is_weak() {
        return Err(
            "a weak Ed25519 key (a small-order point) that anyone can forge signatures for",
        );
    }
    Ok(key)
}

fn write_new(path: &Path, mode: u32, hex_line: &str) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => io_err(e),
        })?;
    writeln!(f, "{hex_line}")
        .and_then(|_| f.sync_all())
        .map_err(io_err)
}

/// The file's text, surrounding whitespace trimmed.
fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn hex32(path: &Path, text: &str) -> Result<[u8; 32], KeyError> {
    let bad = |why: &str| KeyError::BadKey {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let bytes = hex::decode(text).map_err(|_| bad("not hex"))?;
    bytes.try_into().map_err(|_| bad("wrong length"))
}
