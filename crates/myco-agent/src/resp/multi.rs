//! `MULTI`, `EXEC`, `DISCARD` (and `WATCH`, refused): a connection's
//! commands queued after `MULTI` and run in order by `EXEC`, whose reply
//! is the array of theirs, as Redis does it (redis-py's `pipeline()`
//! sends them). **Not isolated**: the cache is spread over the mesh, so
//! other clients' commands may run between the queued ones, and one that
//! fails does not undo the others (as in Redis). A command refused before
//! it could be queued (unknown, wrong argument count, not authenticated)
//! makes `EXEC` answer `EXECABORT` and run nothing.

use super::commands::Session;
use super::parse::reply;

/// Commands one transaction may queue.
pub(super) const MAX_QUEUED: usize = 1024;
/// Bytes of arguments one transaction may queue (a few values of the
/// largest size).
pub(super) const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// The commands queued since `MULTI`.
#[derive(Debug, Default)]
pub(super) struct Queue {
    commands: Vec<(&'static str, Vec<Vec<u8>>)>,
    bytes: usize,
    /// A command was refused: `EXEC` aborts.
    pub(super) failed: bool,
}

impl Queue {
    /// Queues a command, or says why not (over the bounds, or one a
    /// transaction cannot hold).
    fn push(&mut self, name: &'static str, args: Vec<Vec<u8>>) -> Result<(), String> {
        if matches!(name, "SUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE") {
            // Each topic gets a reply of its own: EXEC's array could not
            // count them.
            return Err(format!(
                "ERR {name} inside MULTI is not supported here; subscribe outside a transaction"
            ));
        }
        let bytes: usize = args.iter().map(Vec::len).sum();
        if self.commands.len() >= MAX_QUEUED || self.bytes + bytes > MAX_QUEUED_BYTES {
            return Err(format!(
                "ERR MULTI queue is full: at most {MAX_QUEUED} commands and {MAX_QUEUED_BYTES} bytes of arguments per transaction"
            ));
        }
        self.bytes += bytes;
        self.commands.push((name, args));
        Ok(())
    }
}

impl Session {
    /// `MULTI`: starts queuing.
    pub(super) fn multi(&mut self, out: &mut Vec<u8>) {
        if self.multi.is_some() {
            // As Redis: an error, and the transaction goes on.
            reply::error(out, "ERR MULTI calls can not be nested");
            return;
        }
        self.multi = Some(Queue::default());
        reply::simple(out, "OK");
    }

    /// A command after `MULTI`: `+QUEUED`, or the error that dooms the
    /// transaction.
    pub(super) fn queue(&mut self, name: &'static str, args: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        let Some(q) = &mut self.multi else {
            return;
        };
        match q.push(name, args) {
            Ok(()) => reply::simple(out, "QUEUED"),
            Err(e) => {
                q.failed = true;
                reply::error(out, &e);
            }
        }
    }

    /// `EXEC`: runs the queue in order; an array of the replies.
    pub(super) async fn exec(&mut self, out: &mut Vec<u8>) {
        let Some(q) = self.multi.take() else {
            reply::error(out, "ERR EXEC without MULTI");
            return;
        };
        if q.failed {
            reply::error(
                out,
                "EXECABORT Transaction discarded because of previous errors.",
            );
            return;
        }
        reply::array(out, q.commands.len());
        for (name, args) in q.commands {
            // QUIT is never queued, so nothing here closes.
            self.execute(name, &args, out).await;
        }
    }

    /// `DISCARD`: drops the queue.
    pub(super) fn discard(&mut self, out: &mut Vec<u8>) {
        if self.multi.take().is_some() {
            reply::simple(out, "OK");
        } else {
            reply::error(out, "ERR DISCARD without MULTI");
        }
    }

    /// `WATCH`: refused, there is nothing to watch keys with.
    pub(super) fn watch(&mut self, out: &mut Vec<u8>) {
        if self.multi.is_some() {
            reply::error(out, "ERR WATCH inside MULTI is not allowed");
        } else {
            reply::error(
                out,
                "ERR WATCH is not supported: the cache is spread over the mesh and has no \
                 optimistic locking (EXEC runs the queued commands in order, not isolated)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_commands_and_bytes() {
        let mut q = Queue::default();
        for _ in 0..MAX_QUEUED {
            q.push("GET", vec![b"GET".to_vec(), b"k".to_vec()]).unwrap();
        }
        let e = q.push("GET", vec![b"GET".to_vec()]).unwrap_err();
        assert!(e.starts_with("ERR MULTI queue is full"), "{e}");

        let mut q = Queue::default();
        let value = vec![b'x'; MAX_QUEUED_BYTES / 2];
        q.push("SET", vec![b"SET".to_vec(), b"k".to_vec(), value.clone()])
            .unwrap();
        assert!(q.push("SET", vec![b"SET".to_vec(), value]).is_err());
        assert_eq!(q.commands.len(), 1);
    }

    #[test]
    fn subscribing_cannot_be_queued() {
        let mut q = Queue::default();
        assert!(q.push("SUBSCRIBE", vec![b"SUBSCRIBE".to_vec()]).is_err());
        assert!(q.commands.is_empty());
    }
}
