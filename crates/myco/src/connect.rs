//! Which agent the CLI talks to, and with what token: the flags, the
//! environment and the dev context resolved into a [`myco_client::Client`].
//!
//! Order, first found wins. API: `--api`, `MYCO_API`, n1 of the dev mesh
//! in this directory (the first running node if n1 is down), [`DEFAULT_API`]. Token: `--token`, `MYCO_API_TOKEN`,
//! `api-token` in `--data-dir`/`MYCO_DATA_DIR`, the token of the dev node
//! whose API is the one chosen (never another host's), then the default
//! data dir's.

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

fn read_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(myco_agent::datadir::API_TOKEN))
        .ok()
        .map(|t| t.trim().to_string())
}

/// A client of the agent `conn` and the environment point at, with the
/// token found for it.
pub fn client(conn: Conn) -> anyhow::Result<Client> {
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
    let token = conn
        .token
        .or_else(|| env("MYCO_API_TOKEN"))
        .or_else(|| data_dir.as_deref().and_then(read_token))
        .or_else(|| {
            dev.as_ref()
                .and_then(|ctx| ctx.node_by_api(&api))
                .and_then(devctx::DevNodeInfo::token)
        })
        .or_else(|| read_token(&myco_agent::settings::default_data_dir()));
    Ok(Client::new(&api).with_token(token))
}
