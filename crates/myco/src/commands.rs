//! One function per subcommand.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use myco_agent::datadir::DataDir;
use myco_agent::settings::{AgentOptions, default_data_dir, parse_tags};
use myco_client::Client;
use myco_proto::api::{KvEntry, NodeInfo};
use tracing_subscriber::EnvFilter;

use crate::cli::{AgentArgs, Cli, ClusterCmd, Command, KvCmd, LogFormat, PeerCmd};
use crate::table::{Listing, print_json, print_listing};
use crate::{connect, dev};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let client = || {
        connect::client(
            cli.api.as_deref(),
            cli.token.clone(),
            cli.data_dir.as_deref(),
        )
    };
    match cli.command {
        Command::Agent(args) => agent(args, cli.api, cli.data_dir),
        Command::Id => {
            let dir = cli.data_dir.unwrap_or_else(default_data_dir);
            println!("{}", DataDir::open(dir).node_id()?);
            Ok(())
        }
        Command::Status(o) => {
            let s = client().status()?;
            if o.json {
                return print_json(&s);
            }
            let c = s.cluster;
            println!("node     {} ({})", s.node.name, s.node.id);
            println!("addr     {}", s.node.addr);
            println!("version  {}", s.version);
            println!("uptime   {}s", s.uptime_s);
            println!("key id   {}", s.cluster_key_id);
            println!(
                "mesh     {} alive, {} suspect, {} down, {} left",
                c.alive, c.suspect, c.down, c.left
            );
            Ok(())
        }
        Command::Nodes(o) => print_listing(&client().nodes()?, o.json),
        Command::Peers(o) => print_listing(&client().peers()?, o.json),
        Command::Peer(PeerCmd::Add { addr }) => {
            let c = client();
            c.peer_add(&addr)?;
            println!("joining {addr} via {}", c.base());
            Ok(())
        }
        Command::Cluster(ClusterCmd::Key) => {
            // With a data dir, read it there: works with the agent stopped.
            let text = match &cli.data_dir {
                Some(dir) => std::fs::read_to_string(dir.join(myco_agent::datadir::CLUSTER_KEY))
                    .with_context(|| {
                        format!(
                            "no cluster key in {} (start the agent there once)",
                            dir.display()
                        )
                    })?,
                None => client().cluster_key()?,
            };
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                println!("{}", line.trim());
            }
            Ok(())
        }
        Command::Kv(cmd) => kv(&client(), cmd),
        Command::Key(cmd) => crate::spore_cmd::key(cmd),
        Command::Spore(cmd) => crate::spore_cmd::spore(client, cmd),
        Command::Spores(o) => crate::spore_cmd::spores(&client(), o.json),
        Command::Trust(cmd) => crate::spore_cmd::trust(&client(), cmd),
        Command::Dev(args) => dev::run(args),
        Command::Sim(args) => sim(args),
        Command::SystemdUnit(args) => {
            print!("{}", systemd_unit(&args.agent_args));
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "myco", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn kv(c: &Client, cmd: KvCmd) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    match cmd {
        KvCmd::Get { key } => {
            let got = c.kv_get(&key)?;
            std::io::stdout().lock().write_all(&got.value)?;
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
        let v = self.value.as_deref().unwrap_or("(binary)");
        // Long values are cut so a listing stays one line per key.
        let v = if v.chars().count() > 60 {
            format!("{}…", v.chars().take(59).collect::<String>())
        } else {
            v.to_string()
        };
        vec![self.key.clone(), v, self.version.clone()]
    }
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

/// `myco nodes` and `myco peers`.
impl Listing for NodeInfo {
    const COLUMNS: &'static [&'static str] =
        &["NAME", "ID", "STATE", "ADDR", "CPU", "MEMORY", "TAGS"];
    fn row(&self) -> Vec<String> {
        vec![
            format!("{}{}", self.name, if self.is_self { " *" } else { "" }),
            self.id.clone(),
            self.state.clone(),
            self.addr.clone(),
            format!("{}", self.capacity.cpu_milli as f64 / 1000.0),
            format!("{} MiB", self.capacity.memory_mb),
            self.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]
    }
}

fn agent(args: AgentArgs, api: Option<String>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let flags = AgentOptions {
        data_dir,
        name: args.name,
        bind: args.bind,
        advertise: args.advertise,
        // The global --api is the listen address here; a URL form is accepted too.
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
    };
    let options = match &args.config {
        Some(path) => flags.over(AgentOptions::from_file(path)?),
        None => flags,
    };
    let settings = options.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(myco_agent::run(settings))
}

fn systemd_unit(extra: &[String]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/myco".into());
    let args = if extra.is_empty() {
        String::new()
    } else {
        format!(" {}", extra.join(" "))
    };
    format!(
        "[Unit]\nDescription=Myco mesh agent\nWants=network-online.target\nAfter=network-online.target time-sync.target\n\n\
[Service]\nType=notify\nExecStart={exe} agent --data-dir /var/lib/myco{args}\nKillSignal=SIGTERM\nTimeoutStopSec=20\n\
Restart=always\nRestartSec=2\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}
