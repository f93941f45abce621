//! Ports for instances: each gets one from a configured range that is
//! neither leased to another instance nor bound by anything on the machine.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

use super::ExecError;

/// Hands out ports of a range, round robin, so a port just released is not
/// given again at once (its old owner may still be closing it). The round
/// starts at a random port: agents sharing one machine (`myco dev`, tests)
/// each check that a port is free, but two checking at the same moment
/// would both find the range's first port free and hand it to two
/// workloads, one of which then fails to bind.
#[derive(Debug, Clone)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    leased: BTreeSet<u16>,
    next: u16,
}

impl PortPool {
    /// A pool over `range` (for example `20000..=29999`).
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let (first, last) = (u32::from(*range.start()), u32::from(*range.end()));
        let mut seed = [0u8; 4];
        let offset = match getrandom::fill(&mut seed) {
            Ok(()) if last >= first => u32::from_le_bytes(seed) % (last - first + 1),
            _ => 0,
        };
        let next = u16::try_from(first + offset).unwrap_or(*range.start());
        PortPool {
            range,
            leased: BTreeSet::new(),
            next,
        }
    }

    /// Leases a port that is free now: not leased, and bindable on both
    /// `0.0.0.0` and `127.0.0.1` (TCP). Looks at each port at most once.
    pub fn lease(&mut self) -> Result<u16, ExecError> {
        let (first, last) = (*self.range.start(), *self.range.end());
        let size = u32::from(last).saturating_sub(u32::from(first)) + 1;
        if first > last {
            return Err(ExecError::NoPort { first, last });
        }
        for _ in 0..size {
            let port = self.next;
            self.next = if port >= last { first } else { port + 1 };
            if !self.leased.contains(&port) && is_free(port) {
                self.leased.insert(port);
                return Ok(port);
            }
        }
        Err(ExecError::NoPort { first, last })
    }

    /// Marks a port as leased without checking it: for an instance adopted
    /// after an agent restart, which holds it already. False if it was
    /// leased already.
    pub fn reserve(&mut self, port: u16) -> bool {
        self.leased.insert(port)
    }

    /// Gives a port back.
    pub fn release(&mut self, port: u16) {
        self.leased.remove(&port);
    }

    /// Ports leased now.
    pub fn leased(&self) -> usize {
        self.leased.len()
    }
}

/// Whether nothing listens on the port: binding both the wildcard and the
/// loopback address catches a listener on either.
pub fn is_free(port: u16) -> bool {
    [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST]
        .iter()
        .all(|ip| TcpListener::bind((*ip, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_a_port_in_use_and_leased_ones() {
        // A listener on an OS-chosen port, then a pool starting at it.
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = busy.local_addr().unwrap().port();
        let mut pool = PortPool::new(port..=port.saturating_add(20));
        let got = pool.lease().unwrap();
        assert_ne!(got, port, "a bound port must be skipped");
        let again = pool.lease().unwrap();
        assert_ne!(again, got, "a leased port is not leased twice");
        pool.release(got);
        assert_eq!(pool.leased(), 1);
    }

    #[test]
    fn a_full_range_says_so() {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = busy.local_addr().unwrap().port();
        let mut pool = PortPool::new(port..=port);
        assert!(matches!(pool.lease(), Err(ExecError::NoPort { .. })));
        drop(busy);
        let mut pool = PortPool::new(port..=port);
        assert!(pool.reserve(port));
        assert!(matches!(pool.lease(), Err(ExecError::NoPort { .. })));
    }
}
