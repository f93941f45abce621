//! Raw command-line flags; `commands` turns them into actions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::job_cli::{DeployArgs, InstancesArgs, JobCmd, LogsArgs};

/// Myco: a self-healing mesh orchestrator for small fleets of Linux machines.
#[derive(Parser, Debug)]
#[command(name = "myco", version, propagate_version = true)]
pub struct Cli {
    /// Flags of the commands that talk to an agent, given before the
    /// subcommand (`myco --api URL nodes`).
    #[command(flatten)]
    pub conn: TopConn,
    #[command(subcommand)]
    pub command: Command,
}

/// The connection flags before the subcommand. Not global: a subcommand
/// that does not talk to an agent (`dev`, `sim`, ...) must not list them,
/// so each API command has its own [`Conn`] and the two are merged.
#[derive(Args, Debug, Clone, Default)]
pub struct TopConn {
    /// For commands that talk to an agent: its API URL (see `myco nodes --help`).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// For commands that talk to an agent: the API token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// For commands that read a node's data dir (token, id, cluster key).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// How to reach an agent, for the commands that talk to one. Global, so
/// the flags may follow nested subcommands (`myco kv get K --api URL`).
/// The environment is read by `connect`, not here, so that a flag before
/// the subcommand still beats the environment.
#[derive(Args, Debug, Clone, Default)]
pub struct Conn {
    /// The agent API URL [default: env MYCO_API, else n1 of the `myco dev`
    /// mesh started in this directory, else http://127.0.0.1:7070].
    #[arg(long, global = true, value_name = "URL")]
    pub api: Option<String>,
    /// API token [default: `api-token` in --data-dir, else env
    /// MYCO_API_TOKEN, else `api-token` in env MYCO_DATA_DIR, else that of
    /// the `myco dev` node at --api].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The agent's data dir, to read its API token from (beats env
    /// MYCO_API_TOKEN) [env MYCO_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Conn {
    /// These flags, each falling back to the one given before the subcommand.
    pub fn or(self, top: TopConn) -> Conn {
        Conn {
            api: self.api.or(top.api),
            token: self.token.or(top.token),
            data_dir: self.data_dir.or(top.data_dir),
        }
    }
}

/// The command line, parsed; a usage error as clap reports them.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

fn parse_from<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(
    args: I,
) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    if let Some(("dev", dev)) = matches.subcommand()
        && let Some((action, _)) = dev.subcommand()
    {
        let given: Vec<String> = [
            "nodes",
            "dir",
            "mesh_port",
            "api_port",
            "edge_port",
            "microvm",
        ]
        .into_iter()
        .filter(|id| dev.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
        if !given.is_empty() {
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "the subcommand '{action}' cannot be used with {}: they are for starting a dev mesh",
                    given.join(", ")
                ),
            ));
        }
    }
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// `--json` for listings.
#[derive(Args, Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A listing from an agent: `--json` and the connection flags.
#[derive(Args, Debug, Clone)]
pub struct ApiOutput {
    #[command(flatten)]
    pub out: Output,
    #[command(flatten)]
    pub conn: Conn,
}

/// A group of subcommands that all talk to an agent.
#[derive(Args, Debug)]
pub struct ApiGroup<T: Subcommand> {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: T,
}

/// `--api` and `--token` on a command that talks to no agent: accepted
/// (before or after the subcommand) and ignored, so that a wrapper
/// `myco --api "$API" --token "$TOKEN" "$@"` works for every command.
/// Hidden from those commands' help, which lists only what they use.
/// The ids are [`Conn`]'s: clap does not propagate a global flag into a
/// subcommand that has one of that id, so `spore push` keeps its own.
#[derive(Args, Debug, Clone, Default)]
pub struct Ignored {
    /// Ignored: this command talks to no agent.
    #[arg(
        id = "api",
        long = "api",
        global = true,
        hide = true,
        value_name = "URL"
    )]
    pub _api: Option<String>,
    /// Ignored: this command talks to no agent.
    #[arg(
        id = "token",
        long = "token",
        global = true,
        hide = true,
        value_name = "TOKEN"
    )]
    pub _token: Option<String>,
}

/// A group of subcommands that talk to no agent, but for those with a
/// [`Conn`] of their own (`spore push`); see [`Ignored`].
#[derive(Args, Debug)]
pub struct LocalGroup<T: Subcommand> {
    #[command(flatten)]
    pub ignored: Ignored,
    #[command(subcommand)]
    pub cmd: T,
}

/// `--data-dir` alone, for commands that read a data dir but no API.
#[derive(Args, Debug, Clone, Default)]
pub struct DataDirArg {
    /// The node's data dir [env MYCO_DATA_DIR; default: /var/lib/myco as
    /// root, else ~/.local/share/myco].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub ignored: Ignored,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (one per machine).
    Agent(AgentArgs),
    /// Print this node's id from its data dir (no agent needed).
    Id(DataDirArg),
    /// This node and a summary of the mesh.
    Status(ApiOutput),
    /// Every member of the mesh.
    Nodes(ApiOutput),
    /// The other members, as this node sees them.
    Peers(ApiOutput),
    /// Manage peers.
    Peer(ApiGroup<PeerCmd>),
    /// Cluster-wide settings.
    Cluster(ApiGroup<ClusterCmd>),
    /// Publisher keys for signing spores.
    Key(LocalGroup<KeyCmd>),
    /// Signed workload packages.
    Spore(LocalGroup<SporeCmd>),
    /// Spores known to the mesh.
    Spores(ApiOutput),
    /// Trusted spore publishers (kept in replicated state).
    Trust(ApiGroup<TrustCmd>),
    /// The cluster-wide config KV.
    Kv(ApiGroup<KvCmd>),
    /// Cache buckets across the mesh (in memory, TTL and LRU bounded).
    Cache(ApiGroup<crate::cache_cmd::CacheCmd>),
    /// App messaging: publish, subscribe, request/reply.
    Msg(ApiGroup<crate::cache_cmd::MsgCmd>),
    /// Create or update a job from a job file; wait until it runs.
    Deploy(DeployArgs),
    /// Every job with desired, running and ready counts.
    Jobs(crate::job_cli::JobsArgs),
    /// Show, stop, scale, plan, revert a job; its history.
    Job(ApiGroup<JobCmd>),
    /// Running instances of jobs.
    Instances(InstancesArgs),
    /// An instance's output (stdout and stderr).
    Logs(LogsArgs),
    /// The mesh's events (members, state changes) as they happen.
    Events(crate::events_cmd::EventsArgs),
    /// The demo workload of `myco dev`: answers `/` with its identity.
    #[command(hide = true)]
    DemoServe(Ignored),
    /// Run a local mesh of N agents on loopback, for trying Myco out.
    Dev(DevArgs),
    /// Run the deterministic simulator: real node logic on a virtual network.
    Sim(SimArgs),
    /// Print a systemd unit for the agent.
    SystemdUnit(SystemdArgs),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        #[command(flatten)]
        ignored: Ignored,
    },
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Where the node keeps identity, keys, API token and state [default:
    /// /var/lib/myco as root, else ~/.local/share/myco; env MYCO_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the HTTP API and dashboard listen [default: 127.0.0.1:7070].
    #[arg(long, value_name = "ADDR:PORT")]
    pub api: Option<String>,
    /// TOML config file (same names as the flags; flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Mesh transport address [default: 0.0.0.0:7946].
    #[arg(long)]
    pub bind: Option<String>,
    /// Address peers should use [default: detected].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Edge gateway [default: 0.0.0.0:8080].
    #[arg(long)]
    pub edge: Option<String>,
    /// A peer to join, HOST:PORT (repeatable).
    #[arg(long)]
    pub join: Vec<String>,
    /// A node tag KEY=VALUE (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// File with the cluster key (or env MYCO_CLUSTER_KEY).
    #[arg(long)]
    pub cluster_key_file: Option<PathBuf>,
    /// A host name the API also answers to, besides loopback and its bound
    /// address (repeatable; config key api_allowed_hosts).
    #[arg(long = "api-allowed-host")]
    pub api_allowed_host: Vec<String>,
    /// Serve the cache over the Redis protocol on ADDR:PORT (off unless
    /// given; config key resp).
    #[arg(long, value_name = "ADDR:PORT")]
    pub resp: Option<String>,
    /// Find other nodes on the local network with no address given: `lan`
    /// (sealed multicast beacons, group 239.255.77.46) or `lan:PORT`
    /// [port 7947]; config key discover.
    #[arg(long, value_name = "lan[:PORT]")]
    pub discover: Option<String>,
    /// The edge sends to instances on other nodes directly, in plaintext,
    /// instead of through their node's agent over the mesh's mutual TLS
    /// (trusted LANs only; config key edge_direct).
    #[arg(long)]
    pub edge_direct: bool,
    /// The edge sends to an instance on this node when it is as good as
    /// the balancer's choice (no more requests in flight), saving the hop
    /// between nodes (config key edge_prefer_local).
    #[arg(long)]
    pub edge_prefer_local: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Ignored (the agent writes its own api-token), so that a wrapper
    /// passing `--token` to every command can start agents too.
    #[arg(long = "token", hide = true, value_name = "TOKEN")]
    pub _token: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Join the agent to the mesh of the peer at ADDR (HOST:PORT of its mesh port).
    Add {
        /// HOST:PORT.
        addr: String,
        /// Seconds to wait for the peer to answer; 0 returns at once (the
        /// agent keeps retrying in the background while it has no live peer).
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        wait: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Make a publisher key pair: FILE (secret, 0600) and FILE.pub.
    Gen {
        /// Where the secret key goes.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SporeCmd {
    /// Pack a file or directory into a signed spore.
    // `--version` is the spore's version here, not the program's.
    #[command(disable_version_flag = true)]
    Pack {
        /// The binary or directory to pack.
        path: PathBuf,
        /// Spore name.
        #[arg(long)]
        name: String,
        /// Spore version.
        #[arg(long)]
        version: String,
        /// The command to run, relative to the payload root (e.g. ./server.py).
        #[arg(long)]
        cmd: String,
        /// An argument for the command (repeatable).
        #[arg(long = "arg")]
        args: Vec<String>,
        /// An environment variable KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// The publisher's secret key (from `myco key gen`).
        #[arg(long)]
        key: PathBuf,
        /// Output file [default: NAME-VERSION.spore].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Make a microVM spore (`driver = "microvm"`): boot this kernel
        /// (e.g. /boot/vmlinuz-*) with PATH (a directory) as its initramfs;
        /// --cmd is then the guest program, run by --microvm-init.
        #[arg(long, requires = "microvm_init")]
        microvm_kernel: Option<PathBuf>,
        /// The guest's /init (a script or static binary) for --microvm-kernel:
        /// it sets up the guest and runs its arguments (the spore's command).
        #[arg(long, requires = "microvm_kernel")]
        microvm_init: Option<PathBuf>,
    },
    /// Show a spore's manifest without trusting it.
    Inspect {
        /// The spore file.
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Verify digest, signature and archive; with --pubkey, also the publisher.
    Verify {
        /// The spore file.
        file: PathBuf,
        /// A publisher's KEY.pub file that must have signed it.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Upload a spore to the agent; the whole mesh can then fetch it.
    Push {
        /// The spore file.
        file: PathBuf,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Trust a publisher key (a KEY.pub file).
    Add {
        /// The public key file.
        pubkey: PathBuf,
        /// Who it belongs to.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List trusted publishers.
    List(Output),
    /// Stop trusting a publisher key (hex).
    Remove {
        /// The key, 64 hex digits.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Print a key's value (raw, as stored).
    Get {
        /// The key (may contain `/`).
        key: String,
    },
    /// Set a key; the value is the argument, or standard input if absent or `-`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys under a prefix.
    List {
        /// Key prefix.
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Print the cluster key (from --data-dir, or from the agent with its token).
    Key,
}

/// `myco dev [FLAGS]` runs a mesh, `myco dev ACTION NODE` acts on one; the
/// mesh's flags with an action are refused by [`parse`] (not by clap's
/// `args_conflicts_with_subcommands`, which would refuse the ignored
/// `--api` and `--token` too: `myco dev --token T stop n1`).
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Act on a running dev mesh instead of starting one.
    #[command(subcommand)]
    pub action: Option<DevCmd>,
    /// How many agents.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Where their data dirs go.
    #[arg(long, default_value = ".myco-dev")]
    pub dir: PathBuf,
    /// Node i listens on mesh BASE+i, API 7070+i, edge 8080+i.
    #[arg(long, default_value_t = 7946)]
    pub mesh_port: u16,
    /// First API port.
    #[arg(long, default_value_t = 7070)]
    pub api_port: u16,
    /// First edge port.
    #[arg(long, default_value_t = 8080)]
    pub edge_port: u16,
    /// Also run a microVM demo (job hello-vm) with ACCEL: kvm (the
    /// default), or tcg (emulated: a boot takes about a minute) where KVM
    /// cannot boot a stock kernel. Needs qemu-system-x86, busybox-static
    /// and a kernel in /boot; without them it says what is missing and
    /// runs the process demo alone.
    #[arg(long, value_name = "ACCEL", num_args = 0..=1, default_missing_value = "kvm",
          value_parser = ["kvm", "tcg"])]
    pub microvm: Option<String>,
    #[command(flatten)]
    pub ignored: Ignored,
}

/// What `myco dev NODE-ACTION` asks a running `myco dev` to do.
#[derive(Subcommand, Debug)]
pub enum DevCmd {
    /// Start a node again (stopping it first if it runs), with the same
    /// data dir and ports; waits until it serves.
    Restart(DevNodeArgs),
    /// Stop a node gracefully (SIGTERM); the others keep running.
    Stop(DevNodeArgs),
}

/// Which node of which dev mesh.
#[derive(Args, Debug)]
pub struct DevNodeArgs {
    /// The node's name: n1, n2, ...
    pub node: String,
    /// The dev mesh's dir (as given to `myco dev --dir`) [env MYCO_DEV_DIR].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// First seed; the seed picks the fault settings, and replays the run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How many consecutive seeds to run.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Nodes in the simulated mesh.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Virtual minutes of the safety phase (faults running) [default: per seed].
    #[arg(long)]
    pub minutes: Option<u64>,
    /// No faults at all: checks there are no false downs.
    #[arg(long, conflicts_with = "storm")]
    pub quiet: bool,
    /// A join storm: every node joins at once; reports time to agreement.
    #[arg(long)]
    pub storm: bool,
    /// Print one node's events, the faults and the phases to stderr.
    #[arg(long)]
    pub trace: Option<usize>,
    #[command(flatten)]
    pub ignored: Ignored,
}

#[derive(Args, Debug)]
pub struct SystemdArgs {
    /// The installed myco binary for ExecStart (an absolute path) [default:
    /// /usr/local/bin/myco if it exists, else this binary unless it sits in
    /// a cargo target/ dir].
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Extra arguments for `myco agent` in the unit.
    #[arg(last = true)]
    pub agent_args: Vec<String>,
    #[command(flatten)]
    pub ignored: Ignored,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks flag clashes only in debug builds and only when a
    /// command is built: check every subcommand here (a `--version` clash
    /// once crashed `spore pack` in debug builds).
    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn dev_mesh_flags_do_not_go_with_a_node_action() {
        let e = super::parse_from(["myco", "dev", "--nodes", "5", "stop", "n1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(
            e.to_string().contains("'stop' cannot be used with --nodes"),
            "{e}"
        );
        assert!(super::parse_from(["myco", "dev", "--nodes", "5"]).is_ok());
        assert!(super::parse_from(["myco", "dev", "--token", "t", "stop", "n1"]).is_ok());
    }

    /// Every command path (`kv get`, `dev stop`, ...), leaves and groups.
    fn paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.clone();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            paths(sub, path, out);
        }
    }

    /// A wrapper `myco --api "$API" --token "$TOKEN" "$@"` must work for
    /// every command: the two flags parse before and after any subcommand
    /// (a command with no use for them ignores them). Missing arguments are
    /// other errors; an unknown or clashing `--api`/`--token` is this one.
    #[test]
    fn api_and_token_parse_before_and_after_every_command() {
        let mut all = Vec::new();
        paths(&super::Cli::command(), Vec::new(), &mut all);
        assert!(all.len() > 40, "{all:?}");
        let flags = ["--api", "127.0.0.1:7070", "--token", "t"];
        for path in all {
            let before: Vec<&str> = ["myco"]
                .into_iter()
                .chain(flags)
                .chain(path.iter().map(String::as_str))
                .collect();
            let after: Vec<&str> = ["myco"]
                .into_iter()
                .chain(path.iter().map(String::as_str))
                .chain(flags)
                .collect();
            // Also between a group and its subcommand (`myco kv --api U get`).
            let between: Vec<Vec<&str>> = (1..path.len())
                .map(|i| {
                    let mut a = vec!["myco"];
                    a.extend(path[..i].iter().map(String::as_str));
                    a.extend(flags);
                    a.extend(path[i..].iter().map(String::as_str));
                    a
                })
                .collect();
            for args in [before, after].into_iter().chain(between) {
                if let Err(e) = super::parse_from(&args) {
                    use clap::error::ErrorKind::*;
                    assert!(
                        !matches!(e.kind(), UnknownArgument | ArgumentConflict),
                        "{args:?}: {e}"
                    );
                }
            }
        }
    }
}
