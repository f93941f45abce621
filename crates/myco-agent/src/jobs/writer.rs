//! The one task that writes instance records. Writes of one key must land
//! in the order the controller emitted them (a `ready` overtaken by an
//! older `launching` would stick), yet 50 instances starting at once
//! should share commits. So the task takes everything queued, keeps the
//! last value per key, writes those concurrently (the store groups them
//! into few commits), waits, and takes the next batch.
//!
//! The controller writes a record only when it differs from the last one
//! it emitted, so a write that fails is kept and tried again (after
//! [`RETRY_AFTER`], or with the next batch) unless a newer value of the
//! same key supersedes it: otherwise the replica would keep a stale state
//! until the next change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::Table;
use tokio::sync::mpsc;

use super::JobsShared;
use crate::mesh::MeshHandle;

/// Record writes queued before the runtime waits for the disk.
pub const WRITE_QUEUE: usize = 1024;
/// How long failed writes wait for a retry when nothing else comes.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A write (`Some`) or delete (`None`) of a `Table::INSTANCES` key.
pub type RecordWrite = (String, Option<Vec<u8>>);

/// Starts the writer; dropping the sender ends it once the queue is done.
pub fn start(mesh: MeshHandle, shared: Arc<JobsShared>) -> mpsc::Sender<RecordWrite> {
    let (tx, mut rx) = mpsc::channel::<RecordWrite>(WRITE_QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut failed: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        loop {
            let got = if failed.is_empty() {
                rx.recv_many(&mut batch, WRITE_QUEUE).await
            } else {
                match tokio::time::timeout(RETRY_AFTER, rx.recv_many(&mut batch, WRITE_QUEUE)).await
                {
                    Ok(n) => n,
                    // Nothing new: retry what failed.
                    Err(_) => usize::MAX,
                }
            };
            if got == 0 {
                return;
            }
            // Older failures first, so newer values of a key win.
            let mut last = std::mem::take(&mut failed);
            last.extend(batch.drain(..));
            let mut writes = tokio::task::JoinSet::new();
            for (key, value) in last {
                let mesh = mesh.clone();
                writes.spawn(async move {
                    let r = mesh.write(Table::INSTANCES, &key, value.clone()).await;
                    (r, key, value)
                });
            }
            while let Some(Ok((result, key, value))) = writes.join_next().await {
                match result {
                    Ok(_) => JobsShared::count(&shared.stats.records_written),
                    Err(crate::mesh::WriteError::Stopped) => return,
                    Err(e @ crate::mesh::WriteError::Refused(_)) => {
                        // Refused for its size: trying again cannot help.
                        JobsShared::count(&shared.stats.record_write_failures);
                        tracing::error!(key = %key, error = %e, "instance record refused");
                    }
                    Err(e) => {
                        JobsShared::count(&shared.stats.record_write_failures);
                        tracing::warn!(key = %key, error = %e, "instance record not written; it is tried again");
                        failed.insert(key, value);
                    }
                }
            }
        }
    });
    tx
}
