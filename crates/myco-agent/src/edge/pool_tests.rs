use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;

use super::*;

/// An instance answering "ok" on keep-alive connections; counts the
/// connections it accepted. `close_after`: answers per connection before
/// it closes it (as an instance's own keep-alive limit would).
async fn instance(close_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let answered = Arc::new(AtomicUsize::new(0));
                let service = hyper::service::service_fn(move |_req| {
                    let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut resp = Response::new(Body::from("ok"));
                    if close_after.is_some_and(|max| n >= max) {
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

async fn get(pool: &Pool, addr: SocketAddr) -> Result<String, SendError> {
    let req = Request::get("/").body(Body::empty()).unwrap();
    let resp = pool.send(addr, req).await?;
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .unwrap();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until `f` holds.
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("condition not met in 1 s");
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, accepted) = instance(None).await;
    let pool = Pool::new();
    for _ in 0..20 {
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_to(addr), 1);
}

#[tokio::test]
async fn a_body_dropped_unread_does_not_return_its_connection() {
    let (addr, accepted) = instance(None).await;
    let pool = Pool::new();
    let req = Request::get("/").body(Body::empty()).unwrap();
    let resp = pool.send(addr, req).await.unwrap();
    drop(resp);
    assert_eq!(pool.idle_to(addr), 0);
    assert_eq!(get(&pool, addr).await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_instance_closed_is_not_an_error() {
    // The instance closes each connection after one answer: the pooled
    // one is dead by the next request, which must still succeed.
    let (addr, accepted) = instance(Some(1)).await;
    let pool = Pool::new();
    for _ in 0..5 {
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
    }
    until(|| accepted.load(Ordering::SeqCst) == 5).await;
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let err = get(&Pool::new(), addr).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}

#[tokio::test]
async fn a_pooled_connection_runs_in_its_requests_task() {
    // The runtime's live tasks: the instance's listener and the pool's
    // sweep, then the instance's task for our one connection. A task per
    // upstream connection (the earlier pool) would make it one more.
    let metrics = tokio::runtime::Handle::current().metrics();
    let (addr, accepted) = instance(None).await;
    let pool = Pool::new();
    for _ in 0..5 {
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_to(addr), 1);
    assert_eq!(metrics.num_alive_tasks(), 3);
}

#[tokio::test]
async fn a_connection_its_answer_closed_is_not_pooled() {
    let (addr, _) = instance(Some(1)).await;
    let pool = Pool::new();
    let req = Request::get("/").body(Body::empty()).unwrap();
    let resp = pool.send(addr, req).await.unwrap();
    let _ = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20).await;
    // The answer said `Connection: close`: not pooled at all.
    assert_eq!(pool.idle_to(addr), 0);
}

#[tokio::test]
async fn a_head_and_body_written_apart_are_not_held_by_delayed_acks() {
    // Python's `http.server` writes the head, then the body; with Nagle on
    // its side the body waits for our ACK of the head, which Linux delays
    // by 40 ms on a connection that has nothing to send back. The pool
    // acknowledges at once when a body is awaited (`TCP_QUICKACK`).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                    .await
                    .unwrap();
                tcp.write_all(b"ok").await.unwrap();
            }
        }
    });
    let pool = Pool::new();
    let n = 20;
    let started = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
    }
    let mean = started.elapsed() / n;
    assert!(
        mean < std::time::Duration::from_millis(20),
        "{mean:?} per request"
    );
}
