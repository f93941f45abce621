//! Key files from `myco key gen --out K` (K secret, K.pub public) cannot be
//! swapped by mistake: `spore pack --key K.pub` and `trust add K` are
//! refused before anything is signed or sent, `spore verify --pubkey`
//! with another publisher's key says so, and a secret key file of an
//! earlier release (bare hex) still signs.

mod support;

use std::path::Path;
use std::process::Output;

use support::{myco, ok, s};

fn pack(payload: &Path, key: &Path, out: &Path) -> Output {
    myco(&[
        "spore",
        "pack",
        s(payload),
        "--name",
        "k",
        "--version",
        "1",
        "--cmd",
        "./run",
        "--key",
        s(key),
        "--out",
        s(out),
    ])
}

#[track_caller]
fn refused(out: &Output, says: &str) {
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(says), "wanted {says:?} in: {e}");
}

#[test]
fn secret_and_public_key_files_are_not_confused() {
    let root = std::env::temp_dir().join(format!("myco-it-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("payload")).unwrap();
    std::fs::write(root.join("payload/run"), "#!/bin/sh\n").unwrap();
    let p = |n: &str| root.join(n);
    ok(&myco(&["key", "gen", "--out", s(&p("a"))]), "key gen a");
    ok(&myco(&["key", "gen", "--out", s(&p("b"))]), "key gen b");

    // Regression: a public key was read as a secret and signed with.
    let out = pack(&p("payload"), &p("a.pub"), &p("x.spore"));
    refused(
        &out,
        &format!(
            "{} is a public key; pass the secret key (the file without .pub)",
            s(&p("a.pub"))
        ),
    );
    assert!(!p("x.spore").exists());
    // A secret key is not sent to the agent as a public key.
    refused(
        &myco(&["trust", "add", s(&p("a"))]),
        &format!("{} is a secret key", s(&p("a"))),
    );

    ok(&pack(&p("payload"), &p("a"), &p("a.spore")), "pack");
    ok(
        &myco(&[
            "spore",
            "verify",
            s(&p("a.spore")),
            "--pubkey",
            s(&p("a.pub")),
        ]),
        "verify with the right key",
    );
    refused(
        &myco(&[
            "spore",
            "verify",
            s(&p("a.spore")),
            "--pubkey",
            s(&p("b.pub")),
        ]),
        "not signed by the given key",
    );

    // An earlier release's secret file: the bare hex seed.
    let seed = "07".repeat(32);
    std::fs::write(p("old.key"), format!("{seed}\n")).unwrap();
    ok(
        &pack(&p("payload"), &p("old.key"), &p("old.spore")),
        "pack with an old key",
    );
    ok(&myco(&["spore", "verify", s(&p("old.spore"))]), "verify");
    let _ = std::fs::remove_dir_all(&root);
}
