//! The exec mechanisms around a running instance, with real processes:
//! log rotation while the instance writes, tail and follow; an instance
//! outliving a SIGKILLed "agent" and found again by a record scan; reused
//! pids; health probes; spore unpacking and volumes.

mod exec_util;

/// Named `exec` so that `cargo test -p myco-agent exec` selects these.
mod exec {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use crate::exec_util::*;
    use myco_agent::exec::cgroup::{CgroupConfig, CgroupSupport, InstanceCgroup};
    use myco_agent::exec::logs::{self, Follow, LogLimits, LogStream};
    use myco_agent::exec::record::{self, InstanceRecord, Liveness, RECORD_FORMAT};
    use myco_agent::exec::{
        ExecError, ExitKind, Exits, PortPool, ProbeKind, ProbeResult, Prober, StopOutcome,
        StopTarget, instance_dir, probe, spawn, stop,
    };

    fn number(line: &str) -> u64 {
        line.strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a log line: {line:?}"))
    }

    #[tokio::test]
    async fn logs_rotate_while_the_instance_writes_and_follow_keeps_up() {
        let data = TempDir::new();
        let s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "i=0; while :; do echo \"line $i\"; i=$((i+1)); \
             if [ $((i % 50)) -eq 0 ]; then sleep 0.01; fi; done",
            ],
        );
        let dir = s.dir.clone();
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let limits = LogLimits {
            max_bytes: 8192,
            files: 3,
        };
        // Wait for some output, then tail it and follow on from there.
        eventually("first lines", || {
            (logs::tail(&dir, LogStream::Stdout, 1).unwrap().len() == 1).then_some(())
        })
        .await;
        let (first, mut follow) = Follow::with_tail(&dir, LogStream::Stdout, 3).unwrap();
        assert_eq!(first.len(), 3);
        let mut seen: Vec<u64> = first.iter().map(|l| number(l)).collect();
        let mut rotations = 0;
        let until = Instant::now() + DEADLINE;
        while rotations < 4 {
            assert!(Instant::now() < until, "only {rotations} rotations");
            rotations += logs::rotate_if_needed(&dir, &limits).unwrap();
            seen.extend(follow.poll_lines().unwrap().iter().map(|l| number(l)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.extend(follow.poll_lines().unwrap().iter().map(|l| number(l)));

        let live = logs::log_path(&dir, LogStream::Stdout);
        let with = |n: u32| {
            let mut p = live.as_os_str().to_owned();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        let one = std::fs::metadata(with(1)).unwrap().len();
        assert!(
            one > limits.max_bytes && one < limits.max_bytes + (256 << 10),
            "{one}"
        );
        assert!(with(2).exists());
        assert!(!with(3).exists(), "only 3 files are kept");
        // O_APPEND: after a truncate the writer starts again at 0, no hole.
        let head = std::fs::read(&live).unwrap();
        assert!(
            head.first().is_none_or(|&b| b == b'l'),
            "a hole in the live file"
        );

        assert!(seen.windows(2).all(|w| w[0] < w[1]), "follow went back");
        assert_eq!(seen[3], seen[2] + 1, "a line between tail and follow");
        let span = seen.last().unwrap() - seen.first().unwrap() + 1;
        let lost = span - seen.len() as u64;
        println!(
            "followed {} lines over {rotations} rotations, {lost} lost",
            seen.len()
        );
        assert!(lost <= 20 * rotations as u64, "{lost} lines lost");

        let last = logs::tail(&dir, LogStream::Stdout, 5).unwrap();
        assert_eq!(last.len(), 5);
        let n: Vec<u64> = last.iter().map(|l| number(l)).collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
        let all = logs::tail(&dir, LogStream::Stdout, 1_000_000).unwrap();
        assert!(all.len() > 1000 && all.len() <= logs::MAX_TAIL_LINES);
        let all: Vec<u64> = all.iter().map(|l| number(l)).collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "tail across files out of order"
        );

        let mut exits = Exits::new(2);
        assert_eq!(
            stop(launched.target(), Duration::from_secs(5)).await,
            StopOutcome::Terminated
        );
        exits.watch_child("x".into(), launched.child);
        exits.next().await;
        // Nothing logged, nothing rotated, nothing written.
        assert_eq!(logs::rotate_if_needed(&dir, &limits).unwrap(), 0);
    }

    const HELPER_ENV: &str = "MYCO_EXEC_TEST_AGENT";

    /// Not a test on its own: the "agent" that `an_instance_outlives_a_killed_agent`
    /// runs as a separate process. Does nothing unless that test set it up.
    #[tokio::test]
    async fn agent_helper() {
        let Ok(args) = std::env::var(HELPER_ENV) else {
            return;
        };
        let (data, parent) = args.split_once('\n').unwrap();
        let support = CgroupSupport::detect(&CgroupConfig {
            enabled: true,
            parent: parent.to_owned(),
        });
        let launched = spawn(spec(Path::new(data), &["/bin/sleep", "1000"]), &support).unwrap();
        // Keep the child handle (as an agent would) until we are killed.
        let _child = launched.child;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn an_instance_outlives_a_killed_agent_and_is_adopted() {
        let parent = unique("myco-test");
        let cgroups = Cgroups::detect_at(&parent);
        let data = TempDir::new();
        let helper = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "exec::agent_helper", "--nocapture"])
            .env(HELPER_ENV, format!("{}\n{parent}", data.0.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut helper = KillOnDrop(helper);
        let helper_pid = helper.0.id();
        let rec: InstanceRecord = eventually("the helper's instance record", || {
            let mut found = record::scan(&data.0);
            (found.len() == 1 && found[0].record.is_ok()).then(|| found.remove(0).record.unwrap())
        })
        .await;
        let cgroup = rec.cgroup.as_ref().map(InstanceCgroup::from_record);
        assert_eq!(cgroup.is_some(), cgroups.0.is_usable());
        let _reaper = Reaper {
            pid: rec.pid as i32,
            cgroup: cgroup.clone(),
        };
        // SIGKILL the agent: its instance runs on, re-parented.
        helper.0.kill().unwrap();
        helper.0.wait().unwrap();
        assert!(alive(rec.pid as i32), "the instance died with the agent");
        let ppid: u32 = stat_fields(rec.pid)[1].parse().unwrap();
        assert_ne!(ppid, helper_pid);
        let found = record::scan(&data.0);
        assert_eq!(found[0].liveness, Liveness::Alive);

        // A new agent adopts it: it watches by polling, then stops it.
        let mut exits = Exits::new(2);
        exits.watch_adopted(&rec);
        let target = StopTarget {
            pid: rec.pid,
            start_time: rec.start_time,
            cgroup: cgroup.as_ref(),
        };
        assert_eq!(
            stop(target, Duration::from_secs(5)).await,
            StopOutcome::Terminated
        );
        let exit = tokio::time::timeout(DEADLINE, exits.next()).await.unwrap();
        assert_eq!((exit.pid, exit.kind), (rec.pid, ExitKind::Unknown));
        assert_ne!(record::scan(&data.0)[0].liveness, Liveness::Alive);
        if let Some(cg) = &cgroup {
            cg.remove().unwrap();
        }
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_ours() {
        let data = TempDir::new();
        let me = std::process::id();
        let start: u64 = stat_fields(me)[19].parse().unwrap();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let cases = [
            ("a-reused", me, start + 1, boot.trim(), Liveness::PidReused),
            ("b-ours", me, start, boot.trim(), Liveness::Alive),
            (
                "c-rebooted",
                me,
                start,
                "00000000-0000-0000-0000-000000000000",
                Liveness::Gone,
            ),
            ("d-gone", u32::MAX - 1, start, boot.trim(), Liveness::Gone),
        ];
        for (id, pid, start_time, boot_id, _) in &cases {
            let dir = instance_dir::prepare_bare(&data.0, id).unwrap();
            let rec = InstanceRecord {
                format: RECORD_FORMAT,
                instance: id.to_string(),
                job: "web".into(),
                slot: 1,
                version: "3".into(),
                digest: "sha256:00".into(),
                pid: *pid,
                start_time: *start_time,
                boot_id: boot_id.to_string(),
                port: 20001,
                cgroup: None,
                started_at_ms: 1,
            };
            record::write(&dir, &rec).unwrap();
            assert_eq!(record::read(&dir).unwrap(), rec);
        }
        let bad = instance_dir::prepare_bare(&data.0, "e-garbage").unwrap();
        std::fs::write(record::record_path(&bad), b"{not json").unwrap();

        let found = record::scan(&data.0);
        assert_eq!(found.len(), 5);
        for (f, (id, .., want)) in found.iter().zip(&cases) {
            assert_eq!(f.record.as_ref().unwrap().instance, *id);
            assert_eq!(f.liveness, *want, "{id}");
        }
        assert!(matches!(found[4].record, Err(ExecError::BadRecord { .. })));
        assert_eq!(found[4].liveness, Liveness::Gone);
    }

    #[tokio::test]
    async fn probes_tell_healthy_from_unhealthy() {
        let data = TempDir::new();
        let mut pool = PortPool::new(20000..=29999);
        let port = pool.lease().unwrap();
        let mut s = spec(
            &data.0,
            &[
                "/bin/sh",
                "-c",
                "exec python3 -m http.server $PORT --bind 127.0.0.1",
            ],
        );
        s.port = port;
        std::fs::write(s.dir.join("health"), "ok").unwrap();
        let dir = s.dir.clone();
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let prober = Prober::new(2);
        let t = Duration::from_secs(2);
        let until = Instant::now() + DEADLINE;
        while !prober
            .check(&ProbeKind::Tcp, port, &dir, t)
            .await
            .is_healthy()
        {
            assert!(
                Instant::now() < until,
                "python's http.server never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let http = |path: &str| ProbeKind::Http { path: path.into() };
        assert_eq!(
            probe(&http("/health"), port, &dir, t).await,
            ProbeResult::Healthy
        );
        assert_eq!(
            probe(&http("/missing"), port, &dir, t).await,
            ProbeResult::Unhealthy("HTTP 404".into())
        );
        assert!(!probe(&http("health"), port, &dir, t).await.is_healthy());

        // Nothing listens on a freshly leased port.
        let free = pool.lease().unwrap();
        assert!(matches!(
            probe(&ProbeKind::Tcp, free, &dir, t).await,
            ProbeResult::Unhealthy(_)
        ));
        // A listener that never answers: the kernel accepts, nobody reads.
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mute_port = mute.local_addr().unwrap().port();
        let short = Duration::from_millis(200);
        assert_eq!(
            probe(&http("/"), mute_port, &dir, short).await,
            ProbeResult::TimedOut
        );

        let exec = |script: &str| ProbeKind::Exec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        };
        let check_port = format!("test \"$PORT\" = {port} && test -f health");
        assert_eq!(
            probe(&exec(&check_port), port, &dir, t).await,
            ProbeResult::Healthy
        );
        assert!(matches!(
            probe(&exec("exit 3"), port, &dir, t).await,
            ProbeResult::Unhealthy(_)
        ));
        let started = Instant::now();
        assert_eq!(
            probe(&exec("sleep 30"), port, &dir, short).await,
            ProbeResult::TimedOut
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut exits = Exits::new(2);
        stop(launched.target(), Duration::from_secs(5)).await;
        exits.watch_child("x".into(), launched.child);
        exits.next().await;
    }

    #[tokio::test]
    async fn a_spore_is_unpacked_and_run_in_its_instance_dir() {
        let data = TempDir::new();
        let src = data.0.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let script = src.join("run.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"cwd=$(pwd) port=$PORT\"\nexec sleep 1000\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = myco_spore::SigningKey::from_bytes(&[7u8; 32]);
        let pack = |src: &Path, out: &Path| {
            let meta = myco_spore::PackMeta {
                name: "hello".into(),
                version: "1".into(),
                command: "run.sh".into(),
                created_at: 1,
                ..Default::default()
            };
            myco_spore::pack(src, meta, &key, &mut std::fs::File::create(out).unwrap()).unwrap()
        };
        let spore = data.0.join("hello.spore");
        let info = pack(&src, &spore);
        let trusted = [key.verifying_key()];
        let limits = myco_spore::Limits::default();

        let p = instance_dir::prepare(&data.0, "hello-1", &spore, &trusted, &limits).unwrap();
        assert!(!p.reused);
        assert_eq!(p.verified.digest, info.digest);
        assert!(p.dir.join("run.sh").is_file());
        let again = instance_dir::prepare(&data.0, "hello-1", &spore, &trusted, &limits).unwrap();
        assert!(again.reused);
        let stranger = myco_spore::SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(matches!(
            instance_dir::prepare(&data.0, "hello-2", &spore, &[stranger], &limits),
            Err(ExecError::Spore(_))
        ));
        assert!(!data.0.join("instances/hello-2").exists());
        assert!(matches!(
            instance_dir::prepare(&data.0, "../x", &spore, &trusted, &limits),
            Err(ExecError::BadName { .. })
        ));

        let mut s = spec(&data.0, &[]);
        s.instance = "hello-1".into();
        s.dir = p.dir.clone();
        s.argv = vec![p.verified.manifest.command.clone()];
        s.port = 20002;
        let launched = spawn(s, &CgroupSupport::none("test")).unwrap();
        let _reaper = Reaper::of(&launched);
        let want = format!("cwd={} port=20002", p.dir.display());
        eventually("the spore's output", || {
            (logs::tail(&p.dir, LogStream::Stdout, 1).unwrap() == [want.clone()]).then_some(())
        })
        .await;
        let mut exits = Exits::new(2);
        stop(launched.target(), Duration::from_secs(5)).await;
        exits.watch_child("x".into(), launched.child);
        exits.next().await;

        let sneaky = data.0.join("sneaky");
        std::fs::create_dir_all(sneaky.join(".myco")).unwrap();
        std::fs::copy(&script, sneaky.join("run.sh")).unwrap();
        std::fs::write(sneaky.join(".myco/record.json"), "{}").unwrap();
        let sneaky_spore = data.0.join("sneaky.spore");
        pack(&sneaky, &sneaky_spore);
        assert!(matches!(
            instance_dir::prepare(&data.0, "sneaky-1", &sneaky_spore, &trusted, &limits),
            Err(ExecError::ReservedName)
        ));
        assert!(!data.0.join("instances/sneaky-1").exists());

        let vol = instance_dir::volume(&data.0, "hello", "db").unwrap();
        assert_eq!(vol, data.0.join("volumes/hello/db"));
        let mode = std::fs::metadata(&vol).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
