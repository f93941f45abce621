//! Streams over real loopback sockets: delivery, order, refusal of
//! outsiders, limits and key rotation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use myco_agent::net::streams::{Inbox, Incoming, Receipt, SendError, StreamConfig, Streams};
use myco_proto::NodeId;
use myco_proto::channel::Channel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod streams_util;
use streams_util::{WAIT, any_port, key, node, node_with, until};

async fn recv(rx: &mut Inbox) -> Incoming {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message within the deadline")
        .expect("the channel is open")
}

/// Sends `message` every 50 ms until it arrives at `rx` (deliveries after a
/// refusal may need a retry: the sender backs off), failing after the deadline.
async fn send_until_delivered(from: &Streams, to: SocketAddr, rx: &mut Inbox) {
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = from.send(to, Channel::Sync, b"ping".to_vec());
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            assert_eq!(got.message, b"ping");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never delivered: sender {:?}",
            from.stats()
        );
    }
}

#[tokio::test]
async fn two_nodes_exchange_messages_both_ways_in_order() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(1)]).await;
    for i in 0..200u32 {
        a.send(b.local_addr(), Channel::Sync, format!("a{i}").into_bytes())
            .unwrap();
        b.send(a.local_addr(), Channel::Sync, format!("b{i}").into_bytes())
            .unwrap();
    }
    for i in 0..200u32 {
        let at_b = recv(&mut b_rx).await;
        assert_eq!(at_b.message, format!("a{i}").into_bytes());
        assert_eq!(at_b.peer, Some(NodeId::from_u64(1)));
        let at_a = recv(&mut a_rx).await;
        assert_eq!(at_a.message, format!("b{i}").into_bytes());
        assert_eq!(at_a.peer, Some(NodeId::from_u64(2)));
    }
    until(&a, "a's counters", |s| s.sent_messages == 200).await;
    let stats = a.stats();
    assert_eq!(stats.received_messages, 200);
    assert_eq!(stats.send_failures + stats.inbound_handshake_failures, 0);
}

#[tokio::test]
async fn a_one_megabyte_message_arrives_intact() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(1)]).await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    a.send(b.local_addr(), Channel::Sync, big.clone()).unwrap();
    let got = recv(&mut b_rx).await;
    assert!(got.message == big, "the 1 MB message was altered");

    // Round trips of 1 MB each way, over warm connections, for a rough
    // throughput figure (`cargo test -- --nocapture` shows it).
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        a.send(b.local_addr(), Channel::Sync, big.clone()).unwrap();
        let there = recv(&mut b_rx).await;
        b.send(a.local_addr(), Channel::Sync, there.message)
            .unwrap();
        assert_eq!(recv(&mut a_rx).await.message.len(), big.len());
    }
    let elapsed = start.elapsed();
    let mb = (2 * rounds) as f64 * big.len() as f64 / 1e6;
    eprintln!(
        "{rounds} round trips of 1 MB: {elapsed:?}, {:.0} MB/s one way",
        mb / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_node_with_another_cluster_key_cannot_connect_either_way() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    let (c, mut c_rx) = node(3, &[key(2)]).await;
    c.send(a.local_addr(), Channel::Sync, b"let me in".to_vec())
        .unwrap();
    // c does not trust a's certificate and says so; a sees a failed handshake.
    until(&c, "c's outbound failure", |s| {
        s.outbound_handshake_failures == 1
    })
    .await;
    until(&a, "a's inbound failure", |s| {
        s.inbound_handshake_failures == 1
    })
    .await;
    a.send(c.local_addr(), Channel::Sync, b"hello?".to_vec())
        .unwrap();
    until(&a, "a's outbound failure", |s| {
        s.outbound_handshake_failures == 1
    })
    .await;
    until(&c, "c's inbound failure", |s| {
        s.inbound_handshake_failures == 1
    })
    .await;
    assert!(a_rx.try_recv().is_none() && c_rx.try_recv().is_none());
    assert_eq!(a.stats().sent_messages + c.stats().sent_messages, 0);
    assert_eq!(a.stats().send_failures, 1);
}

#[tokio::test]
async fn garbage_is_refused_and_the_server_keeps_working() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    let mut plain = TcpStream::connect(a.local_addr()).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The server closes on us (after a TLS alert, which is not HTTP).
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut sink))
        .await
        .expect("the server closes the connection")
        .ok();
    until(&a, "the refusal", |s| s.inbound_handshake_failures == 1).await;

    let (b, _b_rx) = node(2, &[key(1)]).await;
    b.send(a.local_addr(), Channel::Sync, b"still there?".to_vec())
        .unwrap();
    assert_eq!(recv(&mut a_rx).await.message, b"still there?");
}

#[tokio::test]
async fn a_silent_client_times_out_and_frees_its_slot() {
    let config = StreamConfig {
        max_inbound: 1,
        connect_timeout: Duration::from_millis(300),
        ..StreamConfig::default()
    };
    let (a, mut a_rx) = node_with(1, &[key(1)], config).await;
    let _silent = TcpStream::connect(a.local_addr()).await.unwrap();
    // While the silent one holds the only slot, others are closed at once...
    let mut second = TcpStream::connect(a.local_addr()).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, second.read_to_end(&mut sink)).await;
    // ...(unless the silent one already timed out: then this one got the
    // slot and failed its handshake, counted too).
    until(&a, "refusal or timeout", |s| {
        s.inbound_refused + s.inbound_handshake_failures >= 1
    })
    .await;
    // The handshake timeout frees the slot for a real peer.
    until(&a, "the silent client's timeout", |s| {
        s.inbound_handshake_failures >= 1
    })
    .await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    send_until_delivered(&b, a.local_addr(), &mut a_rx).await;
}

#[tokio::test]
async fn oversize_messages_and_full_queues_are_refused_and_counted() {
    let config = StreamConfig {
        max_message: 1000,
        queue_per_peer: 1,
        connect_timeout: Duration::from_secs(5),
        ..StreamConfig::default()
    };
    let (a, _a_rx) = node_with(1, &[key(1)], config).await;
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        a.send(to, Channel::Sync, vec![0; 1001]),
        Err(SendError::TooLarge {
            size: 1001,
            max: 1000
        })
    );
    assert_eq!(a.stats().oversize_refused, 1);

    // A listener that never accepts: the connection completes in the kernel
    // and the handshake waits, so the peer task is stuck on the first message.
    let blackhole = std::net::TcpListener::bind(any_port()).unwrap();
    let to = blackhole.local_addr().unwrap();
    let results: Vec<_> = (0..3)
        .map(|_| a.send(to, Channel::Sync, vec![1; 10]))
        .collect();
    assert!(results[0].is_ok());
    assert_eq!(results[2], Err(SendError::QueueFull { to }));
    let refused = results.iter().filter(|r| r.is_err()).count() as u64;
    assert_eq!(a.stats().queue_full, refused);
}

#[tokio::test]
async fn least_recently_used_peers_are_evicted() {
    let config = StreamConfig {
        max_peers: 2,
        ..StreamConfig::default()
    };
    let (a, _a_rx) = node_with(1, &[key(1)], config).await;
    let mut nodes = Vec::new();
    for n in 2..5 {
        nodes.push(node(n, &[key(1)]).await);
    }
    for (peer, rx) in &mut nodes {
        a.send(peer.local_addr(), Channel::Sync, b"hi".to_vec())
            .unwrap();
        assert_eq!(recv(rx).await.message, b"hi");
    }
    assert_eq!(a.stats().peers_evicted, 1);
    // The evicted first peer is reached again through a new task.
    let (first, rx) = &mut nodes[0];
    a.send(first.local_addr(), Channel::Sync, b"again".to_vec())
        .unwrap();
    assert_eq!(recv(rx).await.message, b"again");
    let stats = a.stats();
    assert_eq!((stats.peers_evicted, stats.send_failures), (2, 0));
}

/// Rotation: nodes talk, both ways, while their rings share any key, and a
/// key dropped from a ring revokes live connections that relied on it.
#[tokio::test]
async fn rings_sharing_any_key_connect_and_a_dropped_key_revokes() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(2), key(1)]).await;
    // B seals with k2 but still holds k1, so it presents its k1 leaf to A.
    a.send(b.local_addr(), Channel::Sync, b"a1".to_vec())
        .unwrap();
    assert_eq!(recv(&mut b_rx).await.message, b"a1");
    b.send(a.local_addr(), Channel::Sync, b"b1".to_vec())
        .unwrap();
    assert_eq!(recv(&mut a_rx).await.message, b"b1");

    // B drops k1: it stops trusting A's k1 leaf on both live connections,
    // at their next message...
    b.set_keys(&[key(2)]).unwrap();
    a.send(b.local_addr(), Channel::Sync, b"a2".to_vec())
        .unwrap();
    until(&b, "b closing a's inbound connection", |s| {
        s.untrusted_after_rekey == 1
    })
    .await;
    b.send(a.local_addr(), Channel::Sync, b"b2".to_vec())
        .unwrap();
    until(&b, "b dropping its connection to a", |s| {
        s.untrusted_after_rekey == 2 && s.outbound_handshake_failures == 1
    })
    .await;
    // ...and refuses A's reconnections.
    let deadline = Instant::now() + WAIT;
    while b.stats().inbound_handshake_failures == 0 {
        assert!(
            Instant::now() < deadline,
            "b never refused a: {:?}",
            b.stats()
        );
        let _ = a.send(b.local_addr(), Channel::Sync, b"a3".to_vec());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        b_rx.try_recv().is_none(),
        "a message passed on a dropped key"
    );
    assert!(
        a_rx.try_recv().is_none(),
        "a message passed on a dropped key"
    );

    // A learns k2 (still preferring k1): it presents its k2 leaf to B.
    a.set_keys(&[key(1), key(2)]).unwrap();
    send_until_delivered(&a, b.local_addr(), &mut b_rx).await;
    send_until_delivered(&b, a.local_addr(), &mut a_rx).await;
}

/// Nodes present the leaf of their primary key when the peer trusts it, so
/// the last step of a rotation (dropping the old key) keeps connections.
#[tokio::test]
async fn the_primary_keys_leaf_is_preferred() {
    let (a, mut a_rx) = node(1, &[key(2), key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(2), key(1)]).await;
    a.send(b.local_addr(), Channel::Sync, b"a1".to_vec())
        .unwrap();
    assert_eq!(recv(&mut b_rx).await.message, b"a1");
    b.send(a.local_addr(), Channel::Sync, b"b1".to_vec())
        .unwrap();
    assert_eq!(recv(&mut a_rx).await.message, b"b1");
    a.set_keys(&[key(2)]).unwrap();
    b.set_keys(&[key(2)]).unwrap();
    a.send(b.local_addr(), Channel::Sync, b"a2".to_vec())
        .unwrap();
    assert_eq!(recv(&mut b_rx).await.message, b"a2");
    b.send(a.local_addr(), Channel::Sync, b"b2".to_vec())
        .unwrap();
    assert_eq!(recv(&mut a_rx).await.message, b"b2");
    for s in [a.stats(), b.stats()] {
        assert_eq!(s.untrusted_after_rekey, 0, "{s:?}");
        assert_eq!(s.send_failures, 0, "{s:?}");
    }
}

/// A consumer that stops reading stops the connection, not memory: the
/// reader waits on the bounded incoming channel.
#[tokio::test]
async fn a_full_incoming_channel_pushes_back_on_the_connection() {
    let config = StreamConfig {
        incoming_queue: 1,
        ..StreamConfig::default()
    };
    let (a, mut a_rx) = node_with(1, &[key(1)], config).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    for i in 0..50u32 {
        b.send(a.local_addr(), Channel::Sync, i.to_be_bytes().to_vec())
            .unwrap();
    }
    // All 50 fit in socket buffers, so the writer finishes...
    until(&b, "b writing everything", |s| s.sent_messages == 50).await;
    until(&a, "the first message queued", |s| s.received_messages == 1).await;
    // ...but the reader holds at one queued message while nobody consumes
    // (watched for a while: an unbounded buffer would take all 50 at once).
    let watch_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < watch_until {
        assert_eq!(a.stats().received_messages, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..50u32 {
        assert_eq!(recv(&mut a_rx).await.message, i.to_be_bytes());
    }
}

#[tokio::test]
async fn a_peer_queue_is_bounded_by_bytes_too() {
    let config = StreamConfig {
        queue_bytes_per_peer: 100,
        ..StreamConfig::default()
    };
    let (a, _a_rx) = node_with(1, &[key(1)], config).await;
    // A listener that never accepts: the peer task is stuck on the first
    // message it took, and the rest stay queued.
    let blackhole = std::net::TcpListener::bind(any_port()).unwrap();
    let to = blackhole.local_addr().unwrap();
    let results: Vec<_> = (0..4)
        .map(|_| a.send(to, Channel::Sync, vec![1; 60]))
        .collect();
    assert!(results[0].is_ok());
    // At most the taken message plus one of 60 bytes fit under 100 bytes.
    assert_eq!(results[3], Err(SendError::QueueFull { to }));
    let refused = results.iter().filter(|r| r.is_err()).count() as u64;
    assert!(refused >= 2, "{results:?}");
    assert_eq!(a.stats().queue_bytes_full, refused);
    assert_eq!(a.stats().queue_full, 0);
}

/// The incoming side waits by bytes as well as by count: a consumer that
/// stops reading holds at most the byte budget, however many messages fit
/// the count.
#[tokio::test]
async fn incoming_bytes_are_bounded_and_nothing_is_lost() {
    let config = StreamConfig {
        max_message: 1000,
        incoming_bytes: 1000,
        ..StreamConfig::default()
    };
    let (a, mut a_rx) = node_with(1, &[key(1)], config).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    for i in 0..5u8 {
        b.send(a.local_addr(), Channel::Blob, vec![i; 600]).unwrap();
    }
    until(&b, "b writing everything", |s| s.sent_messages == 5).await;
    until(&a, "the reader waiting for room", |s| s.incoming_waits == 1).await;
    assert_eq!(a.stats().received_messages, 1);
    for i in 0..5u8 {
        let got = recv(&mut a_rx).await;
        assert_eq!((got.channel, got.message), (Channel::Blob, vec![i; 600]));
    }
    assert!(a.stats().incoming_waits >= 1);
}

/// A handler given to `handle_directly` sees its channel's messages, in
/// order, on the reader's task: the incoming channel does not get them;
/// other channels are untouched.
#[tokio::test]
async fn a_direct_handler_sees_its_channel_before_any_queue() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, mut b_rx) = node(2, &[key(1)]).await;
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    b.handle_directly(
        Channel::Msg,
        std::sync::Arc::new(move |m: Vec<u8>, _: &mut myco_agent::net::streams::Back| {
            let _ = tx.send(m);
        }),
    );
    for i in 0..3u8 {
        a.send(b.local_addr(), Channel::Msg, vec![i]).unwrap();
    }
    a.send(b.local_addr(), Channel::Sync, b"sync".to_vec())
        .unwrap();
    for i in 0..3u8 {
        let got = tokio::time::timeout(WAIT, handled.recv()).await.unwrap();
        assert_eq!(got, Some(vec![i]));
    }
    // The sync message was sent last: a handled message would be ahead
    // of it on the incoming channel.
    let got = recv(&mut b_rx).await;
    assert_eq!(
        (got.channel, got.message),
        (Channel::Sync, b"sync".to_vec()),
        "a handled message reached the incoming channel"
    );
}

#[tokio::test]
async fn a_peer_that_refused_the_last_connection_is_unreachable_until_it_answers() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    // A port nobody listens on: the connect is refused at once.
    let closed = std::net::TcpListener::bind(any_port()).unwrap();
    let to = closed.local_addr().unwrap();
    drop(closed);
    // The first is queued; its connection is refused, and its receipt
    // says it was never sent.
    let (told, mut never_sent) = tokio::sync::mpsc::unbounded_channel();
    let receipt: Receipt = Box::new(move || {
        let _ = told.send(());
    });
    assert_eq!(
        a.send_if_reachable(to, Channel::Cache, b"q".to_vec(), Some(receipt)),
        Ok(())
    );
    tokio::time::timeout(WAIT, never_sent.recv())
        .await
        .expect("the receipt within the deadline")
        .expect("called, not dropped");
    assert!(a.stats().connect_failures >= 1);
    // Refused while the back-off runs (a slow poll may land past a short
    // one, queueing another attempt: poll until a refusal is seen).
    let deadline = Instant::now() + WAIT;
    loop {
        match a.send_if_reachable(to, Channel::Cache, b"q".to_vec(), None) {
            Err(e) => {
                assert_eq!(e, SendError::Unreachable { to });
                break;
            }
            Ok(()) => assert!(Instant::now() < deadline, "never refused: {:?}", a.stats()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.stats().unreachable_refused, 1);
    // Plain sends still queue (replication wants its retries).
    assert_eq!(a.send(to, Channel::Sync, b"s".to_vec()), Ok(()));

    // A node comes up on that port: once the back-off ends, the next send
    // connects, and the peer is reachable again.
    let (b, mut b_rx) = Streams::bind(to, &[key(1)], NodeId::from_u64(2), StreamConfig::default())
        .await
        .unwrap();
    send_until_delivered(&a, b.local_addr(), &mut b_rx).await;
    assert_eq!(
        a.send_if_reachable(to, Channel::Cache, b"q".to_vec(), None),
        Ok(())
    );
}

/// A request's answer comes back on the connection the request went out
/// on (stream version 4): the answering node opens no connection of its
/// own, and the asker's handler gets the answer with no way back.
#[tokio::test]
async fn an_answer_comes_back_on_the_asking_connection() {
    use myco_agent::net::streams::Back;
    use std::sync::Arc;
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    b.handle_directly(
        Channel::Cache,
        Arc::new(move |m: Vec<u8>, back: &mut Back| {
            assert!(back.send(Channel::Cache, &[b"re:".as_slice(), &m].concat()));
        }),
    );
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    a.handle_directly(
        Channel::Cache,
        Arc::new(move |m: Vec<u8>, back: &mut Back| {
            let _ = tx.send((m, back.send(Channel::Cache, b"again?")));
        }),
    );
    for i in 0..3u8 {
        a.send(b.local_addr(), Channel::Cache, vec![i]).unwrap();
        let got = tokio::time::timeout(WAIT, answers.recv()).await.unwrap();
        assert_eq!(got, Some((vec![b'r', b'e', b':', i], false)));
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sb.answers_back, sb.sent_messages), (3, 3));
    assert_eq!((sa.sent_messages, sa.received_messages), (3, 3));
    assert_eq!(b.queued_bytes(), 0);
}
