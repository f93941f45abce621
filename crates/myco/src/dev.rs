//! `myco dev`: a whole local mesh in one command.
//!
//! Starts N agents as child processes on loopback, sharing one cluster key
//! kept in the dev dir, waits until each sees all N alive, prints how to
//! reach them, and on Ctrl-C stops them with SIGTERM (SIGKILL after 5 s).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use myco_agent::datadir::random_bytes;
use myco_client::Client;
use myco_proto::ClusterKey;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::DevArgs;

const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long one readiness probe may take: an agent still starting must not
/// hold up the probes of the others.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct Agents(Vec<Child>);

impl Agents {
    fn stop(&mut self) {
        for c in &self.0 {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 50 {
        bail!("--nodes must be between 1 and 50");
    }
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let key_file = dir.join("cluster.key");
    if !key_file.exists() {
        fs::write(
            &key_file,
            format!(
                "{}\n",
                ClusterKey::from_bytes(random_bytes::<32>()).to_base64()
            ),
        )?;
    }
    let exe = std::env::current_exe()?;
    let port = |base: u16, i: u16| base.checked_add(i).context("port out of range");
    let mut agents = Agents(Vec::new());
    for i in 0..args.nodes {
        let name = format!("n{}", i + 1);
        let data = dir.join(&name);
        fs::create_dir_all(&data)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("agent.log"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", &name])
            .args(["--bind", &format!("127.0.0.1:{}", port(args.mesh_port, i)?)])
            .args(["--api", &format!("127.0.0.1:{}", port(args.api_port, i)?)])
            .args(["--edge", &format!("127.0.0.1:{}", port(args.edge_port, i)?)])
            .arg("--cluster-key-file")
            .arg(&key_file)
            .args(["--tag", &format!("dev={}", i + 1)])
            .env_remove("MYCO_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if i > 0 {
            cmd.args(["--join", &format!("127.0.0.1:{}", args.mesh_port)]);
        }
        agents.0.push(
            cmd.spawn()
                .with_context(|| format!("starting agent {name}"))?,
        );
    }

    let started = Instant::now();
    let clients: Vec<Client> = (0..args.nodes)
        .map(|i| {
            Client::new(&format!("http://127.0.0.1:{}", args.api_port + i))
                .with_timeout(PROBE_TIMEOUT)
        })
        .collect();
    loop {
        check_alive(&mut agents, &dir)?;
        let ready = clients.iter().all(|c| {
            c.nodes().is_ok_and(|n| {
                n.iter().filter(|m| m.state == "alive").count() == args.nodes as usize
            })
        });
        if ready {
            break;
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

    let publisher = trust_dev_key(&dir, &clients[0])?;
    println!(
        "myco dev: {} nodes formed a mesh in {:.1}s (data in {})\n",
        args.nodes,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    for i in 0..args.nodes {
        println!(
            "  n{:<3} dashboard+API http://127.0.0.1:{}   edge http://127.0.0.1:{}   mesh 127.0.0.1:{}",
            i + 1,
            args.api_port + i,
            args.edge_port + i,
            args.mesh_port + i
        );
    }
    println!("\nTry:");
    println!(
        "  myco nodes                                  # asks n1 at http://127.0.0.1:{}",
        args.api_port
    );
    println!(
        "  myco --api http://127.0.0.1:{} status",
        args.api_port + args.nodes.saturating_sub(1)
    );
    println!(
        "  myco --data-dir {} cluster key   # mutating calls find the token there too",
        dir.join("n1").display()
    );
    println!(
        "  myco spore pack DIR --name app --version 1 --cmd ./app --key {}",
        publisher.display()
    );
    println!(
        "  myco --data-dir {} spore push app-1.spore",
        dir.join("n1").display()
    );
    println!(
        "\nA development publisher key ({}) is trusted by the mesh.",
        publisher.display()
    );
    println!(
        "Logs: {}/nI/agent.log. Ctrl-C stops every node.",
        dir.display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => check_alive(&mut agents, &dir)?,
            }
        }
        anyhow::Ok(())
    })?;
    println!("\nstopping {} agents…", args.nodes);
    agents.stop();
    println!("stopped");
    Ok(())
}

/// Makes (once) and trusts a development publisher key, so spores packed
/// with it run in the dev mesh out of the box.
fn trust_dev_key(dir: &Path, n1: &Client) -> anyhow::Result<std::path::PathBuf> {
    let key = dir.join("dev-publisher.key");
    let public = match myco_spore::read_public_key(&myco_spore::public_key_path(&key)) {
        Ok(k) => k,
        Err(_) => myco_spore::write_keypair(&key, random_bytes::<32>())?,
    };
    let token = fs::read_to_string(dir.join("n1").join(myco_agent::datadir::API_TOKEN))?
        .trim()
        .to_string();
    n1.clone()
        .with_token(Some(token))
        .with_timeout(myco_client::DEFAULT_TIMEOUT)
        .trust_add(&myco_proto::api::TrustedKey {
            key: hex::encode(public.as_bytes()),
            comment: "myco dev publisher".into(),
        })?;
    Ok(key)
}

/// Fails, with the tail of its log, if an agent exited.
fn check_alive(agents: &mut Agents, dir: &Path) -> anyhow::Result<()> {
    for (i, c) in agents.0.iter_mut().enumerate() {
        if let Some(status) = c.try_wait()? {
            let log = fs::read_to_string(dir.join(format!("n{}", i + 1)).join("agent.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "agent n{} exited ({status}); last log lines:\n{}",
                i + 1,
                tail.join("\n")
            );
        }
    }
    Ok(())
}
