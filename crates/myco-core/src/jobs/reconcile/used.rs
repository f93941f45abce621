//! The resources a node's own processes take, for the reconciler's room
//! checks.

use myco_proto::job::Resources;

use crate::jobs::placement::Capacity;

/// Resources taken on this node by its own processes.
#[derive(Default)]
pub(super) struct Used {
    cpu: u64,
    mem: u64,
    pids: u64,
}

impl Used {
    pub(super) fn add(&mut self, r: &Resources) {
        self.cpu += u64::from(r.cpu_milli);
        self.mem += u64::from(r.memory_mb);
        self.pids += u64::from(r.pids);
    }

    pub(super) fn without(&self, other: &Used) -> Used {
        Used {
            cpu: self.cpu.saturating_sub(other.cpu),
            mem: self.mem.saturating_sub(other.mem),
            pids: self.pids.saturating_sub(other.pids),
        }
    }

    /// What this node lacks to start one more of `need`, in words.
    pub(super) fn shortfall(&self, need: &Resources, cap: &Capacity) -> Option<String> {
        let free = |cap: u64, used: u64| cap.saturating_sub(used);
        let mem = free(cap.memory_mb, self.mem);
        if u64::from(need.memory_mb) > mem {
            return Some(format!(
                "memory on this node (need {} MB, free {mem})",
                need.memory_mb
            ));
        }
        let cpu = free(cap.cpu_milli, self.cpu);
        if u64::from(need.cpu_milli) > cpu {
            return Some(format!(
                "cpu on this node (need {} milli, free {cpu})",
                need.cpu_milli
            ));
        }
        if let Some(pids) = cap.pids.map(|p| free(p, self.pids))
            && u64::from(need.pids) > pids
        {
            return Some(format!(
                "pids on this node (need {}, free {pids})",
                need.pids
            ));
        }
        None
    }
}
