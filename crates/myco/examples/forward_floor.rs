//! The floor a forwarded cache GET is held to: a plain TCP forwarder on
//! tokio, as the agent runs, with nothing between its read and its write
//! (no TLS, no framing, no lookup). `bench/cache.sh` (step `rtt` with
//! `FLOOR=1`) puts it, nginx's stream proxy and haproxy in front of
//! redis-server, so a myco forward's added time (remote GET − local GET)
//! can be read against a bare forward's (via the proxy − direct), both
//! measured in the same run.
//!
//! ```sh
//! cargo build --release -p myco --example forward_floor
//! target/release/examples/forward_floor LISTEN UPSTREAM [--one-thread]
//! ```
//!
//! Each client connection gets its own upstream connection; bytes are
//! copied both ways as they come. `--one-thread` runs tokio's
//! current-thread scheduler instead of two workers.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: forward_floor LISTEN UPSTREAM [--one-thread]");
        std::process::exit(2);
    }
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .expect("an address such as 127.0.0.1:6380")
    };
    let (listen, upstream) = (addr(&args[1]), addr(&args[2]));
    let runtime = if args.iter().any(|a| a == "--one-thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");
    runtime.block_on(serve(listen, upstream));
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind LISTEN");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = tokio::spawn(copy(client_read, server_write));
            copy(server_read, client_write).await;
            let _ = up.await;
        });
    }
}

/// Copies until either side closes: one read, then one write of what it read.
async fn copy(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
