//! `GET /v1/logs/{job}?instance=ID&tail=N&follow=true`: an instance's
//! stdout and stderr, read from its rotated files in its directory.
//!
//! Which instances: the job's records in the replicated `instances` table
//! (or the one named by `instance`). Those this node runs are read here.
//! One that runs on another node is answered with 409 naming that node's
//! API address, where the same request succeeds (reading over the mesh
//! streams is not built yet).
//!
//! The answer is `text/plain`, one log line per line; with more than one
//! instance each line starts with `[ID] `, and stderr lines with `stderr: `
//! after it. `tail` (default 100, at most `exec::logs::MAX_TAIL_LINES`)
//! lines of each stream come first (stdout's, then stderr's); `follow`
//! then streams new lines as they are written, with at most
//! [`MAX_FOLLOWERS`] followers per node. A follower reads files only:
//! neither a slow reader nor the agent can block the instance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use myco_proto::Table;
use myco_proto::instance::InstanceRecord;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};

use super::ApiState;
use super::errors::HttpError;
use crate::exec::instance_dir;
use crate::exec::logs::{self, Follow, LogStream, MAX_TAIL_LINES};
use crate::mesh::MeshHandle;

/// Lines of each stream sent when `tail` is not given.
pub const DEFAULT_TAIL: usize = 100;
/// Followers (`follow=true`) served at once by one node.
pub const MAX_FOLLOWERS: usize = 32;
/// Instances one request reads at most.
const MAX_INSTANCES: usize = 1000;
/// Chunks of lines queued for a slow follower before its reader waits.
const FOLLOW_QUEUE: usize = 16;

/// Bounds the followers of one node.
#[derive(Debug, Clone)]
pub struct Followers(Arc<Semaphore>);

impl Default for Followers {
    fn default() -> Self {
        Followers(Arc::new(Semaphore::new(MAX_FOLLOWERS)))
    }
}

/// The query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// One instance of the job.
    pub instance: Option<String>,
    /// Lines of each stream to start with.
    pub tail: Option<usize>,
    /// Stream new lines until the client goes.
    #[serde(default)]
    pub follow: bool,
}

/// The handler.
pub async fn logs(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, HttpError> {
    read(&s.mesh, &s.data_dir, &s.logs, &job, q).await
}

/// The answer to a logs request for `job` on the node of `mesh`, whose
/// instances live under `data_dir`.
pub async fn read(
    mesh: &MeshHandle,
    data_dir: &std::path::Path,
    followers: &Followers,
    job: &str,
    q: LogQuery,
) -> Result<Response, HttpError> {
    let me = mesh.me().id;
    let prefix = format!("{job}/");
    let records: Vec<InstanceRecord> = mesh
        .scan(Table::INSTANCES, &prefix, MAX_INSTANCES)
        .into_iter()
        .filter_map(|(_, e)| e.value.and_then(|v| InstanceRecord::decode(&v).ok()))
        .filter(|r| q.instance.as_ref().is_none_or(|i| *i == r.id))
        .collect();
    let mut local: Vec<String> = records
        .iter()
        .filter(|r| r.node == me)
        .map(|r| r.id.clone())
        .collect();
    // An instance whose record is gone but whose directory is still here
    // (just stopped) can still be read.
    if let Some(id) = &q.instance
        && local.is_empty()
        && instance_dir::instance_dir(data_dir, id).is_ok_and(|d| d.exists())
        && records.iter().all(|r| r.node == me)
    {
        local.push(id.clone());
    }
    if local.is_empty() {
        return Err(elsewhere(mesh, job, q.instance.as_deref(), &records));
    }
    let dirs: BTreeMap<String, PathBuf> = local
        .into_iter()
        .filter_map(|id| {
            let dir = instance_dir::instance_dir(data_dir, &id).ok()?;
            Some((id, dir))
        })
        .collect();
    let tail = q.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL_LINES);
    let labelled = dirs.len() > 1;
    if !q.follow {
        let text = tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            for (id, dir) in &dirs {
                for stream in LogStream::ALL {
                    for line in logs::tail(dir, stream, tail).unwrap_or_default() {
                        push_line(&mut out, labelled.then_some(id.as_str()), stream, &line);
                    }
                }
            }
            out
        })
        .await
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let permit = followers.0.clone().try_acquire_owned().map_err(|_| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_FOLLOWERS} log followers already on this node; try again later"),
        )
    })?;
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(FOLLOW_QUEUE);
    tokio::spawn(async move {
        let _permit = permit;
        let mut followers = Vec::new();
        let mut first = String::new();
        for (id, dir) in &dirs {
            for stream in LogStream::ALL {
                let (lines, f) = Follow::with_tail(dir, stream, tail)
                    .unwrap_or_else(|_| (Vec::new(), Follow::new(dir, stream)));
                for line in lines {
                    push_line(&mut first, labelled.then_some(id.as_str()), stream, &line);
                }
                followers.push((id.clone(), stream, f));
            }
        }
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let mut chunk = String::new();
            for (id, stream, f) in &mut followers {
                for line in f.poll_lines().unwrap_or_default() {
                    push_line(&mut chunk, labelled.then_some(id.as_str()), *stream, &line);
                }
            }
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(logs::FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

fn push_line(out: &mut String, id: Option<&str>, stream: LogStream, line: &str) {
    if let Some(id) = id {
        out.push('[');
        out.push_str(id);
        out.push_str("] ");
    }
    if stream == LogStream::Stderr {
        out.push_str("stderr: ");
    }
    out.push_str(line);
    out.push('\n');
}

/// No instance of the request runs here: 404, or 409 naming where.
fn elsewhere(
    mesh: &MeshHandle,
    job: &str,
    instance: Option<&str>,
    records: &[InstanceRecord],
) -> HttpError {
    let Some(first) = records.first() else {
        let what = match instance {
            Some(id) => format!("no instance {id:?} of job {job:?}"),
            None => format!("no instance of job {job:?}"),
        };
        return HttpError::not_found(format!("{what}; `myco instances --job {job}` lists them"));
    };
    let snap = mesh.snapshot();
    let api = snap
        .members
        .iter()
        .find(|m| m.peer.id == first.node)
        .and_then(|m| m.manifest.as_ref())
        .and_then(|man| man.api_addr.clone())
        .unwrap_or_else(|| "its API address (not known yet)".into());
    HttpError::new(
        StatusCode::CONFLICT,
        format!(
            "instance {} runs on node {}; this node reads only its own instances' logs: ask http://{api}/v1/logs/{job}?instance={}",
            first.id, first.node, first.id
        ),
    )
}
