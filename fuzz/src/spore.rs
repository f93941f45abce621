//! Targets over spore files: arbitrary bytes, and payloads inside a spore
//! the harness signs (so the archive walk runs on hostile archives).

use ed25519_dalek::Signer;
use myco_spore::{FORMAT_VERSION, MAGIC, Manifest, SIGNATURE_CONTEXT, SigningKey};
use sha2::{Digest, Sha256};

/// Small limits, so a fuzzer's memory limit catches any allocation that
/// follows a declared size instead of these limits.
pub fn spore_limits() -> myco_spore::Limits {
    myco_spore::Limits {
        max_spore_bytes: 1 << 20,
        max_unpacked_bytes: 4 << 20,
        max_entries: 1000,
    }
}

/// The publisher key the harness signs with.
pub fn publisher_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// A spore file as a node receives it from a peer or an upload.
pub fn spore_inspect(data: &[u8]) {
    let _ = myco_spore::inspect(data);
    if let Ok(v) = myco_spore::verify(data, &[], &spore_limits()) {
        assert!(
            v.size == data.len() as u64,
            "verified size is the file size"
        );
    }
}

/// `payload` (meant to be a zstd-compressed tar) inside a spore whose
/// manifest and signature are valid, then verified.
pub fn spore_payload(payload: &[u8]) {
    let file = signed_spore(payload);
    let trusted = [publisher_key().verifying_key()];
    if let Ok(v) = myco_spore::verify(file.as_slice(), &trusted, &spore_limits()) {
        assert_eq!(v.size, file.len() as u64);
    }
}

/// A spore file around `payload`: a manifest naming its digest and size,
/// signed with [`publisher_key`]; the command is `bin/app` in the payload.
pub fn signed_spore(payload: &[u8]) -> Vec<u8> {
    let key = publisher_key();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: "fuzz".into(),
        version: "1".into(),
        command: "bin/app".into(),
        args: Vec::new(),
        env: Default::default(),
        resources: Default::default(),
        health: None,
        created_at: 0,
        microvm: None,
        payload_sha256: hex::encode(Sha256::digest(payload)),
        payload_size: payload.len() as u64,
        publisher: hex::encode(key.verifying_key().as_bytes()),
    };
    let json = manifest.to_canonical_json();
    let signed = [SIGNATURE_CONTEXT, &json].concat();
    let signature = key.sign(&signed).to_bytes();
    let len = u32::try_from(json.len()).expect("small manifest");
    let mut out = Vec::with_capacity(MAGIC.len() + 5 + json.len() + 64 + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION as u8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&signature);
    out.extend_from_slice(payload);
    out
}
