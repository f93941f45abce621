//! The tiny instance the fast path's tests forward to: it answers by
//! path and records what it read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Per request the instance read: its connection's number and its bytes.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<(usize, String)>>>);

impl Seen {
    pub fn all(&self) -> Vec<(usize, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// A tiny instance: answers by path (see [`reply`]).
pub async fn instance() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        for n in 1.. {
            let (sock, _) = l.accept().await.unwrap();
            tokio::spawn(serve_instance(sock, n, s.clone()));
        }
    });
    (addr, seen)
}

fn reply(path: &str, body: &[u8]) -> Vec<u8> {
    match path {
        "/len" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        "/close" => b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(),
        "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n".to_vec(),
        "/drop-next" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/upgrade" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n".to_vec(),
        _ => [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), body].concat(),
    }
}

async fn serve_instance(mut sock: TcpStream, conn: usize, seen: Seen) {
    let mut buf = Vec::new();
    let mut drop_next = false;
    let mut b = vec![0u8; 64 * 1024];
    loop {
        let (len, path, method, cl) = loop {
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut h);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let cl = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"));
                let cl = cl.map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
                break (
                    n,
                    r.path.unwrap().to_owned(),
                    r.method.unwrap().to_owned(),
                    cl,
                );
            }
            match sock.read(&mut b).await {
                Ok(k) if k > 0 => buf.extend_from_slice(&b[..k]),
                _ => return,
            }
        };
        while buf.len() < len + cl {
            match sock.read(&mut b).await {
                Ok(k) if k > 0 => buf.extend_from_slice(&b[..k]),
                _ => return,
            }
        }
        let whole: Vec<u8> = buf.drain(..len + cl).collect();
        seen.0
            .lock()
            .unwrap()
            .push((conn, String::from_utf8_lossy(&whole[..len]).into_owned()));
        if drop_next {
            return; // closed with no answer
        }
        drop_next = path == "/drop-next";
        let mut r = reply(&path, &whole[len..]);
        if method == "HEAD" {
            r.truncate(r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
        }
        if sock.write_all(&r).await.is_err() || path == "/close" {
            return;
        }
        if path == "/upgrade" {
            // An echo tunnel from here on.
            sock.write_all(&buf).await.unwrap();
            while let Ok(k) = sock.read(&mut b).await {
                if k == 0 || sock.write_all(&b[..k]).await.is_err() {
                    return;
                }
            }
        }
    }
}
