//! The placer's per-job working sets, reused from job to job so a pass
//! allocates once, not once per job.

use super::placer::Node;

/// Spread shares `(per node, per zone)`; `None` for pack.
pub(super) type Caps = Option<(u32, u32)>;

/// The nodes that may hold a job: indices, their hashes side by side (the
/// hot loop reads only those), and how many zones they span.
#[derive(Clone)]
pub(super) struct Eligible {
    pub(super) idx: Vec<u32>,
    pub(super) hash: Vec<u64>,
    pub(super) zones: u32,
    seen: Vec<bool>,
}

impl Eligible {
    pub(super) fn new(zones: usize) -> Eligible {
        Eligible {
            idx: Vec::new(),
            hash: Vec::new(),
            zones: 0,
            seen: vec![false; zones.max(1)],
        }
    }

    pub(super) fn clear(&mut self) {
        self.idx.clear();
        self.hash.clear();
        self.zones = 0;
        self.seen.iter_mut().for_each(|z| *z = false);
    }

    pub(super) fn push(&mut self, n: u32, node: &Node) {
        self.idx.push(n);
        self.hash.push(node.hash);
        let seen = &mut self.seen[node.zone as usize];
        self.zones += u32::from(!*seen);
        *seen = true;
    }
}

/// How many slots of the job at hand each node and zone holds. Reset
/// after each job by walking its slots, not the whole arrays.
pub(super) struct Counts {
    pub(super) node: Vec<u32>,
    pub(super) zone: Vec<u32>,
}

impl Counts {
    pub(super) fn add(&mut self, n: u32, zone: u32) {
        self.node[n as usize] += 1;
        self.zone[zone as usize] += 1;
    }

    pub(super) fn under(&self, caps: Caps, n: u32, zone: u32) -> bool {
        caps.is_none_or(|(nc, zc)| self.node[n as usize] < nc && self.zone[zone as usize] < zc)
    }

    pub(super) fn reset(&mut self, slots: &[Option<u32>], nodes: &[Node]) {
        for &n in slots.iter().flatten() {
            self.node[n as usize] = 0;
            self.zone[nodes[n as usize].zone as usize] = 0;
        }
    }
}
