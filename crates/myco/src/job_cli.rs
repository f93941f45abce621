//! Flags of the job commands: `deploy`, `jobs`, `job ...`, `instances`,
//! `logs`, and the hidden `demo-serve`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::{Conn, Output};

/// `myco deploy FILE`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The job file (TOML; see the README's job file section).
    pub file: PathBuf,
    /// Return once the job is written, without waiting for instances
    /// (the default when standard output is not a terminal).
    #[arg(long)]
    pub detach: bool,
    /// Print the API's answer as JSON (implies --detach).
    #[arg(long)]
    pub json: bool,
    /// Wait for the rollout and print one line per step even when
    /// standard output is not a terminal; exits non-zero if the rollout
    /// failed and reverted.
    #[arg(long, conflicts_with_all = ["detach", "json"])]
    pub watch: bool,
    /// Give up waiting for instances after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub wait: u64,
    #[command(flatten)]
    pub conn: Conn,
}

/// `myco job ...`.
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// A job: version, counts, pending slots and why, its instances.
    Show {
        /// The job's name.
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Stop and remove a job: every instance stops and it leaves `myco jobs`
    /// (`--all` shows it); its history stays, and a deploy starts it again.
    Stop {
        /// The job's name.
        name: String,
    },
    /// Run COUNT instances of the job (the same version: nothing restarts).
    Scale {
        /// The job's name.
        name: String,
        /// How many instances, 0 to 1000 (0 keeps the job, running nothing).
        count: u32,
    },
    /// Where each instance of a job file would go and why the other nodes
    /// were not chosen; changes nothing.
    Plan {
        /// The job file (TOML).
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Every version of a job, oldest first.
    History {
        /// The job's name.
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Replace every instance with a fresh one of the same spec, a rolling
    /// restart (a new version, replaced blue/green like any other).
    Restart {
        /// The job's name.
        name: String,
    },
    /// Bring back an earlier version as a new one (the count stays).
    #[command(disable_version_flag = true)]
    Revert {
        /// The job's name.
        name: String,
        /// The version to bring back [default: the one before the current].
        #[arg(long)]
        version: Option<u64>,
    },
}

/// `myco instances`.
#[derive(Args, Debug)]
pub struct InstancesArgs {
    /// Only this job's instances.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    #[command(flatten)]
    pub out: Output,
    #[command(flatten)]
    pub conn: Conn,
}

/// `myco jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Also stopped (removed) jobs, kept for their history.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub out: Output,
    #[command(flatten)]
    pub conn: Conn,
}

/// `myco logs JOB`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The job's name.
    pub job: String,
    /// Only this instance (`myco instances --job JOB` lists them).
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Keep printing new output as it comes.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start with the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}
