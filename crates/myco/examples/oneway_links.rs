//! What one-way links cost a forward: an "asker" that forwards a client's
//! requests to an "owner", the owner's answers coming back either on the
//! request's own connection or on a second connection the owner opens
//! back (the shape of the agents' stream links: each node writes on its
//! own outbound connection). Plain tokio, no TLS, so only the shape
//! differs. BENCHMARKS.md, fourteenth pass.
//!
//! ```sh
//! cargo build --release -p myco --example oneway_links
//! B=target/release/examples/oneway_links
//! $B owner 127.0.0.1:7001 -              & $B asker 127.0.0.1:7000 127.0.0.1:7001 - &
//! $B owner 127.0.0.1:7011 127.0.0.1:7012 & $B asker 127.0.0.1:7010 127.0.0.1:7011 127.0.0.1:7012 &
//! python3 bench/get_latency.py 7000 7010 --no-set
//! ```
//!
//! `owner LISTEN BACK|-` answers every read with the RESP bulk string
//! `abc`, on the connection it came on (`-`) or on one it opens to BACK.
//! `asker LISTEN OWNER BACK|-` gives each client a connection to OWNER
//! (and, with BACK, takes the owner's connection back on BACK).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 || (args[1] == "asker" && args.len() < 5) {
        eprintln!("usage: oneway_links owner LISTEN BACK|- | asker LISTEN OWNER BACK|-");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let back = |s: &str| (s != "-").then(|| s.to_string());
        if args[1] == "owner" {
            owner(&args[2], back(&args[3])).await;
        } else {
            asker(&args[2], &args[3], back(&args[4])).await;
        }
    });
}

async fn owner(listen: &str, back: Option<String>) {
    let listener = TcpListener::bind(listen).await.expect("bind LISTEN");
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let back = back.clone();
        tokio::spawn(async move {
            let (mut from, same) = conn.into_split();
            let mut to: Box<dyn AsyncWrite + Unpin + Send> = match back {
                Some(addr) => match TcpStream::connect(addr).await {
                    Ok(s) => Box::new(nodelay(s)),
                    Err(_) => return,
                },
                None => Box::new(same),
            };
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || to.write_all(b"$3\r\nabc\r\n").await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn asker(listen: &str, owner: &str, back: Option<String>) {
    let listener = TcpListener::bind(listen).await.expect("bind LISTEN");
    let back = match back {
        Some(addr) => Some(TcpListener::bind(addr).await.expect("bind BACK")),
        None => None,
    };
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let Ok(upstream) = TcpStream::connect(owner).await else {
            continue;
        };
        let (client_read, client_write) = nodelay(client).into_split();
        let (answers_same, requests) = nodelay(upstream).into_split();
        tokio::spawn(copy(client_read, requests));
        match &back {
            // The owner opens its connection back once it has ours.
            Some(back) => {
                let Ok((answers, _)) = back.accept().await else {
                    continue;
                };
                tokio::spawn(copy(nodelay(answers), client_write));
            }
            None => {
                tokio::spawn(copy(answers_same, client_write));
            }
        }
    }
}

fn nodelay(s: TcpStream) -> TcpStream {
    let _ = s.set_nodelay(true);
    s
}

/// Copies until either side closes.
async fn copy(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
