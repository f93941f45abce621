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
