//! Which token the CLI sends: explicit flags beat the environment
//! (`--token` > `--data-dir` > `MYCO_API_TOKEN` > `MYCO_DATA_DIR`), and a
//! data dir with no `api-token` is named in the error, not hidden behind
//! the agent's 401.

mod support;

use std::process::{Command, Output, Stdio};

use support::{Harness, MYCO, Opts, s};

/// `myco ARGS` with exactly the MYCO_* environment `env` (and a `HOME`
/// with no default data dir in it).
fn myco_env(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args).stdin(Stdio::null()).env("HOME", home);
    for k in [
        "MYCO_API",
        "MYCO_API_TOKEN",
        "MYCO_DATA_DIR",
        "MYCO_DEV_DIR",
        "XDG_DATA_HOME",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).current_dir(home);
    cmd.output().expect("running myco")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn explicit_flags_beat_the_environment() {
    let mut h = Harness::new("cli-token");
    let a = h.start("a", Opts::default());
    let a = h.agent(a);
    let (api, dir, token) = (a.api_url(), s(&a.dir).to_string(), a.token());
    let home = h.root.join("home");
    let empty = h.root.join("not-a-data-dir");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    let put = |env: &[(&str, &str)], flags: &[&str]| {
        let mut args = vec!["--api", api.as_str()];
        args.extend(flags);
        args.extend(["kv", "put", "k", "v"]);
        myco_env(&home, env, &args)
    };
    let wrong = [("MYCO_API_TOKEN", "wrong")];

    // Regression: the env token beat the explicit --data-dir's token (401).
    let out = put(&wrong, &["--data-dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = myco_env(
        &home,
        &wrong,
        &["kv", "put", "k", "v", "--api", &api, "--data-dir", &dir],
    );
    assert!(
        out.status.success(),
        "after the subcommand: {}",
        stderr(&out)
    );
    // --token beats --data-dir.
    let out = put(&[], &["--token", "wrong", "--data-dir", &dir]);
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = put(&wrong, &["--token", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    // MYCO_API_TOKEN beats MYCO_DATA_DIR, which is used alone.
    let env_dir = [("MYCO_DATA_DIR", dir.as_str())];
    let out = put(&[env_dir[0], wrong[0]], &[]);
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = put(&env_dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // --data-dir beats MYCO_DATA_DIR.
    let elsewhere = [("MYCO_DATA_DIR", s(&empty))];
    let out = put(&elsewhere, &["--data-dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A chosen data dir without a token is named, by flag or environment,
    // for reads too (a read would otherwise go out with no token at all).
    let want = format!(
        "no api-token in {}: is it an agent's data dir?",
        empty.display()
    );
    for (env, flags, cmd) in [
        (&[][..], &["--data-dir", s(&empty)][..], "kv put"),
        (&elsewhere[..], &[][..], "kv put"),
        (&[][..], &["--data-dir", s(&empty)][..], "nodes"),
    ] {
        let mut args = vec!["--api", api.as_str()];
        args.extend(flags);
        args.extend(cmd.split(' '));
        if cmd == "kv put" {
            args.extend(["k", "v"]);
        }
        let out = myco_env(&home, env, &args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(&want), "{args:?}: {e}");
        assert!(!e.contains("401"), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
    }
}
