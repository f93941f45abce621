//! The fence guard of `duplicates = "never"` instances: what stops one when
//! its agent dies while the machine runs on.
//!
//! Instances are spawned to outlive their agent, so a restarted agent
//! adopts them. For a `never` instance that is a duplicate in waiting: the
//! rest of the mesh sees the node down, waits out the fence's lease
//! (`myco_core::jobs::fence`) and starts a replacement, while the orphan
//! runs on. So a `never` instance runs under a guard, the `myco` binary
//! itself in a hidden mode (`myco __fence-guard --lease F --ttl MS --
//! CMD...`): the guard is the process the agent spawns (group and session
//! leader, in the instance's cgroup, the pid in the instance's record), its
//! child is the workload, in the same process group. The agent touches the
//! lease file `DATA_DIR/fence-lease` every `ttl / 4`
//! ([`renew_every`]); the guard looks every [`check_every`] and, when the
//! lease is older than `ttl` (or gone), SIGKILLs its process group, itself
//! included. An agent restarted within `ttl` renews the same file and
//! adopts the guard like any instance.
//!
//! The bound: the agent's last renewal is no earlier than its death, so
//! the workload is killed within `ttl + check_every(ttl)` of the death
//! (`check_every` is at most 250 ms). `ttl` is the fence time `T`, and the
//! majority starts a replacement no sooner than detection +
//! `(T + kill_timeout) * (1 + rho) + 500 ms` after the death, which is
//! later. Both ends read the same machine's wall clock (the file's mtime
//! against now): a clock stepped forward by more than `T` kills early (the
//! safe side, the instance restarts); a step backward delays the kill by
//! the step.
//!
//! The guard ignores nothing the workload should see: a stop signals the
//! whole group, so the workload gets SIGTERM itself; the guard keeps
//! SIGTERM, SIGINT, SIGHUP and SIGQUIT blocked so it outlives the
//! workload's graceful exit, then exits the way the workload did (its
//! code, or the same signal), so the supervisor sees the workload's exit.
//! After starting the workload it leaves the instance directory (`cwd` is
//! `/`), so counting processes by working directory counts the workload.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{SigSet, Signal, killpg, raise};
use nix::unistd::getpgrp;

/// The hidden first argument that runs the binary as a guard.
pub const ARG: &str = "__fence-guard";

/// The lease file's name in the data dir.
pub const LEASE_FILE: &str = "fence-lease";

/// Longest time between two looks at the lease.
const CHECK_AT_MOST: Duration = Duration::from_millis(250);

static PROVIDER: OnceLock<PathBuf> = OnceLock::new();

/// Says which binary answers [`ARG`] (the `myco` binary, at its start).
/// An agent embedded in a binary that does not leaves `never` instances
/// unguarded.
pub fn provide(exe: PathBuf) {
    let _ = PROVIDER.set(exe);
}

/// The binary that answers [`ARG`], if one was provided.
pub fn provided() -> Option<PathBuf> {
    PROVIDER.get().cloned()
}

/// How often the agent renews the lease.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 4
}

/// How often the guard looks at the lease.
pub fn check_every(ttl: Duration) -> Duration {
    (ttl / 8).min(CHECK_AT_MOST)
}

/// What a spawn needs to run a command under a guard.
#[derive(Clone, Debug)]
pub struct FenceGuard {
    /// The binary that answers [`ARG`].
    pub exe: PathBuf,
    /// The lease file.
    pub lease: PathBuf,
    /// How old the lease may get.
    pub ttl: Duration,
    /// Whether guards may be running: set by the first guarded spawn (or a
    /// lease inherited from the previous agent), so a node that never ran
    /// a `never` instance touches no file while idle.
    pub in_use: Arc<AtomicBool>,
}

impl FenceGuard {
    /// A guard for the agent of `data_dir`, when a binary provides one.
    pub fn for_data_dir(data_dir: &Path, ttl: Duration) -> Option<FenceGuard> {
        provided().map(|exe| FenceGuard {
            exe,
            lease: data_dir.join(LEASE_FILE),
            ttl,
            in_use: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The command line that runs `program` (resolved) with `args` under
    /// the guard. Renews the lease first (the guard's first look must
    /// find it fresh) and keeps it renewed from then on.
    pub fn wrap(&self, program: &Path, args: &[String]) -> Vec<String> {
        self.in_use.store(true, Ordering::Relaxed);
        if let Err(e) = self.renew() {
            tracing::warn!(lease = %self.lease.display(), error = %e, "fence lease not renewed");
        }
        let mut argv = vec![
            self.exe.display().to_string(),
            ARG.to_string(),
            "--lease".to_string(),
            self.lease.display().to_string(),
            "--ttl".to_string(),
            self.ttl.as_millis().to_string(),
            "--".to_string(),
            program.display().to_string(),
        ];
        argv.extend(args.iter().cloned());
        argv
    }

    /// Renews the lease (creates the file if missing): an mtime update,
    /// no data written.
    pub fn renew(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lease)?
            .set_modified(SystemTime::now())
    }
}

/// The agent's side of the lease, from the jobs runtime's start.
pub struct Lease {
    /// The guard `never` instances are spawned under, if the binary has one.
    pub guard: Option<FenceGuard>,
    /// What was left of the previous agent's lease when this one took
    /// over: survivors keep running through a minority that long
    /// (`Controller::hold_fence_until`).
    pub inherited: Option<Duration>,
    /// The task renewing the lease; aborted when the runtime stops.
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Reads what is left of the previous lease, then renews it every
    /// quarter of `ttl` (at once first). Inside a tokio runtime.
    pub fn take_over(data_dir: &Path, ttl: Duration) -> Lease {
        let guard = FenceGuard::for_data_dir(data_dir, ttl);
        let inherited = guard
            .as_ref()
            .and_then(|g| lease_age(&g.lease).map(|age| g.ttl.saturating_sub(age)));
        if let Some(g) = guard
            .as_ref()
            .filter(|_| inherited.is_some_and(|d| !d.is_zero()))
        {
            // The previous agent's guards may be running: keep them alive.
            g.in_use.store(true, Ordering::Relaxed);
        }
        let task = guard.clone().map(|g| tokio::spawn(renew_lease(g)));
        Lease {
            guard,
            inherited,
            task,
        }
    }
}
/// Touches the fence guards' lease every quarter of its TTL, from the
/// runtime's start (before adoption: guards that survived an agent restart
/// need it renewed within the TTL) until the runtime stops.
async fn renew_lease(guard: FenceGuard) {
    let mut every = tokio::time::interval(renew_every(guard.ttl));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        if !guard.in_use.load(Ordering::Relaxed) {
            continue;
        }
        match guard.renew() {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::error!(lease = %guard.lease.display(), error = %e,
                    "fence lease not renewed: duplicates = \"never\" instances will be killed by their guards");
            }
            Err(_) => {}
        }
    }
}

/// The guard's settings, from its command line.
#[derive(Debug, PartialEq, Eq)]
pub struct GuardArgs {
    /// The lease file.
    pub lease: PathBuf,
    /// How old it may get.
    pub ttl: Duration,
    /// The workload's command line.
    pub argv: Vec<OsString>,
}

/// Parses what follows [`ARG`]: `--lease F --ttl MS -- CMD [ARGS...]`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<GuardArgs, String> {
    let mut args = args.into_iter();
    let (mut lease, mut ttl) = (None, None);
    loop {
        let a = args.next().ok_or("missing `-- COMMAND`")?;
        match a.to_str() {
            Some("--lease") => lease = Some(PathBuf::from(args.next().ok_or("--lease needs F")?)),
            Some("--ttl") => {
                let v = args.next().ok_or("--ttl needs MS")?;
                let ms: u64 = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| format!("--ttl {v:?}: want milliseconds above 0"))?;
                ttl = Some(Duration::from_millis(ms));
            }
            Some("--") => break,
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let argv: Vec<OsString> = args.collect();
    if argv.is_empty() {
        return Err("missing the command after `--`".into());
    }
    Ok(GuardArgs {
        lease: lease.ok_or("missing --lease")?,
        ttl: ttl.ok_or("missing --ttl")?,
        argv,
    })
}

/// How old the lease is; `None` when it cannot be read (gone).
pub fn lease_age(lease: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(lease).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

/// Runs the guard: starts the workload, watches the lease, and returns the
/// exit code to leave with (or does not return: killed with its group, or
/// by the workload's signal).
pub fn run(args: GuardArgs) -> i32 {
    // The workload runs in the instance's directory, the guard out of it,
    // and the guard leaves before the workload starts: a process in an
    // instance's directory is the instance's (the fencing test counts
    // them; it counted two, for a moment, when the guard moved after).
    let dir = std::env::current_dir().unwrap_or_default();
    let _ = std::env::set_current_dir("/");
    let mut child = match std::process::Command::new(&args.argv[0])
        .args(&args.argv[1..])
        .current_dir(&dir)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("myco fence guard: cannot start {:?}: {e}", args.argv[0]);
            return 127;
        }
    };
    let stops = stop_signals();
    // Blocked, not ignored: the signal stays pending and the guard leaves
    // by it after the workload did (see `mirror`).
    let _ = stops.thread_block();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let check = check_every(args.ttl);
    loop {
        match rx.recv_timeout(check) {
            Ok(Ok(status)) => return mirror(status, &stops),
            Ok(Err(e)) => {
                eprintln!("myco fence guard: waiting for the workload failed: {e}");
                return 1;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if lease_age(&args.lease).is_none_or(|age| age > args.ttl) {
            eprintln!(
                "myco fence guard: the agent's lease {} is older than {} ms (agent gone): \
                 killing the instance, duplicates = \"never\"",
                args.lease.display(),
                args.ttl.as_millis()
            );
            let _ = killpg(getpgrp(), Signal::SIGKILL);
            return 137;
        }
    }
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Leaves as the workload did: its code, or its signal.
fn mirror(status: std::process::ExitStatus, stops: &SigSet) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    let sig = status.signal().unwrap_or(0);
    if let Ok(s) = Signal::try_from(sig) {
        let _ = stops.thread_unblock();
        let _ = raise(s);
    }
    128 + sig
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_its_command_line_and_refuses_a_bad_one() {
        let g = parse(os(&[
            "--lease",
            "/d/fence-lease",
            "--ttl",
            "3000",
            "--",
            "/bin/x",
            "-v",
        ]))
        .unwrap();
        assert_eq!(g.lease, PathBuf::from("/d/fence-lease"));
        assert_eq!(g.ttl, Duration::from_secs(3));
        assert_eq!(g.argv, os(&["/bin/x", "-v"]));
        assert!(parse(os(&["--lease", "f", "--ttl", "0", "--", "x"])).is_err());
        assert!(parse(os(&["--lease", "f", "--ttl", "10", "--"])).is_err());
        assert!(parse(os(&["--ttl", "10", "--", "x"])).is_err());
        assert!(parse(os(&["--bogus"])).is_err());
    }

    #[test]
    fn wraps_a_command_and_renews_the_lease() {
        let dir = std::env::temp_dir().join(format!("myco-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = FenceGuard {
            exe: PathBuf::from("/usr/bin/myco"),
            lease: dir.join(LEASE_FILE),
            ttl: Duration::from_millis(1500),
            in_use: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(lease_age(&g.lease), None, "no lease yet");
        assert!(!g.in_use.load(Ordering::Relaxed));
        let argv = g.wrap(Path::new("/i/run.sh"), &["a".into()]);
        assert!(
            g.in_use.load(Ordering::Relaxed),
            "renewed from the first spawn on"
        );
        let parsed = parse(argv[2..].iter().map(OsString::from)).unwrap();
        assert_eq!(parsed.ttl, g.ttl);
        assert_eq!(parsed.argv, os(&["/i/run.sh", "a"]));
        assert!(lease_age(&g.lease).unwrap() < Duration::from_secs(5));
        assert_eq!(check_every(Duration::from_secs(3)), CHECK_AT_MOST);
        assert_eq!(renew_every(g.ttl), Duration::from_millis(375));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
