//! A Linux initramfs (a `newc` cpio archive, uncompressed) from a directory
//! and an init program: what `myco spore pack --microvm-kernel` puts in a
//! microVM spore. Uncompressed because the spore's payload is compressed
//! already, and every kernel reads plain cpio.
//!
//! The archive depends only on the inputs: entries sorted by path, owner
//! root, mtime 0, modes kept (the guest runs what is executable here).
//! `init` becomes `/init`, the program the kernel runs first.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The largest file taken into an initramfs: it lives in the guest's RAM.
pub const MAX_INITRAMFS_FILE: u64 = 512 << 20;

/// Writes the initramfs of `dir` (may be `None`: just `/init`) plus `init`
/// as `/init` to `out`. Device files, fifos and sockets are refused; the
/// guest's `/init` makes `/dev` (devtmpfs).
pub fn write_initramfs(dir: Option<&Path>, init: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut w = Cpio { out, ino: 1 };
    let mut entries = Vec::new();
    if let Some(dir) = dir {
        collect(dir, Path::new(""), &mut entries)?;
    }
    entries.retain(|(rel, _)| rel != "init");
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (rel, abs) in &entries {
        w.entry(rel, abs)?;
    }
    let meta = fs::metadata(init)?;
    if !meta.is_file() {
        return Err(bad(format!("init {} is not a file", init.display())));
    }
    w.file("init", 0o100755, &fs::read(init)?)?;
    w.header("TRAILER!!!", 0, 0, 0)?;
    w.out.write_all(&[0; 4])?;
    w.out.flush()
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<(String, std::path::PathBuf)>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    names.sort_unstable_by_key(|e| e.file_name());
    for e in names {
        let r = rel.join(e.file_name());
        let text = r
            .to_str()
            .ok_or_else(|| bad(format!("{} is not UTF-8", r.display())))?
            .to_owned();
        let ty = e.file_type()?;
        out.push((text, e.path()));
        if ty.is_dir() {
            collect(root, &r, out)?;
        }
    }
    Ok(())
}

struct Cpio<'a, W: Write> {
    out: &'a mut W,
    ino: u32,
}

impl<W: Write> Cpio<'_, W> {
    fn entry(&mut self, rel: &str, abs: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(abs)?;
        let perm = meta.permissions().mode() & 0o7777;
        let ty = meta.file_type();
        if ty.is_dir() {
            self.header(rel, 0o040000 | perm, 2, 0)
        } else if ty.is_symlink() {
            let target = fs::read_link(abs)?;
            let target = target.as_os_str().as_encoded_bytes().to_vec();
            self.file(rel, 0o120777, &target)
        } else if ty.is_file() {
            if meta.len() > MAX_INITRAMFS_FILE {
                return Err(bad(format!("{} is larger than 512 MiB", abs.display())));
            }
            self.file(rel, 0o100000 | perm, &fs::read(abs)?)
        } else {
            Err(bad(format!(
                "{} is a device, fifo or socket; an initramfs takes files, directories and symlinks",
                abs.display()
            )))
        }
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| bad(format!("{name} too large")))?;
        self.header(name, mode, 1, len)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    /// A `newc` header (110 bytes of ASCII hex fields), the name with its
    /// NUL, padded to 4 bytes.
    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u32) -> io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_the_tree_and_init_and_reads_back_with_cpio() {
        let tmp = std::env::temp_dir().join(format!("myco-initramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(tmp.join("root/www")).unwrap();
        fs::write(tmp.join("root/www/index.html"), b"hello").unwrap();
        std::os::unix::fs::symlink("www/index.html", tmp.join("root/link")).unwrap();
        fs::write(tmp.join("init.sh"), b"#!/bin/sh\n").unwrap();
        let mut buf = Vec::new();
        write_initramfs(Some(&tmp.join("root")), &tmp.join("init.sh"), &mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        let mut again = Vec::new();
        write_initramfs(Some(&tmp.join("root")), &tmp.join("init.sh"), &mut again).unwrap();
        assert_eq!(buf, again, "the archive must be reproducible");
        let text = String::from_utf8_lossy(&buf);
        for name in [
            "link\0",
            "www\0",
            "www/index.html\0",
            "init\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        // The system's cpio, where present, reads it back.
        let listed = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&buf)?;
                c.wait_with_output()
            });
        if let Ok(out) = listed {
            let names = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                names.lines().collect::<Vec<_>>(),
                ["link", "www", "www/index.html", "init"]
            );
        }
        fs::remove_dir_all(&tmp).unwrap();
    }
}
