//! Tests. They live inside the crate so they can build validly signed
//! spores around hand-crafted payloads with the internal `seal`.

mod crafted;
mod fuzz;
mod key_files;
mod roundtrip;
mod tamper;
mod weak_keys;

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

use crate::{FORMAT_VERSION, Limits, Manifest, PackInfo, PackMeta, SigningKey, SporeError};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        // A seeded name mixed with time, pid and a counter: unique enough
        // for tests, and `create_dir` fails rather than reuse a directory.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ c.rotate_left(17);
        let n: u64 = StdRng::seed_from_u64(seed).random();
        let p = std::env::temp_dir().join(format!("myco-spore-test-{n:016x}"));
        fs::create_dir(&p).unwrap();
        TempDir(p)
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn meta(command: &str) -> PackMeta {
    PackMeta {
        name: "hello".into(),
        version: "1.0.0".into(),
        command: command.into(),
        args: vec!["--port".into(), "8080".into()],
        env: [("MODE".to_string(), "test".to_string())].into(),
        created_at: 1_700_000_000,
        ..Default::default()
    }
}

pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn pack_vec(src: &Path, meta: PackMeta, key: &SigningKey) -> (Vec<u8>, PackInfo) {
    let mut out = Vec::new();
    let info = crate::pack(src, meta, key, &mut out).unwrap();
    (out, info)
}

/// A small directory spore: `server.py` (executable) and `data/msg.txt`.
pub(crate) fn small_spore() -> Vec<u8> {
    let dir = TempDir::new();
    write_file(&dir.join("server.py"), b"#!/bin/sh\necho hi\n", 0o755);
    write_file(&dir.join("data/msg.txt"), b"hello", 0o644);
    pack_vec(&dir.0, meta("./server.py"), &key(1)).0
}

/// A spore of a few hundred KiB of incompressible data.
pub(crate) fn large_spore(seed: u64) -> Vec<u8> {
    let dir = TempDir::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut blob = vec![0u8; 300_000];
    rng.fill(&mut blob[..]);
    write_file(&dir.join("app"), &blob, 0o755);
    pack_vec(&dir.0, meta("app"), &key(1)).0
}

pub(crate) fn verify_bytes(bytes: &[u8]) -> Result<crate::Verified, SporeError> {
    crate::verify(Cursor::new(bytes), &[], &Limits::default())
}

/// Signs a spore around an arbitrary tar archive, so tests reach the entry
/// checks with a valid signature and digest.
pub(crate) fn seal_tar(tar: &[u8], command: &str, key: &SigningKey) -> Vec<u8> {
    let payload = zstd::encode_all(tar, 3).unwrap();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: "crafted".into(),
        version: "1".into(),
        command: command.into(),
        args: vec![],
        env: Default::default(),
        resources: Default::default(),
        health: None,
        microvm: None,
        created_at: 0,
        payload_sha256: hex::encode(Sha256::digest(&payload)),
        payload_size: payload.len() as u64,
        publisher: hex::encode(key.verifying_key().as_bytes()),
    };
    let mut out = Vec::new();
    crate::pack::seal(&manifest, key, &mut payload.as_slice(), &mut out).unwrap();
    out
}

/// A raw tar entry, written without the tar crate's path sanitizing.
pub(crate) struct Raw<'a> {
    pub path: &'a str,
    pub ty: tar::EntryType,
    pub link: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

pub(crate) fn raw(path: &str, ty: tar::EntryType) -> Raw<'_> {
    Raw {
        path,
        ty,
        link: "",
        mode: 0o644,
        data: b"",
    }
}

pub(crate) fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.ty);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn a_microvm_spore_names_its_kernel_and_initrd_and_a_process_spore_keeps_its_bytes() {
    let tmp = TempDir::new();
    let dir = tmp.0.clone();
    write_file(&dir.join("vmlinuz"), b"kernel", 0o644);
    write_file(&dir.join("initrd"), b"cpio", 0o644);
    let vm = crate::MicroVm {
        kernel: "vmlinuz".into(),
        initrd: "initrd".into(),
    };
    let meta = PackMeta {
        name: "vm".into(),
        version: "1".into(),
        command: "/bin/httpd".into(),
        microvm: Some(vm.clone()),
        ..PackMeta::default()
    };
    let mut out = Vec::new();
    let info = crate::pack(&dir, meta.clone(), &key(1), &mut out).unwrap();
    assert_eq!(info.manifest.microvm, Some(vm));
    let json = String::from_utf8(info.manifest.to_canonical_json()).unwrap();
    assert!(
        json.contains(r#""microvm":{"kernel":"vmlinuz","initrd":"initrd"}"#),
        "{json}"
    );
    // A missing kernel is refused, and so is a guest command that is not absolute.
    let mut missing = meta.clone();
    missing.microvm.as_mut().unwrap().kernel = "bzImage".into();
    assert!(crate::pack(&dir, missing, &key(1), &mut Vec::new()).is_err());
    let mut relative = meta;
    relative.command = "httpd".into();
    assert!(crate::pack(&dir, relative, &key(1), &mut Vec::new()).is_err());
    // Without `microvm` the manifest has no such key: older spores verify as before.
    let plain = PackMeta {
        name: "p".into(),
        version: "1".into(),
        command: "vmlinuz".into(),
        ..PackMeta::default()
    };
    let info = crate::pack(&dir, plain, &key(1), &mut Vec::new()).unwrap();
    assert!(
        !String::from_utf8(info.manifest.to_canonical_json())
            .unwrap()
            .contains("microvm")
    );
}
