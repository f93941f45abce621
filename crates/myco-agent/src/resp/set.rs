//! `SET` and `EXPIRE`/`PEXPIRE`, whose options depend on the key's
//! current value or expiry: the options are parsed as Redis 7 parses them
//! (same errors), then, when one needs it, the key is read once
//! ([`Cache::get_with_expiry`](crate::cache::Cache::get_with_expiry)) and
//! written after. Checked, then written: not atomic against a writer on
//! another node (last writer wins), as the cache is not.

use super::commands::{Session, cache_error, int, text};
use super::parse::reply;
use crate::cache::wall_ms;

/// When a `SET`'s value expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifetime {
    /// No option: the bucket's TTL.
    Bucket,
    /// At this wall-clock ms (`EX`, `PX` from now; `EXAT`, `PXAT`).
    At(u64),
    /// The key's current expiry (`KEEPTTL`).
    Keep,
}

/// A `SET`'s options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetOptions {
    pub lifetime: Lifetime,
    /// `NX`: only if the key is absent.
    pub nx: bool,
    /// `XX`: only if it is present.
    pub xx: bool,
    /// `GET`: answer the old value.
    pub get: bool,
}

impl SetOptions {
    /// Whether the key must be read before it is written.
    fn reads(&self) -> bool {
        self.nx || self.xx || self.get || self.lifetime == Lifetime::Keep
    }
}

/// Which expiry option a `SET` gave, and its number.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Secs,
    Ms,
}

const SYNTAX: &str = "ERR syntax error";

/// Parses `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
/// (`opts` from the fourth argument) as Redis 7.0 does: a repeated option
/// is allowed, two that exclude each other are a syntax error, then the
/// number is checked (`invalid expire time` when not positive or past
/// what an i64 of ms holds). `now_ms` is the wall clock.
pub(super) fn set_options(opts: &[Vec<u8>], now_ms: u64) -> Result<SetOptions, String> {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    // The expiry option, whether it is relative, and its number.
    let mut expiry: Option<(&str, Unit, bool, &[u8])> = None;
    let mut i = 0;
    while i < opts.len() {
        let opt = String::from_utf8_lossy(&opts[i]).to_ascii_uppercase();
        let next = opts.get(i + 1);
        let other_expiry = |name: &str| expiry.is_some_and(|(n, ..)| n != name);
        match opt.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => keep = true,
            "EX" | "PX" | "EXAT" | "PXAT" if !keep && !other_expiry(&opt) && next.is_some() => {
                let (name, unit, relative) = match opt.as_str() {
                    "EX" => ("EX", Unit::Secs, true),
                    "PX" => ("PX", Unit::Ms, true),
                    "EXAT" => ("EXAT", Unit::Secs, false),
                    _ => ("PXAT", Unit::Ms, false),
                };
                expiry = next.map(|n| (name, unit, relative, n.as_slice()));
                i += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        i += 1;
    }
    let lifetime = match expiry {
        _ if keep => Lifetime::Keep,
        None => Lifetime::Bucket,
        Some((_, unit, relative, n)) => {
            let invalid = || "ERR invalid expire time in 'set' command".to_string();
            let n = int(n)?;
            if n <= 0 || (unit == Unit::Secs && n > i64::MAX / 1000) {
                return Err(invalid());
            }
            let ms = if unit == Unit::Secs { n * 1000 } else { n };
            let base = if relative { now_ms } else { 0 };
            let at = i64::try_from(base)
                .ok()
                .and_then(|b| b.checked_add(ms))
                .ok_or_else(invalid)?;
            Lifetime::At(at as u64)
        }
    };
    Ok(SetOptions {
        lifetime,
        nx,
        xx,
        get,
    })
}

/// `EXPIRE`'s conditions (Redis 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ExpireFlags {
    /// Only if the key has no expiry.
    pub nx: bool,
    /// Only if it has one.
    pub xx: bool,
    /// Only if the new expiry is later (no expiry counts as never).
    pub gt: bool,
    /// Only if it is sooner.
    pub lt: bool,
}

impl ExpireFlags {
    /// Parses `[NX|XX|GT|LT]...` with Redis' errors.
    pub(super) fn parse(opts: &[Vec<u8>]) -> Result<ExpireFlags, String> {
        let mut f = ExpireFlags::default();
        for opt in opts {
            let opt = String::from_utf8_lossy(opt);
            match opt.to_ascii_uppercase().as_str() {
                "NX" => f.nx = true,
                "XX" => f.xx = true,
                "GT" => f.gt = true,
                "LT" => f.lt = true,
                _ => {
                    let shown: String = opt.chars().take(128).collect();
                    return Err(format!("ERR Unsupported option {shown}"));
                }
            }
        }
        if f.nx && (f.xx || f.gt || f.lt) {
            return Err(
                "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
            );
        }
        if f.gt && f.lt {
            return Err("ERR GT and LT options at the same time are not compatible".into());
        }
        Ok(f)
    }

    /// Whether a key expiring at `current` (`None`: never) takes `new`.
    pub(super) fn allow(&self, current: Option<u64>, new: i64) -> bool {
        let current = current.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|c| new <= c)
            || self.lt && current.is_some_and(|c| new >= c))
    }
}

/// The instant (wall-clock ms, may be past) `EXPIRE`/`PEXPIRE` `n`
/// means, refused as Redis refuses it when it overflows an i64 of ms.
pub(super) fn expire_at(n: i64, secs: bool, now_ms: u64) -> Result<i64, &'static str> {
    let invalid = if secs {
        "ERR invalid expire time in 'expire' command"
    } else {
        "ERR invalid expire time in 'pexpire' command"
    };
    let ms = if secs {
        n.checked_mul(1000).ok_or(invalid)?
    } else {
        n
    };
    i64::try_from(now_ms)
        .ok()
        .and_then(|now| now.checked_add(ms))
        .ok_or(invalid)
}

impl Session {
    /// `SET key value [options]`.
    pub(super) async fn set(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) -> Result<(), String> {
        let (b, k) = self.place(text(&args[1])?);
        let opts = set_options(&args[3..], wall_ms())?;
        let current = if opts.reads() {
            match self.cache.get_with_expiry(b, k).await {
                Ok(c) => Some(c),
                Err(e) => {
                    cache_error(out, &e);
                    return Ok(());
                }
            }
        } else {
            None
        };
        let exists = current.as_ref().map(Option::is_some);
        let skip = (opts.nx && exists == Some(true)) || (opts.xx && exists == Some(false));
        if !skip {
            let value = args[2].clone();
            let kept = current.as_ref().and_then(|c| c.as_ref().map(|(_, at)| *at));
            let written = match (opts.lifetime, kept) {
                (Lifetime::At(at), _) => self.cache.set_until(b, k, value, Some(at)).await,
                (Lifetime::Keep, Some(at)) => self.cache.set_until(b, k, value, at).await,
                // Nothing to keep: as a plain SET, the bucket's TTL.
                (Lifetime::Keep, None) | (Lifetime::Bucket, _) => {
                    self.cache.set(b, k, value, None).await
                }
            };
            if let Err(e) = written {
                cache_error(out, &e);
                return Ok(());
            }
        }
        match current {
            Some(Some((old, _))) if opts.get => reply::bulk(out, &old),
            _ if opts.get || skip => self.null(out),
            _ => reply::simple(out, "OK"),
        }
        Ok(())
    }

    /// `EXPIRE key seconds [NX|XX|GT|LT]` and `PEXPIRE` (ms): 1 if the
    /// key took it (an instant already past deletes the key), 0 if absent
    /// or a condition did not hold.
    pub(super) async fn expire(
        &mut self,
        secs: bool,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let (b, k) = self.place(text(&args[1])?);
        let flags = ExpireFlags::parse(&args[3..])?;
        let now = wall_ms();
        let at = expire_at(int(&args[2])?, secs, now)?;
        let (value, current) = match self.cache.get_with_expiry(b, k).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                reply::int(out, 0);
                return Ok(());
            }
            Err(e) => {
                cache_error(out, &e);
                return Ok(());
            }
        };
        if !flags.allow(current, at) {
            reply::int(out, 0);
            return Ok(());
        }
        let written = if at <= now as i64 {
            self.cache.delete(b, k).await.map(|_| ())
        } else {
            self.cache.set_until(b, k, value, Some(at as u64)).await
        };
        match written {
            Ok(()) => reply::int(out, 1),
            Err(e) => cache_error(out, &e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn set(opts: &str) -> Result<SetOptions, String> {
        let opts: Vec<Vec<u8>> = opts.split_whitespace().map(|w| w.into()).collect();
        set_options(&opts, NOW)
    }

    fn lifetime(opts: &str) -> Lifetime {
        set(opts).unwrap().lifetime
    }

    /// Each case checked against redis-server 7.0.
    #[test]
    fn set_options_are_parsed_and_refused_as_redis_does() {
        assert_eq!(lifetime(""), Lifetime::Bucket);
        assert_eq!(lifetime("ex 10"), Lifetime::At(NOW + 10_000));
        assert_eq!(lifetime("PX 100"), Lifetime::At(NOW + 100));
        assert_eq!(lifetime("EXAT 1800000000"), Lifetime::At(1_800_000_000_000));
        assert_eq!(lifetime("PXAT 5"), Lifetime::At(5));
        assert_eq!(lifetime("KEEPTTL"), Lifetime::Keep);
        // A repeated option is allowed (the last number counts).
        assert_eq!(lifetime("EX 5 EX 6"), Lifetime::At(NOW + 6000));
        let o = set("NX GET NX").unwrap();
        assert!(o.nx && o.get && !o.xx);
        let syntax = Err("ERR syntax error".to_string());
        for bad in [
            "EX 10 PX 100",
            "PX 1 EXAT 2",
            "KEEPTTL EX 5",
            "EX 5 KEEPTTL",
            "NX XX",
            "XX NX",
            "EX",
            "FOO",
            "EX abc PX 5",
        ] {
            assert_eq!(set(bad), syntax, "{bad}");
        }
        let invalid = Err("ERR invalid expire time in 'set' command".to_string());
        for bad in [
            "EX 0",
            "EX -1",
            "PX 0",
            "EX 99999999999999999",
            "EX 9999999999999999",
            "PX 9223372036854775000",
            "EXAT 0",
        ] {
            assert_eq!(set(bad), invalid, "{bad}");
        }
        // Large but within an i64 of ms from now: Redis takes it.
        assert_eq!(
            lifetime("PX 99999999999999999"),
            Lifetime::At(NOW + 99_999_999_999_999_999)
        );
        assert_eq!(
            set("EX abc"),
            Err("ERR value is not an integer or out of range".into())
        );
    }

    fn flags(opts: &str) -> Result<ExpireFlags, String> {
        let opts: Vec<Vec<u8>> = opts.split_whitespace().map(|w| w.into()).collect();
        ExpireFlags::parse(&opts)
    }

    #[test]
    fn expire_flags_are_parsed_and_refused_as_redis_does() {
        assert_eq!(flags("").unwrap(), ExpireFlags::default());
        assert!(flags("nx nx").unwrap().nx);
        let f = flags("XX GT").unwrap();
        assert!(f.xx && f.gt);
        let nx_with = "ERR NX and XX, GT or LT options at the same time are not compatible";
        assert_eq!(flags("NX XX"), Err(nx_with.into()));
        assert_eq!(flags("NX GT"), Err(nx_with.into()));
        assert_eq!(
            flags("GT LT"),
            Err("ERR GT and LT options at the same time are not compatible".into())
        );
        assert_eq!(flags("FOO"), Err("ERR Unsupported option FOO".into()));
    }

    /// The table Redis' `expireGenericCommand` decides by: no expiry is
    /// "never", so GT never beats it and LT always does.
    #[test]
    fn expire_conditions_compare_with_the_current_expiry() {
        let at = 1000;
        let f = |s| flags(s).unwrap();
        assert!(f("").allow(None, at) && f("").allow(Some(5), at));
        assert!(f("NX").allow(None, at) && !f("NX").allow(Some(5), at));
        assert!(!f("XX").allow(None, at) && f("XX").allow(Some(5), at));
        assert!(!f("GT").allow(None, at));
        assert!(f("GT").allow(Some(999), at) && !f("GT").allow(Some(1000), at));
        assert!(f("LT").allow(None, at) && f("LT").allow(None, -5));
        assert!(f("LT").allow(Some(1001), at) && !f("LT").allow(Some(1000), at));
        assert!(!f("XX GT").allow(None, at) && f("XX LT").allow(Some(2000), at));
    }

    #[test]
    fn expire_times_that_overflow_are_refused() {
        assert_eq!(expire_at(10, true, NOW), Ok(NOW as i64 + 10_000));
        assert_eq!(expire_at(-1, true, NOW), Ok(NOW as i64 - 1000));
        assert_eq!(
            expire_at(9_999_999_999_999_999, true, NOW),
            Err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(
            expire_at(i64::MAX - 5, false, NOW),
            Err("ERR invalid expire time in 'pexpire' command")
        );
        assert_eq!(
            expire_at(99_999_999_999_999_999, false, NOW),
            Ok(NOW as i64 + 99_999_999_999_999_999)
        );
    }
}
