//! `myco spore pack --microvm-kernel K --microvm-init INIT DIR`: a microVM
//! spore is an ordinary spore whose payload is a kernel (`vmlinuz`) and an
//! initramfs (`initrd.cpio`: DIR plus INIT as `/init`), and whose manifest
//! names them (`microvm`). The agent boots them with QEMU.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use myco_spore::{MicroVm, PackMeta};

/// The payload names of a microVM spore's kernel and initramfs.
pub const KERNEL: &str = "vmlinuz";
/// See [`KERNEL`].
pub const INITRD: &str = "initrd.cpio";

/// A staging directory holding the payload; removed on drop.
pub struct Staged(PathBuf);

impl Staged {
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the payload of a microVM spore next to `out` and fills in the
/// manifest's `microvm`.
pub fn stage(
    root: &Path,
    kernel: &Path,
    init: &Path,
    out: &Path,
    meta: &mut PackMeta,
) -> anyhow::Result<Staged> {
    if !root.is_dir() {
        bail!(
            "{} is not a directory: a microVM spore packs a directory as the guest's root",
            root.display()
        );
    }
    if !meta.command.starts_with('/') {
        bail!(
            "--cmd {:?}: a microVM spore's command is a path in the guest, starting with `/` (e.g. /bin/busybox)",
            meta.command
        );
    }
    let staged = Staged(out.with_extension("spore.stage"));
    if staged.0.exists() {
        std::fs::remove_dir_all(&staged.0)?;
    }
    std::fs::create_dir_all(&staged.0)
        .with_context(|| format!("creating {}", staged.0.display()))?;
    std::fs::copy(kernel, staged.0.join(KERNEL))
        .with_context(|| format!("reading the kernel {}", kernel.display()))?;
    let initrd = staged.0.join(INITRD);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&initrd)?);
    myco_spore::write_initramfs(Some(root), init, &mut file)
        .with_context(|| format!("building the initramfs from {}", root.display()))?;
    file.into_inner().map_err(|e| e.into_error())?;
    meta.microvm = Some(MicroVm {
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
    });
    Ok(staged)
}
