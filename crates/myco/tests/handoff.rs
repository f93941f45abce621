//! A graceful leave (SIGTERM) hands its instances off first: their slots
//! are ready on the other nodes before its own are stopped, so the ready
//! count never drops, and the agent exits with nothing of its own left
//! running. When the node comes back, `spread` moves a slot back to it,
//! and the node giving it up keeps serving it until the returned node's
//! instance is ready (make before break): the count never drops either.
//! A whole mesh stopped at once does not wait out the hand-off bound.

mod support;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Harness, OK_SERVER, cli, ok, procs_in, push_script_spore, s, wait_for};

const READY: Duration = Duration::from_secs(40);

fn ready(list: &Value) -> usize {
    list.as_array()
        .map_or(0, |l| l.iter().filter(|x| x["state"] == "ready").count())
}

#[test]
fn a_graceful_leave_hands_its_instances_off_before_stopping_them() {
    let mut h = Harness::new("handoff");
    web_on_three(&mut h);

    // Watch the ready count from node 1 while node 3 leaves, and whether
    // node 1 lists node 3 as draining meanwhile.
    let watch = Watch::start(h.agent(0).anon());
    let n1 = h.agent(0).anon();
    let seen_draining = std::thread::spawn(move || {
        let until = std::time::Instant::now() + READY;
        while std::time::Instant::now() < until {
            if let Ok(nodes) = n1.nodes()
                && nodes.iter().any(|n| n.name == "n3" && n.draining)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    h.terminate(2);
    let (status, took) = h
        .wait_exit(2, READY)
        .expect("the agent exits within the bound");
    assert!(status.success(), "{status:?}");
    println!("graceful leave with hand-off took {took:?}");
    assert!(
        seen_draining.join().unwrap(),
        "node 1 never listed the leaving node as draining"
    );
    assert!(
        procs_in(&h.agent(2).dir).is_empty(),
        "the leaving node left its instance running"
    );
    wait_for("3 ready on the two nodes left", READY, || {
        let n: usize = (0..2).map(|i| procs_in(&h.agent(i).dir).len()).sum();
        let list: Value = h
            .agent(0)
            .anon()
            .get("/v1/instances?job=web")
            .map_err(|e| e.to_string())?;
        if n == 3 && ready(&list) == 3 {
            Ok(())
        } else {
            Err(format!("{n} processes, {} ready", ready(&list)))
        }
    });
    let low = watch.lowest();
    assert!(
        low >= 3,
        "ready instances fell to {low} during the hand-off"
    );

    // Node 3 comes back: one slot moves back to it, and the node that
    // gives it up keeps it until node 3's instance is ready.
    let watch = Watch::start(h.agent(0).anon());
    h.restart(2);
    one_per_node(&h, "3 ready, one per node again");
    let low = watch.lowest();
    assert!(
        low >= 3,
        "ready instances fell to {low} while a slot moved back to the returned node"
    );
}

#[test]
fn stopping_every_node_at_once_does_not_wait_out_the_hand_off_bound() {
    // Each leaving node marks itself draining: the others stop waiting for
    // it to take their slots. Before the mark each waited for peers that
    // were leaving too, for the whole bound (60 s here).
    let mut h = Harness::with_env("handoff-all", &[("MYCO_HANDOFF_MS", "60000")]);
    web_on_three(&mut h);
    let sent = std::time::Instant::now();
    for i in 0..3 {
        h.terminate(i);
    }
    for i in 0..3 {
        let (status, _) = h
            .wait_exit(i, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("n{} still handing off after 30 s", i + 1));
        assert!(status.success(), "{status:?}");
        println!("n{} gone {:?} after the SIGTERMs", i + 1, sent.elapsed());
        assert!(
            procs_in(&h.agent(i).dir).is_empty(),
            "n{} left its instance running",
            i + 1
        );
    }
}

/// A mesh of three running job `web` (3 instances), one ready per node.
fn web_on_three(h: &mut Harness) {
    h.mesh(3);
    push_script_spore(h, h.agent(0), "srv", OK_SERVER);
    let file = h.root.join("web.toml");
    fs::write(
        &file,
        "name = \"web\"\nspore = \"srv@1\"\ncount = 3\nkill_timeout_ms = 1000\n\
         [health]\nhttp = \"/\"\ninterval_ms = 300\n",
    )
    .unwrap();
    ok(
        &cli(h.agent(0), &["deploy", s(&file), "--detach"]),
        "deploy",
    );
    one_per_node(h, "3 ready, one per node");
}

/// Waits until the job has 3 ready instances, one process on each node.
fn one_per_node(h: &Harness, what: &str) {
    wait_for(what, READY, || {
        let n: Vec<usize> = (0..3).map(|i| procs_in(&h.agent(i).dir).len()).collect();
        let list: Value = h
            .agent(0)
            .anon()
            .get("/v1/instances?job=web")
            .map_err(|e| e.to_string())?;
        if ready(&list) == 3 && n == [1, 1, 1] {
            Ok(())
        } else {
            Err(format!("{} ready, processes {n:?}", ready(&list)))
        }
    });
}

/// Polls node 1's view of the job's ready count every 50 ms, keeping the
/// lowest seen.
struct Watch {
    stop: Arc<AtomicBool>,
    low: Arc<AtomicUsize>,
    poller: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(client: myco_client::Client) -> Watch {
        let (stop, low) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(99)),
        );
        let (s2, l2) = (stop.clone(), low.clone());
        let poller = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Ok(list) = client.get::<Value>("/v1/instances?job=web") {
                    l2.fetch_min(ready(&list), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watch { stop, low, poller }
    }

    fn lowest(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.poller.join().unwrap();
        self.low.load(Ordering::Relaxed)
    }
}
