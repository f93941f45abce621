//! KV write throughput against a running agent, with a baseline measured in
//! the same run: the same clients doing `GET /health` (same HTTP path, no
//! state, no disk), so the ratio shows what replication and durability cost.
//!
//! ```sh
//! cargo run --release --example kv_bench -- http://127.0.0.1:7070 TOKEN [CLIENTS] [SECONDS] [client]
//! ```
//!
//! By default each thread drives one keep-alive connection with a minimal
//! hand-written HTTP/1.1 loop, so the figures measure the agent, not the
//! client. With `client` as the last argument the same loops go through
//! `myco_client::Client` instead (ureq, one connection pool per thread),
//! which shows what the shared client costs on top.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect to the agent");
        s.set_nodelay(true).ok();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// One request on a keep-alive connection; returns the status code.
    fn request(&mut self, method: &str, path: &str, token: &str, body: &[u8]) -> u16 {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut sink = vec![0u8; len];
        self.reader.read_exact(&mut sink).unwrap();
        status
    }
}

/// One request through the typed client; whether it was acknowledged.
fn client_request(c: &myco_client::Client, write: bool, key: &str, i: u64) -> bool {
    if write {
        c.kv_put(key, format!("value-{i}").as_bytes()).is_ok()
    } else {
        c.health().is_ok()
    }
}

fn run(addr: &str, token: &str, clients: usize, secs: u64, write: bool, typed: bool) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, token, stop, ok, bad) = (
                addr.to_string(),
                token.to_string(),
                stop.clone(),
                ok.clone(),
                bad.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0u64;
                if typed {
                    let client = myco_client::Client::new(&addr).with_token(Some(token));
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("bench/c{c}/k{}", i % 1000);
                        let acked = client_request(&client, write, &key, i);
                        if acked { &ok } else { &bad }.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    return;
                }
                let mut conn = Conn::open(&addr);
                while !stop.load(Ordering::Relaxed) {
                    let status = if write {
                        conn.request(
                            "PUT",
                            &format!("/v1/kv/bench/c{c}/k{}", i % 1000),
                            &token,
                            format!("value-{i}").as_bytes(),
                        )
                    } else {
                        conn.request("GET", "/health", &token, b"")
                    };
                    if status == 200 { &ok } else { &bad }.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    (
        ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        bad.load(Ordering::Relaxed),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: kv_bench API_URL TOKEN [CLIENTS] [SECONDS] [client]");
        std::process::exit(2);
    }
    let addr = args[1]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let token = &args[2];
    let clients = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
    let typed = args.get(5).is_some_and(|a| a == "client");
    let (base, base_bad) = run(&addr, token, clients, secs, false, typed);
    let (writes, bad) = run(&addr, token, clients, secs, true, typed);
    let via = if typed {
        "myco_client::Client"
    } else {
        "raw keep-alive loop"
    };
    println!("clients={clients} seconds={secs} via {via}");
    println!("baseline GET /health: {base:.0} req/s ({base_bad} non-200)");
    println!("durable PUT /v1/kv: {writes:.0} acknowledged writes/s ({bad} non-200)");
    println!("ratio writes/baseline: {:.2}", writes / base);
}
