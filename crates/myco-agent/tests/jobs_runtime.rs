//! The jobs runtime with real processes: an in-process agent (mesh loop,
//! store, spores) whose runtime drives the core's controller, jobs written
//! to `Table::JOBS` as the API would, and real spores run from their
//! instance directories.

mod jobs_util;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use jobs_util::{agent, alive, data_dir, http_get, wait_for, wait_for_async};
use myco_proto::instance::InstanceState;

/// An HTTP server answering with its instance id (python3's http.server
/// serving a file it writes).
const WEB: &str = "#!/bin/sh\necho \"$MYCO_INSTANCE\" > id.txt\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n";
/// A process that does nothing for a long time.
const SLEEP: &str = "#!/bin/sh\nexec sleep 100000\n";
/// Notes its id in its volume, then sleeps.
const VOLUME: &str = "#!/bin/sh\necho \"$MYCO_INSTANCE\" >> var/data/seen\nexec sleep 100000\n";
/// A command that fails at once.
const CRASH: &str = "#!/bin/sh\necho dying >&2\nexit 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_two_becomes_two_ready_instances_that_answer() {
    let dir = data_dir("count2");
    let a = agent(&dir, 32000..=32099).await;
    let digest = a.spore("web", WEB).await;
    a.deploy(
        "name = \"web\"\nspore = \"x@1\"\ncount = 2\n[health]\nhttp = \"/id.txt\"\ninterval_ms = 1000\n",
        &digest,
    )
    .await;
    let ready = wait_for("2 ready instances with addrs", || {
        let r: Vec<_> = a
            .instances("web")
            .into_iter()
            .filter(|r| r.state == InstanceState::Ready && r.addr.is_some())
            .collect();
        (r.len() == 2).then_some(r)
    })
    .await;
    let mut slots: Vec<u32> = ready.iter().map(|r| r.slot).collect();
    slots.sort();
    assert_eq!(slots, [0, 1], "one instance per slot");
    for r in &ready {
        let addr = r.addr.unwrap();
        assert!((32000..=32099).contains(&addr.port()), "{addr}");
        let body = http_get(addr, "/id.txt")
            .await
            .expect("the instance answers");
        assert!(
            body.contains(&r.id),
            "{addr} answered {body:?}, not {}",
            r.id
        );
    }
    let stats = &a.shared().stats;
    assert_eq!(stats.spawns.load(Ordering::Relaxed), 2);
    assert_eq!(stats.spawn_failures.load(Ordering::Relaxed), 0);
    assert_eq!(a.shared().by_state().get(&InstanceState::Ready), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_at_once_restarts_then_fails() {
    let dir = data_dir("crash");
    let a = agent(&dir, 32100..=32199).await;
    let digest = a.spore("crash", CRASH).await;
    a.deploy(
        "name = \"crash\"\nspore = \"x@1\"\n[restart]\nattempts = 2\ninterval_ms = 60000\ndelay_ms = 100\nmax_delay_ms = 200\n",
        &digest,
    )
    .await;
    // After the budget the node gives up: `failed`, with an avoidance
    // that moves the slot elsewhere.
    let failed = wait_for("the node to give up after the restart budget", || {
        a.instances("crash")
            .into_iter()
            .find(|r| r.state == InstanceState::Failed && r.avoid_until_ms.is_some())
    })
    .await;
    assert!(failed.restarts >= 2, "{failed:?}");
    assert_eq!(failed.last_exit, Some(myco_proto::instance::Exit::Code(3)));
    assert!(!failed.reason.is_empty(), "a failed record says why");
    let stats = &a.shared().stats;
    assert!(stats.restarts.load(Ordering::Relaxed) >= 2);
    assert!(stats.spawns.load(Ordering::Relaxed) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_leaves_no_process_and_keeps_its_volume() {
    let dir = data_dir("stop");
    let a = agent(&dir, 32200..=32299).await;
    let digest = a.spore("sleepy", VOLUME).await;
    let job = a
        .deploy(
            "name = \"sleepy\"\nspore = \"x@1\"\ncount = 2\nkill_timeout_ms = 500\n[[volumes]]\nname = \"data\"\npath = \"var/data\"\n",
            &digest,
        )
        .await;
    let pids = wait_for("2 running instances", || {
        let local = a.shared().local();
        let pids: Vec<u32> = local
            .values()
            .filter(|i| i.state == InstanceState::Ready)
            .filter_map(|i| i.pid)
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    assert!(pids.iter().all(|p| alive(*p)));
    // Both instances of this node found the job's volume where it says.
    let seen_file = dir.join("volumes/sleepy/data/seen");
    let seen = wait_for("both instances wrote to the volume", || {
        let seen = std::fs::read_to_string(&seen_file).ok()?;
        (seen.lines().count() == 2).then_some(seen)
    })
    .await;
    for id in a.shared().local().keys() {
        assert!(seen.lines().any(|l| l == id), "{id} not in {seen:?}");
    }
    let mut stopped = job.clone();
    stopped.stopped = true;
    a.put_job(&stopped).await;
    wait_for("every process gone", || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    wait_for("no local instance left", || {
        a.shared()
            .local()
            .values()
            .all(|i| i.pid.is_none())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_adopts_running_instances() {
    let dir = data_dir("adopt");
    let mut a = agent(&dir, 32300..=32399).await;
    let digest = a.spore("sleepy", SLEEP).await;
    a.deploy("name = \"sleepy\"\nspore = \"x@1\"\ncount = 2\n", &digest)
        .await;
    let before: BTreeMap<String, u32> = wait_for("2 ready instances", || {
        let local = a.shared().local();
        let ready: BTreeMap<String, u32> = local
            .into_iter()
            .filter(|(_, i)| i.state == InstanceState::Ready)
            .filter_map(|(id, i)| Some((id, i.pid?)))
            .collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;

    // The agent's runtime dies; its instances do not.
    a.stop_runtime().await;
    assert!(before.values().all(|p| alive(*p)));
    a.start_runtime().await;

    let after: BTreeMap<String, u32> = wait_for("the same 2 instances adopted", || {
        let local = a.shared().local();
        let ready: BTreeMap<String, u32> = local
            .into_iter()
            .filter(|(_, i)| i.state == InstanceState::Ready)
            .filter_map(|(id, i)| Some((id, i.pid?)))
            .collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;
    assert_eq!(after, before, "same ids, same pids");
    let stats = &a.shared().stats;
    assert_eq!(stats.adopted.load(Ordering::Relaxed), 2);
    // Give a wrong decision time to show: nothing is started again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(stats.spawns.load(Ordering::Relaxed), 0, "no new process");
    assert_eq!(a.shared().local().len(), 2);
    assert!(before.values().all(|p| alive(*p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reboot_instances_start_again_from_the_local_replica() {
    let dir = data_dir("reboot");
    let a = agent(&dir, 32400..=32499).await;
    let digest = a.spore("sleepy", SLEEP).await;
    a.deploy("name = \"sleepy\"\nspore = \"x@1\"\ncount = 2\n", &digest)
        .await;
    let before: Vec<u32> = wait_for("2 ready instances", || {
        let pids: Vec<u32> = a.shared().local().values().filter_map(|i| i.pid).collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    // The machine goes down: agent and instances die. No peer exists.
    drop(a);
    wait_for("the old processes gone", || {
        before.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    // A dead instance of a job that is gone: nothing will start it again.
    let mut ghost = myco_agent::exec::record::read(
        &std::fs::read_dir(dir.join("instances"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    ghost.instance = "ghost-0-v1-1".into();
    ghost.job = "ghost".into();
    let ghost_dir = myco_agent::exec::instance_dir::prepare_bare(&dir, &ghost.instance).unwrap();
    myco_agent::exec::record::write(&ghost_dir, &ghost).unwrap();
    let a = agent(&dir, 32400..=32499).await;
    let after: Vec<u32> = wait_for("2 instances started again", || {
        let pids: Vec<u32> = a
            .shared()
            .local()
            .values()
            .filter(|i| i.state == InstanceState::Ready)
            .filter_map(|i| i.pid)
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    assert!(after.iter().all(|p| alive(*p) && !before.contains(p)));
    assert_eq!(a.shared().stats.adopted.load(Ordering::Relaxed), 0);
    // The ghost's directory is swept; the restarted instances keep theirs.
    wait_for("the dead instance's directory removed", || {
        (!ghost_dir.exists()).then_some(())
    })
    .await;
    let left = std::fs::read_dir(dir.join("instances")).unwrap().count();
    assert_eq!(left, 2, "the running instances' directories stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_from_local_files_and_followed() {
    use myco_agent::http::logs::{Followers, LogQuery, read};
    use tokio_stream::StreamExt;
    let dir = data_dir("logs");
    let a = agent(&dir, 32500..=32599).await;
    let script = "#!/bin/sh\necho \"hello from $MYCO_INSTANCE\"\necho oops >&2\ni=0\nwhile true; do echo \"tick $i\"; i=$((i+1)); sleep 0.1; done\n";
    let digest = a.spore("talk", script).await;
    a.deploy("name = \"talk\"\nspore = \"x@1\"\n", &digest)
        .await;
    let id = wait_for("a ready instance", || {
        let r = a.instances("talk").into_iter().next()?;
        (r.state == InstanceState::Ready).then_some(r.id)
    })
    .await;
    let followers = Followers::default();
    let body = |resp: axum::response::Response| async move {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let text = wait_for_async(|| async {
        let q = LogQuery {
            tail: Some(1000),
            ..LogQuery::default()
        };
        let resp = read(&a.mesh, &dir, &followers, None, "talk", q)
            .await
            .ok()?;
        let text = body(resp).await;
        text.contains("tick 1").then_some(text)
    })
    .await;
    assert!(text.contains(&format!("hello from {id}\n")), "{text}");
    assert!(text.contains("stderr: oops\n"), "{text}");

    // Following the job: the tail first, then lines written after, each
    // labelled with its instance (others may join a job-wide follow).
    let q = LogQuery {
        tail: Some(1),
        follow: true,
        ..LogQuery::default()
    };
    let resp = read(&a.mesh, &dir, &followers, None, "talk", q)
        .await
        .unwrap();
    let mut stream = resp.into_body().into_data_stream();
    let first = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    let last_tick = |s: &str| -> Option<u32> {
        s.lines()
            .filter_map(|l| l.strip_prefix(&format!("[{id}] tick "))?.parse().ok())
            .max()
    };
    let start = last_tick(&first).expect("the tail has a tick");
    let mut seen = start;
    while seen <= start {
        let chunk = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
        seen = last_tick(&chunk).unwrap_or(seen);
    }

    // Unknown job: 404. An instance on another node: 409 naming it.
    let none = read(&a.mesh, &dir, &followers, None, "nope", LogQuery::default()).await;
    assert_eq!(none.unwrap_err().code, axum::http::StatusCode::NOT_FOUND);
    let mut other = a.instances("talk").remove(0);
    other.id = "talk-0-v1-remote".into();
    other.node = myco_proto::NodeId::from_u64(2);
    a.mesh
        .write(
            myco_proto::Table::INSTANCES,
            &other.key(),
            Some(other.encode()),
        )
        .await
        .unwrap();
    let q = LogQuery {
        instance: Some(other.id.clone()),
        ..LogQuery::default()
    };
    let err = read(&a.mesh, &dir, &followers, None, "talk", q)
        .await
        .unwrap_err();
    assert_eq!(err.code, axum::http::StatusCode::CONFLICT);
    assert!(
        err.message.contains(&other.node.to_string()),
        "{}",
        err.message
    );
    // With remote reading, a node that cannot be asked (here: not even a
    // member) still gets the 409, which `myco logs` follows.
    let q = LogQuery {
        instance: Some(other.id.clone()),
        ..LogQuery::default()
    };
    let err = read(&a.mesh, &dir, &followers, Some(&a.logs), "talk", q)
        .await
        .unwrap_err();
    assert_eq!(err.code, axum::http::StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gets_its_own_limited_cgroup_removed_on_stop() {
    let dir = data_dir("cgroup");
    let mut a = agent(&dir, 32600..=32699).await;
    a.cgroups = myco_agent::exec::CgroupConfig {
        enabled: true,
        parent: format!("myco-test-jobs-{}", std::process::id()),
    };
    a.stop_runtime().await;
    a.start_runtime().await;
    let support = a.shared().cgroups.clone();
    if !support.is_usable() {
        eprintln!("SKIPPED: no usable cgroups here: {}", support.reason);
        return;
    }
    // Whatever happens, the test's cgroups go (instance ones, then parents).
    struct Cleanup(
        std::sync::Arc<myco_agent::exec::CgroupSupport>,
        Vec<std::path::PathBuf>,
    );
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for d in &self.1 {
                let _ = std::fs::remove_dir(d);
            }
            self.0.remove_parents();
        }
    }
    let mut cleanup = Cleanup(support.clone(), Vec::new());
    let digest = a.spore("sleepy", SLEEP).await;
    let job = a
        .deploy(
            "name = \"limited\"\nspore = \"x@1\"\nkill_timeout_ms = 500\n[resources]\nmemory_mb = 32\n",
            &digest,
        )
        .await;
    let (id, pid) = wait_for("a running instance", || {
        a.shared()
            .local()
            .into_iter()
            .find_map(|(id, i)| Some((id, i.pid?)))
    })
    .await;
    let record = myco_agent::exec::record::read(&dir.join("instances").join(&id)).unwrap();
    let cg = record.cgroup.expect("the instance has a cgroup");
    assert!(!cg.dirs.is_empty());
    cleanup.1 = cg.dirs.iter().map(|d| d.path.clone()).collect();
    for d in &cg.dirs {
        let procs = std::fs::read_to_string(d.path.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            d.path.display()
        );
        if d.controllers.iter().any(|c| c == "memory") {
            let limit = ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.path.join(f)).ok())
                .unwrap();
            assert_eq!(limit.trim(), (32u64 << 20).to_string());
        }
    }
    let mut stopped = job.clone();
    stopped.stopped = true;
    a.put_job(&stopped).await;
    wait_for("the process and its cgroup gone", || {
        (!alive(pid) && cg.dirs.iter().all(|d| !d.path.exists())).then_some(())
    })
    .await;
    drop(a);
    drop(cleanup);
}
