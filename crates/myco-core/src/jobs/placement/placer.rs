//! The placer: the working state of one placement pass, laid out for
//! speed (nodes in one array sorted by id, per-job scratch reused, the
//! common case of a slot answered from the few best-ranked nodes).

use std::collections::BTreeMap;

use myco_proto::instance::InstanceState;
use myco_proto::job::{Driver, JobRecord, MICROVM_TAG, Strategy};

use super::explain::{self, JobPlan, Rejection};
use super::hash::{Fnv, mix};
use super::scratch::{Caps, Counts, Eligible};
use super::{Allocated, Cluster, JobPlacement, Liveness, NodeView, Placement, Slot};

/// One node, as the placer works on it.
#[derive(Clone, Copy)]
pub(super) struct Node {
    pub(super) hash: u64,
    up: bool,
    pub(super) zone: u32,
    cap_cpu: u64,
    cap_mem: u64,
    pub(super) free_cpu: u64,
    pub(super) free_mem: u64,
    /// `u64::MAX` when the node does not account pids.
    pub(super) free_pids: u64,
}

impl Node {
    fn fits(&self, r: &Need) -> bool {
        self.free_cpu >= r.cpu && self.free_mem >= r.mem && self.free_pids >= r.pids
    }

    /// Takes room that is in use whether or not it fits (an instance
    /// already running).
    fn hold(&mut self, r: &Need) {
        self.free_cpu = self.free_cpu.saturating_sub(r.cpu);
        self.free_mem = self.free_mem.saturating_sub(r.mem);
        if self.free_pids != u64::MAX {
            self.free_pids = self.free_pids.saturating_sub(r.pids);
        }
    }

    fn take(&mut self, r: &Need) {
        self.free_cpu -= r.cpu;
        self.free_mem -= r.mem;
        if self.free_pids != u64::MAX {
            self.free_pids -= r.pids;
        }
    }

    /// The larger of its CPU and memory shares in use, in millionths.
    fn used_share(&self) -> u64 {
        let share = |cap: u64, free: u64| (cap - free).saturating_mul(1_000_000) / cap.max(1);
        share(self.cap_cpu, self.free_cpu).max(share(self.cap_mem, self.free_mem))
    }
}

/// What one instance of a job takes from a node.
#[derive(Clone, Copy)]
pub(super) struct Need {
    pub(super) cpu: u64,
    pub(super) mem: u64,
    pub(super) pids: u64,
}

impl Need {
    fn of(job: &JobRecord) -> Need {
        let r = job.spec.reserved();
        Need {
            cpu: u64::from(r.cpu_milli),
            mem: u64::from(r.memory_mb),
            pids: u64::from(r.pids),
        }
    }
}

pub(super) struct Placer<'a> {
    cluster: &'a Cluster<'a>,
    /// Members sorted by id.
    pub(super) views: Vec<&'a NodeView>,
    pub(super) nodes: Vec<Node>,
    zones: usize,
    /// Every up node: the eligible set of jobs without constraints.
    up: Eligible,
    /// Running jobs sorted by name.
    pub(super) jobs: Vec<&'a JobRecord>,
    /// Per job: (slot, other version?, node index) of live instances,
    /// sorted, so a slot's current-version instances come first.
    sticky: Vec<Vec<(u32, bool, u32)>>,
    /// Per job: node indices and versions of instances of another
    /// version still running (a rollout keeps them until their
    /// replacement is proven), sorted: their room is taken before anything
    /// is placed.
    held: Vec<Vec<(u32, u64)>>,
    /// What one instance of (job name, version) takes, for the versions
    /// other than the current one that the view holds.
    sizes: BTreeMap<(&'a str, u64), Need>,
    /// Per job: node indices avoided, sorted.
    avoid: Vec<Vec<u32>>,
    fingerprint: u64,
    members_fingerprint: u64,
}

impl<'a> Placer<'a> {
    pub(super) fn new(cluster: &'a Cluster<'a>) -> Placer<'a> {
        let mut views: Vec<&NodeView> = cluster.nodes.iter().collect();
        views.sort_by_key(|v| v.id);
        views.dedup_by_key(|v| v.id);
        let mut zone_ids: BTreeMap<&str, u32> = BTreeMap::new();
        let mut fp = Fnv::new();
        let nodes: Vec<Node> = views
            .iter()
            .map(|v| {
                let zone = v
                    .tags
                    .as_ref()
                    .and_then(|t| t.get("zone"))
                    .map_or("", String::as_str);
                let next = zone_ids.len() as u32;
                let zone = *zone_ids.entry(zone).or_insert(next);
                let up = v.liveness == Liveness::Up && v.tags.is_some();
                // Only up nodes decide anything: a node that is down, has
                // left, or is gone from the member list is the same input,
                // so its later transitions restart no node's settle period.
                if up {
                    fp.u64(v.id.as_u64()).u64(v.capacity.cpu_milli);
                    fp.u64(v.capacity.memory_mb)
                        .u64(v.capacity.pids.unwrap_or(u64::MAX));
                    for (k, val) in v.tags.iter().flatten() {
                        fp.str(k).str(val);
                    }
                    // Ends the tags, so no two node lists hash alike.
                    fp.u64(u64::MAX);
                }
                Node {
                    hash: mix(v.id.as_u64()),
                    up,
                    zone,
                    cap_cpu: v.capacity.cpu_milli,
                    cap_mem: v.capacity.memory_mb,
                    free_cpu: v.capacity.cpu_milli,
                    free_mem: v.capacity.memory_mb,
                    free_pids: v.capacity.pids.unwrap_or(u64::MAX),
                }
            })
            .collect();
        let members_fingerprint = fp.finish();
        // Draining marks come with the records, not with membership: they
        // restart the shorter settle period.
        for v in views.iter().filter(|v| v.draining) {
            fp.u64(v.id.as_u64());
        }
        fp.u64(u64::MAX);
        let mut jobs: Vec<&JobRecord> = cluster.jobs.iter().filter(|j| !j.stopped).collect();
        jobs.sort_by(|a, b| a.name().cmp(b.name()).then(b.version.cmp(&a.version)));
        jobs.dedup_by(|a, b| a.name() == b.name());
        for j in &jobs {
            // The encoded spec covers count, strategy, resources, constraints.
            fp.str(j.name()).u64(j.version).bytes(&j.encode());
        }
        let mut up = Eligible::new(zone_ids.len());
        for (n, node) in nodes.iter().enumerate() {
            if node.up && !views[n].draining {
                up.push(n as u32, node);
            }
        }
        let mut placer = Placer {
            cluster,
            views,
            nodes,
            up,
            zones: zone_ids.len(),
            sticky: vec![Vec::new(); jobs.len()],
            held: vec![Vec::new(); jobs.len()],
            sizes: cluster
                .versions
                .iter()
                .map(|v| ((v.name(), v.version), Need::of(v)))
                .collect(),
            avoid: vec![Vec::new(); jobs.len()],
            jobs,
            fingerprint: 0,
            members_fingerprint,
        };
        placer.read_instances(&mut fp);
        placer.fingerprint = fp.finish();
        placer
    }

    fn read_instances(&mut self, fp: &mut Fnv) {
        let by_name: BTreeMap<&str, usize> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name(), i))
            .collect();
        for r in self.cluster.instances {
            let (Some(&j), Ok(n)) = (
                by_name.get(r.job.as_str()),
                self.views.binary_search_by_key(&r.node, |v| v.id),
            ) else {
                continue;
            };
            let other = r.version != self.jobs[j].version;
            let live = matches!(
                r.state,
                InstanceState::Launching | InstanceState::Ready | InstanceState::Failed
            );
            if r.avoids(self.cluster.wall_ms) {
                self.avoid[j].push(n as u32);
            } else if r.avoid_until_ms.is_none() && live && r.slot < self.jobs[j].spec.count {
                self.sticky[j].push((r.slot, other, n as u32));
            }
            if other && (live && r.avoid_until_ms.is_none() || r.state == InstanceState::Draining) {
                self.held[j].push((n as u32, r.version));
            }
        }
        let (nodes, views, sizes, jobs) = (&self.nodes, &self.views, &self.sizes, &self.jobs);
        let parts = self
            .sticky
            .iter_mut()
            .zip(&mut self.avoid)
            .zip(&mut self.held);
        for (j, ((sticky, avoid), held)) in parts.enumerate() {
            sticky.sort_unstable();
            sticky.dedup();
            avoid.sort_unstable();
            avoid.dedup();
            held.sort_unstable();
            // By node id, not index, and up nodes only: a record on a node
            // that is not up decides nothing (it is not eligible), and the
            // index of a node moves when a non-up member comes or goes.
            fp.u64(j as u64);
            for &(s, o, n) in sticky.iter().filter(|&&(_, _, n)| nodes[n as usize].up) {
                fp.u64(u64::from(s)).u64(u64::from(o));
                fp.u64(views[n as usize].id.as_u64());
            }
            fp.u64(u64::MAX);
            for &(n, version) in held.iter().filter(|&&(n, _)| nodes[n as usize].up) {
                fp.u64(views[n as usize].id.as_u64()).u64(version);
                // Its version's record arriving changes the room it holds.
                fp.u64(u64::from(sizes.contains_key(&(jobs[j].name(), version))));
            }
            fp.u64(u64::MAX);
            for &n in avoid.iter().filter(|&&n| nodes[n as usize].up) {
                fp.u64(views[n as usize].id.as_u64());
            }
        }
    }

    fn need(&self, j: usize) -> Need {
        Need::of(self.jobs[j])
    }

    /// What an instance of job `j` at `version` holds: that version's
    /// size, or the current one's when the view lacks its record.
    fn held_need(&self, j: usize, version: u64) -> Need {
        let name = self.jobs[j].name();
        self.sizes
            .get(&(name, version))
            .copied()
            .unwrap_or_else(|| self.need(j))
    }

    /// Why node `n` cannot hold job `j` at all, or `None` if it can.
    pub(super) fn ineligible(&self, j: usize, n: usize) -> Option<Rejection> {
        let view = self.views[n];
        match (view.liveness, &view.tags) {
            (Liveness::Down, _) => return Some(Rejection::Down),
            (Liveness::Left, _) => return Some(Rejection::Left),
            (Liveness::Up, None) => return Some(Rejection::NoManifest),
            (Liveness::Up, Some(_)) if view.draining => return Some(Rejection::Draining),
            (Liveness::Up, Some(tags)) => {
                if self.jobs[j].spec.driver == Driver::Microvm && !tags.contains_key(MICROVM_TAG) {
                    return Some(Rejection::NoDriver("microvm"));
                }
                for (key, c) in &self.jobs[j].spec.constraints {
                    if !c.matches(tags.get(key).map(String::as_str)) {
                        return Some(Rejection::Constraint(c.describe(key)));
                    }
                }
            }
        }
        if self.avoid[j].binary_search(&(n as u32)).is_ok() {
            let until = self.avoid_until(j, n);
            return Some(Rejection::Avoided { until_ms: until });
        }
        None
    }

    fn avoid_until(&self, j: usize, n: usize) -> u64 {
        let (name, id) = (self.jobs[j].name(), self.views[n].id);
        let recs = self
            .cluster
            .instances
            .iter()
            .filter(|r| r.job == name && r.node == id);
        recs.filter_map(|r| r.avoid_until_ms).max().unwrap_or(0)
    }

    /// Whether node `n` is up and may hold job `j`.
    pub(super) fn is_eligible(&self, j: usize, n: usize) -> bool {
        self.nodes[n].up && self.ineligible(j, n).is_none()
    }

    /// The nodes that may hold job `j`: the shared list of up nodes when
    /// the job has no constraint and no avoided node, else `buf` filled.
    fn eligible<'s>(&self, j: usize, up: &'s Eligible, buf: &'s mut Eligible) -> &'s Eligible {
        let spec = &self.jobs[j].spec;
        if spec.constraints.is_empty() && self.avoid[j].is_empty() && spec.driver == Driver::Exec {
            return up;
        }
        buf.clear();
        for n in 0..self.nodes.len() {
            if self.is_eligible(j, n) {
                buf.push(n as u32, &self.nodes[n]);
            }
        }
        buf
    }

    pub(super) fn run(mut self, explain: Option<usize>) -> (Placement, Option<JobPlan>) {
        let mut assign: Vec<Vec<Option<u32>>> = self
            .jobs
            .iter()
            .map(|j| vec![None; j.spec.count as usize])
            .collect();
        let mut buf = Eligible::new(self.zones);
        let mut counts = Counts {
            node: vec![0; self.nodes.len()],
            zone: vec![0; self.zones.max(1)],
        };
        let mut plan = explain.map(|j| JobPlan::new(self.jobs[j]));
        let up = std::mem::replace(&mut self.up, Eligible::new(0));

        // Instances of older versions still running hold their own
        // version's room.
        for j in 0..self.jobs.len() {
            for i in 0..self.held[j].len() {
                let (n, version) = self.held[j][i];
                let n = n as usize;
                if self.nodes[n].up {
                    let need = self.held_need(j, version);
                    self.nodes[n].hold(&need);
                }
            }
        }

        // Keep: every job's live instances first; first the slots a
        // current-version instance holds, then, for slots that only an
        // older version runs (a rollout's), the old instance's node if it
        // still has room: a rollout never displaces running work.
        let mut cands: Vec<u32> = Vec::new();
        for old_pass in [false, true] {
            for (j, slots) in assign.iter_mut().enumerate() {
                if self.sticky[j].is_empty() {
                    continue;
                }
                let caps = self.caps(j, self.eligible(j, &up, &mut buf));
                let need = self.need(j);
                for &n in slots.iter().flatten() {
                    counts.add(n, self.nodes[n as usize].zone);
                }
                let sticky = std::mem::take(&mut self.sticky[j]);
                for group in sticky.chunk_by(|a, b| a.0 == b.0) {
                    let slot = group[0].0;
                    let of = |other: bool, cands: &mut Vec<u32>| {
                        cands.clear();
                        cands.extend(
                            group
                                .iter()
                                .filter(|&&(_, o, _)| o == other)
                                .map(|&(_, _, n)| n)
                                .filter(|&n| self.is_eligible(j, n as usize)),
                        );
                    };
                    of(false, &mut cands);
                    if old_pass {
                        if !cands.is_empty() || slots[slot as usize].is_some() {
                            continue;
                        }
                        of(true, &mut cands);
                    }
                    if cands.len() > 1 {
                        let key = slot_key(self.jobs[j].name(), slot);
                        cands.sort_by_key(|&n| {
                            std::cmp::Reverse(mix(key ^ self.nodes[n as usize].hash))
                        });
                    }
                    let found = cands.iter().copied().find(|&n| {
                        let node = &self.nodes[n as usize];
                        node.fits(&need) && counts.under(caps, n, node.zone)
                    });
                    if let Some(n) = found {
                        self.assign(&mut slots[slot as usize], n, &need, &mut counts);
                        if let Some(p) = plan.as_mut().filter(|_| explain == Some(j)) {
                            p.keep(slot, self.views[n as usize].id);
                        }
                    }
                }
                self.sticky[j] = sticky;
                counts.reset(slots, &self.nodes);
            }
        }

        // Place: the rest.
        let mut cand = Eligible::new(self.zones);
        let mut ranked: Vec<(u64, u32)> = Vec::new();
        for (j, slots) in assign.iter_mut().enumerate() {
            if slots.iter().all(Option::is_some) {
                continue;
            }
            let elig = self.eligible(j, &up, &mut buf);
            let caps = self.caps(j, elig);
            for &n in slots.iter().flatten() {
                counts.add(n, self.nodes[n as usize].zone);
            }
            let need = self.need(j);
            let pack = self.jobs[j].spec.strategy == Strategy::Pack;
            let cand = self.candidates(j, elig, &mut cand, &mut ranked);
            let mut last: Option<u32> = None;
            for (slot, entry) in slots.iter_mut().enumerate() {
                if entry.is_some() {
                    continue;
                }
                let key = slot_key(self.jobs[j].name(), slot as u32);
                let best = if pack {
                    // Fill the node the previous slot went to while it fits.
                    let last = last.filter(|&n| self.nodes[n as usize].fits(&need));
                    last.or_else(|| self.scan(elig, key, &need, None, &counts).map(|b| b.1))
                } else {
                    self.top_ranked(cand, key, &need, caps, &counts)
                        .or_else(|| match self.scan(cand, key, &need, caps, &counts) {
                            Some(((0, 0), n)) => Some(n),
                            _ => self.scan(elig, key, &need, caps, &counts).map(|b| b.1),
                        })
                };
                if let Some(p) = plan.as_mut().filter(|_| explain == Some(j)) {
                    let over = |n: u32| !counts.under(caps, n, self.nodes[n as usize].zone);
                    let ctx = explain::Context {
                        need: &need,
                        chosen: best,
                        over_share: &over,
                    };
                    p.place(slot as u32, &self, j, &ctx);
                }
                if let Some(n) = best {
                    self.assign(entry, n, &need, &mut counts);
                    last = Some(n);
                }
            }
            counts.reset(slots, &self.nodes);
        }
        self.finish(assign, plan)
    }

    /// The nodes a spread job's slots are ranked over first: its
    /// `2 * count + 16` best-ranked eligible nodes for the job as a whole
    /// (all of them when there are fewer). Bounds the work per slot by the
    /// job's size instead of the mesh's, and stays stable: a node enters
    /// or leaves a job's candidates only by joining, leaving, or changing
    /// eligibility.
    fn candidates<'s>(
        &self,
        j: usize,
        elig: &'s Eligible,
        out: &'s mut Eligible,
        ranked: &mut Vec<(u64, u32)>,
    ) -> &'s Eligible {
        let m = 2 * self.jobs[j].spec.count as usize + 16;
        if self.jobs[j].spec.strategy == Strategy::Pack || elig.idx.len() <= m {
            return elig;
        }
        let key = job_key(self.jobs[j].name());
        ranked.clear();
        ranked.extend(
            elig.hash
                .iter()
                .enumerate()
                .map(|(i, &h)| (mix(key ^ h), i as u32)),
        );
        ranked.select_nth_unstable_by(m - 1, |a, b| b.cmp(a));
        ranked.truncate(m);
        ranked.sort_unstable_by_key(|&(_, i)| i);
        out.clear();
        for &(_, i) in ranked.iter() {
            let n = elig.idx[i as usize];
            out.push(n, &self.nodes[n as usize]);
        }
        out
    }

    fn assign(&mut self, slot: &mut Option<u32>, n: u32, need: &Need, counts: &mut Counts) {
        let node = &mut self.nodes[n as usize];
        node.take(need);
        counts.add(n, node.zone);
        *slot = Some(n);
    }

    /// The common case of spread: among the few best-ranked eligible
    /// nodes, the first that fits and is under both shares. That is the
    /// answer whenever one exists: every node ranked above it was looked
    /// at. `None` sends the caller to the full [`Placer::scan`].
    fn top_ranked(
        &self,
        elig: &Eligible,
        key: u64,
        need: &Need,
        caps: Caps,
        counts: &Counts,
    ) -> Option<u32> {
        const K: usize = 4;
        let mut top = [(0u64, u32::MAX); K];
        for (i, &h) in elig.hash.iter().enumerate() {
            let rank = mix(key ^ h);
            if rank > top[K - 1].0 || top[K - 1].1 == u32::MAX {
                let mut at = K - 1;
                while at > 0 && (top[at - 1].1 == u32::MAX || rank > top[at - 1].0) {
                    top[at] = top[at - 1];
                    at -= 1;
                }
                top[at] = (rank, i as u32);
            }
        }
        let found = top
            .iter()
            .take_while(|(_, i)| *i != u32::MAX)
            .find(|(_, i)| {
                let n = elig.idx[*i as usize];
                let node = &self.nodes[n as usize];
                node.fits(need) && counts.under(caps, n, node.zone)
            });
        found.map(|(_, i)| elig.idx[*i as usize])
    }

    /// The full rule over every eligible node that fits. Lower class is
    /// better: spread, (zone over its share, node over its share); pack,
    /// the node's free share. Then the higher rank.
    fn scan(
        &self,
        elig: &Eligible,
        key: u64,
        need: &Need,
        caps: Caps,
        counts: &Counts,
    ) -> Option<((u64, u64), u32)> {
        let mut best: Option<((u64, u64), u64, u32)> = None;
        for (&n, &h) in elig.idx.iter().zip(&elig.hash) {
            let node = &self.nodes[n as usize];
            if !node.fits(need) {
                continue;
            }
            let class = match caps {
                Some((nc, zc)) => (
                    u64::from(counts.zone[node.zone as usize] >= zc),
                    u64::from(counts.node[n as usize] >= nc),
                ),
                None => (1_000_000 - node.used_share().min(1_000_000), 0),
            };
            let rank = mix(key ^ h);
            if best.is_none_or(|(c, r, _)| class < c || (class == c && rank > r)) {
                best = Some((class, rank, n));
            }
        }
        best.map(|(class, _, n)| (class, n))
    }

    /// Spread shares `(per node, per zone)` of job `j`, `None` for pack.
    fn caps(&self, j: usize, elig: &Eligible) -> Caps {
        if self.jobs[j].spec.strategy == Strategy::Pack || elig.idx.is_empty() {
            return None;
        }
        let count = self.jobs[j].spec.count;
        Some((
            count.div_ceil(elig.idx.len() as u32),
            count.div_ceil(elig.zones),
        ))
    }

    fn finish(
        self,
        assign: Vec<Vec<Option<u32>>>,
        plan: Option<JobPlan>,
    ) -> (Placement, Option<JobPlan>) {
        let mut jobs = BTreeMap::new();
        for (j, slots) in assign.into_iter().enumerate() {
            let mut pending: Option<String> = None;
            let slots = slots
                .into_iter()
                .map(|s| match s {
                    Some(n) => Slot::Node(self.views[n as usize].id),
                    None => Slot::Pending(
                        pending
                            .get_or_insert_with(|| self.pending_reason(j))
                            .clone(),
                    ),
                })
                .collect();
            let record = self.jobs[j];
            jobs.insert(
                record.name().to_string(),
                JobPlacement {
                    version: record.version,
                    slots,
                },
            );
        }
        let allocated = self
            .views
            .iter()
            .zip(&self.nodes)
            .map(|(v, n)| {
                let pids = v.capacity.pids.map_or(0, |p| p - n.free_pids);
                let a = Allocated {
                    cpu_milli: n.cap_cpu - n.free_cpu,
                    memory_mb: n.cap_mem - n.free_mem,
                    pids,
                };
                (v.id, a)
            })
            .collect();
        let placement = Placement {
            fingerprint: self.fingerprint,
            members_fingerprint: self.members_fingerprint,
            jobs,
            allocated,
        };
        (placement, plan)
    }

    /// Why a slot of job `j` found no node, counted by reason.
    pub(super) fn pending_reason(&self, j: usize) -> String {
        let need = self.need(j);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for n in 0..self.nodes.len() {
            let why = self
                .ineligible(j, n)
                .or_else(|| explain::shortfall(&self.nodes[n], &need))
                .unwrap_or(Rejection::Outranked);
            *counts.entry(why.summary()).or_default() += 1;
        }
        if counts.is_empty() {
            return "no nodes known".into();
        }
        let parts: Vec<String> = counts.iter().map(|(why, n)| format!("{n} {why}")).collect();
        format!("no node can hold it: {}", parts.join(", "))
    }
}

/// The key ranking nodes for a job as a whole (its candidates).
fn job_key(job: &str) -> u64 {
    mix(Fnv::new().str(job).finish() ^ 0x5851_f42d_4c95_7f2d)
}

/// The rendezvous key of one slot of one job; a node's rank for the slot
/// is `mix(key ^ node hash)`.
fn slot_key(job: &str, slot: u32) -> u64 {
    mix(Fnv::new().str(job).finish() ^ mix(u64::from(slot).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}
