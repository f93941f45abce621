//! A client loop through an edge, for the rollout and node-kill tests:
//! threads send GETs one after another (each on a fresh connection, so a
//! dead connection never hides behind keep-alive) and record every
//! outcome with its time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request's outcome: its status, or why there was none.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub at: Instant,
    pub result: Result<(u16, String), String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((200, _)))
    }
}

/// One GET, tolerant of every failure.
pub fn try_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no whole head")?;
    let status = (head.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Client threads looping GETs until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `threads` loops of GET `path` on the edge at `port`.
    pub fn start(port: u16, path: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, seen, path) = (stop.clone(), seen.clone(), path.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let result = try_get(port, &path);
                        let at = Instant::now();
                        seen.lock().unwrap().push(Outcome { at, result });
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    /// Outcomes so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops the loops; every outcome, in order of completion.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a client thread");
        }
        let mut all = self.seen.lock().unwrap().clone();
        all.sort_by_key(|o| o.at);
        all
    }
}
