//! Pack → verify → extract round trips, reproducibility, inspect, keys.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::{PackError, extract, inspect, verify};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn single_file_round_trip() {
    let dir = TempDir::new();
    let src = dir.join("server.py");
    write_file(&src, b"#!/bin/sh\necho hi\n", 0o755);
    let (bytes, info) = pack_vec(&src, meta("./server.py"), &key(1));
    assert_eq!(info.size, bytes.len() as u64);
    assert!(bytes.starts_with(b"MYCOSPORE\x01"));

    let v = verify(
        Cursor::new(&bytes),
        &[key(1).verifying_key()],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(v.digest, info.digest);
    assert_eq!(v.size, info.size);
    assert_eq!(v.manifest, info.manifest);
    assert_eq!(
        v.digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    );

    let spore = dir.join("s.spore");
    fs::write(&spore, &bytes).unwrap();
    let out = dir.join("out");
    let x = extract(&spore, &out, &[], &Limits::default()).unwrap();
    assert_eq!(x.digest, info.digest);
    assert_eq!(
        fs::read(out.join("server.py")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&out.join("server.py")), 0o755);
}

#[test]
fn directory_round_trip_keeps_contents_modes_and_links() {
    let dir = TempDir::new();
    let src = dir.join("src");
    write_file(&src.join("bin/app"), b"binary", 0o755);
    write_file(&src.join("etc/conf.txt"), b"conf", 0o640);
    // setuid and group/other write are not carried: normalized to 0755/0644.
    write_file(&src.join("bin/suid"), b"x", 0o4777);
    write_file(&src.join("share/a/b/c/deep.txt"), b"deep", 0o600);
    std::os::unix::fs::symlink("app", src.join("bin/app-link")).unwrap();
    std::os::unix::fs::symlink("../etc/conf.txt", src.join("bin/conf")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();

    let (bytes, info) = pack_vec(&src, meta("bin/app"), &key(2));
    let spore = dir.join("s.spore");
    fs::write(&spore, &bytes).unwrap();
    let out = dir.join("out");
    let v = extract(&spore, &out, &[key(2).verifying_key()], &Limits::default()).unwrap();
    assert_eq!(v.manifest, info.manifest);

    assert_eq!(fs::read(out.join("bin/app")).unwrap(), b"binary");
    assert_eq!(fs::read(out.join("etc/conf.txt")).unwrap(), b"conf");
    assert_eq!(fs::read(out.join("share/a/b/c/deep.txt")).unwrap(), b"deep");
    assert_eq!(mode(&out.join("bin/app")), 0o755);
    assert_eq!(mode(&out.join("bin/suid")), 0o755);
    assert_eq!(mode(&out.join("etc/conf.txt")), 0o644);
    assert_eq!(mode(&out.join("share/a/b/c/deep.txt")), 0o644);
    assert_eq!(mode(&out.join("share")), 0o755);
    assert!(out.join("empty").is_dir());
    assert_eq!(
        fs::read_link(out.join("bin/app-link")).unwrap(),
        Path::new("app")
    );
    assert_eq!(fs::read(out.join("bin/conf")).unwrap(), b"conf");
}

#[test]
fn same_inputs_same_digest() {
    let build = |mtime_file: bool| {
        let dir = TempDir::new();
        write_file(&dir.join("b.txt"), b"bee", 0o644);
        write_file(&dir.join("a/run"), b"run", 0o755);
        if mtime_file {
            // Touch again so mtimes differ between the two trees.
            std::thread::sleep(std::time::Duration::from_millis(20));
            write_file(&dir.join("b.txt"), b"bee", 0o664);
        }
        pack_vec(&dir.0, meta("a/run"), &key(3))
    };
    let (one, info1) = build(false);
    let (two, info2) = build(true);
    assert_eq!(info1.digest, info2.digest);
    assert_eq!(one, two);

    let mut later = meta("a/run");
    later.created_at += 1;
    let dir = TempDir::new();
    write_file(&dir.join("b.txt"), b"bee", 0o644);
    write_file(&dir.join("a/run"), b"run", 0o755);
    assert_ne!(pack_vec(&dir.0, later, &key(3)).1.digest, info1.digest);
}

#[test]
fn inspect_shows_manifest() {
    let bytes = small_spore();
    let i = inspect(Cursor::new(&bytes)).unwrap();
    assert!(i.signature_valid);
    assert_eq!(i.manifest.name, "hello");
    assert_eq!(i.manifest.command, "./server.py");
    assert_eq!(i.manifest.args, ["--port", "8080"]);
    assert_eq!(i.manifest.env["MODE"], "test");
    assert_eq!(i.manifest.created_at, 1_700_000_000);
    assert_eq!(
        i.manifest.publisher,
        hex::encode(key(1).verifying_key().as_bytes())
    );
    // inspect reads only the head: a broken payload still shows.
    let mut broken = bytes.clone();
    let n = broken.len();
    broken[n - 3] ^= 0xff;
    assert!(inspect(Cursor::new(&broken)).unwrap().signature_valid);
    assert!(verify_bytes(&broken).is_err());
}

#[test]
fn manifest_json_is_canonical_and_forward_compatible() {
    let bytes = small_spore();
    let len = u32::from_be_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let json = &bytes[14..14 + len];
    let m: Manifest = serde_json::from_slice(json).unwrap();
    assert_eq!(m.to_canonical_json(), json);
    // Unknown fields are ignored; unknown formats are refused.
    let mut v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["future_field"] = serde_json::json!(42);
    assert!(serde_json::from_value::<Manifest>(v.clone()).is_ok());
    v["format"] = serde_json::json!(2);
    let m2: Manifest = serde_json::from_value(v).unwrap();
    assert!(m2.validate().is_err());
}

#[test]
fn pack_refuses_escaping_symlink_missing_command_and_bad_meta() {
    let dir = TempDir::new();
    write_file(&dir.join("app"), b"x", 0o755);
    let mut out = Vec::new();
    let err = crate::pack(&dir.0, meta("missing"), &key(1), &mut out).unwrap_err();
    assert!(matches!(err, PackError::BadMeta(_)), "{err}");

    let mut bad = meta("app");
    bad.name = "../etc".into();
    assert!(matches!(
        crate::pack(&dir.0, bad, &key(1), &mut out).unwrap_err(),
        PackError::BadMeta(_)
    ));

    std::os::unix::fs::symlink("../../etc/passwd", dir.join("evil")).unwrap();
    let err = crate::pack(&dir.0, meta("app"), &key(1), &mut out).unwrap_err();
    assert!(matches!(err, PackError::UnsafeSource { .. }), "{err}");
    fs::remove_file(dir.join("evil")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("abs")).unwrap();
    let err = crate::pack(&dir.0, meta("app"), &key(1), &mut out).unwrap_err();
    assert!(matches!(err, PackError::UnsafeSource { .. }), "{err}");
    assert!(out.is_empty(), "nothing written on refusal");
}

#[test]
fn pack_refuses_fifo() {
    let dir = TempDir::new();
    write_file(&dir.join("app"), b"x", 0o755);
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    let err = crate::pack(&dir.0, meta("app"), &key(1), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, PackError::UnsafeSource { .. }), "{err}");
}

#[test]
fn absolute_command_need_not_be_in_payload() {
    let dir = TempDir::new();
    write_file(&dir.join("app.py"), b"print(1)", 0o644);
    let mut m = meta("/usr/bin/python3");
    m.args = vec!["app.py".into()];
    let (bytes, _) = pack_vec(&dir.0, m, &key(1));
    verify_bytes(&bytes).unwrap();
}

#[test]
fn extract_refuses_existing_dest() {
    let dir = TempDir::new();
    let spore = dir.join("s.spore");
    fs::write(&spore, small_spore()).unwrap();
    fs::create_dir(dir.join("out")).unwrap();
    let err = extract(&spore, &dir.join("out"), &[], &Limits::default()).unwrap_err();
    assert!(matches!(err, SporeError::Io(_)), "{err}");
}

#[test]
fn keypair_files() {
    let dir = TempDir::new();
    let path = dir.join("pub.key");
    let public = crate::write_keypair(&path, [7; 32]).unwrap();
    assert_eq!(mode(&path) & 0o777, 0o600);
    assert_eq!(
        crate::read_signing_key(&path).unwrap().verifying_key(),
        public
    );
    let pub_path = crate::public_key_path(&path);
    assert_eq!(pub_path, dir.join("pub.key.pub"));
    assert_eq!(crate::read_public_key(&pub_path).unwrap(), public);
    fs::write(
        &pub_path,
        format!("  {}\n\n", hex::encode(public.as_bytes())),
    )
    .unwrap();
    assert_eq!(crate::read_public_key(&pub_path).unwrap(), public);
    assert!(matches!(
        crate::write_keypair(&path, [8; 32]),
        Err(crate::KeyError::Exists(_))
    ));
    fs::write(&pub_path, "abcd\n").unwrap();
    assert!(matches!(
        crate::read_public_key(&pub_path),
        Err(crate::KeyError::BadKey { .. })
    ));
}

#[test]
fn long_paths_and_link_targets_round_trip() {
    let dir = TempDir::new();
    let src = dir.join("src");
    let long = format!("{}/{}/file.txt", "d".repeat(90), "e".repeat(90));
    write_file(&src.join(&long), b"long", 0o644);
    write_file(&src.join("run"), b"x", 0o755);
    std::os::unix::fs::symlink(&long, src.join("short")).unwrap();
    let (bytes, _) = pack_vec(&src, meta("run"), &key(1));
    let spore = dir.join("s.spore");
    fs::write(&spore, bytes).unwrap();
    let out = dir.join("out");
    extract(&spore, &out, &[], &Limits::default()).unwrap();
    assert_eq!(fs::read(out.join(&long)).unwrap(), b"long");
    assert_eq!(fs::read(out.join("short")).unwrap(), b"long");
}
