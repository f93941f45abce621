//! One agent of the dev mesh: how it is started, and started again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a node may take to leave after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A dev node: its fixed settings, which survive restarts, and its process.
pub struct DevNode {
    /// n1, n2, ...
    pub name: String,
    /// Its data dir (absolute).
    pub data: PathBuf,
    /// Mesh, API and edge ports on 127.0.0.1.
    pub mesh: u16,
    pub api: u16,
    pub edge: u16,
    /// The mesh ports of the other nodes: a restarted node finds its way
    /// back through any of them, whichever are still up.
    pub join: Vec<u16>,
    pub key_file: PathBuf,
    /// Extra environment of the agent (`MYCO_MICROVM` for `--microvm`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl DevNode {
    pub fn new(name: String, data: PathBuf, ports: (u16, u16, u16), key_file: PathBuf) -> Self {
        DevNode {
            name,
            data,
            mesh: ports.0,
            api: ports.1,
            edge: ports.2,
            join: Vec::new(),
            key_file,
            env: Vec::new(),
            child: None,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.join("agent.log")
    }

    /// Starts the agent (it must not be running), logging to `agent.log`.
    pub fn spawn(&mut self, exe: &Path) -> anyhow::Result<u32> {
        debug_assert!(self.child.is_none(), "spawn of a running node");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--name", &self.name])
            .args(["--bind", &format!("127.0.0.1:{}", self.mesh)])
            .args(["--api", &format!("127.0.0.1:{}", self.api)])
            .args(["--edge", &format!("127.0.0.1:{}", self.edge)])
            .arg("--cluster-key-file")
            .arg(&self.key_file)
            .args([
                "--tag",
                &format!("dev={}", self.name.trim_start_matches('n')),
            ]);
        for p in &self.join {
            cmd.args(["--join", &format!("127.0.0.1:{p}")]);
        }
        // A dev mesh stops all at once: no node could take another's
        // instances, so no hand-off (`myco dev` stops the demo itself).
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("MYCO_HANDOFF_MS", "0")
            .env_remove("MYCO_DATA_DIR")
            .env_remove("MYCO_CLUSTER_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting agent {}", self.name))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// The exit status, once, if the process has exited (it is reaped).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Sends SIGTERM (the agent leaves the mesh gracefully).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }

    /// Waits until `deadline` for the process to exit, then kills it.
    pub fn reap(&mut self, deadline: Instant) {
        if let Some(c) = &mut self.child {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = None;
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(&mut self) {
        self.terminate();
        self.reap(Instant::now() + STOP_GRACE);
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// Every node of the mesh; dropping it stops them all.
pub struct DevNodes(pub Vec<DevNode>);

impl DevNodes {
    /// SIGTERM to all at once (they leave in parallel), then reap each.
    pub fn stop_all(&mut self) {
        for n in &self.0 {
            n.terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for n in &mut self.0 {
            n.reap(deadline);
        }
    }
}

impl Drop for DevNodes {
    fn drop(&mut self) {
        self.stop_all();
    }
}
