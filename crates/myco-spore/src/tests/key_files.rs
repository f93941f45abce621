//! Secret and public key files cannot be taken for each other: a public
//! key given to sign with once signed with "the secret" of its 32 bytes,
//! and a secret given as a public key would have been sent on as one.

use std::fs;

use super::{TempDir, key};
use crate::{KeyError, SECRET_TAG, public_key_path, read_public_key, read_signing_key};

#[test]
fn the_secret_file_is_tagged_and_the_public_file_is_bare_hex() {
    let dir = TempDir::new();
    let path = dir.join("pub.key");
    let public = crate::write_keypair(&path, [7; 32]).unwrap();
    let secret = fs::read_to_string(&path).unwrap();
    assert_eq!(secret, format!("{SECRET_TAG}{}\n", hex::encode([7; 32])));
    let pub_text = fs::read_to_string(public_key_path(&path)).unwrap();
    assert_eq!(pub_text, format!("{}\n", hex::encode(public.as_bytes())));
    assert_eq!(read_signing_key(&path).unwrap().verifying_key(), public);
}

/// Regression: `myco spore pack --key pub.key.pub` signed with garbage.
#[test]
fn a_public_key_is_refused_for_signing() {
    let dir = TempDir::new();
    let path = dir.join("pub.key");
    crate::write_keypair(&path, [7; 32]).unwrap();
    let pub_path = public_key_path(&path);
    let err = read_signing_key(&pub_path).unwrap_err();
    assert!(matches!(err, KeyError::PublicKeyGiven(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a public key; pass the secret key (the file without .pub)",
            pub_path.display()
        )
    );
}

#[test]
fn a_secret_key_is_refused_as_a_public_key() {
    let dir = TempDir::new();
    let path = dir.join("k");
    crate::write_keypair(&path, [9; 32]).unwrap();
    let err = read_public_key(&path).unwrap_err();
    assert!(matches!(err, KeyError::SecretKeyGiven(_)), "{err:?}");
    assert!(err.to_string().contains("k.pub"), "{err}");
    assert!(!err.to_string().contains(&hex::encode([9; 32])), "{err}");
}

/// Secret files of earlier releases hold the bare hex seed: still read.
#[test]
fn an_earlier_releases_secret_file_still_signs() {
    let dir = TempDir::new();
    let path = dir.join("old.key");
    fs::write(&path, format!("{}\n", hex::encode([5; 32]))).unwrap();
    assert_eq!(
        read_signing_key(&path).unwrap().verifying_key(),
        key(5).verifying_key()
    );
    let tagged_bad = dir.join("bad.key");
    fs::write(&tagged_bad, format!("{SECRET_TAG}abcd\n")).unwrap();
    assert!(matches!(
        read_signing_key(&tagged_bad),
        Err(KeyError::BadKey { .. })
    ));
}
