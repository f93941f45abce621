//! A small network of Linux network namespaces for tests that must not run
//! on loopback alone (multicast discovery, name resolution per host): one
//! bridge in the test's namespace with an address, and per node a
//! namespace joined to it by a veth pair, with its own `/etc/hosts`
//! (`ip netns exec` mounts `/etc/netns/NAME/hosts` over it).
//!
//! Needs root and `ip`; [`NetLab::new`] says why not otherwise, and the
//! test skips with that message. Dropping the lab SIGKILLs its agents and
//! removes the namespaces, the bridge and the hosts files.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use myco_client::Client;

use super::MYCO;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// One node's namespace and, once started, its agent.
pub struct Host {
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// The API client, with the token (the API is off loopback here).
    pub fn client(&self) -> Client {
        let token = fs::read_to_string(self.dir.join("api-token"))
            .map(|t| t.trim().to_string())
            .ok();
        Client::new(&format!("http://{}:7070", self.ip)).with_token(token)
    }

    /// Writes this host's `/etc/hosts` (in place: a running agent sees it).
    pub fn set_hosts(&self, text: &str) {
        fs::write(format!("/etc/netns/{}/hosts", self.ns), text).expect("writing netns hosts");
    }
}

pub struct NetLab {
    pub root: PathBuf,
    pub bridge: String,
    pub hosts: Vec<Host>,
    subnet: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// A bridge and `n` namespaces on `10.X.Y.0/24`; `Err` says why the
    /// machine cannot (not root, no `ip`, no namespaces).
    pub fn new(test: &str, n: usize) -> Result<NetLab, String> {
        if !nix_is_root() {
            return Err("network namespaces need root".into());
        }
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() % 4000) * 16 + seq;
        let subnet = format!("10.{}.{}", 100 + (tag >> 8) % 100, tag & 0xff);
        let bridge = format!("mbr{tag}");
        let root =
            std::env::temp_dir().join(format!("myco-netns-{}-{seq}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let mut lab = NetLab {
            root,
            bridge: bridge.clone(),
            hosts: Vec::new(),
            subnet: subnet.clone(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // Snooping would hold multicast back until IGMP reports are seen.
        ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("myco-{tag}-{i}");
            let (outer, inner) = (format!("mvh{tag}x{i}"), format!("mvn{tag}x{i}"));
            let addr = format!("{subnet}.{}", 10 + i);
            ip(&["netns", "add", &ns])?;
            fs::create_dir_all(format!("/etc/netns/{ns}")).map_err(|e| e.to_string())?;
            let host = Host {
                ns: ns.clone(),
                ip: addr.clone(),
                dir: lab.root.join(format!("n{}", i + 1)),
                log: lab.root.join(format!("n{}.log", i + 1)),
                child: None,
            };
            host.set_hosts("127.0.0.1 localhost\n");
            lab.hosts.push(host);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("{subnet}.1"),
            ])?;
        }
        Ok(lab)
    }

    /// An address in the lab's subnet that no host has.
    pub fn unused_ip(&self) -> String {
        format!("{}.250", self.subnet)
    }

    /// Starts `myco agent` in host `i`'s namespace on its address (mesh
    /// 7946, API 7070, edge 8080), with `key` as the cluster key and
    /// `args` added; waits until its API answers.
    #[track_caller]
    pub fn start(&mut self, i: usize, key: &str, args: &[&str]) {
        let h = &mut self.hosts[i];
        fs::create_dir_all(&h.dir).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .unwrap();
        let name = format!("n{}", i + 1);
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns, MYCO, "agent"])
            .arg("--data-dir")
            .arg(&h.dir)
            .args(["--name", &name])
            .args(["--bind", &format!("{}:7946", h.ip)])
            .args(["--api", &format!("{}:7070", h.ip)])
            .args(["--edge", &format!("{}:8080", h.ip)])
            .args(args)
            .env("MYCO_CLUSTER_KEY", key)
            .env("RUST_LOG", "info,myco_agent::discovery=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning ip netns exec myco agent");
        h.child = Some(child);
        let probe = Client::new(&format!("http://{}:7070", h.ip));
        super::wait_for(
            &format!("{name} to answer /health"),
            super::DEADLINE,
            || probe.health().map_err(|e| e.to_string()),
        );
    }

    /// SIGKILLs host `i`'s agent.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The names host `i`'s agent lists as alive, sorted.
    pub fn alive(&self, i: usize) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = self.hosts[i]
            .client()
            .nodes()
            .map_err(|e| format!("n{}: {e}", i + 1))?
            .into_iter()
            .filter(|m| m.state == "alive")
            .map(|m| m.name)
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for h in &self.hosts {
                let log = fs::read_to_string(&h.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- {} ---", h.log.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
            let _ = fs::remove_dir_all(format!("/etc/netns/{}", h.ns));
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn nix_is_root() -> bool {
    // The effective uid, from /proc (no libc dependency for one number).
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
