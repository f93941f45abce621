//! MicroVM instances through their life, with real agents and QEMU guests
//! (gated like `microvm.rs`: skipped with the reason where no KVM boots
//! the guest, run under emulation with `MYCO_TEST_MICROVM=tcg`):
//!
//! - a stop is clean: the agent presses the guest's ACPI power button, the
//!   guest's init sends the workload SIGTERM, waits for it and powers off,
//!   well before the kill timeout.

mod microvm_util;
mod support;

use std::time::{Duration, Instant};

use microvm_util::{Setup, consoles, deploy, push_vm_spore, ready, setup};
use support::{cli, ok, procs_in, wait_for};

/// Long enough that a stop which waits for it cannot pass for clean.
const KILL_TIMEOUT_MS: u64 = 120_000;

#[test]
fn a_stopped_microvm_powers_off_before_the_kill_timeout_and_its_workload_gets_sigterm() {
    let Some(Setup {
        env,
        mut h,
        root,
        init,
    }) = setup("microvm-stop", "26100-26199")
    else {
        return;
    };
    h.mesh(1);
    let a = h.agent(0);
    push_vm_spore(&h, a, &root, &init, &env.kernel, 1);
    deploy(&h, a, 1, 1, KILL_TIMEOUT_MS);
    wait_for("1 ready microVM instance", env.ready_in(), || {
        let r = ready(a)?;
        if r.len() == 1 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert!(!procs_in(&a.dir).is_empty(), "QEMU runs under the data dir");
    let t0 = Instant::now();
    ok(&cli(a, &["job", "stop", "vm"]), "myco job stop");
    // The instance directory (its console with it) goes once QEMU is
    // gone: keep the newest text seen.
    let mut console = String::new();
    wait_for(
        "QEMU to exit",
        Duration::from_millis(KILL_TIMEOUT_MS - 10_000),
        || {
            let now = consoles(&a.dir);
            if now.len() >= console.len() {
                console = now;
            }
            let left = procs_in(&a.dir);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    let took = t0.elapsed();
    println!("microVM stopped in {took:?} ({})", env.accel);
    assert!(
        took < Duration::from_millis(KILL_TIMEOUT_MS / 2),
        "stopped only after {took:?}: the guest ignored the power button"
    );
    for line in ["myco guest: power button", "serve: got SIGTERM"] {
        assert!(
            console.contains(line),
            "{line:?} not on the console: {console}"
        );
    }
}
