//! Finding what cgroups the kernel offers and where this agent sits in
//! them: `/proc/self/mountinfo` for the hierarchies, `/proc/self/cgroup`
//! for the agent's own place, then the parent of instance cgroups in each.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{CgroupSupport, CgroupVersion, Hierarchy, KillMethod, LIMITING, V1_CONTROLLERS};

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    root: String,
    point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

pub(super) fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let opts = right.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                opts.split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_owned)
                    .collect()
            };
            Some(Mount {
                root: (*left.get(3)?).to_owned(),
                point: PathBuf::from(left.get(4)?),
                v2,
                controllers,
            })
        })
        .collect()
}

/// The agent's cgroup path for a v1 controller, or for v2 (`None`).
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && list.is_empty(),
            Some(c) => list.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_owned())
    })
}

/// The parent directory for instance cgroups in a mount.
fn parent_dir(mount: &Mount, own: &str, parent: &str) -> PathBuf {
    if let Some(abs) = parent.strip_prefix('/') {
        return mount.point.join(abs);
    }
    // Inside a cgroup namespace the own path is already relative to the
    // mount; otherwise strip the mount's root from it.
    let rel = own.strip_prefix(mount.root.as_str()).unwrap_or(own);
    mount.point.join(rel.trim_start_matches('/')).join(parent)
}

pub(super) fn detect_v2(
    mounts: &[Mount],
    proc_cgroup: &str,
    parent: &str,
) -> Result<CgroupSupport, String> {
    let mount = mounts.iter().find(|m| m.v2).ok_or("no cgroup v2 mount")?;
    let own = own_path(proc_cgroup, None).ok_or("the agent is in no v2 cgroup")?;
    let dir = parent_dir(mount, &own, parent);
    let root = &mount.point;
    let offered = read_words(&root.join("cgroup.controllers"));
    let wanted: Vec<String> = LIMITING
        .iter()
        .filter(|c| offered.contains(**c))
        .map(|c| (*c).to_owned())
        .collect();
    if wanted.is_empty() {
        return Err(format!(
            "cgroup v2 at {} offers none of memory, cpu, pids (they are bound to v1)",
            root.display()
        ));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Each ancestor from the root down to the parent must pass the
    // controllers on; this fails on a cgroup that holds processes.
    let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    let mut at = root.clone();
    let rel = dir
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let mut steps = vec![at.clone()];
    for part in rel.components() {
        at = at.join(part);
        steps.push(at.clone());
    }
    for step in &steps {
        let have = read_words(&step.join("cgroup.subtree_control"));
        if wanted.iter().all(|c| have.contains(c)) {
            continue;
        }
        fs::write(step.join("cgroup.subtree_control"), enable.trim()).map_err(|e| {
            format!(
                "cannot enable {} in {}: {e} (a v2 cgroup holding processes cannot; set an absolute parent)",
                enable.trim(),
                step.display()
            )
        })?;
    }
    let limits: Vec<String> = read_words(&dir.join("cgroup.subtree_control"))
        .into_iter()
        .filter(|c| LIMITING.contains(&c.as_str()))
        .collect();
    let missing: Vec<&str> = LIMITING
        .iter()
        .copied()
        .filter(|c| !limits.iter().any(|l| l == c))
        .collect();
    Ok(CgroupSupport {
        version: CgroupVersion::V2,
        kill: KillMethod::CgroupKill,
        reason: if missing.is_empty() {
            String::new()
        } else {
            format!("cgroup v2 lacks {}", missing.join(", "))
        },
        hierarchies: vec![Hierarchy {
            parent: dir,
            controllers: limits.clone(),
        }],
        limits,
    })
}

pub(super) fn detect_v1(
    mounts: &[Mount],
    proc_cgroup: &str,
    parent: &str,
    reasons: &mut Vec<String>,
) -> Option<CgroupSupport> {
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    for controller in V1_CONTROLLERS {
        let Some(mount) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        else {
            reasons.push(format!("no v1 {controller} controller"));
            continue;
        };
        if let Some(h) = hierarchies
            .iter_mut()
            .find(|h| h.parent.starts_with(&mount.point))
        {
            h.controllers.push(controller.to_owned());
            continue;
        }
        let own = own_path(proc_cgroup, Some(controller)).unwrap_or_else(|| "/".to_owned());
        let dir = parent_dir(mount, &own, parent);
        match fs::create_dir_all(&dir) {
            Ok(()) => hierarchies.push(Hierarchy {
                parent: dir,
                controllers: vec![controller.to_owned()],
            }),
            Err(e) => reasons.push(format!("cannot create {}: {e}", dir.display())),
        }
    }
    let has = |c: &str| {
        hierarchies
            .iter()
            .any(|h| h.controllers.iter().any(|x| x == c))
    };
    let limits: Vec<String> = LIMITING
        .iter()
        .filter(|c| has(c))
        .map(|c| (*c).to_owned())
        .collect();
    if hierarchies.is_empty() {
        return None;
    }
    let kill = if has("freezer") {
        KillMethod::Freezer
    } else {
        KillMethod::SignalLoop
    };
    reasons.retain(|r| !r.starts_with("no cgroup v2") && !r.contains("bound to v1"));
    Some(CgroupSupport {
        version: CgroupVersion::V1,
        limits,
        kill,
        reason: reasons.join("; "),
        hierarchies,
    })
}

fn read_words(path: &Path) -> BTreeSet<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_cgroup_mounts() {
        let m = parse_mounts(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[2].v2);
    }

    #[test]
    fn finds_own_cgroup_and_parent() {
        let pc = "4:memory:/agent/x\n2:cpu,cpuacct:/\n0::/system.slice/myco.service\n";
        assert_eq!(own_path(pc, Some("memory")).as_deref(), Some("/agent/x"));
        assert_eq!(own_path(pc, Some("cpuacct")).as_deref(), Some("/"));
        assert_eq!(
            own_path(pc, None).as_deref(),
            Some("/system.slice/myco.service")
        );
        let m = &parse_mounts(MOUNTINFO)[1];
        assert_eq!(
            parent_dir(m, "/agent/x", "myco"),
            PathBuf::from("/sys/fs/cgroup/memory/agent/x/myco")
        );
        assert_eq!(
            parent_dir(m, "/agent/x", "/myco"),
            PathBuf::from("/sys/fs/cgroup/memory/myco")
        );
    }

    /// A directory laid out like a v2 hierarchy whose controllers are
    /// already delegated: the v2 paths this machine (v1) cannot run.
    struct FakeV2(PathBuf);

    impl FakeV2 {
        fn new(name: &str, controllers: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("myco-fake-cgroup2-{name}-{}", std::process::id()));
            fs::create_dir_all(root.join("myco")).unwrap();
            fs::write(
                root.join("cgroup.controllers"),
                format!("cpuset io {controllers}\n"),
            )
            .unwrap();
            fs::write(root.join("cgroup.subtree_control"), controllers).unwrap();
            fs::write(root.join("myco/cgroup.subtree_control"), controllers).unwrap();
            FakeV2(root)
        }
        fn mounts(&self) -> Vec<Mount> {
            vec![Mount {
                root: "/".into(),
                point: self.0.clone(),
                v2: true,
                controllers: Vec::new(),
            }]
        }
    }

    impl Drop for FakeV2 {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn v2_writes_v2_limits() {
        use crate::exec::cgroup::{InstanceCgroup, ResourceLimits};
        let fake = FakeV2::new("limits", "cpu memory pids");
        let s = detect_v2(&fake.mounts(), "0::/\n", "myco").unwrap();
        assert_eq!(s.version, CgroupVersion::V2);
        assert_eq!(s.kill, KillMethod::CgroupKill);
        assert_eq!(s.limits, ["cpu", "memory", "pids"]);
        assert!(s.reason.is_empty());
        let limits = ResourceLimits {
            memory_bytes: Some(1 << 20),
            cpu_milli: Some(1500),
            pids: Some(7),
        };
        let cg = InstanceCgroup::create(&s, "i-1", &limits).unwrap().unwrap();
        let read = |f: &str| fs::read_to_string(fake.0.join("myco/i-1").join(f)).unwrap();
        assert_eq!(read("memory.max"), "1048576");
        // 1500 milli: shares 1536, weight 1 + 1534 * 9999 / 262142 (a weight, not a quota).
        assert_eq!(read("cpu.weight"), "59");
        assert_eq!(read("pids.max"), "7");
        assert_eq!(InstanceCgroup::from_record(&cg.to_record()), cg);
    }

    #[test]
    fn v2_without_controllers_says_why() {
        let fake = FakeV2::new("none", "hugetlb");
        let why = detect_v2(&fake.mounts(), "0::/\n", "myco").unwrap_err();
        assert!(why.contains("bound to v1"), "{why}");
    }
}
