//! Which wire and record formats a build speaks, and how two builds agree.
//!
//! Operators upgrade one machine at a time, so a mesh runs two releases at
//! once for a while. Every format that crosses a node boundary carries a
//! version, grouped in three families:
//!
//! - **datagram**: the sealed envelope and the frames inside it
//!   ([`crate::envelope::ENVELOPE_VERSION`] covers the frame set);
//! - **stream**: stream frames and every channel's messages (sync, blob,
//!   logs, cache, msg); agreed per connection in the TLS handshake (ALPN
//!   `myco-streams/<version>`, the highest both list);
//! - **records**: values kept in replicated state (job, instance, gc,
//!   spore and bucket records), which every node stores and syncs as is.
//!
//! The policy (ARCHITECTURE.md, "Upgrades"): release N reads the versions
//! of release N-1 and its own, and writes the highest version that every
//! member involved reads. A connection writes what its handshake agreed; a
//! datagram or a replicated record, which any member may read, is written
//! at the lowest `max` among the live members' manifests, so a new format
//! turns on by itself once the last node is upgraded. A member whose range
//! does not meet ours is two releases apart: it is reported, never guessed.

use serde::{Deserialize, Serialize};

use crate::envelope::ENVELOPE_VERSION;
use crate::sync::STREAM_VERSION;

/// An inclusive range of versions of one format family.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Range {
    /// The oldest version read.
    pub min: u8,
    /// The newest version read and written.
    pub max: u8,
}

impl Range {
    /// Exactly one version.
    pub const fn only(version: u8) -> Range {
        Range {
            min: version,
            max: version,
        }
    }

    /// Whether `version` is in the range.
    pub fn reads(&self, version: u8) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// The highest version both ranges hold, if they meet.
    pub fn agree(&self, other: &Range) -> Option<u8> {
        let high = self.max.min(other.max);
        (high >= self.min.max(other.min)).then_some(high)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..={}", self.min, self.max)
        }
    }
}

/// The versions a node reads, per family; carried in its manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Speaks {
    /// Datagram envelope and frames.
    pub datagram: Range,
    /// Stream frames and channel messages.
    pub stream: Range,
    /// Replicated records.
    pub records: Range,
}

/// What r1, the first release with version ranges, speaks: one version
/// of everything (its manifests carry exactly this; fixture
/// `r1/frame_manifest.hex`).
pub const R1: Speaks = Speaks {
    datagram: Range::only(ENVELOPE_VERSION),
    stream: Range::only(STREAM_VERSION),
    records: Range::only(1),
};

/// Records version 2: job record format 3 (a job with `[edge]` settings,
/// `job::JOB_RECORD_FORMAT_EDGE`) is read. Records version 1 reads job
/// record format 2 only, and every other record as r1 wrote it.
pub const RECORDS_EDGE_JOBS: u8 = 2;

/// Stream version 4: a connection carries answers back. The server may
/// write a handler's answer to a request on the connection the request
/// came in on, and the client reads them there. Messages and frames are
/// as in version 3; a version 3 connection is one-way, client to server.
pub const STREAM_ANSWERS_BACK: u8 = 4;

/// This build: r1's ranges, records widened to `1..=2` for job record
/// format 3 (so a writer can tell which members read it) and streams to
/// `3..=4` for answers on the asking connection. The next release widens
/// each range it changes to `N-1..=N`.
pub const THIS_BUILD: Speaks = Speaks {
    stream: Range {
        min: STREAM_VERSION,
        max: STREAM_ANSWERS_BACK,
    },
    records: Range {
        min: 1,
        max: RECORDS_EDGE_JOBS,
    },
    ..R1
};

/// The records version a reader needs for job records of `format`.
pub fn records_version_of_job_format(format: u8) -> u8 {
    if format >= crate::job::JOB_RECORD_FORMAT_EDGE {
        RECORDS_EDGE_JOBS
    } else {
        1
    }
}

/// The family of a format, for messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// See [`Speaks::datagram`].
    Datagram,
    /// See [`Speaks::stream`].
    Stream,
    /// See [`Speaks::records`].
    Records,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 3] = [Family::Datagram, Family::Stream, Family::Records];

    /// The family's name in messages and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Family::Datagram => "datagram",
            Family::Stream => "stream",
            Family::Records => "records",
        }
    }
}

impl Speaks {
    /// The range of one family.
    pub fn range(&self, family: Family) -> Range {
        match family {
            Family::Datagram => self.datagram,
            Family::Stream => self.stream,
            Family::Records => self.records,
        }
    }

    /// The first family in which `peer` and this node share no version.
    pub fn incompatible_with(&self, peer: &Speaks) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|&f| self.range(f).agree(&peer.range(f)).is_none())
    }
}

/// The version of `family` to write so that every member reads it: the
/// lowest of the versions this node agrees on with each member. Members
/// whose range does not meet ours are skipped (they are reported through
/// [`Speaks::incompatible_with`]); without members it is our own newest.
pub fn mesh_writes<'a>(
    own: &Speaks,
    family: Family,
    members: impl IntoIterator<Item = &'a Speaks>,
) -> u8 {
    let own = own.range(family);
    members
        .into_iter()
        .filter_map(|m| own.agree(&m.range(family)))
        .fold(own.max, u8::min)
}

/// The ALPN name of stream version `version`.
pub fn stream_alpn(version: u8) -> Vec<u8> {
    format!("myco-streams/{version}").into_bytes()
}

/// The ALPN names to offer for `range`, newest first (a TLS server takes
/// the first of its own list the client offers; both lists run newest
/// first, so the pair agrees on the highest version both speak).
pub fn stream_alpns(range: Range) -> Vec<Vec<u8>> {
    (range.min..=range.max).rev().map(stream_alpn).collect()
}

/// The stream version an agreed ALPN name stands for.
pub fn stream_version_of(alpn: &[u8]) -> Option<u8> {
    std::str::from_utf8(alpn)
        .ok()?
        .strip_prefix("myco-streams/")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaks(stream: (u8, u8)) -> Speaks {
        Speaks {
            stream: Range {
                min: stream.0,
                max: stream.1,
            },
            ..THIS_BUILD
        }
    }

    #[test]
    fn ranges_agree_on_the_highest_common_version() {
        let new = Range { min: 3, max: 4 };
        assert_eq!(new.agree(&Range::only(3)), Some(3));
        assert_eq!(new.agree(&Range { min: 4, max: 5 }), Some(4));
        assert_eq!(new.agree(&new), Some(4));
        assert_eq!(new.agree(&Range::only(2)), None);
        assert_eq!(new.agree(&Range::only(5)), None);
    }

    #[test]
    fn the_mesh_writes_what_its_oldest_member_reads() {
        let next = speaks((3, 4));
        let old = speaks((3, 3));
        assert_eq!(mesh_writes(&next, Family::Stream, []), 4);
        assert_eq!(mesh_writes(&next, Family::Stream, [&next, &old]), 3);
        // Once the last old node is gone, the new format turns on.
        assert_eq!(mesh_writes(&next, Family::Stream, [&next, &next]), 4);
        // A member two releases behind is skipped here and reported.
        let ancient = speaks((1, 2));
        assert_eq!(mesh_writes(&next, Family::Stream, [&ancient, &next]), 4);
        assert_eq!(next.incompatible_with(&ancient), Some(Family::Stream));
        assert_eq!(next.incompatible_with(&old), None);
    }

    #[test]
    fn alpn_names_run_newest_first_and_parse_back() {
        let names = stream_alpns(Range { min: 3, max: 4 });
        assert_eq!(
            names,
            vec![b"myco-streams/4".to_vec(), b"myco-streams/3".to_vec()]
        );
        assert_eq!(stream_version_of(b"myco-streams/3"), Some(3));
        assert_eq!(stream_version_of(b"myco-streams/x"), None);
        assert_eq!(stream_version_of(b"h2"), None);
    }
}
