//! The commands that talk to no agent (`id`, `key gen`, `spore
//! pack|inspect|verify`, `completions`, `systemd-unit`, `sim`, `dev ACTION`)
//! run the same with the global `--api` and `--token` before or after the
//! subcommand: operators and contract checks wrap the CLI as
//! `myco --api "$API" --token "$TOKEN" "$@"` for every subcommand.

mod support;

use std::process::Output;

use support::{myco, s};

const FLAGS: [&str; 4] = ["--api", "http://127.0.0.1:1", "--token", "not-a-token"];

/// `args` with the flags before the subcommand, then after it.
fn wrapped(args: &[&str]) -> [Vec<String>; 2] {
    let own = args.iter().map(|a| a.to_string());
    let flags = FLAGS.iter().map(|a| a.to_string());
    [
        flags.clone().chain(own.clone()).collect(),
        own.chain(flags).collect(),
    ]
}

fn run(args: &[String]) -> Output {
    myco(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[track_caller]
fn ok(out: &Output, args: &[String]) -> String {
    assert!(
        out.status.success(),
        "myco {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` bare (0), then with the flags before (1) and after (2) the subcommand.
fn variant(i: usize, args: &[&str]) -> Vec<String> {
    match i {
        0 => args.iter().map(|a| a.to_string()).collect(),
        _ => wrapped(args)[i - 1].clone(),
    }
}

/// Runs `args` bare and wrapped both ways: each succeeds with the same output.
#[track_caller]
fn same_output(args: &[&str]) -> String {
    let bare: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let expected = ok(&run(&bare), &bare);
    for w in wrapped(args) {
        assert_eq!(ok(&run(&w), &w), expected, "myco {w:?}");
    }
    expected
}

#[test]
fn local_commands_ignore_api_and_token() {
    let root = std::env::temp_dir().join(format!("myco-it-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let p = |name: &str| root.join(name);

    // `id`: a data dir with a node identity and nothing else.
    let data = p("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("node.key"), hex_of(&[7; 32])).unwrap();
    let id = same_output(&["id", "--data-dir", s(&data)]);
    assert_eq!(id.trim().len(), 16, "{id}");

    // `key gen` and `spore pack` write new files, so each run gets its own.
    for i in 0..3 {
        let out = p(&format!("k{i}"));
        let args = variant(i, &["key", "gen", "--out", s(&out)]);
        ok(&run(&args), &args);
        assert!(p(&format!("k{i}.pub")).is_file(), "{args:?}");
    }
    let key = p("k0");
    let pubkey = p("k0.pub");
    let payload = p("payload");
    std::fs::create_dir(&payload).unwrap();
    std::fs::write(payload.join("run"), "#!/bin/sh\necho hi\n").unwrap();
    for i in 0..3 {
        let file = p(&format!("s{i}.spore"));
        let args = variant(
            i,
            &[
                "spore",
                "pack",
                s(&payload),
                "--name",
                "hello",
                "--version",
                "1",
                "--cmd",
                "./run",
                "--key",
                s(&key),
                "--out",
                s(&file),
            ],
        );
        ok(&run(&args), &args);
        assert!(file.is_file(), "{args:?}");
    }
    let spore = p("s0.spore");
    let shown = same_output(&["spore", "inspect", s(&spore)]);
    assert!(shown.contains("hello"), "{shown}");
    same_output(&["spore", "inspect", s(&spore), "--json"]);
    same_output(&["spore", "verify", s(&spore)]);
    same_output(&["spore", "verify", s(&spore), "--pubkey", s(&pubkey)]);

    // Text generators.
    let script = same_output(&["completions", "bash"]);
    assert!(script.contains("_myco"), "{}", &script[..100]);
    let unit = same_output(&["systemd-unit", "--bin", "/usr/local/bin/myco"]);
    assert!(
        unit.contains("ExecStart=/usr/local/bin/myco agent"),
        "{unit}"
    );

    // The simulator (short and quiet, so it is quick): the same run, by
    // its digest (the wall time it took differs).
    let digest = |out: String| {
        out.lines()
            .find_map(|l| l.split_once("digest ").map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| panic!("no digest in {out}"))
    };
    let sim = ["sim", "--nodes", "2", "--minutes", "0", "--quiet"];
    let want = digest(ok(&run(&variant(0, &sim)), &variant(0, &sim)));
    for i in 1..3 {
        let args = variant(i, &sim);
        assert_eq!(digest(ok(&run(&args), &args)), want, "{args:?}");
    }

    // `dev stop` with no dev mesh: the same error as without the flags, not
    // a usage error about them.
    let nodev = p("nodev");
    let bare = myco(&["dev", "stop", "n1", "--dir", s(&nodev)]);
    assert_eq!(bare.status.code(), Some(1));
    for w in wrapped(&["dev", "stop", "n1", "--dir", s(&nodev)]) {
        let out = run(&w);
        assert_eq!(out.status.code(), Some(1), "{w:?}");
        assert_eq!(out.stderr, bare.stderr, "{w:?}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
