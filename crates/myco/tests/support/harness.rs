//! The real-process harness: agents started as `myco agent` child
//! processes, each in its own data dir under a per-test temp dir, on ports
//! no other test of this run uses; killed, terminated and restarted on
//! demand, with their log tails printed when a test fails.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use myco_client::Client;
use myco_proto::api::NodeInfo;

use super::{DEADLINE, MYCO, MYCO_ENV, POLL, dropped_by_reason, free_port, myco, wait_for};

/// One agent the harness started (or stopped).
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub bind: u16,
    pub api: u16,
    pub edge: u16,
    /// The address the API listens on (`127.0.0.1` unless
    /// [`Opts::api_host`] said otherwise); clients always use loopback.
    pub api_host: String,
    /// `HOST:PORT` of the agents it joins.
    pub join: Vec<String>,
    /// The IP its mesh port binds to (and advertises): `127.0.0.1` unless
    /// [`Opts::mesh_host`] said otherwise.
    pub mesh_host: String,
    pub key_file: Option<PathBuf>,
    /// Extra arguments for `myco agent`.
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Extra environment variables (from [`Harness::with_env`]), kept for restarts.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    /// Its API client with the token, made on first use (the token file
    /// exists once the agent has started; ports and token survive restarts).
    client: OnceLock<Client>,
}

impl Agent {
    pub fn mesh_addr(&self) -> String {
        format!("127.0.0.1:{}", self.bind)
    }
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn token(&self) -> String {
        fs::read_to_string(self.dir.join("api-token"))
            .unwrap_or_else(|e| panic!("reading {}/api-token: {e}", self.dir.display()))
            .trim()
            .to_string()
    }
    /// A client of this agent's API that sends its token.
    pub fn client(&self) -> &Client {
        self.client
            .get_or_init(|| Client::new(&self.api_url()).with_token(Some(self.token())))
    }
    /// A client of this agent's API without a token.
    pub fn anon(&self) -> Client {
        Client::new(&self.api_url())
    }
    fn spawn(&mut self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the agent log");
        let mut cmd = Command::new(MYCO);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--name", &self.name])
            .args(["--bind", &format!("{}:{}", self.mesh_host, self.bind)])
            .args(["--api", &format!("{}:{}", self.api_host, self.api)])
            .args(["--edge", &format!("127.0.0.1:{}", self.edge)]);
        for p in &self.join {
            cmd.args(["--join", p]);
        }
        if let Some(k) = &self.key_file {
            cmd.arg("--cluster-key-file").arg(k);
        }
        cmd.args(&self.args);
        for k in MYCO_ENV {
            cmd.env_remove(k);
        }
        // A test's own `RUST_LOG` (from `with_env`) wins over the default,
        // which `MYCO_TEST_LOG` sets for a whole run (chasing a flake).
        let level = std::env::var("MYCO_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", level)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        cmd.spawn().expect("spawning myco agent")
    }
}

/// Options for a new agent.
#[derive(Default, Clone)]
pub struct Opts {
    /// Indices of agents (of this harness) to `--join`.
    pub join: Vec<usize>,
    /// `--cluster-key-file`.
    pub key_file: Option<PathBuf>,
    /// Extra arguments for `myco agent` (kept for restarts).
    pub args: Vec<String>,
    /// Where the API listens instead of `127.0.0.1` (e.g. `0.0.0.0`: off
    /// loopback, so every read needs the token).
    pub api_host: Option<String>,
    /// The IP the mesh port binds to instead of `127.0.0.1` (another
    /// loopback address such as `127.0.0.2`, so instances that listen on
    /// `127.0.0.1` only are out of other nodes' direct reach).
    pub mesh_host: Option<String>,
}

/// A test's temp dir and agents.
pub struct Harness {
    pub root: PathBuf,
    pub agents: Vec<Agent>,
    /// Extra environment variables for every agent started from now on.
    pub env: Vec<(String, String)>,
}

static HARNESS_SEQ: AtomicU32 = AtomicU32::new(0);

impl Harness {
    pub fn new(test: &str) -> Harness {
        let root = std::env::temp_dir().join(format!(
            "myco-it-{}-{}-{test}",
            std::process::id(),
            HARNESS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("creating the test dir");
        Harness {
            root,
            agents: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A harness whose agents all run with the extra environment `env`
    /// (e.g. `MYCO_FAULTS=1`).
    pub fn with_env(test: &str, env: &[(&str, &str)]) -> Harness {
        let mut h = Harness::new(test);
        h.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h
    }

    pub fn agent(&self, i: usize) -> &Agent {
        &self.agents[i]
    }

    /// Starts an agent named `name` and waits until its `/health` answers 200.
    /// Returns its index. If it exits early because a port was taken after
    /// all, it is retried on fresh ports.
    #[track_caller]
    pub fn start(&mut self, name: &str, opts: Opts) -> usize {
        let join: Vec<String> = (opts.join.iter())
            .map(|&j| format!("{}:{}", self.agents[j].mesh_host, self.agents[j].bind))
            .collect();
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).expect("creating the data dir");
        let mut agent = Agent {
            name: name.to_string(),
            log: self.root.join(format!("{name}.log")),
            dir,
            bind: 0,
            api: 0,
            edge: 0,
            api_host: opts.api_host.unwrap_or_else(|| "127.0.0.1".into()),
            mesh_host: opts.mesh_host.unwrap_or_else(|| "127.0.0.1".into()),
            join,
            key_file: opts.key_file,
            args: opts.args,
            env: self.env.clone(),
            child: None,
            client: OnceLock::new(),
        };
        for attempt in 1..=3 {
            agent.bind = free_port();
            agent.api = free_port();
            agent.edge = free_port();
            agent.client = OnceLock::new();
            agent.child = Some(agent.spawn());
            self.agents.push(agent);
            let i = self.agents.len() - 1;
            match self.await_health(i) {
                Ok(()) => return i,
                Err(exited) => {
                    self.kill(i);
                    let log = fs::read_to_string(&self.agents[i].log).unwrap_or_default();
                    agent = self.agents.pop().expect("just pushed");
                    if attempt < 3 && log.contains("binding") {
                        eprintln!("{name}: a port was taken ({exited}); retrying on others");
                        continue;
                    }
                    self.agents.push(agent);
                    panic!("agent {name} did not start: {exited}");
                }
            }
        }
        unreachable!()
    }

    /// Restarts a stopped agent with the same data dir, ports and flags.
    #[track_caller]
    pub fn restart(&mut self, i: usize) {
        assert!(self.agents[i].child.is_none(), "restart of a running agent");
        let child = self.agents[i].spawn();
        self.agents[i].child = Some(child);
        if let Err(e) = self.await_health(i) {
            panic!("agent {} did not restart: {e}", self.agents[i].name);
        }
    }

    /// Waits for `/health` to answer 200; `Err` if the process exits first.
    fn await_health(&mut self, i: usize) -> Result<(), String> {
        let start = Instant::now();
        let probe = self.agents[i].anon().with_timeout(Duration::from_secs(2));
        loop {
            let a = &mut self.agents[i];
            if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                a.child = None;
                return Err(format!("it exited with {status}"));
            }
            if probe.health().is_ok() {
                return Ok(());
            }
            if start.elapsed() > DEADLINE {
                return Err(format!("/health not 200 within {DEADLINE:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts `n` agents `n1..nN` sharing `n1`'s generated cluster key (written
    /// to `ROOT/cluster.key` by `myco cluster key`), all joining `n1`, and waits
    /// until every one sees all `n` alive. Returns the formation time.
    #[track_caller]
    pub fn mesh(&mut self, n: usize) -> Duration {
        self.mesh_with(n, |_| Opts::default())
    }

    /// [`Harness::mesh`] with node `k` (1-based) binding its mesh port to
    /// `127.0.0.k`: each node has its own address, as on a LAN.
    #[track_caller]
    pub fn mesh_spread(&mut self, n: usize) -> Duration {
        self.mesh_with(n, |k| Opts {
            mesh_host: Some(format!("127.0.0.{k}")),
            ..Opts::default()
        })
    }

    /// [`Harness::mesh`] with `args` given to every agent (and kept for
    /// restarts), e.g. `--config FILE`.
    #[track_caller]
    pub fn mesh_args(&mut self, n: usize, args: &[&str]) -> Duration {
        self.mesh_with(n, |_| Opts {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Opts::default()
        })
    }

    /// Node `k` (1-based) started with `opts(k)`, the others joining `n1`.
    #[track_caller]
    fn mesh_with(&mut self, n: usize, opts: impl Fn(usize) -> Opts) -> Duration {
        let t0 = Instant::now();
        let first = self.start("n1", opts(1));
        let key_file = self.root.join("cluster.key");
        let out = myco(&[
            "cluster",
            "key",
            "--data-dir",
            self.agents[first].dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "myco cluster key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(&key_file, &out.stdout).expect("writing cluster.key");
        for k in 2..=n {
            self.start(
                &format!("n{k}"),
                Opts {
                    join: vec![first],
                    key_file: Some(key_file.clone()),
                    ..opts(k)
                },
            );
        }
        let names: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
        let idx: Vec<usize> = (0..n).collect();
        self.wait_all_alive(&idx, &names, DEADLINE);
        t0.elapsed()
    }

    /// The cluster key file written by [`Harness::mesh`].
    pub fn key_file(&self) -> PathBuf {
        self.root.join("cluster.key")
    }

    /// `/v1/nodes` of agent `i`.
    pub fn nodes(&self, i: usize) -> Result<Vec<NodeInfo>, String> {
        self.agents[i]
            .anon()
            .nodes()
            .map_err(|e| format!("{}: {e}", self.agents[i].name))
    }

    /// Name -> state as agent `i` reports them.
    pub fn states(&self, i: usize) -> Result<BTreeMap<String, String>, String> {
        Ok(self
            .nodes(i)?
            .into_iter()
            .map(|m| (m.name, m.state.to_lowercase()))
            .collect())
    }

    /// The state agent `i` reports for `name`, or "absent".
    pub fn state_of(&self, i: usize, name: &str) -> Result<String, String> {
        let nodes = self.nodes(i)?;
        let found: Vec<String> = nodes
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.state.to_lowercase())
            .collect();
        match found.as_slice() {
            [] => Ok("absent".into()),
            [one] => Ok(one.clone()),
            many => Err(format!("{name} listed {} times: {many:?}", many.len())),
        }
    }

    /// Waits until each of `observers` lists every name in `names` as alive
    /// (each exactly once) and nothing else alive; returns the time taken.
    #[track_caller]
    pub fn wait_all_alive(
        &self,
        observers: &[usize],
        names: &[String],
        timeout: Duration,
    ) -> Duration {
        let what = format!(
            "{:?} to see {names:?} alive",
            observers
                .iter()
                .map(|&i| self.agents[i].name.as_str())
                .collect::<Vec<_>>()
        );
        wait_for(&what, timeout, || {
            for &i in observers {
                let nodes = self.nodes(i)?;
                let mut alive: Vec<String> = nodes
                    .into_iter()
                    .filter(|m| m.state == "alive")
                    .map(|m| m.name)
                    .collect();
                alive.sort();
                let mut want = names.to_vec();
                want.sort();
                if alive != want {
                    return Err(format!(
                        "{} sees {:?}",
                        self.agents[i].name,
                        self.states(i).unwrap_or_default()
                    ));
                }
            }
            Ok(())
        })
        .1
    }

    /// `/metrics` of agent `i`, dropped datagrams by reason.
    pub fn dropped(&self, i: usize) -> Result<BTreeMap<String, f64>, String> {
        let text = self.agents[i].anon().metrics().map_err(|e| e.to_string())?;
        Ok(dropped_by_reason(&text))
    }

    /// SIGKILLs agent `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to agent `i` (through `kill(1)`); the process keeps running
    /// until [`Harness::wait_exit`] sees it go.
    pub fn terminate(&self, i: usize) {
        self.signal(i, "TERM");
    }

    /// Sends agent `i` the signal `name` (`TERM`, `STOP`, `CONT`, ...)
    /// through `kill(1)`.
    pub fn signal(&self, i: usize, name: &str) {
        let pid = self.agents[i].pid().expect("agent is running").to_string();
        let st = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("running kill");
        assert!(st.success(), "kill -{name} {pid} failed");
    }

    /// Waits up to `timeout` for agent `i` to exit; its status and how long it took.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        let child = self.agents[i].child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.agents[i].child = None;
                return Some((st, start.elapsed()));
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether agent `i`'s process is still running.
    pub fn running(&mut self, i: usize) -> bool {
        match self.agents[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last `n` lines of every agent's log.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for a in &self.agents {
            let text = fs::read_to_string(&a.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            out.push_str(&format!(
                "----- {} (mesh {}, api {}) log tail, {} of {} lines -----\n",
                a.name,
                a.bind,
                a.api,
                lines.len() - from,
                lines.len()
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        kill_processes_under(&self.root);
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        if std::env::var_os("MYCO_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// SIGKILLs every process whose working directory is under `root`: the
/// instances the test's agents started. They are session leaders of their
/// own, so killing an agent leaves them running, and a test that ends
/// mid-job would otherwise leave workloads behind on the machine.
fn kill_processes_under(root: &std::path::Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
