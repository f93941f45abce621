//! Which members can read a job record before it is written.
//!
//! A job with `[edge]` settings is written as job record format 3, which a
//! node of the release before (r1, records version 1) cannot read: it
//! would skip the job, stop routing it at its edge and stop running its
//! instances there. So while such a node is a live member, a write that
//! *introduces* format 3 (a new job, a new version, a start) is refused,
//! naming the nodes to upgrade; a write that keeps a record as it already
//! was (scale, stop) is not, since it takes nothing away from them. A
//! member whose manifest is not known yet is not held against the write:
//! membership reports members it cannot agree with on their own.

use myco_proto::compat::{Speaks, records_version_of_job_format};

/// One member as this decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    /// Its name (for the message).
    pub name: &'a str,
    /// Alive or suspect (a down or departed node reads nothing now).
    pub live: bool,
    /// What its manifest says it speaks, once known.
    pub speaks: Option<&'a Speaks>,
}

/// The live members that cannot read a job record of `format`, by name,
/// in the order given. Empty: the write may go ahead.
pub fn unable_to_read<'a>(
    format: u8,
    members: impl IntoIterator<Item = Reader<'a>>,
) -> Vec<&'a str> {
    let needs = records_version_of_job_format(format);
    members
        .into_iter()
        .filter(|m| m.live && m.speaks.is_some_and(|s| !s.records.reads(needs)))
        .map(|m| m.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use myco_proto::compat::{R1, THIS_BUILD};
    use myco_proto::job::{JOB_RECORD_FORMAT, JOB_RECORD_FORMAT_EDGE};

    use super::*;

    fn reader<'a>(name: &'a str, live: bool, speaks: Option<&'a Speaks>) -> Reader<'a> {
        Reader { name, live, speaks }
    }

    #[test]
    fn format_3_waits_for_every_live_r1_node() {
        let mesh = [
            reader("new-1", true, Some(&THIS_BUILD)),
            reader("old-1", true, Some(&R1)),
            reader("new-2", true, Some(&THIS_BUILD)),
            reader("old-2", true, Some(&R1)),
        ];
        assert_eq!(
            unable_to_read(JOB_RECORD_FORMAT_EDGE, mesh),
            ["old-1", "old-2"]
        );
        // Format 2 is read by all of them.
        assert!(unable_to_read(JOB_RECORD_FORMAT, mesh).is_empty());
    }

    #[test]
    fn upgraded_down_and_unknown_members_do_not_hold_it_back() {
        let mesh = [
            reader("new", true, Some(&THIS_BUILD)),
            reader("old-but-down", false, Some(&R1)),
            reader("not-known-yet", true, None),
        ];
        assert!(unable_to_read(JOB_RECORD_FORMAT_EDGE, mesh).is_empty());
    }
}
