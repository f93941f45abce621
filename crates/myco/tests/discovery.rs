//! Finding the mesh without typing addresses, across real network
//! namespaces (not loopback): sealed multicast beacons on a LAN, and join
//! names that resolve to several addresses or change while a node is alone.
//!
//! Each test needs root and `ip netns`; without them it prints why and
//! passes as skipped (CI runs as root).

mod support;

use std::time::Duration;

use support::netns::NetLab;
use support::wait_for;

const KEY: &str = "bXljby1kaXNjb3ZlcnktdGVzdC1rZXktMzItYnl0ZXM=";
const OTHER_KEY: &str = "YW5vdGhlci1tZXNoLXdpdGgtaXRzLW93bi1rZXktISE=";

fn lab(test: &str, n: usize) -> Option<NetLab> {
    match NetLab::new(test, n) {
        Ok(lab) => Some(lab),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn names(n: &[usize]) -> Vec<String> {
    n.iter().map(|i| format!("n{i}")).collect()
}

#[test]
fn nodes_on_one_lan_find_each_other_and_strangers_stay_out() {
    let Some(mut lab) = lab("lan", 4) else { return };
    for i in 0..3 {
        lab.start(i, KEY, &["--discover", "lan"]);
    }
    // Another mesh on the same LAN, with its own key.
    lab.start(3, OTHER_KEY, &["--discover", "lan"]);
    let (_, took) = wait_for("n1..n3 to find each other", Duration::from_secs(20), || {
        for i in 0..3 {
            let alive = lab.alive(i)?;
            if alive != names(&[1, 2, 3]) {
                return Err(format!("n{} sees {alive:?}", i + 1));
            }
        }
        Ok(())
    });
    eprintln!("3 nodes discovered each other in {took:.2?}");
    // The stranger heard their beacons the whole time, and they its: it
    // never got in, and never let them in.
    assert_eq!(lab.alive(3).unwrap(), names(&[4]));
    for i in 0..3 {
        assert!(!lab.alive(i).unwrap().contains(&"n4".to_string()));
    }
}

#[test]
fn a_join_name_uses_every_address_it_resolves_to() {
    let Some(mut lab) = lab("dns_all", 3) else {
        return;
    };
    lab.start(1, KEY, &[]);
    // `fleet.test` names n1 (not running) first, then n2.
    let (n1, n2) = (lab.hosts[0].ip.clone(), lab.hosts[1].ip.clone());
    lab.hosts[2].set_hosts(&format!(
        "127.0.0.1 localhost\n{n1} fleet.test\n{n2} fleet.test\n"
    ));
    lab.start(2, KEY, &["--join", "fleet.test:7946"]);
    wait_for(
        "n3 to join n2 through the name's second address",
        Duration::from_secs(15),
        || {
            let alive = lab.alive(2)?;
            (alive == names(&[2, 3]))
                .then_some(())
                .ok_or(format!("n3 sees {alive:?}"))
        },
    );
}

#[test]
fn a_node_alone_resolves_its_join_name_again() {
    let Some(mut lab) = lab("dns_again", 2) else {
        return;
    };
    lab.start(0, KEY, &[]);
    // The name points nowhere useful when n2 starts...
    let nowhere = lab.unused_ip();
    lab.hosts[1].set_hosts(&format!("127.0.0.1 localhost\n{nowhere} seed.test\n"));
    lab.start(1, KEY, &["--join", "seed.test:7946"]);
    assert_eq!(lab.alive(1).unwrap(), names(&[2]), "n2 starts alone");
    // ...then the operator fixes DNS: n2 finds n1 without a restart.
    let n1 = lab.hosts[0].ip.clone();
    lab.hosts[1].set_hosts(&format!("127.0.0.1 localhost\n{n1} seed.test\n"));
    let (_, took) = wait_for(
        "n2 to find n1 after the name changed",
        Duration::from_secs(20),
        || {
            let alive = lab.alive(1)?;
            (alive == names(&[1, 2]))
                .then_some(())
                .ok_or(format!("n2 sees {alive:?}"))
        },
    );
    eprintln!("found after the change in {took:.2?}");
}
