//! A newcomer's first hour (issue 14): `myco dev` driven as a user would,
//! the commands it prints typed as printed, and the rough edges they hit
//! (loose key modes, doubled or misleading errors, broken output, help
//! that lists flags a command ignores).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use myco_client::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::{DEADLINE, Harness, MYCO, Opts, free_port_run, wait_for};

/// The environment a test CLI run must not inherit.
const CLEAR: &[&str] = &[
    "MYCO_API",
    "MYCO_API_TOKEN",
    "MYCO_DATA_DIR",
    "MYCO_DEV_DIR",
    "MYCO_CLUSTER_KEY",
    "NOTIFY_SOCKET",
];

/// `myco ARGS` run in `cwd` with a clean environment and `HOME` there too
/// (so no token from the real user's default data dir can help).
fn myco_in(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args).current_dir(cwd).env("HOME", cwd);
    for k in CLEAR {
        cmd.env_remove(k);
    }
    cmd.env_remove("XDG_DATA_HOME");
    match stdin {
        None => cmd.stdin(Stdio::null()).output().expect("running myco"),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("running myco");
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().expect("waiting for myco")
        }
    }
}

#[track_caller]
fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let out = myco_in(cwd, args, None);
    assert!(
        out.status.success(),
        "myco {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A running `myco dev`, its stdout collected line by line.
struct Dev {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    root: PathBuf,
}

impl Dev {
    fn start(root: &Path, nodes: u16) -> Dev {
        let (mesh, api, edge) = (
            free_port_run(nodes),
            free_port_run(nodes),
            free_port_run(nodes),
        );
        let mut cmd = Command::new(MYCO);
        cmd.args(["dev", "--nodes", &nodes.to_string()])
            .args(["--mesh-port", &mesh.to_string()])
            .args(["--api-port", &api.to_string()])
            .args(["--edge-port", &edge.to_string()])
            .current_dir(root)
            .env("HOME", root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for k in CLEAR {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("starting myco dev");
        let out = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stdout.take().unwrap());
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Dev {
            child,
            out,
            root: root.to_path_buf(),
        }
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    #[track_caller]
    fn wait_output(&mut self, what: &str, timeout: Duration) {
        wait_for(&format!("{what:?} from myco dev"), timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("myco dev exited ({status}):\n{}", self.text());
            }
            if self.text().contains(what) {
                Ok(())
            } else {
                Err(self.text())
            }
        });
    }

    fn context(&self) -> Value {
        let path = self.root.join(".myco-dev/context.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reading context.json"))
            .expect("context.json is JSON")
    }

    fn node(&self, name: &str) -> Value {
        let ctx = self.context();
        ctx["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {ctx}"))
    }

    fn client(&self, name: &str) -> Client {
        Client::new(self.node(name)["api"].as_str().unwrap()).with_timeout(Duration::from_secs(2))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            // No panic here: this may run while a failed test unwinds.
            let deadline = std::time::Instant::now() + DEADLINE;
            while self.child.try_wait().ok().flatten().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(support::POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("myco dev said:\n{}", self.text());
        }
    }
}

fn state_of(c: &Client, name: &str) -> Result<String, String> {
    let nodes = c.nodes().map_err(|e| e.to_string())?;
    nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.state.clone())
        .ok_or_else(|| format!("no {name} in {nodes:?}"))
}

#[test]
fn dev_mesh_heals_a_killed_node_and_its_printed_commands_work_as_typed() {
    let h = Harness::new("first-hour-dev");
    let root = h.root.clone();
    let mut dev = Dev::start(&root, 3);
    dev.wait_output("Ctrl-C stops every node", Duration::from_secs(60));
    let banner = dev.text();
    assert!(
        banner.contains("dashboard+API http://127.0.0.1:"),
        "{banner}"
    );
    assert!(banner.contains("/<job>/"), "no edge URL in {banner}");
    assert!(
        banner.contains("context.json"),
        "how the CLI finds the token is not said: {banner}"
    );

    // Point 3: secrets and the dev dir are private.
    let d = root.join(".myco-dev");
    assert_eq!(mode(&d), 0o700, ".myco-dev");
    for f in ["cluster.key", "dev-publisher.key", "context.json"] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    for n in ["n1", "n2", "n3"] {
        assert_eq!(mode(&d.join(n)), 0o700, "{n}/");
        for f in ["api-token", "node.key"] {
            assert_eq!(mode(&d.join(n).join(f)), 0o600, "{n}/{f}");
        }
        // Point 5: no colour escapes in log files.
        let log = support::read(&d.join(n).join("agent.log"));
        assert!(!log.contains('\u{1b}'), "ANSI escapes in {n}/agent.log");
    }

    // Point 2: every command of the "Try" block works as typed, from here.
    let app = root.join("DIR");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("app"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(app.join("app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tries: Vec<String> = banner
        .lines()
        .skip_while(|l| !l.starts_with("Try"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| l.starts_with("myco "))
        .collect();
    assert!(tries.len() >= 6, "too few commands to try: {tries:?}");
    for line in &tries {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        ok_in(&root, &words);
    }
    assert_eq!(ok_in(&root, &["kv", "get", "greeting"]), "hello");
    // The demo job was deployed by `myco dev` itself.
    let jobs = ok_in(&root, &["jobs"]);
    assert!(
        jobs.lines().any(|l| l.starts_with("hello ")),
        "no demo job: {jobs}"
    );
    let key = ok_in(&root, &["cluster", "key"]);
    assert_eq!(key.trim(), support::read(&d.join("cluster.key")).trim());
    ok_in(&root, &["key", "gen", "--out", "mine.key"]);
    ok_in(&root, &["trust", "add", "mine.key.pub"]);
    let spores = ok_in(&root, &["spores"]);
    assert!(
        spores.contains("HERE: whether"),
        "HERE unexplained: {spores}"
    );

    // Point 5: a value ending in a newline keeps the table one row per key.
    let out = myco_in(&root, &["kv", "put", "color"], Some(b"green\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = ok_in(&root, &["kv", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "header and two keys: {table:?}");
    assert!(
        lines.iter().any(|l| l.contains(r"green\n")),
        "newline not shown escaped: {table:?}"
    );

    // A second `myco dev` in the same directory is refused, not started
    // over the first one's context (ports far off, in case it is not).
    let mut second = Command::new(MYCO)
        .args([
            "dev",
            "--mesh-port",
            "1100",
            "--api-port",
            "1200",
            "--edge-port",
            "1300",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _) = wait_for("a second myco dev to give up", DEADLINE, || {
        second.try_wait().unwrap().ok_or_else(String::new)
    });
    let mut why = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut why).unwrap();
    assert!(!status.success() && why.contains("already runs"), "{why}");

    // Point 1: kill -9 one agent; the others keep running and serving.
    let n3 = dev.node("n3")["pid"].as_u64().expect("n3 has a pid") as i32;
    kill(Pid::from_raw(n3), Signal::SIGKILL).unwrap();
    dev.wait_output("n3 exited", DEADLINE);
    let n1 = dev.client("n1");
    wait_for("n1 to see n3 down", DEADLINE, || {
        match state_of(&n1, "n3")?.as_str() {
            "alive" => Err("n3 still alive".into()),
            s => Ok(s.to_string()),
        }
    });
    assert!(
        dev.child.try_wait().unwrap().is_none(),
        "myco dev stopped when one agent died:\n{}",
        dev.text()
    );
    for n in ["n1", "n2"] {
        dev.client(n)
            .health()
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    ok_in(&root, &["kv", "put", "after", "kill"]);
    let n2_api = dev.node("n2")["api"].as_str().unwrap().to_string();
    ok_in(&root, &["--api", &n2_api, "kv", "put", "on-n2", "too"]);
    assert!(
        dev.text().contains("myco dev restart n3"),
        "no way back offered"
    );

    // ... and comes back with `myco dev restart n3` from another terminal.
    let back = ok_in(&root, &["dev", "restart", "n3"]);
    assert!(back.contains("n3 is back"), "{back}");
    assert_ne!(dev.node("n3")["pid"].as_u64(), Some(n3 as u64), "same pid");
    wait_for("n1 to see n3 alive again", DEADLINE, || {
        match state_of(&n1, "n3")?.as_str() {
            "alive" => Ok(()),
            s => Err(s.to_string()),
        }
    });
    let n3_api = dev.node("n3")["api"].as_str().unwrap().to_string();
    wait_for("the KV written meanwhile on n3", DEADLINE, || {
        let out = myco_in(&root, &["--api", &n3_api, "kv", "get", "after"], None);
        if out.status.success() && out.stdout == b"kill" {
            Ok(())
        } else {
            Err(stderr(&out))
        }
    });

    // With n1 stopped, the CLI here talks to the first node still running.
    let stopped = ok_in(&root, &["dev", "stop", "n1"]);
    assert!(stopped.contains("myco dev restart n1"), "{stopped}");
    wait_for("the CLI to see n1 gone, through n2", DEADLINE, || {
        let out = myco_in(&root, &["nodes", "--json"], None);
        let nodes: Value = serde_json::from_slice(&out.stdout).map_err(|_| stderr(&out))?;
        let n1 = support::member_list(&nodes)
            .into_iter()
            .find(|n| n["name"] == "n1")
            .ok_or("no n1")?;
        match n1["state"].as_str() {
            Some("alive") => Err("n1 still alive".to_string()),
            _ => Ok(()),
        }
    });
    ok_in(&root, &["kv", "put", "while", "n1-stopped"]);
    ok_in(&root, &["dev", "restart", "n1"]);

    // Ctrl-C stops everything, and the CLI no longer points at the mesh.
    let pids: Vec<i32> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| dev.node(n)["pid"].as_u64().unwrap() as i32)
        .collect();
    kill(Pid::from_raw(dev.child.id() as i32), Signal::SIGINT).unwrap();
    let (status, _) = wait_for(
        "myco dev to exit on SIGINT",
        Duration::from_secs(20),
        || dev.child.try_wait().unwrap().ok_or_else(|| dev.text()),
    );
    assert!(status.success(), "myco dev exited with {status}");
    assert!(dev.text().contains("stopped"), "{}", dev.text());
    for pid in pids {
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "agent {pid} outlived myco dev"
        );
    }
    assert!(!d.join("context.json").exists(), "stale context.json left");
    // Nor do the demo job's instances: nothing runs under the dev dir.
    let dev_dir = d.canonicalize().unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dev_dir))
        })
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "processes left under {}: {left:?}",
        dev_dir.display()
    );
}

#[test]
fn help_lists_only_the_flags_a_command_uses() {
    let help = |args: &[&str]| ok_in(Path::new("/"), args);
    for cmd in [["dev", "--help"], ["sim", "--help"], ["key", "--help"]] {
        let text = help(&cmd);
        // (`--api-port` of `myco dev` is its own flag.)
        for flag in ["--api <", "--token <", "--data-dir <"] {
            assert!(
                !text.contains(flag),
                "`myco {}` lists {flag}:\n{text}",
                cmd[0]
            );
        }
    }
    for cmd in [
        vec!["kv", "get", "--help"],
        vec!["nodes", "--help"],
        vec!["spore", "push", "--help"],
    ] {
        let text = help(&cmd);
        assert!(text.contains("--api <URL>"), "{cmd:?}:\n{text}");
        assert!(text.contains("--token"), "{cmd:?}:\n{text}");
    }
    // --api has one meaning per command.
    let nodes = help(&["nodes", "--help"]);
    assert!(!nodes.contains("listen"), "{nodes}");
    let agent = help(&["agent", "--help"]);
    assert!(agent.contains("listen"), "{agent}");
    assert!(!agent.contains("--token"), "{agent}");
    // Flags before a command that has no use for them are refused.
    let out = myco_in(Path::new("/"), &["--data-dir", "/tmp", "dev"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("means nothing"), "{}", stderr(&out));
}

#[test]
fn errors_say_it_once_in_one_line() {
    let root = std::env::temp_dir();
    let os = "(os error 2)";
    for args in [
        vec!["key", "gen", "--out", "/nonexistent/dir/k"],
        vec!["trust", "add", "/nonexistent.pub"],
        vec!["spore", "verify", "/nonexistent.spore"],
        vec![
            "spore",
            "verify",
            "/nonexistent.spore",
            "--pubkey",
            "/nonexistent.pub",
        ],
        vec!["spore", "inspect", "/nonexistent.spore"],
    ] {
        let out = myco_in(&root, &args, None);
        let e = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert_eq!(e.matches(os).count(), 1, "{args:?} repeats itself: {e}");
        assert!(
            e.contains("/nonexistent"),
            "{args:?} does not name the file: {e}"
        );
    }
    // A data dir that does not exist is named, not taken for a missing token.
    for args in [
        vec!["--data-dir", "/nonexistent", "kv", "put", "a", "b"],
        vec!["kv", "put", "a", "b", "--data-dir", "/nonexistent"],
        vec!["cluster", "key", "--data-dir", "/nonexistent"],
    ] {
        let out = myco_in(&root, &args, None);
        let e = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(e.contains("/nonexistent does not exist"), "{args:?}: {e}");
        assert!(!e.contains("401"), "{args:?}: {e}");
    }
    // Usage errors: one line with clap's suggestion and the usage, exit 2.
    for (args, has) in [
        (&["nodes", "--jsn"][..], "'--json'"),
        (&["job", "scale", "web", "abc"][..], "usage: myco job scale"),
        (&["kv"][..], "needs a subcommand: get, put, del, list"),
        (
            &["dev", "--nodes", "2", "stop", "n1"][..],
            "cannot be used with --nodes",
        ),
    ] {
        let out = myco_in(&root, args, None);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.starts_with("error: ") && e.contains(has), "{args:?}: {e}");
        assert!(e.trim_end().ends_with("see --help)"), "{args:?}: {e}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Help and version still go to stdout, exit 0.
    for args in [
        &["--help"][..],
        &["job", "scale", "--help"],
        &["--version"],
        &["help", "kv"],
    ] {
        let out = myco_in(&root, args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.len() > 5, "{args:?}");
    }
}

#[test]
fn peer_add_waits_for_the_outcome() {
    let mut h = Harness::new("first-hour-peer");
    let a = h.start("a", Opts::default());
    let key = h.root.join("cluster.key");
    let out = myco_in(
        &h.root,
        &[
            "cluster",
            "key",
            "--data-dir",
            h.agent(a).dir.to_str().unwrap(),
        ],
        None,
    );
    std::fs::write(&key, &out.stdout).unwrap();
    let b = h.start(
        "b",
        Opts {
            key_file: Some(key),
            ..Opts::default()
        },
    );
    let (api, token) = (h.agent(b).api_url(), h.agent(b).token());
    let cli = |addr: &str, wait: &str| {
        myco_in(
            &h.root,
            &[
                "--api", &api, "--token", &token, "peer", "add", addr, "--wait", wait,
            ],
            None,
        )
    };
    let out = cli("127.0.0.1:1", "2");
    assert!(!out.status.success(), "a join to nothing succeeded");
    assert!(
        stderr(&out).contains("no myco agent answered at 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    let out = cli(&h.agent(a).mesh_addr(), "15");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("joined "));
}

#[test]
fn systemd_unit_names_an_installed_binary() {
    let root = std::env::temp_dir();
    let unit = ok_in(
        &root,
        &[
            "systemd-unit",
            "--bin",
            "/opt/myco/myco",
            "--",
            "--join",
            "pi:7946",
        ],
    );
    assert!(
        unit.contains("\nExecStart=/opt/myco/myco agent --data-dir /var/lib/myco --join pi:7946\n"),
        "{unit}"
    );
    // A given data dir replaces the default (the agent refuses two).
    let unit = ok_in(
        &root,
        &[
            "systemd-unit",
            "--bin",
            "/opt/myco/myco",
            "--",
            "--data-dir=/var/lib/x",
        ],
    );
    assert!(
        unit.contains("\nExecStart=/opt/myco/myco agent --data-dir /var/lib/x\n"),
        "{unit}"
    );
    // The test binary lives in a cargo build dir: it must not be named.
    let out = myco_in(&root, &["systemd-unit"], None);
    assert!(out.status.success());
    let unit = String::from_utf8_lossy(&out.stdout);
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(!exec.contains(MYCO), "the build dir's binary in {exec}");
    if !Path::new("/usr/local/bin/myco").exists() {
        assert!(
            stderr(&out).contains("cargo install --path crates/myco"),
            "{}",
            stderr(&out)
        );
    }
    let out = myco_in(&root, &["systemd-unit", "--bin", "myco"], None);
    assert!(!out.status.success(), "a relative --bin was accepted");
}

#[test]
fn sim_summary_is_printed_once_and_explains_refusals() {
    let out = myco_in(
        &std::env::temp_dir(),
        &["sim", "--nodes", "5", "--minutes", "1"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("seed=0 nodes=5").count(), 1, "{text}");
    assert_eq!(text.matches("\nok: virtual").count(), 1, "{text}");
    let refused = text
        .lines()
        .find(|l| l.contains("refused by nodes"))
        .expect("a refusals line");
    assert!(
        refused.ends_with("none") || refused.contains("expected"),
        "{refused}"
    );
    assert!(!refused.contains('{'), "a debug map: {refused}");
}
