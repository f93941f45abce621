//! What the other nodes announced, by their stream address: the topics
//! they have subscribers that answer requests for ([`MsgMessage::Topics`],
//! which routes requests) and how many subscribers they have per topic
//! ([`MsgMessage::Subscribers`], by which a publish counts its
//! receivers). Each is forgotten after [`ANNOUNCE_TTL`] of silence, so a
//! node that died stops getting requests. The time is passed in.
//!
//! [`MsgMessage::Topics`]: myco_proto::msg::MsgMessage::Topics
//! [`MsgMessage::Subscribers`]: myco_proto::msg::MsgMessage::Subscribers

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use myco_proto::msg::{MAX_TOPICS, TopicSubscribers};
use tokio::time::Instant;

use super::ANNOUNCE_TTL;

/// One node's last announcement of a kind, and when it came.
type Said<T> = HashMap<SocketAddr, (T, Instant)>;

/// What the other nodes last announced.
#[derive(Debug, Default)]
pub(super) struct Announced {
    /// Topics with subscribers that answer, by node.
    answering: Said<BTreeSet<String>>,
    /// Subscribers per topic, by node (nodes of a release that says so).
    subscribers: Said<HashMap<String, u32>>,
}

/// Keeps `from`'s new announcement (none when empty), forgetting stale ones.
fn keep<T>(said: &mut Said<T>, from: SocketAddr, what: Option<T>, now: Instant) {
    said.retain(|_, (_, at)| now.duration_since(*at) < ANNOUNCE_TTL);
    match what {
        Some(w) => said.insert(from, (w, now)),
        None => said.remove(&from),
    };
}

/// `from`'s announcement, if recent.
fn fresh<'a, T>(said: &'a Said<T>, from: &SocketAddr, now: Instant) -> Option<&'a T> {
    said.get(from)
        .filter(|(_, at)| now.duration_since(*at) < ANNOUNCE_TTL)
        .map(|(w, _)| w)
}

impl Announced {
    /// `from` has subscribers that answer for these topics (all of them).
    pub(super) fn topics(&mut self, from: SocketAddr, topics: Vec<String>, now: Instant) {
        let set: BTreeSet<String> = topics.into_iter().take(MAX_TOPICS).collect();
        keep(
            &mut self.answering,
            from,
            (!set.is_empty()).then_some(set),
            now,
        );
    }

    /// `from` has these subscribers per topic (all of its topics).
    pub(super) fn subscribers(
        &mut self,
        from: SocketAddr,
        topics: Vec<TopicSubscribers>,
        now: Instant,
    ) {
        let counts: HashMap<String, u32> = topics
            .into_iter()
            .take(MAX_TOPICS)
            .filter(|t| t.subscribers > 0)
            .map(|t| (t.topic, t.subscribers))
            .collect();
        keep(
            &mut self.subscribers,
            from,
            (!counts.is_empty()).then_some(counts),
            now,
        );
    }

    /// The nodes among `live` with a subscriber of `topic` that answers.
    pub(super) fn answering(
        &self,
        topic: &str,
        live: &[SocketAddr],
        now: Instant,
    ) -> Vec<SocketAddr> {
        live.iter()
            .filter(|a| fresh(&self.answering, a, now).is_some_and(|t| t.contains(topic)))
            .copied()
            .collect()
    }

    /// The subscribers of `topic` the nodes at `to` have, as they last
    /// said; a node that announced no counts (an older release) but has
    /// a subscriber that answers counts as one.
    pub(super) fn receivers(&self, topic: &str, to: &[SocketAddr], now: Instant) -> usize {
        to.iter()
            .map(|a| match fresh(&self.subscribers, a, now) {
                Some(counts) => counts.get(topic).map_or(0, |n| *n as usize),
                None => {
                    usize::from(fresh(&self.answering, a, now).is_some_and(|t| t.contains(topic)))
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn counts(list: &[(&str, u32)]) -> Vec<TopicSubscribers> {
        list.iter()
            .map(|(t, n)| TopicSubscribers {
                topic: (*t).into(),
                subscribers: *n,
            })
            .collect()
    }

    #[test]
    fn receivers_add_up_the_counts_of_the_nodes_sent_to() {
        let now = Instant::now();
        let mut a = Announced::default();
        let (n2, n3, n4) = (addr(2), addr(3), addr(4));
        a.subscribers(n2, counts(&[("news", 2), ("other", 1)]), now);
        a.subscribers(n3, counts(&[("news", 3)]), now);
        assert_eq!(a.receivers("news", &[n2, n3], now), 5);
        // Only the nodes it was sent to count.
        assert_eq!(a.receivers("news", &[n3], now), 3);
        assert_eq!(a.receivers("nobody", &[n2, n3, n4], now), 0);
        // An older node: its answering topics count one each.
        a.topics(n4, vec!["news".into()], now);
        assert_eq!(a.receivers("news", &[n2, n3, n4], now), 6);
        // A newer node's counts win over its answering topics.
        a.topics(n2, vec!["news".into()], now);
        assert_eq!(a.receivers("news", &[n2], now), 2);
        // An empty announcement forgets the node.
        a.subscribers(n3, Vec::new(), now);
        assert_eq!(a.receivers("news", &[n3], now), 0);
    }

    #[test]
    fn silent_nodes_are_forgotten() {
        let now = Instant::now();
        let mut a = Announced::default();
        a.subscribers(addr(2), counts(&[("news", 2)]), now);
        a.topics(addr(2), vec!["news".into()], now);
        let later = now + ANNOUNCE_TTL + Duration::from_millis(1);
        assert_eq!(a.receivers("news", &[addr(2)], later), 0);
        assert!(a.answering("news", &[addr(2)], later).is_empty());
        assert_eq!(a.answering("news", &[addr(2)], now), vec![addr(2)]);
    }

    #[test]
    fn requests_go_to_live_nodes_with_an_answering_subscriber() {
        let now = Instant::now();
        let mut a = Announced::default();
        a.topics(addr(2), vec!["echo".into()], now);
        a.topics(addr(3), vec!["echo".into(), "other".into()], now);
        // Counts alone (a node whose subscribers cannot answer) route nothing.
        a.subscribers(addr(4), counts(&[("echo", 5)]), now);
        let live = [addr(2), addr(4), addr(5)];
        assert_eq!(a.answering("echo", &live, now), vec![addr(2)]);
        assert_eq!(
            a.answering("other", &[addr(2), addr(3)], now),
            vec![addr(3)]
        );
    }
}
