//! The one task that writes instance records. Writes of one key must land
//! in the order the controller emitted them (a `ready` overtaken by an
//! older `launching` would stick), yet 50 instances starting at once
//! should share commits. So the task takes everything queued, keeps the
//! last value per key, writes those concurrently (the store groups them
//! into few commits), waits, and takes the next batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use myco_proto::Table;
use tokio::sync::mpsc;

use super::JobsShared;
use crate::mesh::MeshHandle;

/// Record writes queued before the runtime waits for the disk.
pub const WRITE_QUEUE: usize = 1024;

/// A write (`Some`) or delete (`None`) of a `Table::INSTANCES` key.
pub type RecordWrite = (String, Option<Vec<u8>>);

/// Starts the writer; dropping the sender ends it once the queue is done.
pub fn start(mesh: MeshHandle, shared: Arc<JobsShared>) -> mpsc::Sender<RecordWrite> {
    let (tx, mut rx) = mpsc::channel::<RecordWrite>(WRITE_QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, WRITE_QUEUE).await > 0 {
            let last: BTreeMap<String, Option<Vec<u8>>> = batch.drain(..).collect();
            let mut writes = tokio::task::JoinSet::new();
            for (key, value) in last {
                let mesh = mesh.clone();
                writes.spawn(async move { (mesh.write(Table::INSTANCES, &key, value).await, key) });
            }
            while let Some(Ok((result, key))) = writes.join_next().await {
                match result {
                    Ok(_) => JobsShared::count(&shared.stats.records_written),
                    Err(e) => {
                        JobsShared::count(&shared.stats.record_write_failures);
                        tracing::warn!(key = %key, error = %e, "instance record not written");
                    }
                }
            }
        }
    });
    tx
}
