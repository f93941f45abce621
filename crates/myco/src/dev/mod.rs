//! `myco dev`: a whole local mesh in one command.
//!
//! Starts N agents as child processes on loopback, sharing one cluster key
//! kept in the dev dir, waits until each sees all N alive, prints how to
//! reach them, and writes the dev context (`devctx`) so the CLI run in
//! the same directory finds n1 and its token. Then it watches: a node that
//! dies is reported and the others keep running (that is the point of a
//! self-healing mesh); `myco dev restart NODE` from another terminal
//! brings it back through the control socket. Ctrl-C (SIGTERM, SIGHUP) stops
//! every node with SIGTERM, SIGKILL after 5 s.

mod banner;
mod control;
mod demo;
mod microvm_demo;
mod node;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use myco_agent::datadir::random_bytes;
use myco_client::Client;
use myco_proto::ClusterKey;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{DevArgs, DevCmd, DevNodeArgs};
use crate::devctx::{self, DevContext, DevNodeInfo};
use control::Request;
use node::{DevNode, DevNodes};

const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long one readiness probe may take: an agent still starting must not
/// hold up the probes of the others.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the runner looks for nodes that exited.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// `myco dev`, or `myco dev restart|stop NODE`.
pub fn main(args: DevArgs) -> anyhow::Result<()> {
    match args.action {
        None => run(args),
        Some(DevCmd::Restart(n)) => restart(n),
        Some(DevCmd::Stop(n)) => stop(n),
    }
}

fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 50 {
        bail!("--nodes must be between 1 and 50");
    }
    devctx::create_private_dir(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let sock = dir.join(devctx::SOCKET);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        bail!(
            "a myco dev already runs in {}; stop it (Ctrl-C there) or pass another --dir",
            args.dir.display()
        );
    }
    match fs::remove_file(&sock) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", sock.display()));
        }
        _ => {}
    }
    let key_file = dir.join("cluster.key");
    if key_file.exists() {
        // Made 0644 by older versions: tighten it.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))?;
    } else {
        let key = ClusterKey::from_bytes(random_bytes::<32>()).to_base64();
        devctx::write_private(&key_file, format!("{key}\n").as_bytes())?;
    }
    let exe = std::env::current_exe()?;
    let port = |base: u16, i: u16| base.checked_add(i).context("port out of range");
    let mut nodes = DevNodes(Vec::new());
    for i in 0..args.nodes {
        let name = format!("n{}", i + 1);
        let data = dir.join(&name);
        devctx::create_private_dir(&data)?;
        let ports = (
            port(args.mesh_port, i)?,
            port(args.api_port, i)?,
            port(args.edge_port, i)?,
        );
        let mut node = DevNode::new(name, data, ports, key_file.clone());
        if let Some(accel) = &args.microvm {
            node.env.push(("MYCO_MICROVM".into(), accel.clone()));
        }
        nodes.0.push(node);
    }
    let all: Vec<u16> = nodes.0.iter().map(|n| n.mesh).collect();
    for n in &mut nodes.0 {
        n.join = all.iter().copied().filter(|&p| p != n.mesh).collect();
        n.spawn(&exe)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .with_context(|| format!("listening on {}", sock.display()))?;
    listener.set_nonblocking(true)?;
    let _cleanup = Cleanup(dir.clone());
    write_context(&nodes, &dir)?;

    let started = Instant::now();
    wait_formed(&mut nodes, &dir, started)?;
    let (publisher, n1) = demo::trust_dev_key(&dir, &nodes.0[0])?;
    // The demo job is a nicety: a mesh that cannot run it still serves.
    let demo = demo::deploy(&dir, &exe, &publisher, &n1)
        .map_err(|e| println!("demo job not deployed: {e:#}"))
        .ok();
    let vm_demo = args
        .microvm
        .as_deref()
        .and_then(|accel| microvm_demo::deploy_if_possible(accel, &dir, &publisher, &n1));
    banner::banner(
        &args,
        &nodes,
        &publisher,
        demo.as_deref(),
        started.elapsed(),
    );
    if let Some(job) = vm_demo {
        banner::microvm(&args, &nodes, &job);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(watch(&mut nodes, &exe, &dir, listener))?;
    println!("\nstopping {} agents…", args.nodes);
    nodes.stop_all();
    let left = stop_instances(&dir);
    if left > 0 {
        println!("stopped {left} instance processes the agents left running");
    }
    println!("stopped");
    Ok(())
}

/// SIGKILLs the instances still running under the dev mesh's directory.
/// An agent that stops leaves its instances running, so that it adopts
/// them when it comes back (what a node that restarts wants); Ctrl-C on a
/// dev mesh means "stop everything". Returns how many were stopped.
fn stop_instances(dir: &Path) -> usize {
    // Working directories read back absolute and resolved.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut stopped = 0;
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let under = std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        if under && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            stopped += 1;
        }
    }
    stopped
}

/// Removes the control socket and the context when the runner ends, so
/// the CLI no longer points at a mesh that is gone.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0.join(devctx::SOCKET));
        let _ = fs::remove_file(self.0.join(devctx::FILE));
    }
}

fn write_context(nodes: &DevNodes, dir: &Path) -> anyhow::Result<()> {
    DevContext {
        runner_pid: std::process::id(),
        nodes: nodes
            .0
            .iter()
            .map(|n| DevNodeInfo {
                name: n.name.clone(),
                api: n.api_url(),
                data_dir: n.data.clone(),
                pid: n.pid(),
            })
            .collect(),
    }
    .write(dir)
}

/// Waits until every node sees all of them alive; an agent that exits
/// now (a port taken, say) fails the start.
fn wait_formed(nodes: &mut DevNodes, dir: &Path, started: Instant) -> anyhow::Result<()> {
    let clients: Vec<Client> = nodes
        .0
        .iter()
        .map(|n| Client::new(&n.api_url()).with_timeout(PROBE_TIMEOUT))
        .collect();
    let want = nodes.0.len();
    loop {
        for n in &mut nodes.0 {
            if let Some(status) = n.poll_exit() {
                bail!(
                    "agent {} exited ({status}) while the mesh formed; last log lines:\n{}",
                    n.name,
                    n.log_tail(5).join("\n")
                );
            }
        }
        let ready = clients.iter().all(|c| {
            c.nodes()
                .is_ok_and(|m| m.iter().filter(|m| m.state == "alive").count() == want)
        });
        if ready {
            return Ok(());
        }
        if started.elapsed() > READY_WITHIN {
            bail!(
                "the dev mesh did not form within {}s; see {}/n*/agent.log",
                READY_WITHIN.as_secs(),
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Watches the nodes until Ctrl-C, SIGTERM or SIGHUP: reports the ones that exit
/// and serves restart and stop requests.
async fn watch(
    nodes: &mut DevNodes,
    exe: &Path,
    dir: &Path,
    listener: std::os::unix::net::UnixListener,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A closed terminal: stop the nodes rather than leave them orphaned.
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            // Stopping wins over news of nodes exiting: a terminal's Ctrl-C
            // reaches the agents too, and their exits are then expected.
            biased;
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => return Ok(()),
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let result = match control::read_request(&mut stream).await {
                    Ok(req) => handle(nodes, exe, dir, req),
                    Err(e) => Err(e),
                };
                control::answer(&mut stream, result).await;
            }
            _ = tick.tick() => report_exits(nodes, dir)?,
        }
    }
}

/// Reports every node that exited since the last look; the rest run on.
fn report_exits(nodes: &mut DevNodes, dir: &Path) -> anyhow::Result<()> {
    let mut changed = false;
    for i in 0..nodes.0.len() {
        let Some(status) = nodes.0[i].poll_exit() else {
            continue;
        };
        changed = true;
        let n = &nodes.0[i];
        let running: Vec<&str> = nodes
            .0
            .iter()
            .filter(|o| o.pid().is_some())
            .map(|o| o.name.as_str())
            .collect();
        let rest = if running.is_empty() {
            "no node is running".to_string()
        } else {
            format!("{} keep running", running.join(", "))
        };
        println!(
            "\n{} exited ({status}); {rest}. Bring it back: myco dev restart {}",
            n.name, n.name
        );
        for line in n.log_tail(3) {
            println!("  {} log: {line}", n.name);
        }
    }
    if changed {
        write_context(nodes, dir)?;
    }
    Ok(())
}

/// Acts on one control request; the answer's details or why not.
fn handle(nodes: &mut DevNodes, exe: &Path, dir: &Path, req: Request) -> Result<String, String> {
    let (Request::Restart(name) | Request::Stop(name)) = &req;
    let names: Vec<&str> = nodes.0.iter().map(|n| n.name.as_str()).collect();
    let Some(i) = nodes.0.iter().position(|n| &n.name == name) else {
        return Err(format!(
            "no node {name} in this dev mesh ({})",
            names.join(", ")
        ));
    };
    let n = &mut nodes.0[i];
    let was_running = n.pid().is_some();
    n.stop();
    let answer = match req {
        Request::Stop(_) => {
            println!(
                "\n{name} stopped on request; the others keep running. Bring it back: myco dev restart {name}"
            );
            Ok(format!("stopped {name}"))
        }
        Request::Restart(_) => match n.spawn(exe) {
            Ok(pid) => {
                let how = if was_running {
                    "restarted"
                } else {
                    "started again"
                };
                println!("\n{name} {how} (pid {pid})");
                Ok(format!("{pid}"))
            }
            Err(e) => Err(format!("{e:#}")),
        },
    };
    write_context(nodes, dir).map_err(|e| format!("{e:#}"))?;
    answer
}

/// The dev dir and context of a running `myco dev`, and the node named.
fn running(n: &DevNodeArgs) -> anyhow::Result<(PathBuf, DevNodeInfo)> {
    let dir = devctx::dir(n.dir.as_deref());
    let ctx = DevContext::read(&dir).with_context(|| {
        format!(
            "no myco dev runs in {} (no {}); start one with `myco dev`, or pass --dir",
            dir.display(),
            devctx::FILE
        )
    })?;
    let node = ctx.node(&n.node).cloned().with_context(|| {
        let names: Vec<&str> = ctx.nodes.iter().map(|n| n.name.as_str()).collect();
        format!("no node {} in the dev mesh ({})", n.node, names.join(", "))
    })?;
    Ok((dir, node))
}

/// `myco dev restart NODE`: asks the runner, then waits until the node
/// serves and sees its peers again.
fn restart(n: DevNodeArgs) -> anyhow::Result<()> {
    let (dir, node) = running(&n)?;
    let pid = control::request(&dir.join(devctx::SOCKET), &Request::Restart(n.node.clone()))?;
    println!("{} started (pid {pid}); waiting for it to rejoin…", n.node);
    let peers =
        DevContext::read(&dir).map_or(0, |c| c.nodes.iter().filter(|o| o.pid.is_some()).count());
    let c = Client::new(&node.api).with_timeout(PROBE_TIMEOUT);
    let start = Instant::now();
    loop {
        let alive = c
            .nodes()
            .map(|m| m.iter().filter(|m| m.state == "alive").count())
            .unwrap_or(0);
        if alive >= peers.max(1) {
            println!(
                "{} is back at {}: it sees {alive} nodes alive",
                n.node, node.api
            );
            return Ok(());
        }
        if start.elapsed() > READY_WITHIN {
            bail!(
                "{} did not rejoin within {}s (it sees {alive} of {peers} alive); see {}",
                n.node,
                READY_WITHIN.as_secs(),
                node.data_dir.join("agent.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `myco dev stop NODE`.
fn stop(n: DevNodeArgs) -> anyhow::Result<()> {
    let (dir, _) = running(&n)?;
    control::request(&dir.join(devctx::SOCKET), &Request::Stop(n.node.clone()))?;
    println!(
        "{} stopped; the others keep running. Bring it back: myco dev restart {}",
        n.node, n.node
    );
    Ok(())
}
