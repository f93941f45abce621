//! The dev context: how a CLI run next to a `myco dev` mesh finds it.
//!
//! `myco dev` writes `DIR/context.json` (0600, in a 0700 dir) naming each
//! node's API URL, data dir and pid. `connect` reads it, the way kubectl
//! reads its kubeconfig, so `myco kv put` typed in the same directory
//! reaches n1 with n1's token and no flags. The token itself stays in the
//! node's data dir (`api-token`, 0600); the context only says where.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where `myco dev` keeps its data unless told otherwise.
pub const DEFAULT_DIR: &str = ".myco-dev";
/// The context file, in the dev dir.
pub const FILE: &str = "context.json";
/// The control socket of a running `myco dev`, in the dev dir.
pub const SOCKET: &str = "control.sock";

/// A running dev mesh, as written by `myco dev`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevContext {
    /// The `myco dev` process.
    pub runner_pid: u32,
    /// Its nodes, n1 first.
    pub nodes: Vec<DevNodeInfo>,
}

/// One node of a dev mesh.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevNodeInfo {
    /// n1, n2, ...
    pub name: String,
    /// Its API URL, `http://127.0.0.1:PORT`.
    pub api: String,
    /// Its data dir (absolute), where `api-token` is.
    pub data_dir: PathBuf,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
}

/// The dev dir the CLI looks in: `MYCO_DEV_DIR`, else `.myco-dev` here.
pub fn dir(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("MYCO_DEV_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

impl DevContext {
    /// The context in `dir`, if a `myco dev` wrote one there.
    pub fn read(dir: &Path) -> Option<DevContext> {
        let text = fs::read_to_string(dir.join(FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the context atomically, readable by its owner only.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_private(&dir.join(FILE), &json)
    }

    /// The node whose API is `api` (trailing slashes ignored).
    pub fn node_by_api(&self, api: &str) -> Option<&DevNodeInfo> {
        let api = api.trim_end_matches('/');
        self.nodes
            .iter()
            .find(|n| n.api.trim_end_matches('/') == api)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&DevNodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl DevNodeInfo {
    /// Its API token, read from its data dir.
    pub fn token(&self) -> Option<String> {
        fs::read_to_string(self.data_dir.join(myco_agent::datadir::API_TOKEN))
            .ok()
            .map(|t| t.trim().to_string())
    }
}

/// Writes `path` through a temp file and a rename, mode 0600 from the start
/// (never briefly readable by others), and tightens an older file's mode.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Creates `dir` (and parents) and makes it 0700: it holds keys and tokens.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (0700)", dir.display()))
}
