//! One function per subcommand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use myco_agent::datadir::DataDir;
use myco_agent::settings::{AgentOptions, default_data_dir, parse_tags};
use myco_client::Client;
use myco_proto::api::{KvEntry, NodeInfo};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{AgentArgs, Cli, ClusterCmd, Command, Conn, KvCmd, LogFormat, PeerCmd, SporeCmd};
use crate::table::{Listing, print_json, print_listing};
use crate::{connect, dev};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let top = cli.conn;
    // `--api` and `--token` before a command that talks to no agent are
    // ignored (a wrapper passes them to every command); `--data-dir` there
    // is refused, not ignored: `myco --data-dir /x dev` would otherwise
    // look like it worked.
    let unused = |what: &str| -> anyhow::Result<()> {
        if top.data_dir.is_some() {
            anyhow::bail!("--data-dir means nothing to `myco {what}`; see `myco {what} --help`");
        }
        Ok(())
    };
    let client = |conn: Conn| connect::client(conn.or(top.clone()));
    match cli.command {
        // The agent writes its own api-token: a `--token` is ignored.
        Command::Agent(args) => {
            let api = args.api.clone().or(top.api.clone());
            let data_dir = args.data_dir.clone().or(top.data_dir.clone());
            agent(args, api, data_dir)
        }
        Command::Id(d) => {
            let dir =
                connect::data_dir(d.data_dir.or(top.data_dir))?.unwrap_or_else(default_data_dir);
            if !dir.is_dir() {
                anyhow::bail!(
                    "data dir {} does not exist; pass --data-dir, or start the agent once",
                    dir.display()
                );
            }
            println!("{}", DataDir::open(dir).node_id()?);
            Ok(())
        }
        Command::Status(a) => {
            // Raw first: the agent's answer also says how it limits
            // instances (`cgroups`), which the typed view does not carry.
            let raw: serde_json::Value = client(a.conn)?.get("/v1/status")?;
            if a.out.json {
                return print_json(&raw);
            }
            let s: myco_proto::api::Status = serde_json::from_value(raw.clone())
                .map_err(|e| anyhow::anyhow!("the agent's /v1/status did not decode: {e}"))?;
            let c = s.cluster;
            println!("node     {} ({})", s.node.name, s.node.id);
            println!("addr     {}", s.node.addr);
            println!("version  {}", s.version);
            println!("uptime   {}s", s.uptime_s);
            println!("key id   {}", s.cluster_key_id);
            let m = c.members;
            println!(
                "mesh     {} alive, {} suspect, {} down, {} left",
                m.alive, m.suspect, m.down, m.left
            );
            let (j, i) = (c.jobs, c.instances);
            println!(
                "jobs     {} ({} running, {} stopped)",
                j.total, j.running, j.stopped
            );
            println!(
                "instances {} ready, {} launching, {} draining, {} failed, {} stopped",
                i.ready, i.launching, i.draining, i.failed, i.stopped
            );
            if let Some(cg) = raw.get("cgroups") {
                let text = |k: &str| cg.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                let limits: Vec<&str> = cg
                    .get("limits")
                    .and_then(|v| v.as_array())
                    .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                let limits = match limits.is_empty() {
                    true => "no limits".to_string(),
                    false => format!("limits {}", limits.join(", ")),
                };
                let why = match text("reason") {
                    "" => String::new(),
                    r => format!(" ({r})"),
                };
                println!("cgroups  {}: {limits}{why}", text("version"));
            }
            Ok(())
        }
        Command::Nodes(a) => print_listing(&by_name(client(a.conn)?.nodes()?), a.out.json),
        Command::Peers(a) => print_listing(&by_name(client(a.conn)?.peers()?), a.out.json),
        Command::Peer(g) => {
            let PeerCmd::Add { addr, wait } = g.cmd;
            crate::peer::add(&client(g.conn)?, &addr, Duration::from_secs(wait))
        }
        Command::Cluster(g) => {
            let ClusterCmd::Key = g.cmd;
            let conn = g.conn.or(top);
            // With a data dir, read it there: works with the agent stopped.
            let text = match connect::data_dir(conn.data_dir.clone())? {
                Some(dir) => std::fs::read_to_string(dir.join(myco_agent::datadir::CLUSTER_KEY))
                    .with_context(|| {
                        format!(
                            "no cluster key in {} (start the agent there once)",
                            dir.display()
                        )
                    })?,
                None => connect::client(conn)?.cluster_key()?,
            };
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                println!("{}", line.trim());
            }
            Ok(())
        }
        Command::Kv(g) => kv(&client(g.conn)?, g.cmd),
        Command::Cache(g) => crate::cache_cmd::cache(&client(g.conn)?, g.cmd),
        Command::Msg(g) => crate::cache_cmd::msg(&client(g.conn)?, g.cmd),
        Command::Key(g) => {
            unused("key")?;
            crate::spore_cmd::key(g.cmd)
        }
        Command::Spore(g) => {
            if !matches!(g.cmd, SporeCmd::Push { .. }) {
                unused("spore")?;
            }
            crate::spore_cmd::spore(client, g.cmd)
        }
        Command::Spores(a) => crate::spore_cmd::spores(&client(a.conn)?, a.out.json),
        Command::Trust(g) => crate::spore_cmd::trust(&client(g.conn)?, g.cmd),
        Command::Deploy(a) => {
            let c = client(a.conn.clone())?;
            crate::job_cmd::deploy(&c, a)
        }
        Command::Jobs(a) => print_listing(&client(a.conn)?.jobs(a.all)?, a.out.json),
        Command::Job(g) => crate::job_cmd::job(&client(g.conn)?, g.cmd),
        Command::Instances(a) => {
            let c = client(a.conn.clone())?;
            crate::job_cmd::instances(&c, a)
        }
        Command::Logs(a) => {
            let c = client(a.conn.clone())?;
            crate::job_cmd::logs(&c, a)
        }
        Command::Events(a) => crate::events_cmd::run(&client(a.conn.clone())?, &a),
        Command::DemoServe(_) => {
            unused("demo-serve")?;
            crate::demo::serve()
        }
        Command::Dev(args) => {
            unused("dev")?;
            dev::main(args)
        }
        Command::Sim(args) => {
            unused("sim")?;
            sim(args)
        }
        Command::SystemdUnit(args) => {
            unused("systemd-unit")?;
            let bin = crate::systemd::binary(args.bin)?;
            print!("{}", crate::systemd::unit(&bin, &args.agent_args)?);
            Ok(())
        }
        Command::Completions { shell, .. } => {
            unused("completions")?;
            // Into a buffer first: clap_complete panics on a closed pipe
            // (`myco completions bash | head`); a write here returns it.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "myco", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            Ok(())
        }
    }
}

/// Members in name order (then id): the same listing from every node.
fn by_name(mut nodes: Vec<NodeInfo>) -> Vec<NodeInfo> {
    nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    nodes
}

fn kv(c: &Client, cmd: KvCmd) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    match cmd {
        KvCmd::Get { key } => {
            let got = c.kv_get(&key)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&got.value)?;
            // Raw bytes for pipes and files; a terminal gets its prompt on
            // a line of its own.
            if needs_newline(&got.value, std::io::IsTerminal::is_terminal(&out)) {
                out.write_all(b"\n")?;
            }
        }
        KvCmd::Put { key, value } => {
            let bytes = match value.as_deref() {
                None | Some("-") => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
                Some(v) => v.as_bytes().to_vec(),
            };
            let written = c.kv_put(&key, &bytes)?;
            println!("{key} = version {}", written.version);
        }
        KvCmd::Del { key } => {
            c.kv_del(&key)?;
            println!("deleted {key}");
        }
        KvCmd::List { prefix, out } => print_listing(&c.kv_list(&prefix)?, out.json)?,
    }
    Ok(())
}

impl Listing for KvEntry {
    const COLUMNS: &'static [&'static str] = &["KEY", "VALUE", "VERSION"];
    fn row(&self) -> Vec<String> {
        let v = self.value.as_deref().map_or("(binary)".into(), one_line);
        // Long values are cut so a listing stays one line per key.
        let v = if v.chars().count() > 60 {
            format!("{}…", v.chars().take(59).collect::<String>())
        } else {
            v
        };
        vec![one_line(&self.key), v, self.version.clone()]
    }
}

/// Whether `kv get` adds a newline: only on a terminal, and only if the
/// value lacks one (piped output stays byte-exact).
fn needs_newline(value: &[u8], terminal: bool) -> bool {
    terminal && !value.is_empty() && !value.ends_with(b"\n")
}

/// A table cell on one line: control characters (a value's trailing
/// newline from `echo v | myco kv put`) shown escaped, `\n`, not raw.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Runs seeds one after another; stops at the first violation, which
/// prints everything needed to replay it.
fn sim(args: crate::cli::SimArgs) -> anyhow::Result<()> {
    use myco_sim::SimConfig;
    if args.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let started = std::time::Instant::now();
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let mut cfg = if args.storm {
            SimConfig::join_storm(args.nodes, seed)
        } else if args.quiet {
            SimConfig::no_faults(args.nodes, seed)
        } else {
            SimConfig::from_seed(seed, args.nodes)
        };
        if let Some(m) = args.minutes {
            cfg.safety = std::time::Duration::from_secs(60 * m);
        }
        cfg.trace = args.trace;
        match myco_sim::run(&cfg) {
            Ok(report) => println!("{report}\n"),
            Err(v) => anyhow::bail!("simulation violated an invariant:\n{v}"),
        }
    }
    println!(
        "{} seed(s) passed in {:.1}s",
        args.seeds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn agent(args: AgentArgs, api: Option<String>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    // `RUST_LOG` as `level` or `target=level,...` (tracing's `Targets`:
    // the env-filter's span and field filters cost the binary a regex
    // engine, about half a megabyte, for what operators rarely type).
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // Colour only for a person at a terminal: a log file (`myco dev`'s
    // agent.log, journald) full of escape codes is unreadable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder
            .event_format(crate::logfmt::WithNode {
                inner: tracing_subscriber::fmt::format().json(),
                json: true,
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .finish()
            .with(filter)
            .init(),
        LogFormat::Text => builder
            .event_format(crate::logfmt::WithNode {
                inner: tracing_subscriber::fmt::format().with_ansi(ansi),
                json: false,
            })
            .finish()
            .with(filter)
            .init(),
    }
    let flags = AgentOptions {
        data_dir: data_dir.or_else(|| std::env::var_os("MYCO_DATA_DIR").map(PathBuf::from)),
        name: args.name,
        bind: args.bind,
        advertise: args.advertise,
        // The listen address; a URL form is accepted too.
        api: api.map(|a| {
            a.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        }),
        edge: args.edge,
        join: args.join,
        tags: parse_tags(&args.tag)?,
        cluster_key_file: args.cluster_key_file,
        membership: Default::default(),
        spores: Default::default(),
        state: Default::default(),
        api_allowed_hosts: args.api_allowed_host,
        events_keepalive_ms: None,
        resp: args.resp,
        discover: args.discover,
        edge_direct: args.edge_direct.then_some(true),
        edge_prefer_local: args.edge_prefer_local.then_some(true),
    };
    let options = match &args.config {
        Some(path) => flags.over(AgentOptions::from_file(path)?),
        None => flags,
    };
    let settings = options.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(agent_workers())
        .enable_all()
        .build()?;
    rt.block_on(myco_agent::run(settings))
}

/// The agent runtime's worker threads: 2, or `MYCO_WORKERS` (1 to 64),
/// for measuring what a second worker costs in wake-ups on a small
/// machine against what it gives under many clients (BENCHMARKS.md).
fn agent_workers() -> usize {
    std::env::var("MYCO_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_stay_on_one_line() {
        assert_eq!(one_line("green\n"), "green\\n");
        assert_eq!(one_line("a\tb\r\u{1b}[31m"), "a\\tb\\r\\u{1b}[31m");
        assert_eq!(one_line("grün ✓"), "grün ✓");
    }

    #[test]
    fn kv_get_adds_a_newline_only_on_a_terminal_and_only_if_missing() {
        assert!(needs_newline(b"green", true));
        assert!(!needs_newline(b"green\n", true));
        assert!(!needs_newline(b"green", false));
        assert!(!needs_newline(b"", true));
    }
}
