//! The lines of one instance's log files as `/v1/logs` shows them: tail
//! first, then (when following) new lines as they are written. Blocking
//! file reads: call from `spawn_blocking`.

use std::path::{Path, PathBuf};

use crate::exec::logs::{self, Follow, LogStream};

/// Most bytes of text in one answer's tail; older lines beyond it are cut.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Appends one line: `[ID] ` when labelled, `stderr: ` for stderr.
pub fn push_line(out: &mut String, id: Option<&str>, stream: LogStream, line: &str) {
    if let Some(id) = id {
        out.push('[');
        out.push_str(id);
        out.push_str("] ");
    }
    if stream == LogStream::Stderr {
        out.push_str("stderr: ");
    }
    out.push_str(line);
    out.push('\n');
}

/// Cuts `text` to its last [`MAX_ANSWER_BYTES`], at a line start.
fn bound(mut text: String) -> String {
    if text.len() <= MAX_ANSWER_BYTES {
        return text;
    }
    let mut cut = text.len() - MAX_ANSWER_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let start = text[cut..].find('\n').map_or(text.len(), |i| cut + i + 1);
    text.replace_range(..start, "");
    text
}

/// The readers of one instance.
#[derive(Debug)]
pub struct InstanceLog {
    id: String,
    label: bool,
    follows: Vec<(LogStream, Follow)>,
}

impl InstanceLog {
    /// The last `tail` lines of each stream (stdout's, then stderr's) and,
    /// when `follow`, readers that continue right after them.
    pub fn open(dir: &Path, id: &str, label: bool, tail: usize, follow: bool) -> (String, Self) {
        let labelled = label.then_some(id);
        let mut text = String::new();
        let mut follows = Vec::new();
        for stream in LogStream::ALL {
            let lines = if follow {
                let (lines, f) = Follow::with_tail(dir, stream, tail)
                    .unwrap_or_else(|_| (Vec::new(), Follow::new(dir, stream)));
                follows.push((stream, f));
                lines
            } else {
                logs::tail(dir, stream, tail).unwrap_or_default()
            };
            for line in lines {
                push_line(&mut text, labelled, stream, &line);
            }
        }
        let me = InstanceLog {
            id: id.to_string(),
            label,
            follows,
        };
        (bound(text), me)
    }

    /// New lines since the last call (possibly none).
    pub fn poll(&mut self) -> String {
        let mut text = String::new();
        let labelled = self.label.then_some(self.id.as_str());
        for (stream, f) in &mut self.follows {
            for line in f.poll_lines().unwrap_or_default() {
                push_line(&mut text, labelled, *stream, &line);
            }
        }
        text
    }
}

/// The directory of instance `id` under `data_dir`, if it is a valid id and
/// the directory exists.
pub fn existing_dir(data_dir: &Path, id: &str) -> Option<PathBuf> {
    crate::exec::instance_dir::instance_dir(data_dir, id)
        .ok()
        .filter(|d| d.is_dir())
}

/// Splits `text` into pieces of about `max` bytes at line ends (a line
/// longer than `max` is one piece).
pub fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() <= max {
            out.push(rest);
            break;
        }
        let mut at = max;
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let end = match rest[..at].rfind('\n') {
            Some(i) => i + 1,
            None => rest.find('\n').map_or(rest.len(), |i| i + 1),
        };
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_line_ends_and_cover_the_text() {
        let text = "aaa\nbb\ncccccc\nd\n";
        let parts = chunks(text, 8);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts, vec!["aaa\nbb\n", "cccccc\n", "d\n"]);
        assert!(chunks("", 8).is_empty());
    }

    #[test]
    fn bound_keeps_the_newest_whole_lines() {
        let line = "x".repeat(1023) + "\n";
        let text = line.repeat(5000) + "last\n";
        let cut = bound(text);
        assert!(cut.len() <= MAX_ANSWER_BYTES);
        assert!(cut.ends_with("last\n"));
        assert!(cut.starts_with('x'));
        assert_eq!(cut.len() % 1024, 5);
    }
}
