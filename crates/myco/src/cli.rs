//! Raw command-line flags; `commands` turns them into actions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Myco: a self-healing mesh orchestrator for small fleets of Linux machines.
#[derive(Parser, Debug)]
#[command(name = "myco", version, propagate_version = true)]
pub struct Cli {
    /// The agent API to talk to [default: http://127.0.0.1:7070]. For
    /// `myco agent`, the address its API listens on (ADDR:PORT).
    #[arg(long, global = true, env = "MYCO_API")]
    pub api: Option<String>,
    /// API token (default: from MYCO_API_TOKEN, or `api-token` in --data-dir).
    #[arg(long, global = true, env = "MYCO_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The node's data dir (identity, keys, token, state).
    #[arg(long, global = true, env = "MYCO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--json` for listings.
#[derive(Args, Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (one per machine).
    Agent(AgentArgs),
    /// Print this node's id from its data dir (no agent needed).
    Id,
    /// This node and a summary of the mesh.
    Status(Output),
    /// Every member of the mesh.
    Nodes(Output),
    /// The other members, as this node sees them.
    Peers(Output),
    /// Manage peers.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Cluster-wide settings.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Publisher keys for signing spores.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Signed workload packages.
    #[command(subcommand)]
    Spore(SporeCmd),
    /// Spores known to the mesh.
    Spores(Output),
    /// Trusted spore publishers (kept in replicated state).
    #[command(subcommand)]
    Trust(TrustCmd),
    /// The cluster-wide config KV.
    #[command(subcommand)]
    Kv(KvCmd),
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
    },
}

#[derive(Args, Debug)]
pub struct AgentArgs {
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
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
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
    /// Print the cluster key (from --data-dir, or from the agent with a token).
    Key,
}

#[derive(Args, Debug)]
pub struct DevArgs {
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
}

#[derive(Args, Debug)]
pub struct SystemdArgs {
    /// Extra arguments for `myco agent` in the unit.
    #[arg(last = true)]
    pub agent_args: Vec<String>,
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
}
