//! The fault injector of the safety phase: partitions, crashes, graceful
//! stops and restarts, random (from the plan) or scripted, and the heal that
//! ends them all when the liveness phase starts.

use std::collections::BTreeSet;
use std::time::Duration;

use myco_core::Time;
use rand::RngExt;
use rand::seq::IndexedRandom;

use crate::check::witnesses;
use crate::config::{Fault, SimConfig};
use crate::net::Partition;
use crate::world::World;

/// A duration drawn uniformly in `range`, in whole milliseconds.
fn between(world: &mut World, range: (Duration, Duration)) -> Duration {
    let (a, b) = (range.0.as_millis() as u64, range.1.as_millis() as u64);
    Duration::from_millis(world.rng.random_range(a.min(b)..=a.max(b)))
}

pub(crate) struct Faults {
    script: Vec<(Time, Fault)>,
    next_script: usize,
    /// When the current partition heals.
    heal_at: Option<Time>,
    /// When the next random partition starts.
    next_partition: Option<Time>,
    /// Stopped nodes and when they restart; `None` waits for the liveness phase.
    restarts: Vec<(usize, Option<Time>)>,
    /// Nodes that never come back.
    permanent: BTreeSet<usize>,
    pub(crate) stops: u64,
    pub(crate) partitions: u64,
}

impl Faults {
    /// Plans the faults of a safety phase starting now.
    pub(crate) fn new(cfg: &SimConfig, world: &mut World) -> Faults {
        let start = world.now;
        let mut script: Vec<(Time, Fault)> = cfg
            .faults
            .script
            .iter()
            .map(|(at, f)| (start + *at, f.clone()))
            .collect();
        script.sort_by_key(|(at, _)| *at);
        let next_partition = cfg
            .faults
            .partitions
            .as_ref()
            .map(|p| start + between(world, p.gap));
        Faults {
            script,
            next_script: 0,
            heal_at: None,
            next_partition,
            restarts: Vec::new(),
            permanent: BTreeSet::new(),
            stops: 0,
            partitions: 0,
        }
    }

    /// Decides the faults of one step, at the world's current time.
    pub(crate) fn step(&mut self, cfg: &SimConfig, world: &mut World) {
        let now = world.now;
        while let Some((at, fault)) = self.script.get(self.next_script).cloned() {
            if at > now {
                break;
            }
            self.next_script += 1;
            match fault {
                Fault::Stop {
                    node,
                    graceful,
                    restart_after,
                } => {
                    self.stop(cfg, world, node, graceful, restart_after.map(|d| now + d));
                }
                Fault::Partition {
                    side,
                    one_way,
                    length,
                } => self.partition(world, &side, one_way, length),
            }
        }
        self.random_partition(cfg, world);
        self.random_stop(cfg, world);
        let due: Vec<usize> = self
            .restarts
            .iter()
            .filter(|(_, at)| at.is_some_and(|at| at <= now))
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            self.restart(world, i);
        }
        world.checks.overdue(now);
    }

    fn random_partition(&mut self, cfg: &SimConfig, world: &mut World) {
        let now = world.now;
        if self.heal_at.is_some_and(|at| at <= now) {
            world.trace(format_args!("partition healed"));
            world.net.partition = None;
            self.heal_at = None;
            if let Some(plan) = &cfg.faults.partitions {
                self.next_partition = Some(now + between(world, plan.gap));
            }
        }
        let Some(plan) = &cfg.faults.partitions else {
            return;
        };
        if self.heal_at.is_none() && self.next_partition.is_some_and(|at| at <= now) {
            let n = cfg.nodes;
            // Cut at most half: the other side is the larger one anyway.
            let size = world.rng.random_range(1..=(n / 2).max(1));
            let all: Vec<usize> = (0..n).collect();
            let side: Vec<usize> = all.sample(&mut world.rng, size).copied().collect();
            let one_way = world.rng.random_bool(plan.one_way);
            let length = between(world, plan.length);
            self.next_partition = None;
            self.partition(world, &side, one_way, length);
        }
    }

    fn partition(&mut self, world: &mut World, side: &[usize], one_way: bool, length: Duration) {
        let n = world.nodes.len();
        let side: Vec<usize> = side.iter().copied().filter(|&i| i < n).collect();
        let how = if one_way {
            "one-way partition"
        } else {
            "partition"
        };
        world.trace(format_args!(
            "{how} of {side:?} from the rest for {length:?}"
        ));
        world.net.partition = Some(Partition::new(n, &side, one_way));
        world.checks.abandon_all();
        world.state.interrupted();
        self.heal_at = Some(world.now + length);
        self.partitions += 1;
    }

    fn random_stop(&mut self, cfg: &SimConfig, world: &mut World) {
        let Some(plan) = &cfg.faults.crashes else {
            return;
        };
        let chance = (plan.per_minute * cfg.step.as_secs_f64() / 60.0).clamp(0.0, 1.0);
        if !world.rng.random_bool(chance) {
            return;
        }
        let running: Vec<usize> = world.running().collect();
        if cfg.nodes - running.len() >= plan.max_down {
            return;
        }
        let Some(&victim) = running.choose(&mut world.rng) else {
            return;
        };
        // Drawn from the state stream, after the membership draw, so the
        // membership stream is drawn exactly as without writes; only the
        // victim may change, to a node whose writes are not yet durable.
        let writers = world.unacked_writers();
        let victim = match writers.choose(&mut world.state_rng) {
            Some(&w) if world.state_rng.random_bool(plan.tear) => w,
            _ => victim,
        };
        let graceful = world.rng.random_bool(plan.graceful);
        let restart = if world.rng.random_bool(plan.permanent) {
            self.permanent.insert(victim);
            None
        } else {
            Some(world.now + between(world, plan.downtime))
        };
        self.stop(cfg, world, victim, graceful, restart);
    }

    fn stop(
        &mut self,
        cfg: &SimConfig,
        world: &mut World,
        node: usize,
        graceful: bool,
        restart_at: Option<Time>,
    ) {
        if node >= cfg.nodes || world.nodes[node].is_none() {
            return;
        }
        let boot = world.lives[node].boot;
        // Under a partition a stop cannot be told apart from the cut: not measured.
        let seen_by = if world.net.partition.is_none() {
            witnesses(&world.nodes, node, boot)
        } else {
            BTreeSet::new()
        };
        world.stop(node, graceful);
        world.checks.stopped(world.now, node, boot, seen_by);
        self.restarts.push((node, restart_at));
        self.stops += 1;
    }

    fn restart(&mut self, world: &mut World, node: usize) {
        self.restarts.retain(|(i, _)| *i != node);
        world.checks.victim_restarted(world.now, node);
        world.restart(node);
    }

    /// Ends every fault: the network calms down and every stopped node that
    /// is not gone for good restarts.
    pub(crate) fn heal(&mut self, world: &mut World) {
        world.net.calm();
        self.heal_at = None;
        self.next_partition = None;
        let waiting: Vec<usize> = self.restarts.iter().map(|(i, _)| *i).collect();
        for i in waiting {
            if !self.permanent.contains(&i) {
                self.restart(world, i);
            }
        }
    }
}
