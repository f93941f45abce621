//! The executor: what the jobs runtime uses to carry out the controller's
//! actions with real processes. It keeps, per local instance, the port it
//! was given (kept across restarts in place, so its `addr` stays) and the
//! process running it, and turns the mechanisms of this module (instance
//! directories, spawn, stop, probes, ports, cgroups) into a few calls.
//!
//! Nothing here decides: the controller says spawn, probe, kill or release;
//! the executor does it and the runtime reports the outcome back.
//! Slow work (fetching a spore, unpacking, fsyncing the record, stopping)
//! runs in tasks the runtime spawns; the executor's own methods only touch
//! its maps, so the runtime loop never blocks on them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use myco_proto::job::{Driver, Duplicates, JobRecord};
use myco_spore::{Limits, VerifyingKey};

use super::cgroup::{CgroupSupport, InstanceCgroup, ResourceLimits};
use super::instance_dir;
use super::microvm::{self, MicroVmSupport};
use super::process::{self, ExitKind, Exits, LaunchSpec, Launched, StopTarget};
use super::record::InstanceRecord;
use super::{ExecError, PortPool, ProbeKind, ProbeResult, Prober};

/// Probes of all instances running at once, at most.
pub const PROBE_CONCURRENCY: usize = 16;

/// One local instance with a live process.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its job's name.
    pub job: String,
    /// The process group leader.
    pub pid: u32,
    /// Its start time (so a reused pid is never signalled).
    pub start_time: u64,
    /// Its working directory.
    pub dir: PathBuf,
    /// Its cgroup, if the node has cgroups.
    pub cgroup: Option<InstanceCgroup>,
    /// Whether it was found after an agent restart (not our child).
    pub adopted: bool,
}

/// What a spawn task needs: everything owned, so it can run off the loop.
#[derive(Clone)]
pub struct SpawnJob {
    /// Instance id.
    pub id: String,
    /// Slot.
    pub slot: u32,
    /// The job version's record.
    pub job: Arc<JobRecord>,
    /// The port leased for it.
    pub port: u16,
    /// This node's id (`MYCO_NODE`).
    pub node: String,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Cgroup support detected at start.
    pub cgroups: Arc<CgroupSupport>,
    /// Trusted publishers (read from the replica when the spawn began).
    pub trusted: Vec<VerifyingKey>,
    /// Spore limits of the store.
    pub limits: Limits,
    /// How this node runs microVMs, for `driver = "microvm"` jobs.
    pub microvm: Arc<MicroVmSupport>,
    /// The fence guard `duplicates = "never"` instances run under, when
    /// the binary provides one (see `exec::fence_guard`).
    pub guard: Option<super::fence_guard::FenceGuard>,
}

impl SpawnJob {
    /// Verifies and unpacks the spore at `spore` into the instance
    /// directory, makes the job's volumes, and starts the command. Blocking
    /// (unpack, fsync): run it on the blocking pool, inside the runtime.
    pub fn run(self, spore: &Path) -> Result<Launched, ExecError> {
        let prepared =
            instance_dir::prepare(&self.data_dir, &self.id, spore, &self.trusted, &self.limits)?;
        let spec = &self.job.spec;
        for volume in &spec.volumes {
            let dir = instance_dir::volume(&self.data_dir, &spec.name, &volume.name)?;
            link_volume(&prepared.dir, &volume.name, &volume.path, &dir)?;
        }
        let manifest = &prepared.verified.manifest;
        let mut argv = vec![manifest.command.clone()];
        argv.extend(manifest.args.iter().cloned());
        // The job's environment wins over the spore's.
        let mut env = manifest.env.clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if spec.driver == Driver::Microvm {
            // The guest gets the environment; QEMU is the process.
            argv = self.microvm_argv(manifest, &argv, &env)?;
        } else if manifest.microvm.is_some() {
            return Err(ExecError::MicroVm(
                "the spore is a microVM spore: run it with driver = \"microvm\"".into(),
            ));
        }
        if let Some(guard) = self
            .guard
            .as_ref()
            .filter(|_| spec.duplicates == Duplicates::Never)
        {
            // The guard kills the workload if this agent dies and does not
            // come back within the fence time (exec::fence_guard).
            let program = super::probe::resolve(&argv[0], &prepared.dir);
            argv = guard.wrap(&program, &argv[1..]);
        }
        let launch = LaunchSpec {
            instance: self.id.clone(),
            job: spec.name.clone(),
            slot: self.slot,
            version: self.job.version.to_string(),
            digest: self.job.digest().to_string(),
            node: self.node.clone(),
            dir: prepared.dir,
            argv,
            env,
            port: self.port,
            limits: ResourceLimits {
                // A microVM's QEMU needs its own memory on top of the guest's.
                memory_bytes: Some(u64::from(spec.reserved().memory_mb) << 20),
                cpu_milli: Some(spec.resources.cpu_milli),
                pids: Some(spec.resources.pids),
            },
        };
        process::spawn(launch, &self.cgroups)
    }

    /// QEMU's command line for a microVM instance: `argv` and `env` go to
    /// the guest, with `PORT` and `MYCO_*` as a process gets them.
    fn microvm_argv(
        &self,
        manifest: &myco_spore::Manifest,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, ExecError> {
        let Some(vm) = &manifest.microvm else {
            return Err(ExecError::MicroVm(
                "driver = \"microvm\" needs a microVM spore (myco spore pack --microvm-kernel)"
                    .into(),
            ));
        };
        let mut env = env.clone();
        env.insert("PORT".into(), self.port.to_string());
        env.insert("MYCO_JOB".into(), self.job.spec.name.clone());
        env.insert("MYCO_INSTANCE".into(), self.id.clone());
        env.insert("MYCO_NODE".into(), self.node.clone());
        let boot = microvm::Boot {
            vm,
            argv,
            env: &env,
            spec: &self.job.spec,
            port: self.port,
        };
        microvm::qemu_argv(&self.microvm, &boot)
    }
}

/// Makes `DIR/<path>` a symlink to the volume, so the instance finds it
/// where its job says. A path that leaves the instance directory, or that
/// the spore's own files hold, is refused: the instance would run without
/// its volume, and its data would not outlive it.
fn link_volume(instance: &Path, name: &str, path: &str, volume: &Path) -> Result<(), ExecError> {
    let rel = Path::new(path);
    let safe = !path.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(ExecError::BadName {
            what: "volume path",
            name: path.to_owned(),
        });
    }
    let link = instance.join(rel);
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(ExecError::io("making a volume's parent", parent))?;
    }
    if std::fs::symlink_metadata(&link).is_ok() {
        // Kept from an earlier run of the instance (restart in place).
        if std::fs::read_link(&link).is_ok_and(|to| to == volume) {
            return Ok(());
        }
        return Err(ExecError::VolumeTaken {
            name: name.to_owned(),
            path: path.to_owned(),
        });
    }
    std::os::unix::fs::symlink(volume, &link).map_err(ExecError::io("linking a volume", &link))
}

/// The executor's state: ports and live processes of local instances.
pub struct Executor {
    data_dir: PathBuf,
    cgroups: Arc<CgroupSupport>,
    ip: IpAddr,
    ports: PortPool,
    /// Port per instance, from its first spawn to its release.
    port_of: BTreeMap<String, u16>,
    running: BTreeMap<String, Running>,
    /// Cgroup per instance, from its start to its release: it outlives an
    /// exit (a restart in place takes it over), and release removes it.
    cgroup_of: BTreeMap<String, InstanceCgroup>,
    prober: Prober,
    microvm: Arc<MicroVmSupport>,
}

impl Executor {
    /// An executor over `data_dir`, giving instances ports of `ports` on
    /// the node's advertised `ip`.
    pub fn new(
        data_dir: PathBuf,
        cgroups: Arc<CgroupSupport>,
        ip: IpAddr,
        ports: std::ops::RangeInclusive<u16>,
    ) -> Executor {
        Executor {
            data_dir,
            cgroups,
            ip,
            ports: PortPool::new(ports),
            port_of: BTreeMap::new(),
            running: BTreeMap::new(),
            cgroup_of: BTreeMap::new(),
            prober: Prober::new(PROBE_CONCURRENCY),
            microvm: Arc::new(MicroVmSupport::undetected()),
        }
    }

    /// The executor, running microVM instances with `support`.
    pub fn with_microvm(mut self, support: Arc<MicroVmSupport>) -> Executor {
        self.microvm = support;
        self
    }

    /// How this node runs microVMs.
    pub fn microvm(&self) -> &Arc<MicroVmSupport> {
        &self.microvm
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Cgroup support.
    pub fn cgroups(&self) -> &Arc<CgroupSupport> {
        &self.cgroups
    }

    /// The port of instance `id`: the one it had if it is still free (a
    /// restart keeps its address), or a fresh lease (something else took
    /// it, perhaps why the process failed).
    pub fn port_for(&mut self, id: &str) -> Result<u16, ExecError> {
        if let Some(&p) = self.port_of.get(id) {
            if super::ports::is_free(p) {
                return Ok(p);
            }
            tracing::warn!(instance = %id, port = p, "the instance's port is taken by another process: leasing another");
            self.ports.release(p);
            self.port_of.remove(id);
        }
        let port = self.ports.lease()?;
        self.port_of.insert(id.to_owned(), port);
        Ok(port)
    }

    /// The address the instance listens on, as peers reach it.
    pub fn addr_of(&self, id: &str) -> Option<SocketAddr> {
        self.port_of.get(id).map(|p| SocketAddr::new(self.ip, *p))
    }

    /// Records a started process; returns its child for [`Exits::watch_child`].
    pub fn started(&mut self, job: &str, launched: Launched) -> tokio::process::Child {
        let Launched {
            record,
            cgroup,
            child,
        } = launched;
        if let Some(cg) = &cgroup {
            self.cgroup_of.insert(record.instance.clone(), cg.clone());
        }
        self.running.insert(
            record.instance.clone(),
            Running {
                job: job.to_owned(),
                pid: record.pid,
                start_time: record.start_time,
                dir: instance_dir::instance_dir(&self.data_dir, &record.instance)
                    .unwrap_or_default(),
                cgroup,
                adopted: false,
            },
        );
        child
    }

    /// Takes over a process found alive after an agent restart: its port
    /// stays leased and its exit is watched.
    pub fn adopt(&mut self, dir: PathBuf, record: &InstanceRecord, exits: &Exits) {
        self.ports.reserve(record.port);
        self.port_of.insert(record.instance.clone(), record.port);
        let cgroup = record.cgroup.as_ref().map(InstanceCgroup::from_record);
        if let Some(cg) = &cgroup {
            self.cgroup_of.insert(record.instance.clone(), cg.clone());
        }
        self.running.insert(
            record.instance.clone(),
            Running {
                job: record.job.clone(),
                pid: record.pid,
                start_time: record.start_time,
                dir,
                cgroup,
                adopted: true,
            },
        );
        exits.watch_adopted(record);
    }

    /// The live process of `id`.
    pub fn running(&self, id: &str) -> Option<&Running> {
        self.running.get(id)
    }

    /// Ids of instances with a live process.
    pub fn running_ids(&self) -> BTreeSet<String> {
        self.running.keys().cloned().collect()
    }

    /// Instances with a live process.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// An exit was seen: true when it is of the process we run for `id`
    /// (an exit of an older process of the same instance is stale).
    pub fn exited(&mut self, id: &str, pid: u32) -> Option<Running> {
        match self.running.get(id) {
            Some(r) if r.pid == pid => self.running.remove(id),
            _ => None,
        }
    }

    /// Forgets the instance: its port goes back to the pool. Returns its
    /// process if one still runs, and its cgroup: the caller stops the one
    /// and removes the other and the directory off the loop ([`cleanup`]).
    pub fn release(&mut self, id: &str) -> (Option<Running>, Option<InstanceCgroup>) {
        if let Some(port) = self.port_of.remove(id) {
            self.ports.release(port);
        }
        (self.running.remove(id), self.cgroup_of.remove(id))
    }

    /// Whether instance `id` has a process here.
    pub fn holds(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// A probe of `id` to run off the loop, with its port and directory.
    pub fn probe_of(&self, id: &str) -> Option<(Prober, u16, PathBuf)> {
        let r = self.running.get(id)?;
        let port = *self.port_of.get(id)?;
        Some((self.prober.clone(), port, r.dir.clone()))
    }
}

/// The probe of a job's health check, with its timeout; `None` without one.
pub fn probe_kind(job: &JobRecord) -> Option<(ProbeKind, Duration)> {
    let h = job.spec.health.as_ref()?;
    let kind = if let Some(path) = &h.http {
        ProbeKind::Http { path: path.clone() }
    } else if let Some(argv) = &h.exec {
        ProbeKind::Exec { argv: argv.clone() }
    } else if h.tcp && job.spec.driver == Driver::Microvm {
        ProbeKind::TcpGuest
    } else if h.tcp {
        ProbeKind::Tcp
    } else {
        return None;
    };
    Some((kind, Duration::from_millis(h.timeout_ms.max(1))))
}

/// Runs one probe; `Err` says why it failed.
pub async fn run_probe(
    prober: Prober,
    kind: ProbeKind,
    timeout: Duration,
    port: u16,
    dir: PathBuf,
) -> Result<(), String> {
    match prober.check(&kind, port, &dir, timeout).await {
        ProbeResult::Healthy => Ok(()),
        ProbeResult::Unhealthy(why) => Err(why),
        ProbeResult::TimedOut => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Stops what is left of a process (its group, session and cgroup):
/// SIGTERM, SIGKILL after `grace`. A microVM is first asked to power down
/// (ACPI, through QMP) and given `grace` for it: QEMU would end the guest
/// at once on SIGTERM.
pub async fn stop(r: &Running, mut grace: Duration) -> process::StopOutcome {
    let target = StopTarget {
        pid: r.pid,
        start_time: r.start_time,
        cgroup: r.cgroup.as_ref(),
    };
    if !grace.is_zero() && super::qmp::powerdown(&r.dir).await {
        if process::wait_empty(&target, grace).await {
            return process::StopOutcome::Terminated;
        }
        grace = Duration::ZERO;
    }
    process::stop(target, grace).await
}

/// After a release: removes the cgroup and the instance directory, or
/// all of it but its logs when `keep_logs`. Blocking file work: run it on
/// the blocking pool.
pub fn cleanup(data_dir: &Path, id: &str, cgroup: Option<&InstanceCgroup>, keep_logs: bool) {
    if let Some(cg) = cgroup
        && let Err(e) = cg.remove()
    {
        tracing::debug!(instance = %id, error = %e, "instance cgroup not removed");
    }
    let removed = match keep_logs {
        true => instance_dir::remove_all_but_logs(data_dir, id),
        false => instance_dir::remove(data_dir, id),
    };
    if let Err(e) = removed {
        tracing::warn!(instance = %id, error = %e, "instance directory not removed");
    }
}

/// An exit as the core sees it. An adopted process's status went to its
/// real parent (gone with the old agent), so it is reported as code -1.
pub fn exit_of(kind: ExitKind) -> myco_proto::instance::Exit {
    use myco_proto::instance::Exit;
    match kind {
        ExitKind::Code(c) => Exit::Code(c),
        ExitKind::Signal(s) => Exit::Signal(s),
        ExitKind::Unknown => Exit::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_links_once_and_never_over_the_spore_s_files() {
        let root = std::env::temp_dir().join(format!("myco-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (instance, volume) = (root.join("instance"), root.join("volume"));
        std::fs::create_dir_all(&instance).unwrap();
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(instance.join("server.py"), "print()").unwrap();
        let err = link_volume(&instance, "data", "server.py", &volume).unwrap_err();
        assert!(matches!(err, ExecError::VolumeTaken { .. }), "{err}");
        assert!(err.to_string().contains("server.py"), "{err}");
        link_volume(&instance, "data", "state/db", &volume).unwrap();
        assert_eq!(
            std::fs::read_link(instance.join("state/db")).unwrap(),
            volume
        );
        // A restart in place finds its own link and keeps it.
        link_volume(&instance, "data", "state/db", &volume).unwrap();
        assert!(link_volume(&instance, "data", "../out", &volume).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
