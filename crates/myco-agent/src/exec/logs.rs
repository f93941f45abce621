//! Instance logs: stdout and stderr in size-bounded, rotated files in the
//! instance's `.myco/` directory, and readers (tail, follow) with bounded
//! memory.
//!
//! **Why files and copy-truncate.** The child's stdout and stderr are files
//! opened with `O_APPEND`, not pipes: with a pipe whose only reader is the
//! agent, a slow agent would block the instance once the pipe fills, and a
//! dead agent would kill it with SIGPIPE. A file never blocks the writer
//! and outlives the agent. The agent cannot swap the child's descriptor, so
//! it rotates by copy-truncate: copy `stdout.log` to `stdout.log.1` (older
//! ones shift up), copy again whatever was appended meanwhile, then truncate
//! the live file to zero; `O_APPEND` makes the child's next write land at
//! the new end, so no hole appears. Lines the child writes between the last
//! catch-up read and the truncate (microseconds) are lost: that is the
//! price of needing no helper process. Between two rotation ticks a file may
//! grow past its limit by what was written in that interval.
//!
//! Rotation checks only `stat` the files: a node whose instances log
//! nothing writes nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::instance_dir::meta_dir;

/// Longest line handed out; longer ones are cut (the rest is dropped).
pub const MAX_LINE: usize = 16 * 1024;
/// Most lines [`tail`] returns.
pub const MAX_TAIL_LINES: usize = 10_000;
/// Most bytes [`tail`] reads from one file.
const MAX_TAIL_BYTES: u64 = 4 << 20;
/// Most bytes [`Follow`] reads per poll.
const MAX_FOLLOW_READ: u64 = 1 << 20;
/// How often [`Follow::next`] looks for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Per-stream log bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate the live file once it is larger than this.
    pub max_bytes: u64,
    /// Files kept per stream, the live one included (at least 1).
    pub files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 10 << 20,
            files: 3,
        }
    }
}

/// Which output of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// Both, in the order logs are shown.
    pub const ALL: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

    fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout.log",
            LogStream::Stderr => "stderr.log",
        }
    }
}

/// Whether `path` is one of an instance's log files, live or rotated.
pub fn is_log_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| LogStream::ALL.iter().any(|s| n.starts_with(s.file_name())))
}

/// The live log file of a stream; rotated ones add `.1`, `.2`, ...
pub fn log_path(instance_dir: &Path, stream: LogStream) -> PathBuf {
    meta_dir(instance_dir).join(stream.file_name())
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens the file a child writes a stream to: append-only, created 0640.
pub fn open_for_child(instance_dir: &Path, stream: LogStream) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(log_path(instance_dir, stream))
}

/// Rotates each stream whose live file is over the limit. Only `stat`s
/// otherwise. Returns how many files were rotated.
pub fn rotate_if_needed(instance_dir: &Path, limits: &LogLimits) -> io::Result<usize> {
    let mut rotated_count = 0;
    for stream in LogStream::ALL {
        let path = log_path(instance_dir, stream);
        match fs::metadata(&path) {
            Ok(m) if m.len() > limits.max_bytes => {
                rotate(&path, limits.files)?;
                rotated_count += 1;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rotated_count)
}

/// Copy-truncate, as the module doc explains.
fn rotate(path: &Path, files: u32) -> io::Result<()> {
    let mut live = File::open(path)?;
    if files <= 1 {
        return OpenOptions::new().write(true).open(path)?.set_len(0);
    }
    let tmp = rotated(path, 0);
    let mut copy = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    io::copy(&mut live, &mut copy)?;
    for n in (1..files - 1).rev() {
        match fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // `.1` is complete before the live file shrinks, so a follower that
    // sees the new `.1` finds everything it had not read yet there.
    fs::rename(&tmp, rotated(path, 1))?;
    io::copy(&mut live, &mut copy)?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    copy.flush()
}

/// Reads the last `n` lines of a stream (at most [`MAX_TAIL_LINES`]),
/// reaching into rotated files when the live one has fewer.
pub fn tail(instance_dir: &Path, stream: LogStream, n: usize) -> io::Result<Vec<String>> {
    tail_before(&log_path(instance_dir, stream), None, n)
}

/// [`tail`] of the live file's first `end` bytes (all when `None`).
fn tail_before(live: &Path, end: Option<u64>, n: usize) -> io::Result<Vec<String>> {
    let n = n.min(MAX_TAIL_LINES);
    let live = live.to_path_buf();
    let mut lines: Vec<String> = Vec::new();
    for k in 0u32.. {
        if lines.len() >= n {
            break;
        }
        let path = if k == 0 {
            live.clone()
        } else {
            rotated(&live, k)
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let mut len = file.metadata()?.len();
        if k == 0 {
            len = len.min(end.unwrap_or(u64::MAX));
        }
        let start = len.saturating_sub(MAX_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut bytes)?;
        let mut older = split_lines(&bytes, start > 0);
        let want = n - lines.len();
        if older.len() > want {
            older.drain(..older.len() - want);
        }
        older.append(&mut lines);
        lines = older;
        if start > 0 {
            // The file was longer than one read: older files are not reached.
            break;
        }
    }
    Ok(lines)
}

/// Splits bytes into lines (lossy UTF-8, cut at [`MAX_LINE`]); a first
/// partial line (when reading from the middle) is dropped.
fn split_lines(bytes: &[u8], skip_first: bool) -> Vec<String> {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    if skip_first && !parts.is_empty() {
        parts.remove(0);
    }
    parts.into_iter().map(line_of).collect()
}

fn line_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE)]).into_owned()
}

/// A reader of new lines of a stream that carries on across rotations.
///
/// It notices a rotation by the inode of `.1` changing (each rotation
/// renames a fresh copy there), reads the rest of what it had not seen from
/// `.1`, and continues at the start of the live file. Two rotations within
/// one poll lose the lines of the middle one. Memory is bounded by
/// [`MAX_LINE`] for a partial line plus one read of at most 1 MiB.
#[derive(Debug)]
pub struct Follow {
    live: PathBuf,
    offset: u64,
    rotated_ino: Option<u64>,
    partial: Vec<u8>,
}

impl Follow {
    /// Starts following at the current end of the live file.
    pub fn new(instance_dir: &Path, stream: LogStream) -> Self {
        let live = log_path(instance_dir, stream);
        let offset = fs::metadata(&live).map(|m| m.len()).unwrap_or(0);
        let rotated_ino = fs::metadata(rotated(&live, 1)).ok().map(|m| m.ino());
        Follow {
            live,
            offset,
            rotated_ino,
            partial: Vec::new(),
        }
    }

    /// The last `n` lines, and a follower that continues exactly after
    /// them: no line is missed or repeated between the two.
    pub fn with_tail(
        instance_dir: &Path,
        stream: LogStream,
        n: usize,
    ) -> io::Result<(Vec<String>, Self)> {
        let follow = Follow::new(instance_dir, stream);
        let lines = tail_before(&follow.live, Some(follow.offset), n)?;
        Ok((lines, follow))
    }

    /// New complete lines since the last call (possibly none).
    pub fn poll_lines(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let ino = fs::metadata(rotated(&self.live, 1)).ok().map(|m| m.ino());
        if ino.is_some() && ino != self.rotated_ino {
            self.rotated_ino = ino;
            let old = rotated(&self.live, 1);
            self.read_from(&old, &mut lines)?;
            self.offset = 0;
        }
        let live = self.live.clone();
        match fs::metadata(&live) {
            // Truncated without a `.1` we could see (a single-file limit).
            Ok(m) if m.len() < self.offset => self.offset = 0,
            _ => {}
        }
        self.read_from(&live, &mut lines)?;
        Ok(lines)
    }

    fn read_from(&mut self, path: &Path, lines: &mut Vec<String>) -> io::Result<()> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        let read = file.take(MAX_FOLLOW_READ).read_to_end(&mut bytes)?;
        self.offset += read as u64;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            if let Some(line) = chunk.strip_suffix(b"\n") {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                self.partial
                    .extend_from_slice(&line[..line.len().min(room)]);
                lines.push(line_of(&self.partial));
                self.partial.clear();
            } else if self.partial.len() < MAX_LINE {
                let room = MAX_LINE - self.partial.len();
                self.partial
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        Ok(())
    }

    /// Waits until there are new lines, polling every [`FOLLOW_POLL`].
    pub async fn next(&mut self) -> io::Result<Vec<String>> {
        loop {
            let lines = self.poll_lines()?;
            if !lines.is_empty() {
                return Ok(lines);
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_cuts_lines() {
        assert_eq!(split_lines(b"a\nb\n", false), ["a", "b"]);
        assert_eq!(split_lines(b"xa\nb", true), ["b"]);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(split_lines(&long, false)[0].len(), MAX_LINE);
    }
}
