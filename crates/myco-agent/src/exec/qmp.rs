//! QEMU's machine protocol (QMP) on a microVM instance's socket
//! ([`QMP_SOCKET`]): the clean stop ([`powerdown`], an ACPI power button
//! press) and the guest side of a `tcp` health check ([`guest_side`]).
//!
//! Why the health check needs QEMU: user-mode networking (slirp) accepts
//! a connection on the forwarded host port at once, then connects to the
//! guest. So a plain connect succeeds before the guest listens, even
//! before its network is up. Slirp's own table (`info usernet`) tells:
//! its connection to the guest is `SYN_SENT` while the guest has not
//! answered, `ESTABLISHED` once a guest program accepted it; a guest that
//! is up but has nothing on the port resets it, and slirp closes ours.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The QMP socket, relative to the instance directory.
pub const QMP_SOCKET: &str = ".myco/qmp.sock";
/// Longest answer read from QMP (an `info usernet` of a busy guest is a
/// few KiB): QEMU is trusted, but a bound keeps the agent's memory flat.
const MAX_ANSWER: usize = 64 * 1024;

/// Asks the guest of the instance in `dir` to power down (ACPI) through
/// QMP; false when QEMU does not answer (already gone, or not a microVM).
pub async fn powerdown(dir: &Path) -> bool {
    match command(dir, "{\"execute\":\"system_powerdown\"}").await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "QMP powerdown failed");
            false
        }
    }
}

/// Where slirp's connections to the guest's `port` stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestSide {
    /// One is still waiting for the guest to answer (`SYN_SENT`): the
    /// guest's network is not up yet, or it is slow to answer.
    Waiting,
    /// A guest program accepted one (`ESTABLISHED`), none is waiting.
    Accepted,
    /// Neither (all closed, or slirp lists none).
    None,
}

/// Asks QEMU of the instance in `dir` where slirp's connections to the
/// guest's `port` stand.
pub async fn guest_side(dir: &Path, port: u16) -> std::io::Result<GuestSide> {
    let answer = command(
        dir,
        "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info usernet\"}}",
    )
    .await?;
    let text: serde_json::Value = serde_json::from_str(&answer)?;
    let table = text["return"].as_str().unwrap_or_default();
    Ok(classify_usernet(table, port))
}

/// Reads `info usernet`: lines `TCP[STATE] FD SRC-ADDR SRC-PORT DST-ADDR
/// DST-PORT RECVQ SENDQ`; the forward's own line is `HOST_FORWARD`.
pub fn classify_usernet(table: &str, port: u16) -> GuestSide {
    let port = port.to_string();
    let mut accepted = false;
    for line in table.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || cols[5] != port {
            continue;
        }
        match cols[0] {
            "TCP[SYN_SENT]" => return GuestSide::Waiting,
            "TCP[ESTABLISHED]" => accepted = true,
            _ => {}
        }
    }
    if accepted {
        GuestSide::Accepted
    } else {
        GuestSide::None
    }
}

/// Runs one QMP command (JSON) on the instance in `dir`, within 2 s;
/// its answer line (events before it skipped).
async fn command(dir: &Path, json: &str) -> std::io::Result<String> {
    let path = dir.join(QMP_SOCKET);
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no QMP socket: not a microVM instance, or QEMU is gone",
        ));
    }
    match tokio::time::timeout(Duration::from_secs(2), exchange(&path, json)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "QMP did not answer within 2 s",
        )),
    }
}

async fn exchange(path: &Path, json: &str) -> std::io::Result<String> {
    // A socket path is limited to 108 bytes; data dirs can be longer. The
    // directory's descriptor under /proc makes a short path to the same file.
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?;
    let short = format!(
        "/proc/self/fd/{}/qmp.sock",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    let stream = tokio::net::UnixStream::connect(&short).await?;
    drop(dir);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_ANSWER as u64)).lines();
    // Greeting, then capabilities negotiation, then the command.
    lines.next_line().await?;
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .await?;
    lines.next_line().await?;
    write.write_all(json.as_bytes()).await?;
    write.write_all(b"\n").await?;
    // Asynchronous events (`"event"`) may come before the answer.
    while let Some(line) = lines.next_line().await? {
        if line.contains("\"return\"") || line.contains("\"error\"") {
            return Ok(line);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "QMP closed without an answer",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `info usernet` of QEMU 7.2 (Debian 12) while a guest boots, and
    /// once its server accepted.
    const BOOTING: &str = "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[SYN_SENT]      13       127.0.0.1 25952       10.0.2.15 25952     0     0\r\n  TCP[HOST_FORWARD]   8               * 25952       10.0.2.15 25952     0     0\r\n";
    const UP: &str = "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[ESTABLISHED]   13       127.0.0.1 25952       10.0.2.15 25952     0     0\r\n  TCP[TIME_WAIT]     14       127.0.0.1 25952       10.0.2.15 25952     0     0\r\n  TCP[HOST_FORWARD]   8               * 25952       10.0.2.15 25952     0     0\r\n";

    #[test]
    fn slirp_waiting_on_the_guest_is_not_an_accepted_connection() {
        assert_eq!(classify_usernet(BOOTING, 25952), GuestSide::Waiting);
        assert_eq!(classify_usernet(UP, 25952), GuestSide::Accepted);
        // Another port's connections say nothing of this one.
        assert_eq!(classify_usernet(UP, 25953), GuestSide::None);
        let both = format!(
            "{UP}  TCP[SYN_SENT]      15       127.0.0.1 25952       10.0.2.15 25952     0     0\n"
        );
        assert_eq!(classify_usernet(&both, 25952), GuestSide::Waiting);
        assert_eq!(classify_usernet("", 25952), GuestSide::None);
    }
}
