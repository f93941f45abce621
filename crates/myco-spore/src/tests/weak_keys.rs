//! Weak Ed25519 keys (small-order points) are refused wherever a
//! publisher key is read: key files, trust records, manifests.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use super::*;
use crate::{MAGIC, check_public_key, inspect, parse_public_key, read_public_key};

const ALL_ZERO: [u8; 32] = [0; 32];

/// The identity point: every signature (R = identity, s = 0) checks out
/// under plain verification.
fn identity() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
}

/// The point of order 2 (y = -1).
fn order_two() -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
}

#[test]
fn small_order_points_are_refused_and_real_keys_pass() {
    for weak in [ALL_ZERO, identity(), order_two()] {
        let err = check_public_key(&weak).expect_err("weak key accepted");
        assert!(err.contains("weak"), "{err}");
        assert!(parse_public_key(&hex::encode(weak)).is_none());
    }
    let real = key(7).verifying_key();
    assert_eq!(check_public_key(real.as_bytes()), Ok(real));
    assert_eq!(parse_public_key(&hex::encode(real.as_bytes())), Some(real));
}

#[test]
fn a_key_file_holding_the_all_zero_key_is_refused() {
    let dir = TempDir::new();
    let path = dir.join("zero.pub");
    fs::write(&path, format!("{}\n", hex::encode(ALL_ZERO))).unwrap();
    match read_public_key(&path) {
        Err(crate::KeyError::BadKey { why, .. }) => assert!(why.contains("weak"), "{why}"),
        other => panic!("all-zero key file read as {other:?}"),
    }
}

#[test]
fn a_spore_signed_by_forgery_under_the_identity_key_is_refused() {
    let payload = zstd::encode_all(&b""[..], 3).unwrap();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: "forged".into(),
        version: "1".into(),
        command: "/bin/true".into(),
        args: vec![],
        env: Default::default(),
        resources: Default::default(),
        health: None,
        microvm: None,
        created_at: 0,
        payload_sha256: hex::encode(Sha256::digest(&payload)),
        payload_size: payload.len() as u64,
        publisher: hex::encode(identity()),
    };
    let manifest_bytes = manifest.to_canonical_json();
    // R = identity, s = 0: no secret involved.
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let forged = Signature::from_bytes(&sig);
    // The threat is real: lenient verification accepts the forgery.
    let message = [crate::SIGNATURE_CONTEXT, &manifest_bytes].concat();
    let weak = VerifyingKey::from_bytes(&identity()).unwrap();
    assert!(weak.verify(&message, &forged).is_ok());

    let mut spore = MAGIC.to_vec();
    spore.push(FORMAT_VERSION as u8);
    spore.extend((manifest_bytes.len() as u32).to_be_bytes());
    spore.extend(&manifest_bytes);
    spore.extend(sig);
    spore.extend(&payload);
    for err in [
        inspect(Cursor::new(&spore)).expect_err("forged spore inspected"),
        verify_bytes(&spore).expect_err("forged spore verified"),
    ] {
        assert!(
            matches!(&err, SporeError::BadManifest(why) if why.contains("weak")),
            "{err}"
        );
    }
}
