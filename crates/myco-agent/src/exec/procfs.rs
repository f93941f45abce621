//! The few facts read from `/proc`: a process's state, group, session and
//! start time, and the boot id. Reads only; nothing here writes.

use std::fs;
use std::io;

/// The fields of `/proc/PID/stat` that supervision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// Start time in clock ticks after boot: with the boot id, this tells a
    /// process from a later one that reused its pid.
    pub start_time: u64,
}

impl Stat {
    /// A zombie has exited and only waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 precede starttime (field 22).
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        session,
        start_time,
    })
}

/// Reads a process's stat; `Ok(None)` when no such process exists.
pub(crate) fn stat(pid: u32) -> io::Result<Option<Stat>> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => Ok(parse_stat(&text)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound) || e.raw_os_error() == Some(3) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// This boot's id, so a record from before a reboot is never taken for a
/// live process.
pub(crate) fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// Live (not zombie) processes whose group is `pgid` or whose session is
/// `sid`: what is left of an instance when it has no cgroup. A process that
/// left both (a double-forked daemon) is only caught by a cgroup.
pub(crate) fn session_members(pgid: i32, sid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let s = stat(pid).ok()??;
            (!s.is_zombie() && (s.pgrp == pgid || s.session == sid)).then_some(pid as i32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.state, b'S');
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.session, 4242);
        assert_eq!(s.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_own_stat_and_boot_id() {
        let me = stat(std::process::id()).unwrap().expect("we exist");
        assert!(me.start_time > 0);
        assert!(!me.is_zombie());
        assert_eq!(boot_id().unwrap().len(), 36);
        assert!(stat(u32::MAX - 1).unwrap().is_none());
    }
}
