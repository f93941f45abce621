//! `myco demo-serve`: the workload `myco dev` deploys. A tiny HTTP server
//! on `$PORT` that answers `/` with its identity as JSON (`job`,
//! `instance`, `node` from `MYCO_JOB`, `MYCO_INSTANCE`, `MYCO_NODE`) and
//! `/health` with 200, so the quick start shows which instance on which
//! node answered. One connection at a time, each bounded by a timeout: it
//! is a demo, not a web server.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// How long one client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves until killed.
pub fn serve() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set (myco sets it for every instance)")?
        .parse()
        .context("PORT is not a port number")?;
    let identity = serde_json::json!({
        "job": std::env::var("MYCO_JOB").unwrap_or_default(),
        "instance": std::env::var("MYCO_INSTANCE").unwrap_or_default(),
        "node": std::env::var("MYCO_NODE").unwrap_or_default(),
    })
    .to_string();
    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("listening on port {port}"))?;
    eprintln!("demo-serve listening on :{port}");
    // A failed connection is that client's problem, not the server's.
    for conn in listener.incoming().flatten() {
        let _ = answer(conn, &identity);
    }
    Ok(())
}

fn answer(conn: TcpStream, identity: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head is read and dropped, up to a bound.
    let mut seen = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        seen += n;
        if n == 0 || line == "\r\n" || line == "\n" || seen > MAX_HEAD {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/health" => ("200 OK", "{\"status\":\"ok\"}".to_string()),
        "/" => ("200 OK", identity.to_string()),
        _ => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
