//! Following logs: each instance's pieces passed to the answer's body
//! until the client goes or the instance's record does ([`forward`]), a
//! local instance's files polled as a remote node would ([`local`]), and,
//! for a job-wide follow, instances that appear later (a rollout, a
//! scale, a move) joining it until the job stops ([`newcomers`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use myco_proto::Table;
use myco_proto::instance::InstanceRecord;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{DEFAULT_TAIL, FOLLOW_QUEUE, RECORD_CHECK, Source, push_piece, records_of, source_of};
use crate::exec::logs;
use crate::logs::reader::InstanceLog;
use crate::logs::{Piece, RemoteLogs};
use crate::mesh::MeshHandle;

/// The pieces of instance `id` of `job`, read where `source` says.
pub(super) fn open(
    source: Source,
    id: &str,
    job: &str,
    label: bool,
    tail: usize,
    follow: bool,
    remote: Option<&Arc<RemoteLogs>>,
) -> mpsc::Receiver<Piece> {
    match (source, remote) {
        (Source::Here(dir), _) => local(dir, id.to_string(), label, tail, follow),
        (Source::Node(addr), Some(remote)) => remote.ask(addr, job, id, tail, follow, label),
        (Source::Node(addr), None) => lost(format!("its node {addr} is not asked from here")),
        (Source::Unreachable(why), _) => lost(why),
    }
}

fn lost(why: String) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Piece::Lost(why));
    rx
}

/// Passes one instance's pieces to the follow body until the client goes,
/// the answer ends or the instance's record goes away.
pub(super) async fn forward(
    mesh: MeshHandle,
    key: Option<String>,
    id: String,
    mut src: mpsc::Receiver<Piece>,
    tx: mpsc::Sender<Result<String, std::io::Error>>,
    _permit: Arc<Option<OwnedSemaphorePermit>>,
) {
    let mut check = tokio::time::interval(RECORD_CHECK);
    loop {
        tokio::select! {
            p = src.recv() => {
                let Some(p) = p else { return };
                let done = !matches!(p, Piece::Text(_));
                let mut text = String::new();
                push_piece(&mut text, &id, p);
                if (!text.is_empty() && tx.send(Ok(text)).await.is_err()) || done {
                    return;
                }
            }
            _ = check.tick() => {
                if key.as_ref().is_some_and(|k| mesh.get(Table::INSTANCES, k).and_then(|e| e.value).is_none()) {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// Reads a local instance's files into pieces, like a remote node would.
pub(super) fn local(
    dir: PathBuf,
    id: String,
    label: bool,
    tail: usize,
    follow: bool,
) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
    tokio::spawn(async move {
        let opened =
            tokio::task::spawn_blocking(move || InstanceLog::open(&dir, &id, label, tail, follow))
                .await;
        let Ok((text, mut reader)) = opened else {
            return;
        };
        if tx.send(Piece::Text(text)).await.is_err() || !follow {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(logs::FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
            let Ok((text, back)) =
                tokio::task::spawn_blocking(move || (reader.poll(), reader)).await
            else {
                return;
            };
            reader = back;
            if !text.is_empty() && tx.send(Piece::Text(text)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// What a job-wide follow watches for newcomers.
pub(super) struct Newcomers {
    pub mesh: MeshHandle,
    pub data_dir: PathBuf,
    pub remote: Option<Arc<RemoteLogs>>,
    pub job: String,
    /// Instances followed already.
    pub followed: BTreeSet<String>,
}

/// Adds each new instance of the job to the follow as it appears, from
/// its first lines; ends when the client goes or the job stops (the
/// instances' own forwards end with their records).
pub(super) async fn newcomers(
    mut w: Newcomers,
    tx: mpsc::Sender<Result<String, std::io::Error>>,
    permit: Arc<Option<OwnedSemaphorePermit>>,
) {
    let me = w.mesh.me().id;
    let mut check = tokio::time::interval(RECORD_CHECK);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = tx.closed() => return,
        }
        match crate::jobs::workflow::current(&w.mesh, &w.job) {
            Ok(Some(j)) if !j.stopped => {}
            _ => return,
        }
        let records = records_of(&w.mesh, &w.job);
        // Ids are never reused: one whose record went is done with.
        w.followed.retain(|id| records.iter().any(|r| r.id == *id));
        let snap = w.mesh.snapshot();
        for r in records {
            if w.followed.contains(&r.id) || (r.node != me && w.remote.is_none()) {
                continue;
            }
            let source = source_of(&r, me, &w.data_dir, &snap);
            let src = open(
                source,
                &r.id,
                &w.job,
                true,
                DEFAULT_TAIL,
                true,
                w.remote.as_ref(),
            );
            let key = Some(InstanceRecord::key_of(&w.job, &r.id));
            tokio::spawn(forward(
                w.mesh.clone(),
                key,
                r.id.clone(),
                src,
                tx.clone(),
                permit.clone(),
            ));
            w.followed.insert(r.id);
        }
    }
}
