//! What `myco dev` prints once the mesh formed: where each node listens,
//! how the CLI finds it, and commands to try (the first-hour test runs
//! every one of them as typed).

use std::path::Path;
use std::time::Duration;

use super::DevNodes;
use crate::cli::DevArgs;
use crate::devctx;

/// Prints the banner; `demo` is the demo job's name if it was deployed.
pub fn banner(
    args: &DevArgs,
    nodes: &DevNodes,
    publisher: &Path,
    demo: Option<&str>,
    took: Duration,
) {
    let d = args.dir.display();
    println!(
        "myco dev: {} nodes formed a mesh in {:.1}s (data in {d})\n",
        nodes.0.len(),
        took.as_secs_f64(),
    );
    for n in &nodes.0 {
        println!(
            "  {:<4} dashboard+API http://127.0.0.1:{}   edge http://127.0.0.1:{}/<job>/   mesh 127.0.0.1:{}   pid {}",
            n.name,
            n.api,
            n.edge,
            n.mesh,
            n.pid().unwrap_or(0)
        );
    }
    let last = nodes.0.last().map_or(args.api_port, |n| n.api);
    let key = publisher
        .file_name()
        .map_or_else(|| publisher.to_path_buf(), |f| args.dir.join(f));
    println!(
        "\nThe CLI run in this directory finds n1 and its API token through {d}/{} \
         (tokens stay in {d}/nI/api-token, mode 0600; --api, --token or MYCO_API override).",
        devctx::FILE
    );
    if args.dir != Path::new(devctx::DEFAULT_DIR) {
        println!(
            "This mesh is not in ./{}: export MYCO_DEV_DIR={d} in other terminals.",
            devctx::DEFAULT_DIR
        );
    }
    println!("Try, from another terminal (myco is target/release/myco until installed):");
    println!("  myco nodes");
    println!("  myco kv put greeting hello");
    println!("  myco kv get greeting");
    println!("  myco --api http://127.0.0.1:{last} status");
    println!("  myco cluster key");
    println!(
        "  myco spore pack DIR --name app --version 1 --cmd ./app --key {}",
        key.display()
    );
    println!("  myco spore push app-1.spore");
    if let Some(job) = demo {
        println!("  myco jobs");
        println!("  myco instances --job {job}");
        println!("  curl http://127.0.0.1:{}/{job}/", nodes.0[0].edge);
    }
    if let Some(n) = nodes.0.last() {
        println!(
            "  kill -9 {}   # then watch the others mark {} down, and: myco dev restart {}",
            n.pid().unwrap_or(0),
            n.name,
            n.name
        );
    }
    println!(
        "\nA development publisher key ({}) is trusted by the mesh. The edge gateway \
         serves jobs at the edge URLs once jobs exist.",
        key.display()
    );
    if let Some(job) = demo {
        println!(
            "The demo job {job} runs 3 instances of `myco demo-serve` (a spore packed and signed \
             here); each answers with its job, instance and node."
        );
    }
    println!("Logs: {d}/nI/agent.log. Ctrl-C stops every node.");
}

/// The lines about the microVM demo job `job` (`myco dev --microvm`).
pub fn microvm(args: &DevArgs, nodes: &DevNodes, job: &str) {
    let accel = args.microvm.as_deref().unwrap_or("kvm");
    let boot = if accel == "tcg" {
        "emulated (tcg): its boot takes about a minute"
    } else {
        "with KVM"
    };
    println!(
        "The microVM demo job {job} boots one QEMU guest ({boot}) from the host's kernel and \
         busybox-static; once ready:\n  myco instances --job {job}\n  curl http://127.0.0.1:{}/{job}/\n  myco logs {job}   # the guest's console",
        nodes.0[0].edge
    );
}
