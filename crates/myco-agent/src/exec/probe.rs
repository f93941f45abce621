//! Health probes: http (GET a path on `127.0.0.1:PORT`, healthy on 2xx or
//! 3xx), tcp (a connection is accepted; for a microVM, accepted by the
//! guest, not only by QEMU) and exec (a command exits 0 in the
//! instance directory). Each runs under a timeout; [`Prober`] bounds how
//! many run at once. The HTTP client is deliberately minimal: one request,
//! `Connection: close`, and only the status line is read (at most 1 KiB),
//! so a misbehaving instance cannot make the agent buffer anything.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long a microVM `tcp` check waits for the guest between two looks
/// at QEMU's table of connections.
const GUEST_POLL: Duration = Duration::from_millis(100);
/// Most bytes of an HTTP answer read to find its status.
const MAX_STATUS_LINE: usize = 1024;

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET this path (must start with `/`).
    Http {
        /// The path, e.g. `/health`.
        path: String,
    },
    /// Connect to the port.
    Tcp,
    /// Connect to the port of a microVM instance, and see the guest accept
    /// the connection (not only QEMU's user-mode network): [`tcp_guest`].
    TcpGuest,
    /// Run this command (argv); a relative program is in the instance dir.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

/// The answer of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// It answered as a healthy instance does.
    Healthy,
    /// It answered, but not healthily (or refused), and why.
    Unhealthy(String),
    /// No answer within the timeout.
    TimedOut,
}

impl ProbeResult {
    /// Whether the probe passed.
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeResult::Healthy)
    }
}

/// Runs one probe against the instance on `port` in `dir`.
pub async fn probe(kind: &ProbeKind, port: u16, dir: &Path, timeout: Duration) -> ProbeResult {
    match kind {
        ProbeKind::Exec { argv } => exec(argv, port, dir, timeout).await,
        ProbeKind::Tcp => {
            bounded(timeout, async {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| ProbeResult::Healthy)
                    .unwrap_or_else(|e| ProbeResult::Unhealthy(format!("connect: {e}")))
            })
            .await
        }
        ProbeKind::TcpGuest => bounded(timeout, tcp_guest(port, dir)).await,
        ProbeKind::Http { path } => bounded(timeout, http(path, port)).await,
    }
}

/// A `tcp` check of a microVM instance. Slirp accepts our connection on
/// the host at once and only then connects to the guest, so connecting
/// proves nothing. Healthy once the guest accepted it (slirp's connection
/// `ESTABLISHED`, see [`super::qmp`]) or sent a byte; unhealthy when it is
/// closed (the guest is up and reset slirp's connection: nothing listens
/// there); still waiting on the guest (booting) until the probe times out.
async fn tcp_guest(port: u16, dir: &Path) -> ProbeResult {
    let stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::Unhealthy(format!("connect: {e}")),
    };
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(GUEST_POLL, stream.peek(&mut byte)).await {
            Ok(Ok(0)) => {
                return ProbeResult::Unhealthy(format!(
                    "the guest refused the connection: nothing listens on port {port} in the guest (QEMU had accepted it on the host)"
                ));
            }
            Ok(Ok(_)) => return ProbeResult::Healthy,
            Ok(Err(e)) => return ProbeResult::Unhealthy(format!("read: {e}")),
            Err(_) => {}
        }
        match super::qmp::guest_side(dir, port).await {
            Ok(super::qmp::GuestSide::Accepted) => return ProbeResult::Healthy,
            // Waiting on the guest, or closed and the EOF on its way.
            Ok(_) => {}
            Err(e) => return ProbeResult::Unhealthy(format!("asking QEMU (QMP): {e}")),
        }
    }
}

async fn bounded(timeout: Duration, f: impl Future<Output = ProbeResult>) -> ProbeResult {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or(ProbeResult::TimedOut)
}

async fn http(path: &str, port: u16) -> ProbeResult {
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return ProbeResult::Unhealthy(format!("bad health path {path:?}: it must start with /"));
    }
    let mut stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::Unhealthy(format!("connect: {e}")),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: myco-probe\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeResult::Unhealthy(format!("send: {e}"));
    }
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return ProbeResult::Unhealthy(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let status = line
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_ascii_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=399) => ProbeResult::Healthy,
        Some(code) => ProbeResult::Unhealthy(format!("HTTP {code}")),
        None => ProbeResult::Unhealthy("not an HTTP answer".to_owned()),
    }
}

async fn exec(argv: &[String], port: u16, dir: &Path, timeout: Duration) -> ProbeResult {
    let Some(program) = argv.first() else {
        return ProbeResult::Unhealthy("empty exec probe command".to_owned());
    };
    let program = resolve(program, dir);
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .current_dir(dir)
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return ProbeResult::Unhealthy(format!("cannot run {}: {e}", program.display())),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => ProbeResult::Healthy,
        Ok(Ok(status)) => ProbeResult::Unhealthy(format!("exited with {status}")),
        Ok(Err(e)) => ProbeResult::Unhealthy(format!("wait: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            // Reap it so no zombie is left.
            let _ = child.wait().await;
            ProbeResult::TimedOut
        }
    }
}

/// A program path as a job means it: absolute; relative to the instance
/// directory (`./run.sh`, `bin/server`, or a bare name of one of its
/// files); else a bare name (`sh`, `python3`) found on `PATH`, as a shell
/// (and Nomad's and Kubernetes' exec checks) would.
pub(crate) fn resolve(program: &str, dir: &Path) -> PathBuf {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let local = dir.join(p);
    if !program.contains('/') && !local.exists() {
        // `Command` searches PATH for a name without a slash.
        return PathBuf::from(program);
    }
    local
}

/// Runs probes with at most a fixed number at once; more wait their turn.
#[derive(Debug, Clone)]
pub struct Prober {
    slots: Arc<Semaphore>,
}

impl Prober {
    /// A prober running at most `concurrency` probes at once (at least 1).
    pub fn new(concurrency: usize) -> Self {
        Prober {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Runs [`probe`] once a slot is free; the timeout counts from then.
    pub async fn check(
        &self,
        kind: &ProbeKind,
        port: u16,
        dir: &Path,
        timeout: Duration,
    ) -> ProbeResult {
        let Ok(_slot) = self.slots.acquire().await else {
            return ProbeResult::Unhealthy("prober closed".to_owned());
        };
        probe(kind, port, dir, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prober_runs_no_more_than_its_slots() {
        let dir = std::env::temp_dir();
        let slow = ProbeKind::Exec {
            argv: vec!["/bin/sleep".into(), "0.3".into()],
        };
        let prober = Prober::new(1);
        let t = Duration::from_secs(5);
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            prober.check(&slow, 1, &dir, t),
            prober.check(&slow, 1, &dir, t)
        );
        assert!(a.is_healthy() && b.is_healthy());
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "two probes ran at once through one slot"
        );
    }

    #[tokio::test]
    async fn exec_checks_find_bare_names_on_path_and_files_in_the_instance_dir() {
        let root = std::env::temp_dir().join(format!("myco-exec-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = &root;
        let t = Duration::from_secs(5);
        let check = |argv: &[&str]| ProbeKind::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        let prober = Prober::new(1);
        // `sh` is on PATH, not in the instance dir; the test is run there.
        let marker = check(&["sh", "-c", "test -f ok"]);
        let r = prober.check(&marker, 1, dir.as_path(), t).await;
        assert!(!r.is_healthy(), "{r:?}");
        std::fs::write(dir.as_path().join("ok"), "").unwrap();
        let r = prober.check(&marker, 1, dir.as_path(), t).await;
        assert!(r.is_healthy(), "{r:?}");
        // A bare name that is one of the instance's files is that file.
        std::fs::write(dir.as_path().join("true"), "#!/bin/sh\nexit 7\n").unwrap();
        std::fs::set_permissions(
            dir.as_path().join("true"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let r = prober.check(&check(&["true"]), 1, dir.as_path(), t).await;
        assert!(!r.is_healthy(), "the instance's own `true` exits 7: {r:?}");
        assert_eq!(resolve("true", dir.as_path()), dir.as_path().join("true"));
        assert_eq!(resolve("false", dir.as_path()), PathBuf::from("false"));
        assert_eq!(resolve("./x", dir.as_path()), dir.as_path().join("./x"));
        assert_eq!(resolve("/bin/sh", dir.as_path()), PathBuf::from("/bin/sh"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A local server that, per connection, does `what`; its port.
    async fn server(what: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                match what {
                    "close" => drop(c),
                    "banner" => {
                        let _ = c.write_all(b"+OK\r\n").await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    _ => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn a_microvm_tcp_check_needs_the_guest_not_only_an_accepted_connection() {
        // No QEMU here: nothing answers QMP in this directory.
        let dir = std::env::temp_dir().join(format!("myco-no-qemu-{}", std::process::id()));
        let dir = dir.as_path();
        let t = Duration::from_secs(2);
        // What slirp does when the guest resets its connection: ours closes.
        let closed = probe(&ProbeKind::TcpGuest, server("close").await, dir, t).await;
        assert!(
            matches!(&closed, ProbeResult::Unhealthy(w) if w.contains("guest refused")),
            "{closed:?}"
        );
        // A plain tcp check passes the same connection: the early pass fixed here.
        assert!(
            probe(&ProbeKind::Tcp, server("close").await, dir, t)
                .await
                .is_healthy()
        );
        // A byte can only come from a guest program.
        let banner = probe(&ProbeKind::TcpGuest, server("banner").await, dir, t).await;
        assert!(banner.is_healthy(), "{banner:?}");
        // Silent and no QEMU to ask: not healthy, and it says why.
        let silent = probe(&ProbeKind::TcpGuest, server("silent").await, dir, t).await;
        assert!(
            matches!(&silent, ProbeResult::Unhealthy(w) if w.contains("QMP")),
            "{silent:?}"
        );
    }
}
