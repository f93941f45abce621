//! A small harness for end-to-end tests: real `myco agent` processes on
//! loopback, each in its own data dir under a per-test temp dir, on ports
//! no other test of this run uses.
//!
//! Everything here is std plus serde_json: a minimal HTTP/1.1 client over
//! `TcpStream`, processes through `std::process::Command`, and a polling
//! `wait_for` with a deadline. Dropping a [`Harness`] SIGKILLs every agent
//! it started and removes its temp dir; if the test is panicking it first
//! prints the tail of every agent's log.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const MYCO: &str = env!("CARGO_BIN_EXE_myco");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(75);

/// The default deadline for "eventually" conditions.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Environment variables the CLI and agent read; cleared so the caller's
/// environment cannot change what a test does.
const MYCO_ENV: &[&str] = &[
    "MYCO_API",
    "MYCO_API_TOKEN",
    "MYCO_DATA_DIR",
    "MYCO_CLUSTER_KEY",
    "NOTIFY_SOCKET",
];

// ----- waiting -----

/// Polls `probe` every [`POLL`] until it answers `Ok`, and returns the value
/// and the time it took. `probe` answers `Err(observation)` while the
/// condition does not hold; after `timeout` this panics with `what` and the
/// last observation.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(POLL);
    }
}

// ----- ports -----

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Ports are taken from 20000..32000, below Linux's ephemeral range (so an
/// outgoing connection cannot grab one between the check and the agent's
/// bind), starting at an offset derived from the process id (so two test
/// processes start far apart), and each is checked free for both TCP and
/// UDP on 127.0.0.1 before it is handed out. Never handed out twice per process.
const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    let offset = (std::process::id() % 600) * 20;
    for _ in 0..PORT_SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_LOW + (offset + n) % PORT_SPAN) as u16;
        let mut seen = HANDED_OUT.lock().unwrap();
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.contains(&port) {
            continue;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp = TcpListener::bind(addr);
        let udp = UdpSocket::bind(addr);
        if tcp.is_ok() && udp.is_ok() {
            seen.insert(port);
            return port;
        }
    }
    panic!(
        "no free loopback port in {PORT_LOW}..{}",
        PORT_LOW + PORT_SPAN
    );
}

// ----- HTTP -----

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `Connection: close`.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::other(format!("malformed HTTP answer: {raw:?}")))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = parse_headers(lines);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    })
}

/// `Name: value` lines as (lower-cased name, trimmed value).
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// GET without credentials.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    http("GET", port, path, &[], b"")
}

/// The member list in a `/v1/nodes` answer (a list, or an object holding one).
pub fn member_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .find_map(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Parses `myco_datagrams_dropped_total{reason="..."} N` lines of a scrape.
pub fn dropped_by_reason(metrics: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("myco_datagrams_dropped_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let reason = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("reason=\""))
            .map(|r| r.trim_end_matches('"').to_string());
        let value = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let (Some(r), Some(v)) = (reason, value) {
            *out.entry(r).or_insert(0.0) += v;
        }
    }
    out
}

// ----- the CLI -----

/// Runs `myco ARGS...` to completion with a clean environment.
pub fn myco(args: &[&str]) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args).stdin(Stdio::null());
    for k in MYCO_ENV {
        cmd.env_remove(k);
    }
    cmd.output().expect("running the myco binary")
}

// ----- agents -----

/// One agent the harness started (or stopped).
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub bind: u16,
    pub api: u16,
    pub edge: u16,
    pub join: Vec<u16>,
    pub key_file: Option<PathBuf>,
    /// Extra arguments for `myco agent`.
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Extra environment variables (from [`Harness::with_env`]), kept for restarts.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
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
            .args(["--bind", &format!("127.0.0.1:{}", self.bind)])
            .args(["--api", &format!("127.0.0.1:{}", self.api)])
            .args(["--edge", &format!("127.0.0.1:{}", self.edge)]);
        for p in &self.join {
            cmd.args(["--join", &format!("127.0.0.1:{p}")]);
        }
        if let Some(k) = &self.key_file {
            cmd.arg("--cluster-key-file").arg(k);
        }
        cmd.args(&self.args);
        for k in MYCO_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("RUST_LOG", "info")
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
        let join: Vec<u16> = opts.join.iter().map(|&j| self.agents[j].bind).collect();
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).expect("creating the data dir");
        let mut agent = Agent {
            name: name.to_string(),
            log: self.root.join(format!("{name}.log")),
            dir,
            bind: 0,
            api: 0,
            edge: 0,
            join,
            key_file: opts.key_file,
            args: opts.args,
            env: self.env.clone(),
            child: None,
        };
        for attempt in 1..=3 {
            agent.bind = free_port();
            agent.api = free_port();
            agent.edge = free_port();
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
        loop {
            let a = &mut self.agents[i];
            if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                a.child = None;
                return Err(format!("it exited with {status}"));
            }
            if get(a.api, "/health").is_ok_and(|r| r.status == 200) {
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
        let t0 = Instant::now();
        let first = self.start("n1", Opts::default());
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
                    args: Vec::new(),
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
    pub fn nodes(&self, i: usize) -> Result<Vec<Value>, String> {
        let r = get(self.agents[i].api, "/v1/nodes").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("/v1/nodes answered {}: {}", r.status, r.body));
        }
        let v: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
        Ok(member_list(&v))
    }

    /// Name -> state as agent `i` reports them.
    pub fn states(&self, i: usize) -> Result<BTreeMap<String, String>, String> {
        Ok(self
            .nodes(i)?
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["state"].as_str().unwrap_or("").to_lowercase(),
                )
            })
            .collect())
    }

    /// The state agent `i` reports for `name`, or "absent".
    pub fn state_of(&self, i: usize, name: &str) -> Result<String, String> {
        let nodes = self.nodes(i)?;
        let found: Vec<String> = nodes
            .iter()
            .filter(|m| m["name"] == name)
            .map(|m| m["state"].as_str().unwrap_or("").to_lowercase())
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
                    .iter()
                    .filter(|m| m["state"] == "alive")
                    .map(|m| m["name"].as_str().unwrap_or("").to_string())
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
        let r = get(self.agents[i].api, "/metrics").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("/metrics answered {}", r.status));
        }
        Ok(dropped_by_reason(&r.body))
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
        let pid = self.agents[i].pid().expect("agent is running").to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(st.success(), "kill -TERM {pid} failed");
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

/// Reads a whole file as a string, with the path in the panic message.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    s
}

// ----- keep-alive HTTP -----

/// A keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, opened on first
/// use. A failed request drops the connection (the next one reconnects);
/// nothing is retried, so the caller decides what a failure means.
pub struct Conn {
    port: u16,
    stream: Option<TcpStream>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        Conn { port, stream: None }
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let r = self.try_request(method, path, headers, body);
        match &r {
            Ok((_, true)) => {}
            _ => self.stream = None,
        }
        r.map(|(resp, _)| resp)
    }

    /// The answer and whether the connection can be reused.
    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(Response, bool)> {
        if self.stream.is_none() {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let s = self.stream.as_mut().expect("connected above");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        s.write_all(&out)?;

        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut read_more = |s: &mut TcpStream, raw: &mut Vec<u8>| -> std::io::Result<bool> {
            let n = s.read(&mut chunk)?;
            raw.extend_from_slice(&chunk[..n]);
            Ok(n > 0)
        };
        let split = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if !read_more(s, &mut raw)? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed before a full answer head: {raw:?}"),
                ));
            }
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        lines.next();
        let hs = parse_headers(lines);
        let find = |name: &str| {
            hs.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let close = find("connection").is_some_and(|v| v.contains("close"));
        let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
        let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let no_body = head
            .split(' ')
            .nth(1)
            .is_some_and(|c| c == "204" || c == "304")
            || method == "HEAD";
        let reusable = if no_body {
            !close
        } else if let Some(n) = length {
            while raw.len() < split + 4 + n {
                if !read_more(s, &mut raw)? {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed inside a body",
                    ));
                }
            }
            raw.truncate(split + 4 + n);
            !close
        } else if chunked {
            while dechunk(&raw[split + 4..]).is_none() {
                if !read_more(s, &mut raw)? {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunked body",
                    ));
                }
            }
            // The trailer's end is not tracked: do not reuse the connection.
            false
        } else {
            while read_more(s, &mut raw)? {}
            false
        };
        let resp = parse_response(&raw)
            .ok_or_else(|| std::io::Error::other(format!("malformed HTTP answer: {raw:?}")))?;
        Ok((resp, reusable))
    }
}

// ----- server-sent events -----

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` field ("message" when absent).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// A raw-TCP reader of a `text/event-stream` answer (chunked or not).
pub struct SseStream {
    stream: TcpStream,
    /// Bytes as received (possibly chunked).
    raw: Vec<u8>,
    /// The decoded event-stream text not yet parsed into events.
    text: Vec<u8>,
    chunked: bool,
    ended: bool,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl SseStream {
    /// Sends `GET path` and reads the answer's head (up to 5 s).
    pub fn open(port: u16, path: &str) -> std::io::Result<SseStream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let split = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("closed before the answer head: {raw:?}"),
                ));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("malformed head: {head:?}")))?;
        let headers = parse_headers(lines);
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        Ok(SseStream {
            stream,
            raw: raw[split + 4..].to_vec(),
            text: Vec::new(),
            chunked,
            ended: false,
            status,
            headers,
        })
    }

    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Moves complete chunks from `raw` to `text`.
    fn decode(&mut self) {
        if !self.chunked {
            self.text.append(&mut self.raw);
            return;
        }
        while !self.ended {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let Ok(size) =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            else {
                panic!("bad chunk size line {size_text:?} in an event stream");
            };
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.text
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next complete event in `text`, skipping comment-only blocks.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let text = String::from_utf8_lossy(&self.text).replace("\r\n", "\n");
            let end = text.find("\n\n")?;
            let block = text[..end].to_string();
            self.text = text.as_bytes()[end + 2..].to_vec();
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim_start().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if event.is_some() || !data.is_empty() {
                return Some(SseEvent {
                    event: event.unwrap_or_else(|| "message".into()),
                    data: data.join("\n"),
                });
            }
        }
    }

    /// The next event, or `None` if none arrives within `timeout`; `Err` if
    /// the stream ends or fails.
    pub fn next(&mut self, timeout: Duration) -> std::io::Result<Option<SseEvent>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            self.decode();
            if let Some(ev) = self.take_event() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the event stream ended",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(
                left.min(Duration::from_millis(250))
                    .max(Duration::from_millis(1)),
            ))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the event stream",
                    ));
                }
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads events until one satisfies `pred`; returns it, the time it took
    /// and every event seen before it. Panics after `timeout` with `what`.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SseEvent) -> bool,
    ) -> (SseEvent, Duration, Vec<SseEvent>) {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.next(left) {
                Ok(Some(ev)) if pred(&ev) => return (ev, start.elapsed(), seen),
                Ok(Some(ev)) => seen.push(ev),
                Ok(None) => panic!(
                    "no event {what} within {timeout:?}; {} others seen: {seen:?}",
                    seen.len()
                ),
                Err(e) => panic!("event stream failed waiting for {what}: {e}; seen: {seen:?}"),
            }
        }
    }
}

// ----- the config KV and fault injection -----

/// `key` escaped for a URL path, keeping `/`.
pub fn key_path(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Agent {
    /// `Authorization: Bearer TOKEN` for this agent.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token())
    }

    /// `PUT /v1/kv/{key}` with the token.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> std::io::Result<Response> {
        let auth = self.bearer();
        http(
            "PUT",
            self.api,
            &format!("/v1/kv/{}", key_path(key)),
            &[("Authorization", &auth)],
            value,
        )
    }

    /// `DELETE /v1/kv/{key}` with the token.
    pub fn kv_del(&self, key: &str) -> std::io::Result<Response> {
        let auth = self.bearer();
        http(
            "DELETE",
            self.api,
            &format!("/v1/kv/{}", key_path(key)),
            &[("Authorization", &auth)],
            b"",
        )
    }

    /// `GET /v1/kv/{key}`.
    pub fn kv_get(&self, key: &str) -> std::io::Result<Response> {
        get(self.api, &format!("/v1/kv/{}", key_path(key)))
    }

    /// `GET /v1/kv?prefix=P`: the entries, or what went wrong.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<Value>, String> {
        let r = get(self.api, &format!("/v1/kv?prefix={}", key_path(prefix)))
            .map_err(|e| format!("{}: {e}", self.name))?;
        if r.status != 200 {
            return Err(format!(
                "{}: /v1/kv answered {}: {}",
                self.name, r.status, r.body
            ));
        }
        match serde_json::from_str::<Value>(&r.body) {
            Ok(Value::Array(a)) => Ok(a),
            _ => Err(format!(
                "{}: /v1/kv answered no JSON list: {}",
                self.name, r.body
            )),
        }
    }

    /// `POST /v1/debug/faults {"block": [...]}` (needs `MYCO_FAULTS=1`).
    pub fn block(&self, mesh_addrs: &[String]) -> std::io::Result<Response> {
        let auth = self.bearer();
        let body = serde_json::json!({ "block": mesh_addrs }).to_string();
        http(
            "POST",
            self.api,
            "/v1/debug/faults",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }
}

/// Runs `myco ARGS...` with `input` on standard input and a clean environment.
pub fn myco_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in MYCO_ENV {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("running the myco binary");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Written from a thread so a child that answers early cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("waiting for myco");
    let _ = writer.join();
    out
}

// ----- binary HTTP -----

/// An HTTP answer whose body is kept as bytes (chunked bodies decoded).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Like [`http`], but the body stays binary and reads may take up to
/// `timeout` each (for answers that take a while, e.g. a fetch from peers).
pub fn http_raw(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::other(format!("malformed HTTP answer ({} bytes)", raw.len()));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers = parse_headers(lines);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(&raw[split + 4..]).ok_or_else(bad)?
    } else {
        raw[split + 4..].to_vec()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}
