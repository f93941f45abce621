//! The fast path against real sockets: an edge on the shared server with
//! the fast path on, and a tiny instance that answers by path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::id::NodeId;
use myco_proto::job::Balance;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::head::{self, Framing};
use super::test_instance::instance;
use super::*;
use crate::edge::balance::Upstream;
use crate::edge::routes::{HopRule, JobEntry, Routes, Snapshot};
use crate::edge::server;
use crate::net::serve::ServeLimits;

/// An edge with the fast path on: job `j` on `instances`, job `empty`
/// with none.
async fn edge(instances: &[SocketAddr]) -> (SocketAddr, Arc<EdgeState>) {
    edge_on(instances, server::edge_server(), std::future::pending()).await
}

/// The same on `serve`, until `shutdown`.
async fn edge_on(
    instances: &[SocketAddr],
    serve: crate::net::serve::Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, Arc<EdgeState>) {
    let me = NodeId::from_u64(1);
    let routes = Routes::new(HopRule {
        me: Some(me),
        direct: false,
    });
    let entry = |ready| JobEntry {
        ready,
        draining: vec![],
        stopped: false,
        metrics: Arc::default(),
        balance: Balance::LeastRequests,
        turn: Arc::default(),
    };
    let ready = instances.iter().enumerate();
    let ready =
        ready.map(|(i, a)| Arc::new(Upstream::new(format!("i{i}"), me, *a).reached_by(Hop::Local)));
    let mut jobs = BTreeMap::new();
    jobs.insert("j".to_owned(), entry(ready.collect()));
    jobs.insert("empty".to_owned(), entry(vec![]));
    routes.store(Snapshot { jobs });
    let state = server::state(routes, me, crate::edge::pool::Pool::new(), None, false);
    let fast: Arc<dyn FastPath> = Arc::new(Fast::new(state.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let serve = serve.fast_path(Some(fast));
    tokio::spawn(serve.serve(l, server::app(state.clone()), shutdown));
    (addr, state)
}

/// Reads one answer: its head, and its body as it came (chunked framing
/// included).
async fn answer(c: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> (String, Vec<u8>) {
    let mut b = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let a = loop {
        if let Some(a) = head::response(buf, head_request, "-", "-", false, &mut out).unwrap() {
            break a;
        }
        let k = c.read(&mut b).await.unwrap();
        assert!(
            k > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&b[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..a.len]).into_owned();
    buf.drain(..a.len);
    let mut chunked = chunked::Chunked::default();
    let mut body = Vec::new();
    loop {
        let end = match a.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => (buf.len() >= n as usize).then_some(n as usize),
            Framing::Chunked => chunked.feed(buf).unwrap().or_else(|| {
                body.append(buf);
                None
            }),
            Framing::UntilClose => None,
        };
        if let Some(end) = end {
            body.extend(buf.drain(..end));
            return (head, body);
        }
        let k = c.read(&mut b).await.unwrap();
        if k == 0 {
            assert_eq!(a.framing, Framing::UntilClose, "cut short");
            body.append(buf);
            return (head, body);
        }
        buf.extend_from_slice(&b[..k]);
    }
}

async fn ask(c: &mut TcpStream, buf: &mut Vec<u8>, req: &str) -> (String, Vec<u8>) {
    c.write_all(req.as_bytes()).await.unwrap();
    answer(c, buf, req.starts_with("HEAD")).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: edge\r\nX-Custom: Case\r\n\r\n")
}

#[tokio::test]
async fn every_framing_passes_on_one_kept_connection() {
    let (inst, seen) = instance().await;
    let (addr, _) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let (h, body) = ask(&mut c, &mut buf, &get("/j/len")).await;
    assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
    assert_eq!(body, b"hello");
    let (h, body) = ask(&mut c, &mut buf, &get("/j/chunked")).await;
    assert!(h.contains("Transfer-Encoding: chunked\r\n"), "{h}");
    assert_eq!(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let (h, body) = ask(
        &mut c,
        &mut buf,
        "HEAD /j/len HTTP/1.1\r\nHost: edge\r\n\r\n",
    )
    .await;
    assert!(
        h.contains("Content-Length: 5\r\n") && body.is_empty(),
        "{h}"
    );
    let (h, _) = ask(&mut c, &mut buf, &get("/j/204")).await;
    assert!(h.starts_with("HTTP/1.1 204 "), "{h}");
    let (h, body) = ask(&mut c, &mut buf, &get("/j/304")).await;
    assert!(h.starts_with("HTTP/1.1 304 ") && body.is_empty(), "{h}");
    // Two requests in one write: answered in order.
    let two = format!(
        "{}{}",
        get("/j/len"),
        "POST /j/echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    );
    c.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(answer(&mut c, &mut buf, false).await.1, b"hello");
    assert_eq!(answer(&mut c, &mut buf, false).await.1, b"abc");
    let (h, body) = ask(&mut c, &mut buf, &get("/j/close")).await;
    assert!(h.contains("connection: close\r\n"), "{h}");
    assert_eq!(body, b"until close");
    let seen = seen.all();
    assert_eq!(seen.len(), 8);
    assert!(
        seen.iter().all(|(conn, _)| *conn == 1),
        "one pooled connection: {seen:?}"
    );
    // The fast path keeps the client's spelling of names; hyper's does not.
    assert!(
        seen[0].1.contains("\r\nX-Custom: Case\r\n"),
        "{}",
        seen[0].1
    );
    assert!(seen[0].1.starts_with("GET /len HTTP/1.1\r\n"));
}

#[tokio::test]
async fn heads_are_rewritten_and_request_ids_kept_or_made() {
    let (inst, seen) = instance().await;
    let (addr, state) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let req = "GET /j/len?x=1 HTTP/1.1\r\nHost: edge\r\nX-Request-Id: mine\r\n\
               X-Forwarded-For: 10.1.1.1\r\nConnection: X-Secret\r\nX-Secret: s\r\n\r\n";
    let (h, _) = ask(&mut c, &mut buf, req).await;
    let via = format!("via: 1.1 {}\r\n", state.via_token);
    assert!(
        h.contains("x-request-id: mine\r\n") && h.contains(&via),
        "{h}"
    );
    let up = &seen.all()[0].1;
    assert!(up.starts_with("GET /len?x=1 HTTP/1.1\r\n"), "{up}");
    for want in [
        "x-request-id: mine\r\n",
        "x-forwarded-for: 10.1.1.1, 127.0.0.1\r\n",
        "x-forwarded-proto: http\r\n",
        "x-forwarded-host: edge\r\n",
        &via,
    ] {
        assert!(up.contains(want), "{want} not in {up}");
    }
    assert!(
        !up.contains("X-Secret") && !up.contains("Connection"),
        "{up}"
    );
    let (h, _) = ask(
        &mut c,
        &mut buf,
        "GET /len HTTP/1.1\r\nHost: j.example\r\n\r\n",
    )
    .await;
    let id = h
        .split("x-request-id: ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap();
    assert_eq!(id.len(), 32, "{h}");
    let up = &seen.all()[1].1;
    assert!(
        up.starts_with("GET /len HTTP/1.1\r\n") && up.contains(&format!("x-request-id: {id}\r\n")),
        "{up}"
    );
}

#[tokio::test]
async fn errors_are_json_and_keep_the_connection() {
    let (inst, _) = instance().await;
    let (addr, state) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let (h, body) = ask(&mut c, &mut buf, &get("/nojob/x")).await;
    assert!(
        h.starts_with("HTTP/1.1 404 ") && h.contains("application/json"),
        "{h}"
    );
    assert_eq!(
        body,
        br#"{"error":"no job \"nojob\" in the mesh; `myco jobs` lists them","job":"nojob"}"#
    );
    let (h, _) = ask(&mut c, &mut buf, &get("/")).await;
    assert!(h.starts_with("HTTP/1.1 404 "), "{h}");
    let (h, body) = ask(&mut c, &mut buf, &get("/empty/")).await;
    assert!(
        h.starts_with("HTTP/1.1 503 ") && h.contains("x-request-id: "),
        "{h}"
    );
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains(r#""job":"empty""#)
    );
    let looped = format!(
        "GET /j/len HTTP/1.1\r\nVia: 1.1 {}\r\n\r\n",
        state.via_token
    );
    let (h, _) = ask(&mut c, &mut buf, &looped).await;
    assert!(h.starts_with("HTTP/1.1 508 "), "{h}");
    let (h, _) = ask(&mut c, &mut buf, &get("/j/len")).await;
    assert!(h.starts_with("HTTP/1.1 200 "), "{h}");
    // Asked to close, an error answer closes too.
    let closing = "GET /nojob/ HTTP/1.1\r\nConnection: close\r\n\r\n";
    let (h, _) = ask(&mut c, &mut buf, closing).await;
    assert!(h.contains("connection: close\r\n"), "{h}");
    assert_eq!(c.read(&mut [0u8; 1]).await.unwrap(), 0, "closed after");
}

#[tokio::test]
async fn a_dead_pooled_connection_is_replaced_for_idempotent_requests_only() {
    let (inst, seen) = instance().await;
    let (addr, _) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(ask(&mut c, &mut buf, &get("/j/drop-next")).await.1, b"ok");
    // The pooled connection takes this GET and closes unanswered.
    assert_eq!(ask(&mut c, &mut buf, &get("/j/len")).await.1, b"hello");
    let conns: Vec<usize> = seen.all().iter().map(|(n, _)| *n).collect();
    assert_eq!(conns, [1, 1, 2]);
    assert_eq!(ask(&mut c, &mut buf, &get("/j/drop-next")).await.1, b"ok");
    let post = "POST /j/echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
    let (h, body) = ask(&mut c, &mut buf, post).await;
    assert!(h.starts_with("HTTP/1.1 502 "), "{h}");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("could not be reached")
    );
}

#[tokio::test]
async fn a_refused_instance_is_tried_once_more_then_502() {
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (inst, _) = instance().await;
    let (addr, _) = edge(&[gone]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let (h, _) = ask(&mut c, &mut buf, &get("/j/len")).await;
    assert!(h.starts_with("HTTP/1.1 502 "), "{h}");
    let (addr, _) = edge(&[gone, inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    for _ in 0..4 {
        assert_eq!(ask(&mut c, &mut buf, &get("/j/len")).await.1, b"hello");
    }
}

#[tokio::test]
async fn bodies_large_and_small_are_forwarded() {
    let (inst, _) = instance().await;
    let (addr, _) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let big = "b".repeat(200 * 1024);
    let req = format!(
        "PUT /j/echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    assert_eq!(ask(&mut c, &mut buf, &req).await.1, big.as_bytes());
    assert_eq!(ask(&mut c, &mut buf, &get("/j/len")).await.1, b"hello");
}

#[tokio::test]
async fn too_many_header_fields_get_hyper_s_431() {
    let (inst, _) = instance().await;
    let (addr, _) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut req = "GET /j/len HTTP/1.1\r\n".to_owned();
    for i in 0..80 {
        req.push_str(&format!("h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (h, _) = ask(&mut c, &mut buf, &req).await;
    assert!(h.starts_with("HTTP/1.1 431 "), "{h}");
}

#[tokio::test]
async fn upgrades_and_h2c_still_go_through_hyper_on_the_same_listener() {
    let (inst, _) = instance().await;
    let (addr, _) = edge(&[inst]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(ask(&mut c, &mut buf, &get("/j/len")).await.1, b"hello");
    let up =
        "GET /j/upgrade HTTP/1.1\r\nHost: edge\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n";
    let (h, _) = ask(&mut c, &mut buf, up).await;
    assert!(h.starts_with("HTTP/1.1 101 "), "{h}");
    c.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    c.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get("http://127.0.0.1/j/len")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 100)
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello");
}

/// Waits for the edge to close `c` (an end of stream or a reset).
async fn closed(c: &mut TcpStream) {
    let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut [0u8; 1])).await;
    assert_eq!(read.expect("not closed in time").unwrap_or(0), 0);
}

#[tokio::test]
async fn the_fast_path_keeps_the_server_s_time_limits_and_its_shutdown() {
    let (inst, _) = instance().await;
    let limits = ServeLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let serve = crate::net::serve::Server::new(limits);
    let counters = serve.counters();
    let (addr, _) = edge_on(&[inst], serve, std::future::pending()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /j/len HTTP/1.1\r\n").await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(ask(&mut idle, &mut buf, &get("/j/len")).await.1, b"hello");
    closed(&mut slow).await;
    closed(&mut idle).await;
    let seen = counters.snapshot();
    assert_eq!((seen.header_timeouts, seen.idle_closed), (1, 1));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let (addr, _) = edge_on(&[inst], server::edge_server(), shutdown).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(ask(&mut c, &mut buf, &get("/j/len")).await.1, b"hello");
    stop.send(()).unwrap();
    // Idle, it closes at once (the idle limit is 30 s).
    closed(&mut c).await;
}
