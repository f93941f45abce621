//! Exchanges over real loopback sockets: the asking task writes a request
//! and reads its answer itself, on a pooled connection of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_agent::net::streams::{Back, Exchange, Streams};
use myco_proto::channel::Channel;

mod streams_util;
use streams_util::{WAIT, key, node};

/// A server that answers each message `m` with `re:m` on the asking
/// connection; `twice` is answered twice (a server out of step).
fn echo(server: &Streams) {
    server.handle_directly(
        Channel::Cache,
        Arc::new(move |m: Vec<u8>, back: &mut Back| {
            if m == b"silent" {
                return;
            }
            assert!(back.send(Channel::Cache, &[b"re:".as_slice(), &m].concat()));
            if m == b"twice" {
                assert!(back.send(Channel::Cache, b"re:twice again"));
            }
        }),
    );
}

/// Exchanges `message` with `to`, expecting `re:message` back.
async fn ask(from: &Streams, to: SocketAddr, message: &[u8]) -> Exchange {
    let expected = [b"re:".as_slice(), message].concat();
    let exchange = from.exchange(to, Channel::Cache, message, |got| got == expected);
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an exchange never waits past a closed connection")
}

/// Asks until an exchange is answered (the first ones find no connection
/// open yet, and open one in the background).
async fn ask_until_answered(from: &Streams, to: SocketAddr, message: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        match ask(from, to, message).await {
            Exchange::Answered => return,
            Exchange::NotSent => {}
            Exchange::Lost => panic!("the exchange was lost: {:?}", from.stats()),
        }
        assert!(
            Instant::now() < deadline,
            "never answered: {:?}",
            from.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn exchanges_are_answered_on_one_connection_opened_in_the_background() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    echo(&b);
    // Nothing is written while no connection is idle: the caller sends
    // through the queue instead, and this one starts opening.
    assert_eq!(ask(&a, b.local_addr(), b"first").await, Exchange::NotSent);
    ask_until_answered(&a, b.local_addr(), b"0").await;
    for i in 1..20u8 {
        assert_eq!(ask(&a, b.local_addr(), &[i]).await, Exchange::Answered);
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.exchanges, sa.exchange_connections), (20, 1), "{sa:?}");
    assert_eq!(sb.answers_back, 20, "{sb:?}");
}

#[tokio::test]
async fn an_answer_out_of_step_closes_the_connection_instead_of_answering_the_next() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    echo(&b);
    ask_until_answered(&a, b.local_addr(), b"twice").await;
    // The second answer to `twice` is still on that connection: it is
    // refused as this request's answer, and the connection closed.
    assert_eq!(ask(&a, b.local_addr(), b"next").await, Exchange::Lost);
    ask_until_answered(&a, b.local_addr(), b"next").await;
    assert_eq!(a.stats().exchange_connections, 2, "{:?}", a.stats());
}

#[tokio::test]
async fn an_exchange_given_up_half_way_does_not_leave_its_connection_in_the_pool() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    echo(&b);
    ask_until_answered(&a, b.local_addr(), b"hello").await;
    // No answer comes: the caller stops waiting, which drops the exchange.
    let silent = a.exchange(b.local_addr(), Channel::Cache, b"silent", |_| true);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), silent)
            .await
            .is_err()
    );
    assert_eq!(ask(&a, b.local_addr(), b"after").await, Exchange::NotSent);
    ask_until_answered(&a, b.local_addr(), b"after").await;
    assert_eq!(a.stats().exchange_connections, 2, "{:?}", a.stats());
}

#[tokio::test]
async fn a_server_gone_is_never_waited_on() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1)]).await;
    echo(&b);
    let to = b.local_addr();
    ask_until_answered(&a, to, b"hello").await;
    drop(b);
    // Written before this node saw the close, an exchange is lost at once
    // (the read ends); after, nothing is written. Either way the caller
    // goes through the queue, which knows the peer refused it. `ask`
    // fails if one waits.
    let deadline = Instant::now() + WAIT;
    loop {
        match ask(&a, to, b"anyone?").await {
            Exchange::NotSent => break,
            Exchange::Lost => {}
            Exchange::Answered => panic!("answered by a dropped server"),
        }
        assert!(Instant::now() < deadline, "{:?}", a.stats());
    }
}

#[tokio::test]
async fn a_key_change_closes_idle_connections_before_their_next_exchange() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1), key(2)]).await;
    echo(&b);
    ask_until_answered(&a, b.local_addr(), b"hello").await;
    // Opened under the old ring, the idle connection is not used again:
    // the next one is opened (and checked) under the new one.
    a.set_keys(&[key(2)]).unwrap();
    assert_eq!(ask(&a, b.local_addr(), b"after").await, Exchange::NotSent);
    ask_until_answered(&a, b.local_addr(), b"after").await;
    assert_eq!(a.stats().exchange_connections, 2, "{:?}", a.stats());
}
