//! App messaging for embedders: a name space of topics on the mesh-wide
//! messaging service.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use myco_proto::NodeId;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::msg::{Delivery, Messaging, MsgError, Subscription};

/// Requests one [`App::on_request`] handler serves at once; more wait in
/// the subscription's bounded queue (past it they are lost and the
/// askers time out), so a slow handler cannot pile up tasks.
pub const HANDLER_CONCURRENCY: usize = 64;

/// One app's messaging: topics `{app}.{topic}` across the mesh.
#[derive(Clone, Debug)]
pub struct App {
    name: String,
    msg: Arc<Messaging>,
    listeners: Arc<Mutex<Vec<AbortHandle>>>,
}

/// A running handler; it lives until [`Listener::cancel`] or the node
/// stops (dropping this does not end it).
#[derive(Debug)]
pub struct Listener(AbortHandle);

impl Listener {
    /// Ends the handler and its subscription.
    pub fn cancel(self) {
        self.0.abort();
    }
}

impl App {
    pub(super) fn new(
        name: &str,
        msg: Arc<Messaging>,
        listeners: Arc<Mutex<Vec<AbortHandle>>>,
    ) -> App {
        App {
            name: name.to_string(),
            msg,
            listeners,
        }
    }

    /// The mesh-wide topic name of this app's `topic`.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}.{topic}", self.name)
    }

    /// Sends to the subscribers of `topic` on one node; returns the
    /// number of nodes it went to (0 or 1). At most once.
    pub fn send(&self, node: NodeId, topic: &str, body: Vec<u8>) -> Result<usize, MsgError> {
        Ok(self
            .msg
            .publish(&self.topic(topic), body, Some(node))?
            .nodes)
    }

    /// Sends to every subscriber of `topic` connected now, mesh-wide;
    /// returns the number of nodes it went to. At most once.
    pub fn broadcast(&self, topic: &str, body: Vec<u8>) -> Result<usize, MsgError> {
        Ok(self.msg.publish(&self.topic(topic), body, None)?.nodes)
    }

    /// Asks one subscriber of `topic` (spread over the nodes that have
    /// one) and waits for its answer: [`MsgError::NoSubscriber`] at once
    /// if there is none, [`MsgError::Timeout`] after `timeout`.
    pub async fn request(
        &self,
        topic: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MsgError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.msg.request(&self.topic(topic), body, ms).await
    }

    /// A subscription to read at one's own pace (a full queue loses
    /// messages, counted by [`Subscription::take_lost`]).
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, MsgError> {
        self.msg.subscribe(&self.topic(topic))
    }

    /// Calls `handler` for every message on `topic` (requests included;
    /// use [`App::on_request`] to answer them).
    pub fn on_message<F>(&self, topic: &str, handler: F) -> Result<Listener, MsgError>
    where
        F: Fn(Delivery) + Send + 'static,
    {
        let mut sub = self.subscribe(topic)?;
        let task = tokio::spawn(async move {
            while let Some(d) = sub.recv().await {
                report_lost(&sub);
                handler(d);
            }
        });
        Ok(self.keep(task.abort_handle()))
    }

    /// Answers the requests on `topic` with what `handler` returns for
    /// their bodies; plain messages on the topic are ignored.
    pub fn on_request<F, Fut>(&self, topic: &str, handler: F) -> Result<Listener, MsgError>
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let mut sub = self.subscribe(topic)?;
        let msg = self.msg.clone();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(HANDLER_CONCURRENCY));
            while let Some(d) = sub.recv().await {
                report_lost(&sub);
                let Some(reply) = d.reply.clone() else {
                    continue;
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (msg, handler) = (msg.clone(), handler.clone());
                tokio::spawn(async move {
                    let answer = handler(d).await;
                    if let Err(e) = msg.reply(&reply, answer) {
                        tracing::debug!(error = %e, "embedded request handler's answer not sent");
                    }
                    drop(slot);
                });
            }
        });
        Ok(self.keep(task.abort_handle()))
    }

    fn keep(&self, handle: AbortHandle) -> Listener {
        let mut all = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.retain(|h| !h.is_finished());
        all.push(handle.clone());
        Listener(handle)
    }
}

fn report_lost(sub: &Subscription) {
    let lost = sub.take_lost();
    if lost > 0 {
        tracing::warn!(
            topic = sub.topic(),
            lost,
            "an embedded handler fell behind; messages were lost"
        );
    }
}
