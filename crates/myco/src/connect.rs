//! Which agent the CLI talks to, and with what token: the flags, the
//! environment and the dev context resolved into a [`myco_client::Client`].
//!
//! Order, first found wins; a flag always beats the environment. API:
//! `--api`, `MYCO_API`, n1 of the dev mesh in this directory (the first
//! running node if n1 is down), [`DEFAULT_API`]. Token: `--token`,
//! `api-token` in `--data-dir`, `MYCO_API_TOKEN`, `api-token` in
//! `MYCO_DATA_DIR`, the token of the dev node whose API is the one chosen
//! (never another host's), then the default data dir's. A data dir chosen
//! for the token must hold one: its absence is said, not sent as no token
//! (which the agent would answer with a 401 that hides why).

use std::path::{Path, PathBuf};

use anyhow::bail;
use myco_client::{Client, DEFAULT_API};

use crate::cli::Conn;
use crate::devctx::{self, DevContext};

/// `--data-dir`, else `MYCO_DATA_DIR`; an error if it names no directory,
/// so a typo is not silently replaced by another directory's token.
pub fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let dir = flag.or_else(|| std::env::var_os("MYCO_DATA_DIR").map(PathBuf::from));
    if let Some(d) = &dir
        && !d.is_dir()
    {
        bail!(
            "data dir {} does not exist; pass the directory the agent was started with (--data-dir)",
            d.display()
        );
    }
    Ok(dir)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The token in `dir`, if it holds one (for the fallbacks).
fn read_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(myco_agent::datadir::API_TOKEN))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The token in `dir`, chosen for it by `--data-dir` or `MYCO_DATA_DIR`.
fn token_in(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(myco_agent::datadir::API_TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => bail!(
            "{} is empty: is it an agent's data dir? (or pass --token)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no api-token in {}: is it an agent's data dir? (or pass --token)",
            dir.display()
        ),
        Err(e) => bail!(
            "cannot read {} ({e}): run as the agent's user, or pass --token",
            path.display()
        ),
    }
}

/// A client of the agent `conn` and the environment point at, with the
/// token found for it (see the module doc for the order).
pub fn client(conn: Conn) -> anyhow::Result<Client> {
    let flag_dir = conn.data_dir.is_some();
    let data_dir = data_dir(conn.data_dir)?;
    let dev = DevContext::read(&devctx::dir(None));
    let explicit_api = conn.api.or_else(|| env("MYCO_API"));
    let api = match (&explicit_api, &dev) {
        (Some(a), _) => a.clone(),
        // A data dir names a node of its own; its token must not go to n1.
        // n1, or the first node still running if n1 was killed.
        (None, Some(ctx)) if data_dir.is_none() => ctx
            .nodes
            .iter()
            .find(|n| n.pid.is_some())
            .or(ctx.nodes.first())
            .map_or_else(|| DEFAULT_API.to_string(), |n| n.api.clone()),
        _ => DEFAULT_API.to_string(),
    };
    let token = match (conn.token, &data_dir, env("MYCO_API_TOKEN")) {
        (Some(t), _, _) => Some(t),
        (None, Some(dir), _) if flag_dir => Some(token_in(dir)?),
        (None, _, Some(t)) => Some(t),
        (None, Some(dir), None) => Some(token_in(dir)?),
        (None, None, None) => dev
            .as_ref()
            .and_then(|ctx| ctx.node_by_api(&api))
            .and_then(devctx::DevNodeInfo::token)
            .or_else(|| read_token(&myco_agent::settings::default_data_dir())),
    };
    Ok(Client::new(&api).with_token(token))
}
