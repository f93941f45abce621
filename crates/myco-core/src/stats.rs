//! Counters the core keeps about its traffic; the agent exports them as
//! Prometheus metrics, the simulator reports them per run.

use std::collections::BTreeMap;

/// Cumulative traffic counters since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`crate::Node::handle_datagram`].
    pub datagrams_in: u64,
    /// Datagrams produced by [`crate::Node::poll_transmit`].
    pub datagrams_out: u64,
    /// Bytes received, envelope included.
    pub bytes_in: u64,
    /// Bytes sent, envelope included.
    pub bytes_out: u64,
    /// Accepted frames by kind.
    pub frames_in: BTreeMap<&'static str, u64>,
    /// Refused datagrams by reason (`too_short`, `unauthentic`, `replay`, ...).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Times this node found itself behind a collection horizon it had no
    /// part in, and dropped what it held below it to refill from peers.
    pub horizon_resets: u64,
}

impl Stats {
    pub(crate) fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// All datagrams refused, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}
