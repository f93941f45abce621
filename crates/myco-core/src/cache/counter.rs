//! Counters (Redis `INCR`): adding to the integer a key holds. The sum is
//! decided where the key's versions meet, on its primary, so increments
//! from every node are applied one after another and none is lost to
//! last-writer-wins; the new version then goes to the other owners like
//! any write.

use myco_proto::Timestamp;
use myco_proto::cache::{CacheEntry, CounterError};

/// The version that adds `by` to `current` at `now_ms`, and the sum.
///
/// A live value must be a decimal 64-bit integer (an optional `-`, then
/// digits: what `INCR` itself writes); it keeps its expiry. No value
/// (never set, deleted, expired) counts as 0, and the new counter lives
/// `ttl_ms` (0: for ever). `ts` is the writer's clock; the version gets a
/// timestamp past `current`'s whatever the clocks say, so it wins.
pub fn increment(
    current: Option<&CacheEntry>,
    by: i64,
    ts: Timestamp,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<(CacheEntry, i64), CounterError> {
    let live = current.filter(|e| !e.is_expired(now_ms));
    let (start, expires_at_ms) = match live.and_then(|e| e.value.as_deref().map(|v| (v, e))) {
        Some((value, entry)) => (parse(value)?, entry.expires_at_ms),
        None => (0, (ttl_ms > 0).then(|| now_ms.saturating_add(ttl_ms))),
    };
    let sum = start.checked_add(by).ok_or(CounterError::Overflow)?;
    let ts = match current {
        Some(c) if c.ts >= ts => Timestamp {
            wall_ms: c.ts.wall_ms,
            logical: c.ts.logical.saturating_add(1),
            node: ts.node,
        },
        _ => ts,
    };
    let entry = CacheEntry {
        ts,
        value: Some(sum.to_string().into_bytes()),
        expires_at_ms,
    };
    Ok((entry, sum))
}

/// The newer of two versions of a key (by timestamp): what the primary
/// holds and what the asker found on the key's old owner during a move.
pub fn newer<'a>(a: Option<&'a CacheEntry>, b: Option<&'a CacheEntry>) -> Option<&'a CacheEntry> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.ts > x.ts { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// A counter's value: an optional `-` and 1 to 19 digits, in range.
/// Stricter than `str::parse` (no `+`), as Redis is.
pub fn parse(value: &[u8]) -> Result<i64, CounterError> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(CounterError::NotInteger);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CounterError::NotInteger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::NodeId;

    fn ts(wall_ms: u64, logical: u32, node: u8) -> Timestamp {
        Timestamp {
            wall_ms,
            logical,
            node: NodeId([node; 8]),
        }
    }

    fn entry(value: Option<&str>, at: Timestamp, expires_at_ms: Option<u64>) -> CacheEntry {
        CacheEntry {
            ts: at,
            value: value.map(|v| v.as_bytes().to_vec()),
            expires_at_ms,
        }
    }

    #[test]
    fn nothing_counts_as_zero_and_takes_the_bucket_ttl() {
        let (e, n) = increment(None, 5, ts(100, 0, 1), 100, 1_000).unwrap();
        assert_eq!((n, e.value.as_deref()), (5, Some(&b"5"[..])));
        assert_eq!(e.expires_at_ms, Some(1_100));
        // A tombstone and an expired value are nothing too.
        let gone = entry(None, ts(90, 0, 2), Some(10_000));
        assert_eq!(
            increment(Some(&gone), -2, ts(100, 0, 1), 100, 0).unwrap().1,
            -2
        );
        let old = entry(Some("41"), ts(90, 0, 2), Some(100));
        let (e, n) = increment(Some(&old), 1, ts(100, 0, 1), 100, 0).unwrap();
        assert_eq!((n, e.expires_at_ms), (1, None));
    }

    #[test]
    fn a_live_counter_keeps_its_expiry_and_gets_a_newer_timestamp() {
        // Written by a node whose clock is ahead of this one's.
        let held = entry(Some("41"), ts(500, 3, 2), Some(9_000));
        let (e, n) = increment(Some(&held), 1, ts(100, 0, 1), 100, 1_000).unwrap();
        assert_eq!(n, 42);
        assert_eq!(e.expires_at_ms, Some(9_000));
        assert!(e.ts > held.ts, "{:?} must win over {:?}", e.ts, held.ts);
        assert_eq!(e.ts.node, NodeId([1; 8]));
    }

    #[test]
    fn the_newer_version_is_added_to() {
        let held = entry(Some("1"), ts(200, 0, 1), None);
        let moved = entry(Some("41"), ts(150, 0, 2), None);
        assert_eq!(newer(Some(&held), Some(&moved)), Some(&held));
        assert_eq!(newer(Some(&moved), Some(&held)), Some(&held));
        assert_eq!(newer(None, Some(&moved)), Some(&moved));
        assert_eq!(newer(Some(&moved), None), Some(&moved));
        assert_eq!(newer(None, None), None);
        let (e, n) = increment(newer(None, Some(&moved)), 1, ts(100, 0, 1), 100, 0).unwrap();
        assert_eq!(n, 42);
        assert!(e.ts > moved.ts);
    }

    #[test]
    fn values_that_are_not_integers_and_overflows_are_refused() {
        for bad in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "abc",
            "99999999999999999999",
        ] {
            let held = entry(Some(bad), ts(1, 0, 2), None);
            assert_eq!(
                increment(Some(&held), 1, ts(2, 0, 1), 2, 0),
                Err(CounterError::NotInteger),
                "{bad:?}"
            );
        }
        let max = entry(Some(&i64::MAX.to_string()), ts(1, 0, 2), None);
        assert_eq!(
            increment(Some(&max), 1, ts(2, 0, 1), 2, 0),
            Err(CounterError::Overflow)
        );
        let min = entry(Some(&i64::MIN.to_string()), ts(1, 0, 2), None);
        assert_eq!(
            increment(Some(&min), 1, ts(2, 0, 1), 2, 0).unwrap().1,
            i64::MIN + 1
        );
        assert_eq!(parse(b"-0"), Ok(0));
        assert_eq!(parse(b"007"), Ok(7));
    }
}
