//! Any change to a spore must be refused: flips, truncation, trailing
//! bytes, wrong publisher, limits.

use std::io::Cursor;

use super::*;
use crate::verify;

#[test]
fn every_single_byte_flip_fails() {
    let bytes = small_spore();
    verify_bytes(&bytes).unwrap();
    assert!(bytes.len() < 2000, "keep this spore small: {}", bytes.len());
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            assert!(
                verify_bytes(&b).is_err(),
                "flip {mask:#x} at {i}/{} verified",
                bytes.len()
            );
        }
    }
}

#[test]
fn sampled_byte_flips_fail_on_a_larger_spore() {
    let bytes = large_spore(11);
    verify_bytes(&bytes).unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    // Always include the acceptance check's position: the middle byte.
    let mut positions = vec![bytes.len() / 2, bytes.len() - 1];
    positions.extend((0..300).map(|_| rng.random_range(0..bytes.len())));
    for i in positions {
        let mask: u8 = rng.random_range(1..=255);
        let mut b = bytes.clone();
        b[i] ^= mask;
        let err = verify_bytes(&b).expect_err("tampered spore verified");
        // Past the head, the payload digest is what catches it.
        if i > 2000 {
            assert!(
                matches!(err, SporeError::PayloadDigestMismatch),
                "at {i}: {err}"
            );
        }
    }
}

#[test]
fn truncation_anywhere_fails() {
    let bytes = small_spore();
    for len in 0..bytes.len() {
        let err = verify_bytes(&bytes[..len]).expect_err("truncated spore verified");
        if len >= 14 {
            assert!(matches!(err, SporeError::Truncated), "at {len}: {err}");
        }
    }
    let big = large_spore(5);
    for len in [big.len() - 1, big.len() / 2, 1000] {
        assert!(matches!(
            verify_bytes(&big[..len]),
            Err(SporeError::Truncated)
        ));
    }
}

#[test]
fn trailing_bytes_fail() {
    let mut bytes = small_spore();
    bytes.push(0);
    assert!(matches!(
        verify_bytes(&bytes),
        Err(SporeError::TrailingData)
    ));
}

#[test]
fn header_errors_are_specific() {
    let bytes = small_spore();
    assert!(matches!(
        verify_bytes(b"hello world, not a spore"),
        Err(SporeError::BadMagic)
    ));
    assert!(matches!(verify_bytes(b""), Err(SporeError::Truncated)));
    let mut v2 = bytes.clone();
    v2[9] = 2;
    assert!(matches!(
        verify_bytes(&v2),
        Err(SporeError::UnsupportedVersion(2))
    ));
    let mut huge = bytes.clone();
    huge[10..14].copy_from_slice(&(1u32 << 20).to_be_bytes());
    assert!(matches!(
        verify_bytes(&huge),
        Err(SporeError::ManifestTooLarge(_))
    ));
    // A signature byte flip.
    let len = u32::from_be_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let mut sig = bytes.clone();
    sig[14 + len + 5] ^= 1;
    assert!(matches!(verify_bytes(&sig), Err(SporeError::BadSignature)));
}

#[test]
fn re_signed_by_another_key_is_untrusted() {
    let bytes = small_spore();
    let good = key(1).verifying_key();
    let other = key(9).verifying_key();
    let limits = Limits::default();
    verify(Cursor::new(&bytes), &[good], &limits).unwrap();
    verify(Cursor::new(&bytes), &[other, good], &limits).unwrap();
    let err = verify(Cursor::new(&bytes), &[other], &limits).unwrap_err();
    assert!(matches!(err, SporeError::Untrusted { .. }), "{err}");
    assert_eq!(err.reason(), "untrusted");
}

#[test]
fn limits_are_enforced() {
    let bytes = large_spore(3);
    let just = Limits {
        max_spore_bytes: bytes.len() as u64,
        ..Limits::default()
    };
    verify(Cursor::new(&bytes), &[], &just).unwrap();
    let under = Limits {
        max_spore_bytes: bytes.len() as u64 - 1,
        ..Limits::default()
    };
    assert!(matches!(
        verify(Cursor::new(&bytes), &[], &under),
        Err(SporeError::TooLarge(_))
    ));
    let small_unpacked = Limits {
        max_unpacked_bytes: 1000,
        ..Limits::default()
    };
    assert!(matches!(
        verify(Cursor::new(&bytes), &[], &small_unpacked),
        Err(SporeError::TooLarge(_))
    ));
    let few_entries = Limits {
        max_entries: 1,
        ..Limits::default()
    };
    assert!(matches!(
        verify_small(&few_entries),
        Err(SporeError::TooLarge(_))
    ));
}

fn verify_small(limits: &Limits) -> Result<crate::Verified, SporeError> {
    verify(Cursor::new(small_spore()), &[], limits)
}

#[test]
fn large_declared_files_are_refused_by_the_unpacked_limit() {
    // 20 MB of zeros compress to a few KB.
    let zeros = vec![0u8; 20 << 20];
    let tar = raw_tar(&[
        Raw {
            data: &zeros,
            ..raw("big", tar::EntryType::Regular)
        },
        raw("run", tar::EntryType::Regular),
    ]);
    let spore = seal_tar(&tar, "run", &key(1));
    assert!(spore.len() < 100_000, "{}", spore.len());
    verify_bytes(&spore).unwrap();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    assert!(matches!(
        verify(Cursor::new(&spore), &[], &limits),
        Err(SporeError::TooLarge(_))
    ));
}

#[test]
fn a_metadata_bomb_is_stopped_before_it_is_buffered() {
    // The tar reader buffers pax records whole; 20 MB of them must be cut
    // off by the per-entry metadata budget, not read into memory.
    let records = vec![b'x'; 20 << 20];
    let tar = raw_tar(&[
        Raw {
            data: &records,
            ..raw("pax", tar::EntryType::XHeader)
        },
        raw("run", tar::EntryType::Regular),
    ]);
    let spore = seal_tar(&tar, "run", &key(1));
    let err = verify_bytes(&spore).unwrap_err();
    assert!(matches!(err, SporeError::TooLarge(_)), "{err}");
}
