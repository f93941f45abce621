//! The exec mechanisms with real processes: spawn (environment, session,
//! logs, record), exits, stop (a TERM-ignoring grandchild, a process that
//! left the session), cgroup limits and kill. Every process and cgroup a
//! test makes is removed by a guard, even when the test fails.

mod exec_util;

/// Named `exec` so that `cargo test -p myco-agent exec` selects these.
mod exec {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::exec_util::*;
    use myco_agent::exec::cgroup::{CgroupSupport, CgroupVersion};
    use myco_agent::exec::logs::{self, LogStream};
    use myco_agent::exec::record::{self, Liveness};
    use myco_agent::exec::{ExitKind, Exits, ResourceLimits, StopOutcome, spawn, stop};

    #[tokio::test]
    async fn spawn_gives_env_port_session_and_logs() {
        let data = TempDir::new();
        let mut s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "echo \"PORT=$PORT JOB=$MYCO_JOB INST=$MYCO_INSTANCE NODE=$MYCO_NODE G=$GREETING\"; \
             pwd; echo oops >&2; exec sleep 1000",
            ],
        );
        s.port = 23456;
        let (dir, id) = (s.dir.clone(), s.instance.clone());
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let pid = launched.record.pid;

        let lines = eventually("stdout", || {
            let l = logs::tail(&dir, LogStream::Stdout, 10).unwrap();
            (l.len() == 2).then_some(l)
        })
        .await;
        assert_eq!(
            lines[0],
            format!("PORT=23456 JOB=web INST={id} NODE=node-a G=hi")
        );
        assert_eq!(Path::new(&lines[1]), dir.as_path());
        eventually("stderr", || {
            (logs::tail(&dir, LogStream::Stderr, 10).unwrap() == ["oops"]).then_some(())
        })
        .await;

        // Its own session and group, and the record says who it is.
        let f = stat_fields(pid);
        assert_eq!(f[2], pid.to_string(), "process group");
        assert_eq!(f[3], pid.to_string(), "session");
        assert_eq!(record::read(&dir).unwrap(), launched.record);
        assert_eq!(record::liveness(&launched.record), Liveness::Alive);

        let record = launched.record.clone();
        let mut exits = Exits::new(4);
        let outcome = stop(launched.target(), Duration::from_secs(5)).await;
        exits.watch_child(id.clone(), launched.child);
        assert_eq!(outcome, StopOutcome::Terminated);
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!(exit.instance, id);
        assert_eq!(exit.kind, ExitKind::Signal(15));
        assert_eq!(record::liveness(&record), Liveness::Gone);
    }

    #[tokio::test]
    async fn exit_code_is_reported_and_the_child_reaped() {
        let data = TempDir::new();
        let s = spec(&data.0, &["/bin/sh", "-c", "exit 7"]);
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let pid = launched.record.pid as i32;
        let mut exits = Exits::new(4);
        exits.watch_child("x".into(), launched.child);
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!(exit.kind, ExitKind::Code(7));
        // Reaped: no zombie left.
        eventually("reaped", || {
            std::fs::metadata(format!("/proc/{pid}"))
                .is_err()
                .then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn stop_kills_a_grandchild_that_ignores_term() {
        let data = TempDir::new();
        let s = spec(
            &data.0,
            &["/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000"],
        );
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let pid = launched.record.pid as i32;
        let members = eventually("sh and two sleeps", || {
            let m: Vec<i32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok()
                        && stat_fields(p).get(3) == Some(&pid.to_string())
                })
                .map(|p| p as i32)
                .collect();
            (m.len() == 3).then_some(m)
        })
        .await;
        let mut exits = Exits::new(4);
        let started = Instant::now();
        let outcome = stop(launched.target(), Duration::from_millis(300)).await;
        exits.watch_child("x".into(), launched.child);
        assert_eq!(outcome, StopOutcome::Killed);
        assert!(started.elapsed() >= Duration::from_millis(300));
        for p in members {
            assert!(!alive(p), "pid {p} outlived the stop");
        }
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!(exit.kind, ExitKind::Signal(9));
    }

    #[tokio::test]
    async fn stop_finds_the_group_after_its_leader_exited() {
        let data = TempDir::new();
        let s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM; sleep 1000 & echo $!; exit 0",
            ],
        );
        let dir = s.dir.clone();
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let mut exits = Exits::new(4);
        let target = (launched.record.pid, launched.record.start_time);
        exits.watch_child("x".into(), launched.child);
        assert_eq!(exits.next().await.kind, ExitKind::Code(0));
        let orphan: i32 = eventually("the orphan's pid", || {
            logs::tail(&dir, LogStream::Stdout, 1)
                .ok()?
                .first()?
                .parse()
                .ok()
        })
        .await;
        assert!(alive(orphan));
        let target = myco_agent::exec::StopTarget {
            pid: target.0,
            start_time: target.1,
            cgroup: None,
        };
        assert_eq!(
            stop(target, Duration::from_millis(100)).await,
            StopOutcome::Killed
        );
        assert!(!alive(orphan));
    }

    #[tokio::test]
    async fn cgroup_limits_apply_and_kill_all_leaves_nothing() {
        let cgroups = Cgroups::detect();
        let support = &cgroups.0;
        println!("cgroup support: {support:?}");
        if !support.is_usable() {
            println!("SKIP: no usable cgroup here: {}", support.reason);
            return;
        }
        let data = TempDir::new();
        let mut s = spec(
            &data.0,
            // The setsid'd sleep leaves the session and group: only the
            // cgroup still holds it.
            &["/bin/sh", "-c", "setsid sleep 1000 & exec sleep 1000"],
        );
        s.limits = ResourceLimits {
            memory_bytes: Some(64 << 20),
            cpu_milli: Some(250),
            pids: Some(50),
        };
        let launched = spawn(s, support).unwrap();
        let _reaper = Reaper::of(&launched);
        let cg = launched.cgroup.clone().expect("a cgroup");
        let pid = launched.record.pid as i32;
        let pids = eventually("two processes in the cgroup", || {
            let p = cg.pids();
            (p.len() == 2).then_some(p)
        })
        .await;
        assert!(pids.contains(&pid));
        let dirs: Vec<&Path> = cg.dirs().collect();
        let read = |file: &str| -> Option<String> {
            dirs.iter()
                .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
                .map(|s| s.trim().to_owned())
        };
        match support.version {
            CgroupVersion::V2 => {
                if support.limits.iter().any(|l| l == "memory") {
                    assert_eq!(read("memory.max").as_deref(), Some("67108864"));
                }
                if support.limits.iter().any(|l| l == "cpu") {
                    // 250 milli: shares 256, weight 1 + 254 * 9999 / 262142.
                    assert_eq!(read("cpu.weight").as_deref(), Some("10"));
                }
            }
            CgroupVersion::V1 => {
                if support.limits.iter().any(|l| l == "memory") {
                    assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
                }
                if support.limits.iter().any(|l| l == "cpu") {
                    assert_eq!(read("cpu.shares").as_deref(), Some("256"));
                }
            }
            CgroupVersion::None => unreachable!(),
        }
        if support.limits.iter().any(|l| l == "pids") {
            assert_eq!(read("pids.max").as_deref(), Some("50"));
        }
        let usage = cg.usage();
        println!("usage: {usage:?}");
        if support.limits.iter().any(|l| l == "memory") {
            assert!(usage.memory_bytes.is_some_and(|b| b > 0));
        }

        let mut exits = Exits::new(4);
        exits.watch_child("x".into(), launched.child);
        assert_eq!(cg.kill_all().await, 0);
        assert!(cg.pids().is_empty());
        for p in pids {
            assert!(!alive(p), "pid {p} escaped the cgroup kill");
        }
        tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        cg.remove().unwrap();
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    #[tokio::test]
    async fn cgroup_limits_hold_against_the_workload() {
        let cgroups = Cgroups::detect();
        let support = &cgroups.0;
        let has = |c: &str| support.limits.iter().any(|l| l == c);
        if !has("memory") || !has("pids") {
            println!("SKIP: no memory and pids limits here: {}", support.reason);
            return;
        }
        let data = TempDir::new();
        // More memory than allowed: the kernel kills it (no swap here; with
        // swap it would page instead, hence the generous allocation).
        let mut s = spec(
            &data.0,
            &[
                "/usr/bin/python3",
                "-c",
                "x = bytearray(512 << 20); print('survived')",
            ],
        );
        s.limits.memory_bytes = Some(32 << 20);
        let launched = spawn(s, support).unwrap();
        let reaper = Reaper::of(&launched);
        let mut exits = Exits::new(4);
        exits.watch_child("mem".into(), launched.child);
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!(
            exit.kind,
            ExitKind::Signal(9),
            "the memory limit did not hold"
        );
        drop(reaper);

        // Ten background sleeps under a limit of four processes: the
        // shell's fifth fork is refused (dash then exits with 2).
        let mut s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; exec sleep 1000",
            ],
        );
        s.limits.pids = Some(4);
        let dir = s.dir.clone();
        let launched = spawn(s, support).unwrap();
        let _reaper = Reaper::of(&launched);
        let cg = launched.cgroup.clone().unwrap();
        exits.watch_child("pids".into(), launched.child);
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!(exit.kind, ExitKind::Code(2));
        let errors = logs::tail(&dir, LogStream::Stderr, 20).unwrap();
        assert!(errors.iter().any(|l| l.contains("fork")), "{errors:?}");
        assert!(cg.pids().len() <= 3, "{} processes", cg.pids().len());
        assert_eq!(cg.kill_all().await, 0);
        cg.remove().unwrap();
    }

    #[tokio::test]
    async fn stop_reaches_a_process_that_left_the_session_through_the_cgroup() {
        let cgroups = Cgroups::detect();
        if !cgroups.0.is_usable() {
            println!("SKIP: no usable cgroup here: {}", cgroups.0.reason);
            return;
        }
        let data = TempDir::new();
        let s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "setsid sh -c 'trap \"\" TERM; sleep 1000' & exec sleep 1000",
            ],
        );
        let launched = spawn(s, &cgroups.0).unwrap();
        let _reaper = Reaper::of(&launched);
        let cg = launched.cgroup.clone().unwrap();
        let pids = eventually("three processes", || {
            let p = cg.pids();
            (p.len() == 3).then_some(p)
        })
        .await;
        let mut exits = Exits::new(4);
        let target = launched.target();
        let outcome = stop(target, Duration::from_millis(200)).await;
        exits.watch_child("x".into(), launched.child);
        assert_eq!(outcome, StopOutcome::Killed);
        for p in pids {
            assert!(!alive(p), "pid {p} outlived the stop");
        }
        tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        cg.remove().unwrap();
    }

    fn rss_kib_and_fds() -> (u64, usize) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        // tokio waits for a child through a pidfd: that one is expected.
        let fds = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .map(|l| !l.to_string_lossy().contains("pidfd"))
                    .unwrap_or(false)
            })
            .count();
        (rss, fds)
    }

    /// A measurement, not a check: run alone with
    /// `cargo test -p myco-agent --test exec measure -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn measure_agent_cost_per_instance() {
        const N: usize = 200;
        let cgroups = Cgroups::detect();
        let data = TempDir::new();
        let exits = Exits::new(N);
        // Warm up allocator and runtime with one instance first.
        let warm = spawn(spec(&data.0, &["/bin/sleep", "1000"]), &cgroups.0).unwrap();
        let mut kept = vec![(warm.record.clone(), warm.cgroup.clone(), Reaper::of(&warm))];
        exits.watch_child("warm".into(), warm.child);
        let (rss0, fds0) = rss_kib_and_fds();
        for i in 0..N {
            let l = spawn(spec(&data.0, &["/bin/sleep", "1000"]), &cgroups.0).unwrap();
            kept.push((l.record.clone(), l.cgroup.clone(), Reaper::of(&l)));
            exits.watch_child(format!("i{i}"), l.child);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (rss1, fds1) = rss_kib_and_fds();
        println!(
            "{N} instances (cgroups: {:?}): agent RSS {rss0} -> {rss1} KiB, {} B per instance \
             (record + cgroup handle + wait task), fds other than pidfds {fds0} -> {fds1}",
            cgroups.0.version,
            (rss1.saturating_sub(rss0)) * 1024 / N as u64
        );
        assert_eq!(fds0, fds1, "spawn leaks descriptors in the agent");
        for (rec, cg, _) in &kept {
            let target = myco_agent::exec::StopTarget {
                pid: rec.pid,
                start_time: rec.start_time,
                cgroup: cg.as_ref(),
            };
            stop(target, Duration::from_secs(5)).await;
            if let Some(cg) = cg {
                let _ = cg.remove();
            }
        }
    }
}
