//! `myco systemd-unit`: a unit file for the agent, naming the installed
//! binary (never a cargo build directory that `cargo clean` empties).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Where `make install`-style installs put it, and where the README says to.
const INSTALLED: &str = "/usr/local/bin/myco";

/// The binary for `ExecStart`: `--bin`, else [`INSTALLED`] if it exists,
/// else this binary unless it sits in a cargo `target/` dir (then
/// [`INSTALLED`], with a warning on stderr saying how to install it).
pub fn binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_absolute() {
            bail!(
                "--bin {} must be an absolute path (systemd requires one)",
                p.display()
            );
        }
        return Ok(p);
    }
    if Path::new(INSTALLED).exists() {
        return Ok(INSTALLED.into());
    }
    let exe = std::env::current_exe().ok();
    match exe {
        Some(exe) if !in_build_dir(&exe) => Ok(exe),
        _ => {
            eprintln!(
                "warning: myco is not installed; the unit names {INSTALLED}. Install it there (`cargo install --path crates/myco --root /usr/local`, or copy target/release/myco), or pass --bin PATH"
            );
            Ok(INSTALLED.into())
        }
    }
}

/// Whether `exe` is inside a cargo build directory: one named `target`,
/// or any (`CARGO_TARGET_DIR`) holding the `CACHEDIR.TAG` cargo writes.
fn in_build_dir(exe: &Path) -> bool {
    exe.ancestors()
        .skip(1)
        .any(|d| d.file_name().is_some_and(|n| n == "target") || d.join("CACHEDIR.TAG").is_file())
}

/// The unit text, running `bin agent` with `extra` arguments.
pub fn unit(bin: &Path, extra: &[String]) -> String {
    let args = if extra.is_empty() {
        String::new()
    } else {
        format!(" {}", extra.join(" "))
    };
    format!(
        "[Unit]\nDescription=Myco mesh agent\nWants=network-online.target\nAfter=network-online.target time-sync.target\n\n\
[Service]\nType=notify\nExecStart={} agent --data-dir /var/lib/myco{args}\nKillSignal=SIGTERM\nTimeoutStopSec=20\n\
Restart=always\nRestartSec=2\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n",
        bin.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dirs_are_recognised() {
        assert!(in_build_dir(Path::new("/src/myco/target/release/myco")));
        assert!(!in_build_dir(Path::new("/home/me/.cargo/bin/myco")));
        assert!(!in_build_dir(Path::new("/usr/local/bin/myco")));
    }

    #[test]
    fn the_unit_runs_the_given_binary() {
        let u = unit(
            Path::new("/opt/myco/bin/myco"),
            &["--join".into(), "pi-1:7946".into()],
        );
        assert!(
            u.contains(
                "\nExecStart=/opt/myco/bin/myco agent --data-dir /var/lib/myco --join pi-1:7946\n"
            ),
            "{u}"
        );
    }
}
