//! `GET /v1/logs/{job}?instance=ID&tail=N&follow=true`: an instance's
//! stdout and stderr, read from its rotated files in its directory.
//!
//! Which instances: the job's records in the replicated `instances` table
//! (or the one named by `instance`). Those this node runs are read here;
//! the others are asked of their node over the mesh streams
//! ([`crate::logs::RemoteLogs`]). A single remote instance whose node does
//! not answer within [`FIRST_ANSWER`] (an older release) is answered with
//! 409 naming that node's API address, where the same request succeeds.
//!
//! The answer is `text/plain`, one log line per line; with more than one
//! instance each line starts with `[ID] `, and stderr lines with `stderr: `
//! after it. `tail` (default 100, at most `exec::logs::MAX_TAIL_LINES`)
//! lines of each stream come first (stdout's, then stderr's); `follow`
//! then streams new lines as they are written, with at most
//! [`MAX_FOLLOWERS`] followers per node. A follower reads files only:
//! neither a slow reader nor the agent can block the instance.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use myco_proto::Table;
use myco_proto::instance::InstanceRecord;
use myco_proto::logs::LogRefusal;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::ApiState;
use super::errors::HttpError;
use crate::exec::instance_dir;
use crate::exec::logs::MAX_TAIL_LINES;
use crate::logs::reader;
use crate::logs::{Piece, RemoteLogs};
use crate::mesh::MeshHandle;

#[path = "logs_follow.rs"]
mod follow;

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

impl Followers {
    /// A follower's place, if one is free.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The query string.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
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
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/logs/{job}", tag = "logs", params(("job" = String, Path), LogQuery), responses((status = 400, description = "Bad query string", body = myco_proto::api::ApiError), (status = 200, description = "Log lines, `follow` streams them", content_type = "text/plain", body = String), (status = 404, description = "No such job or instance", body = myco_proto::api::ApiError), (status = 409, description = "The node of the instance cannot be reached from here", body = myco_proto::api::ApiError))))]
pub async fn logs(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    read(&s.mesh, &s.data_dir, &s.logs, Some(&s.remote_logs), &job, q).await
}

/// How long the node running an instance has to start answering before
/// it is taken for a release that cannot, and the asker is sent there (409).
const FIRST_ANSWER: Duration = Duration::from_secs(5);
/// How often a follower checks that its instance's record still exists.
const RECORD_CHECK: Duration = Duration::from_secs(1);

/// Where an instance's logs are read.
pub(super) enum Source {
    Here(PathBuf),
    Node(SocketAddr),
    Unreachable(String),
}

/// The answer to a logs request for `job` on the node of `mesh`, whose
/// instances live under `data_dir`. Instances on other nodes are read
/// through `remote` (without it they are answered 409, naming where).
pub async fn read(
    mesh: &MeshHandle,
    data_dir: &std::path::Path,
    followers: &Followers,
    remote: Option<&Arc<RemoteLogs>>,
    job: &str,
    q: LogQuery,
) -> Result<Response, HttpError> {
    let me = mesh.me().id;
    let mut records = records_of(mesh, job);
    records.retain(|r| q.instance.as_ref().is_none_or(|i| *i == r.id));
    let snap = mesh.snapshot();
    let mut sources: Vec<(String, Source, bool)> = Vec::new();
    for r in &records {
        if r.node != me && remote.is_none() {
            return Err(elsewhere(mesh, job, q.instance.as_deref(), &records));
        }
        sources.push((r.id.clone(), source_of(r, me, data_dir, &snap), true));
    }
    // An instance whose record is gone but whose directory is still here
    // (just stopped) can still be read.
    if let Some(id) = &q.instance
        && records.is_empty()
        && let Some(dir) = reader::existing_dir(data_dir, id)
    {
        sources.push((id.clone(), Source::Here(dir), false));
    }
    if sources.is_empty() {
        return Err(elsewhere(mesh, job, q.instance.as_deref(), &records));
    }
    let tail = q.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL_LINES);
    // A job-wide follow labels its lines even with one instance: others
    // join it as the job rolls or scales.
    let job_wide = q.follow && q.instance.is_none();
    let label = sources.len() > 1 || job_wide;
    let permit = match q.follow {
        true => Some(followers.try_acquire().ok_or_else(|| {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_FOLLOWERS} log followers already on this node; try again later"),
            )
        })?),
        false => None,
    };
    let mut pieces = Vec::new();
    for (id, source, has_record) in sources {
        let rx = follow::open(source, &id, job, label, tail, q.follow, remote);
        pieces.push((id, rx, has_record));
    }
    // One instance on another node: its first answer decides the status.
    let mut first = None;
    if let [(id, rx, _)] = &mut pieces[..]
        && records.iter().any(|r| r.id == *id && r.node != me)
    {
        match tokio::time::timeout(FIRST_ANSWER, rx.recv()).await {
            Ok(Some(Piece::Text(t))) => first = Some(t),
            Ok(Some(Piece::Refused(LogRefusal::NotFound))) => {
                return Err(HttpError::not_found(format!(
                    "instance {id:?} has no logs on its node (not started there yet, or gone)"
                )));
            }
            Ok(Some(Piece::Refused(LogRefusal::Busy))) => {
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the node running {id} has too many log readers; try again later"),
                ));
            }
            Ok(Some(Piece::Refused(LogRefusal::Invalid(why)))) => {
                return Err(HttpError::bad_request(why));
            }
            // No answer: an older release; send the asker there.
            _ => return Err(elsewhere(mesh, job, q.instance.as_deref(), &records)),
        }
    }
    if !q.follow {
        let mut out = first.unwrap_or_default();
        // All sources run at once; a node that has not answered within
        // FIRST_ANSWER (an older release, or gone) gets a note, not a wait.
        for (id, mut rx, _) in pieces {
            let mut started = false;
            loop {
                let p = match tokio::time::timeout(FIRST_ANSWER, rx.recv()).await {
                    Ok(p) => p,
                    Err(_) if !started => Some(Piece::Lost("its node did not answer".into())),
                    Err(_) => continue,
                };
                started = true;
                let Some(p) = p else { break };
                let done = !matches!(p, Piece::Text(_));
                push_piece(&mut out, &id, p);
                if done {
                    break;
                }
            }
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(FOLLOW_QUEUE);
    if let Some(t) = first {
        let _ = tx.try_send(Ok(t));
    }
    let permit = Arc::new(permit);
    let followed = pieces.iter().map(|(id, ..)| id.clone()).collect();
    for (id, src, has_record) in pieces {
        let key = has_record.then(|| InstanceRecord::key_of(job, &id));
        tokio::spawn(follow::forward(
            mesh.clone(),
            key,
            id,
            src,
            tx.clone(),
            permit.clone(),
        ));
    }
    if job_wide {
        tokio::spawn(follow::newcomers(
            follow::Newcomers {
                mesh: mesh.clone(),
                data_dir: data_dir.to_path_buf(),
                remote: remote.cloned(),
                job: job.to_string(),
                followed,
            },
            tx,
            permit,
        ));
    }
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

/// A piece of an answer as text: lines as they are, a failure as a note.
pub(super) fn push_piece(out: &mut String, id: &str, piece: Piece) {
    match piece {
        Piece::Text(t) => out.push_str(&t),
        Piece::Refused(r) => {
            let why = match r {
                LogRefusal::NotFound => "none on its node: not started there yet, or removed",
                LogRefusal::Busy => "its node has too many log readers; try again later",
                LogRefusal::Invalid(ref why) => why,
            };
            out.push_str(&format!("[{id}] (no logs: {why})\n"));
        }
        Piece::Lost(why) => out.push_str(&format!("[{id}] (logs cut short: {why})\n")),
    }
}

/// Where instance record `r`'s logs are read from node `me`.
fn source_of(
    r: &InstanceRecord,
    me: myco_proto::NodeId,
    data_dir: &std::path::Path,
    snap: &crate::mesh::Snapshot,
) -> Source {
    if r.node == me {
        return match instance_dir::instance_dir(data_dir, &r.id) {
            Ok(d) => Source::Here(d),
            Err(e) => Source::Unreachable(e.to_string()),
        };
    }
    match snap.members.iter().find(|m| m.peer.id == r.node) {
        Some(m) => Source::Node(m.peer.addr),
        None => Source::Unreachable(format!("node {} is not a member", r.node)),
    }
}

/// The job's instance records (at most [`MAX_INSTANCES`]).
fn records_of(mesh: &MeshHandle, job: &str) -> Vec<InstanceRecord> {
    mesh.scan(Table::INSTANCES, &format!("{job}/"), MAX_INSTANCES)
        .into_iter()
        .filter_map(|(_, e)| e.value.and_then(|v| InstanceRecord::decode(&v).ok()))
        .collect()
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
