//! Hand-made archives, validly signed, whose entries are unsafe: verify
//! (and therefore extract) must refuse them.

use std::fs;

use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};

use super::*;
use crate::extract;

fn link<'a>(path: &'a str, ty: tar::EntryType, target: &'a str) -> Raw<'a> {
    Raw {
        link: target,
        ..raw(path, ty)
    }
}

fn run() -> Raw<'static> {
    Raw {
        mode: 0o755,
        data: b"#!/bin/sh\n",
        ..raw("run", Regular)
    }
}

/// Seals `entries` (plus a `run` command) and expects an unsafe-entry refusal.
fn refused(entries: Vec<Raw<'_>>) -> SporeError {
    let mut all = vec![run()];
    all.extend(entries);
    let spore = seal_tar(&raw_tar(&all), "run", &key(4));
    let err = verify_bytes(&spore).expect_err("unsafe archive verified");
    assert!(
        matches!(err, SporeError::UnsafeEntry { .. }),
        "expected UnsafeEntry, got {err}"
    );
    // Extraction verifies first, so nothing is written.
    let dir = TempDir::new();
    fs::write(dir.join("s.spore"), &spore).unwrap();
    let dest = dir.join("out");
    assert!(extract(&dir.join("s.spore"), &dest, &[], &Limits::default()).is_err());
    assert!(!dest.exists());
    err
}

#[test]
fn benign_crafted_archive_verifies_and_extracts() {
    // Control: the helper itself produces spores that pass.
    let tar = raw_tar(&[
        raw("./", Directory),
        run(),
        raw("lib/", Directory),
        Raw {
            data: b"so",
            mode: 0o6777,
            ..raw("lib/libx.so.1", Regular)
        },
        link("lib/libx.so", Symlink, "libx.so.1"),
        link("lib/up", Symlink, ".."),
        link("bin/run-too", Link, "run"),
        link("bin/lib", Symlink, "../lib/libx.so"),
    ]);
    let spore = seal_tar(&tar, "run", &key(4));
    verify_bytes(&spore).unwrap();
    let dir = TempDir::new();
    fs::write(dir.join("s.spore"), &spore).unwrap();
    let out = dir.join("out");
    extract(&dir.join("s.spore"), &out, &[], &Limits::default()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode("lib/libx.so.1"),
        0o755,
        "setuid/setgid and g/o write stripped"
    );
    assert_eq!(mode("run"), 0o755);
    assert_eq!(fs::read(out.join("bin/run-too")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(out.join("bin/lib")).unwrap(), b"so");
}

#[test]
fn parent_dir_path_refused() {
    refused(vec![raw("../evil", Regular)]);
    refused(vec![raw("a/../../evil", Regular)]);
}

#[test]
fn absolute_path_refused() {
    refused(vec![raw("/abs", Regular)]);
}

#[test]
fn escaping_symlinks_refused() {
    refused(vec![link("a/etc", Symlink, "../../etc")]);
    refused(vec![link("etc", Symlink, "/etc")]);
    refused(vec![link("x", Symlink, "")]);
    // `..` after a name could climb through another symlink.
    refused(vec![link("d/l", Symlink, "sub/../..")]);
}

#[test]
fn escaping_hardlinks_refused() {
    refused(vec![link("h", Link, "../outside")]);
    refused(vec![link("h", Link, "/etc/passwd")]);
    // Must name a regular file earlier in the archive.
    refused(vec![link("h", Link, "nothing-here")]);
    refused(vec![link("s", Symlink, "run"), link("h", Link, "s")]);
}

#[test]
fn device_and_fifo_entries_refused() {
    refused(vec![raw("dev/null", Char)]);
    refused(vec![raw("dev/sda", Block)]);
    refused(vec![raw("pipe", Fifo)]);
}

#[test]
fn writing_through_a_symlink_refused() {
    // The link itself is fine; an entry below it is not.
    refused(vec![link("d", Symlink, "."), raw("d/file", Regular)]);
    refused(vec![link("d", Symlink, "run"), link("d", Symlink, "run")]);
    // A file replacing a symlink would be written through it.
    refused(vec![link("x", Symlink, "run"), raw("x", Regular)]);
    refused(vec![raw("f", Regular), raw("f/g", Regular)]);
}

#[test]
fn command_must_be_in_payload() {
    let spore = seal_tar(&raw_tar(&[run()]), "not-there", &key(4));
    assert!(matches!(
        verify_bytes(&spore),
        Err(SporeError::BadManifest(_))
    ));
}
