//! Helpers of the edge end-to-end tests: the workloads, a raw HTTP client
//! (so the Host header is exactly what a test says), the edge's routes and
//! metrics as an agent reports them.

#![allow(dead_code)]

pub mod load;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::Agent;

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
pub const READY: Duration = Duration::from_secs(40);

/// Echoes its node, instance, path, request headers and body (with a
/// length or chunked) as JSON; `GET /big/N` streams N bytes, `POST /sink`
/// counts what it is sent.
pub const ECHO: &str = r#"#!/usr/bin/env python3
import http.server, json, os, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body=b""):
        if self.path == "/health":
            out = b"ok"
        else:
            out = json.dumps({"node": os.environ["MYCO_NODE"], "instance": os.environ["MYCO_INSTANCE"],
                "path": self.path, "method": self.command, "body": body.decode(),
                "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self):
        if self.path.startswith("/big/"):
            n = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[:n])
                n -= min(n, 65536)
            return
        self.answer()
    def chunked(self):
        body = b""
        while True:
            n = int(self.rfile.readline().split(b";")[0], 16)
            if n == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += self.rfile.read(n)
            self.rfile.readline()
    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.answer(self.chunked())
        n = int(self.headers.get("Content-Length", "0"))
        if self.path == "/sink":
            got = 0
            while got < n:
                b = self.rfile.read(min(65536, n - got))
                if not b:
                    break
                got += len(b)
            out = json.dumps({"got": got}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.answer(self.rfile.read(n))
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// One answer from the edge.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on its own connection (raw, so the Host header is
/// exactly what the test says) and reads the whole answer.
pub fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the edge");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    c.write_all(req.as_bytes()).unwrap();
    read_answer(c)
}

/// Sends `POST path` with its body in `chunks`, chunked (no length), on
/// its own connection, and reads the whole answer.
pub fn send_chunked(port: u16, path: &str, chunks: &[&str]) -> Answer {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the edge");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for chunk in chunks {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    read_answer(c)
}

fn read_answer(mut c: TcpStream) -> Answer {
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).expect("reading the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

pub fn get(port: u16, path: &str) -> Answer {
    send(port, "GET", path, &[], "")
}

/// The ready endpoints of `job` in agent `a`'s `/mesh/routes`.
pub fn routed(a: &Agent, job: &str) -> Result<usize, String> {
    let v: Value = a.anon().get("/mesh/routes").map_err(|e| e.to_string())?;
    let routes = v["routes"].as_array().ok_or("no routes array")?;
    Ok(routes
        .iter()
        .find(|r| r["job"] == job)
        .and_then(|r| r["ready"].as_array())
        .map_or(0, |r| r.len()))
}

/// A counter of `a`'s `/metrics` (the first sample whose line starts so).
pub fn metric(a: &Agent, prefix: &str) -> f64 {
    let text = a.anon().metrics().expect("/metrics");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A WebSocket echo server (handshake and frames by hand: no library on
/// the test machines); plain GETs (the health check) get 200.
pub const WS_ECHO: &str = r#"#!/usr/bin/env python3
import base64, hashlib, os, socketserver
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(socketserver.StreamRequestHandler):
    def handle(self):
        lines = []
        while True:
            l = self.rfile.readline()
            if not l or l in (b"\r\n", b"\n"):
                break
            lines.append(l.decode().strip())
        hdrs = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
        if "sec-websocket-key" not in hdrs:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return
        accept = base64.b64encode(hashlib.sha1((hdrs["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        while True:
            h = self.rfile.read(2)
            if len(h) < 2:
                return
            op, n = h[0] & 0x0F, h[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            mask = self.rfile.read(4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            size = bytes([n]) if n < 126 else b"\x7e" + n.to_bytes(2, "big")
            self.wfile.write(bytes([0x80 | op]) + size + data)
class S(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A WebSocket session through the edge at `port` for `path`: the
/// handshake of RFC 6455 §1.3 (whose accept value is known), three echoed
/// text frames, and a close answered by a close. Panics on any difference.
pub fn ws_session(port: u16, path: &str) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut c).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("x-request-id:"), "{head}");
    for i in 0..3 {
        let text = format!("hello {i} through the edge");
        c.write_all(&ws_frame(&text)).unwrap();
        assert_eq!(ws_read(&mut c), (1, text));
    }
    c.write_all(&[0x88, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(ws_read(&mut c).0, 8, "no close frame back");
}

/// A masked client text frame (payload under 126 bytes).
pub fn ws_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame: opcode and payload (under 126 bytes).
pub fn ws_read(c: &mut TcpStream) -> (u8, String) {
    let mut h = [0u8; 2];
    c.read_exact(&mut h).expect("a frame header");
    let mut data = vec![0u8; usize::from(h[1] & 0x7F)];
    c.read_exact(&mut data).expect("a frame payload");
    (h[0] & 0x0F, String::from_utf8(data).expect("text"))
}

/// Reads a response head byte by byte (nothing after it is consumed).
pub fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).expect("a response head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Answers `{"version": V, "instance": ...}` on every path (env `V`).
pub const VERSIONED: &str = r#"#!/usr/bin/env python3
import http.server, json, os
V = os.environ.get("V", "?")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"version": V, "instance": os.environ["MYCO_INSTANCE"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Processes whose working directory is under `dir` (an agent's instances).
pub fn procs_in(dir: &std::path::Path) -> Vec<u32> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(&dir)
        {
            found.push(pid);
        }
    }
    found
}
