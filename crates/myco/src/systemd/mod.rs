//! `myco systemd-unit`: a unit file for the agent, naming the installed
//! binary (never a cargo build directory that `cargo clean` empties).

use std::path::{Path, PathBuf};

use anyhow::bail;

mod exec;

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

/// The agent's data dir when the arguments name none (the agent's own
/// default when it runs as root, as a system service does).
pub const DATA_DIR: &str = "/var/lib/myco";

/// The unit text, running `bin agent` with `extra` arguments. A
/// `--data-dir` among them replaces [`DATA_DIR`] (the agent refuses the
/// flag twice); with `--config` and no `--data-dir`, none is added, so the
/// file's `data_dir` applies. `StateDirectory=` names the data dir when it
/// lies under `/var/lib`, so systemd creates it (mode 0700).
pub fn unit(bin: &Path, extra: &[String]) -> anyhow::Result<String> {
    let (data_dir, rest) = take_data_dir(extra)?;
    let has_config = rest
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="));
    let data_dir = match data_dir {
        Some(d) => Some(d),
        None if has_config => None,
        None => Some(DATA_DIR.to_string()),
    };
    let mut args = vec![bin.display().to_string(), "agent".to_string()];
    if let Some(d) = &data_dir {
        args.extend(["--data-dir".to_string(), d.clone()]);
    }
    args.extend(rest);
    let state = data_dir
        .as_deref()
        .and_then(state_directory)
        .map(|d| format!("StateDirectory={d}\nStateDirectoryMode=0700\n"))
        .unwrap_or_default();
    Ok(format!(
        "[Unit]\nDescription=Myco mesh agent\nWants=network-online.target\nAfter=network-online.target time-sync.target\n\n\
[Service]\nType=notify\nExecStart={}\n{state}KillSignal=SIGTERM\nTimeoutStopSec=20\n\
Restart=always\nRestartSec=2\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n",
        exec::line(&args)
    ))
}

/// The `--data-dir` of `args` (either form) and the other arguments.
fn take_data_dir(args: &[String]) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let (mut dir, mut rest) = (None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--data-dir" {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("--data-dir needs a directory"))?
        } else if let Some(v) = a.strip_prefix("--data-dir=") {
            v
        } else {
            rest.push(a.clone());
            continue;
        };
        if dir.is_some() {
            bail!("--data-dir is given twice; the agent takes one");
        }
        if !Path::new(value).is_absolute() {
            bail!("--data-dir {value} must be an absolute path in a unit (systemd runs it from /)");
        }
        dir = Some(value.to_string());
    }
    Ok((dir, rest))
}

/// `StateDirectory=` for `dir`: its path under `/var/lib`, if it lies
/// there and is plain enough to need no escaping (the setting is a
/// whitespace-separated list with specifiers).
fn state_directory(dir: &str) -> Option<String> {
    let rel = Path::new(dir).strip_prefix("/var/lib").ok()?.to_str()?;
    let rel = rel.trim_end_matches('/');
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    (!rel.is_empty()
        && rel.chars().all(plain)
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".."))
    .then(|| rel.to_string())
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

    fn unit_of(extra: &[&str]) -> anyhow::Result<String> {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        unit(Path::new("/opt/myco/bin/myco"), &extra)
    }

    fn exec_start(u: &str) -> &str {
        u.lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap()
    }

    #[test]
    fn the_unit_runs_the_given_binary() {
        let u = unit_of(&["--join", "pi-1:7946"]).unwrap();
        assert_eq!(
            exec_start(&u),
            "/opt/myco/bin/myco agent --data-dir /var/lib/myco --join pi-1:7946"
        );
        assert!(u.contains("\nStateDirectory=myco\n"), "{u}");
    }

    /// Regression: `-- --data-dir X` added a second `--data-dir`, which the
    /// agent refuses, and systemd restarted it forever.
    #[test]
    fn a_given_data_dir_replaces_the_default() {
        for extra in [
            &["--data-dir", "/var/lib/x", "--join", "10.0.0.1:7946"][..],
            &["--data-dir=/var/lib/x", "--join", "10.0.0.1:7946"][..],
        ] {
            let u = unit_of(extra).unwrap();
            assert_eq!(
                exec_start(&u),
                "/opt/myco/bin/myco agent --data-dir /var/lib/x --join 10.0.0.1:7946",
                "{extra:?}"
            );
            assert!(u.contains("\nStateDirectory=x\n"), "{u}");
            assert!(!u.contains("/var/lib/myco"), "{u}");
        }
        // Elsewhere: no StateDirectory (it lives under /var/lib only).
        let u = unit_of(&["--data-dir", "/srv/my data/100%"]).unwrap();
        assert_eq!(
            exec_start(&u),
            "/opt/myco/bin/myco agent --data-dir \"/srv/my data/100%%\""
        );
        assert!(!u.contains("StateDirectory"), "{u}");
        // A config file's data_dir is not overridden by the default.
        let u = unit_of(&["--config", "/etc/myco.toml"]).unwrap();
        assert_eq!(
            exec_start(&u),
            "/opt/myco/bin/myco agent --config /etc/myco.toml"
        );
        for bad in [
            &["--data-dir", "rel"][..],
            &["--data-dir"][..],
            &["--data-dir", "/a", "--data-dir=/b"][..],
        ] {
            assert!(unit_of(bad).is_err(), "{bad:?}");
        }
    }

    /// `systemd-analyze verify` reads the unit as systemd would, where it
    /// is installed (`/bin/true` stands in for the binary, which it checks).
    #[test]
    fn systemd_accepts_the_unit() {
        if std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("systemd-analyze is not installed: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("myco-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra: Vec<String> = [
            "--data-dir",
            "/var/lib/my-mesh",
            "--tag",
            "room=living room",
            "--tag",
            "quota=50%",
            "--name",
            "$HOSTNAME\"'\\",
        ]
        .map(String::from)
        .to_vec();
        let path = dir.join("myco.service");
        std::fs::write(&path, unit(Path::new("/bin/true"), &extra).unwrap()).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
