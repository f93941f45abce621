//! The control socket of a running `myco dev` (`DIR/control.sock`, in the
//! 0700 dev dir): `myco dev restart n3` from another terminal asks the
//! runner, which owns the processes, to act.
//!
//! The protocol is one request line, `restart NAME` or `stop NAME`, and
//! one answer line, `ok DETAILS` or `error WHY`, both bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The longest request or answer line.
pub const MAX_LINE: usize = 512;
/// How long either side waits for the other's line. A restart stops the
/// old process first, which may take the grace period.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// What a client may ask.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Start the node again, stopping it first if it runs.
    Restart(String),
    /// Stop the node gracefully.
    Stop(String),
}

impl Request {
    fn line(&self) -> String {
        match self {
            Request::Restart(n) => format!("restart {n}\n"),
            Request::Stop(n) => format!("stop {n}\n"),
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim().split_once(' ')? {
            ("restart", n) => Some(Request::Restart(n.trim().to_string())),
            ("stop", n) => Some(Request::Stop(n.trim().to_string())),
            _ => None,
        }
    }
}

/// Sends `req` to the runner whose socket is `sock`; its `ok` details.
pub fn request(sock: &Path, req: &Request) -> anyhow::Result<String> {
    let stream = UnixStream::connect(sock).with_context(|| {
        format!(
            "no myco dev answers at {} (is it still running?)",
            sock.display()
        )
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    (&stream).write_all(req.line().as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .context("myco dev did not answer")?;
    let answer = answer.trim();
    if let Some(ok) = answer.strip_prefix("ok") {
        return Ok(ok.trim().to_string());
    }
    bail!("{}", answer.strip_prefix("error ").unwrap_or(answer))
}

/// Reads one request from a client, within the time and size bounds.
pub async fn read_request(stream: &mut tokio::net::UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream).take(MAX_LINE as u64);
    match tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        _ => return Err("no request line".into()),
    }
    Request::parse(&line).ok_or_else(|| format!("unknown request {:?}", line.trim()))
}

/// Writes the answer line; a client that went away is not an error.
pub async fn answer(stream: &mut tokio::net::UnixStream, result: Result<String, String>) {
    let line = match result {
        Ok(ok) => format!("ok {ok}\n"),
        Err(e) => format!("error {e}\n"),
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(line.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [Request::Restart("n3".into()), Request::Stop("n12".into())] {
            assert_eq!(Request::parse(&r.line()), Some(r));
        }
        assert_eq!(Request::parse("reboot n1\n"), None);
        assert_eq!(Request::parse("restart\n"), None);
    }
}
