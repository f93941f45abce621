//! Writes on the sender's own task while a peer's connection is idle
//! (`Streams::send`'s direct path) beside the peer task's queue: one
//! sender's messages arrive in order whichever way each went.

use std::time::Duration;

use myco_agent::net::streams::{Inbox, Incoming};
use myco_proto::channel::Channel;

mod streams_util;
use streams_util::{WAIT, key, node, until};

async fn recv(rx: &mut Inbox) -> Incoming {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message within the deadline")
        .expect("the channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_queued_messages_keep_one_senders_order() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(1)]).await;
    let to = b.local_addr();
    // The first message connects (through the peer task).
    a.send(to, Channel::Sync, 0u32.to_be_bytes().to_vec())
        .unwrap();
    assert_eq!(recv(&mut b_rx).await.message, 0u32.to_be_bytes());
    assert_eq!(
        a.stats().direct_writes,
        0,
        "nothing to write on before connecting"
    );
    // Then small messages (direct while the link is idle), big ones (over
    // the direct limit: always queued), and bursts (queued behind them).
    const N: u32 = 3000;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 1..N {
                let size = if i % 50 == 0 { 40_000 } else { 16 };
                let mut m = vec![(i % 251) as u8; size];
                m[..4].copy_from_slice(&i.to_be_bytes());
                a.send(to, Channel::Sync, m).unwrap();
                if i % 10 == 0 {
                    // Lets the peer task and the reader catch up, so the
                    // link is idle again now and then.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        })
    };
    for i in 1..N {
        let got = recv(&mut b_rx).await.message;
        assert_eq!(got[..4], i.to_be_bytes(), "message {i} out of order");
        assert_eq!(got.len(), if i % 50 == 0 { 40_000 } else { 16 });
        assert!(got[4..].iter().all(|&x| x == (i % 251) as u8));
    }
    sender.await.unwrap();
    until(&a, "every message written", |s| {
        s.sent_messages == u64::from(N)
    })
    .await;
    let stats = a.stats();
    assert!(stats.direct_writes > 0, "no direct write: {stats:?}");
    assert!(
        stats.direct_writes < u64::from(N) - 1,
        "nothing went through the queue: {stats:?}"
    );
    assert_eq!(stats.send_failures, 0);
}

/// A connection used only by direct writes is not closed as idle by its
/// peer task: messages keep arriving past the idle timeout.
#[tokio::test]
async fn direct_writes_keep_the_connection_from_idling_out() {
    let config = myco_agent::net::streams::StreamConfig {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (a, _a_rx) = streams_util::node_with(1, &[key(1)], config).await;
    let (b, mut b_rx) = node(2, &[key(1)]).await;
    let to = b.local_addr();
    for i in 0..12u8 {
        a.send(to, Channel::Sync, vec![i]).unwrap();
        assert_eq!(recv(&mut b_rx).await.message, vec![i]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = a.stats();
    assert!(stats.direct_writes >= 10, "{stats:?}");
    // One connection throughout: a closed one would make the next message
    // go through the peer task to a new one.
    assert_eq!(stats.sent_messages - stats.direct_writes, 1, "{stats:?}");
}
