//! Where the loop hands stream messages for app-level services (the cache,
//! messaging): a bounded queue each, filled with `try_send`, so a busy
//! service never stalls the loop (its messages are dropped and counted
//! instead; their senders time out and retry or ask another node).

use myco_proto::channel::Channel;
use tokio::sync::mpsc;

/// The app services' queues; a channel with none is unrouted.
#[derive(Clone, Debug, Default)]
pub struct AppRoutes {
    /// Cache-channel messages.
    pub cache: Option<mpsc::Sender<Vec<u8>>>,
    /// Messaging-channel messages.
    pub msg: Option<mpsc::Sender<Vec<u8>>>,
}

impl AppRoutes {
    /// Hands `message` to the service of `channel`; false if there is none
    /// or its queue is full.
    pub fn route(&self, channel: Channel, message: Vec<u8>) -> bool {
        let to = match channel {
            Channel::Cache => self.cache.as_ref(),
            Channel::Msg => self.msg.as_ref(),
            _ => None,
        };
        to.is_some_and(|tx| tx.try_send(message).is_ok())
    }
}
