//! The architecture invariant "the core and the wire types do no I/O",
//! checked on the sources of `myco-core` and `myco-proto` by the checker
//! in `check.rs` (which says what it refuses and why). CI runs this
//! through `scripts/check-sans-io`, which also checks the two crates'
//! direct dependencies; `--self-test` runs only the `self_test_*` tests.

mod check;

use std::path::{Path, PathBuf};

use check::check_source;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn myco_core_and_myco_proto_sources_do_no_io() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/ holds myco-core");
    let mut files = Vec::new();
    for krate in ["myco-core", "myco-proto"] {
        rust_files(&crates.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 10, "found only {files:?}");
    let mut report = String::new();
    for f in &files {
        let src = std::fs::read_to_string(f).expect("readable source");
        for v in check_source(&src) {
            let shown = f.strip_prefix(crates).unwrap_or(f);
            report += &format!("crates/{}:{}: {}\n", shown.display(), v.line, v.what);
        }
    }
    assert!(
        report.is_empty(),
        "sans-IO violations (the core and the wire types do no I/O; pass time and randomness in):\n{report}"
    );
}

// ----- self-tests: the checker catches what it says -----

/// The lines flagged in `src`.
fn flagged(src: &str) -> Vec<usize> {
    let mut lines: Vec<usize> = check_source(src).iter().map(|v| v.line).collect();
    lines.dedup();
    lines
}

#[test]
fn self_test_grouped_import_of_a_socket() {
    assert_eq!(flagged("use std::net::{SocketAddr, UdpSocket};"), vec![1]);
    assert_eq!(
        flagged("use std::{net::{self, UdpSocket as U}, sync::Arc};\nfn f() { U::bind(x); }"),
        vec![1, 2]
    );
    assert_eq!(
        flagged("use std::{net, time::Duration};\nfn f() { net::TcpStream::connect(a); }"),
        vec![2]
    );
}

#[test]
fn self_test_thread_spawn_through_a_module_import() {
    let src = "use std::thread;\nfn f() {\n    thread::spawn(|| ());\n}";
    assert_eq!(flagged(src), vec![1, 3]);
    assert_eq!(flagged("fn f() { std::thread::spawn(|| ()); }"), vec![1]);
    assert_eq!(flagged("fn f() { ::std::thread::sleep(d); }"), vec![1]);
}

#[test]
fn self_test_file_system() {
    assert_eq!(
        flagged("use std::{fs, collections::BTreeMap};\nfn f() { fs::read(p); }"),
        vec![1, 2]
    );
    assert_eq!(
        flagged("fn f() {\n    let f = std::fs::File::open(p);\n}"),
        vec![2]
    );
    assert_eq!(
        flagged("use std::fs::File;\nfn f() { File::open(p); }"),
        vec![1, 2]
    );
    assert_eq!(
        flagged("use std as s;\nfn f() { s::fs::read(p); }"),
        vec![2]
    );
    assert_eq!(flagged("use std::process::Command;"), vec![1]);
}

#[test]
fn self_test_clocks() {
    assert_eq!(flagged("fn f() { let t = Instant::now(); }"), vec![1]);
    assert_eq!(
        flagged("use std::time::Instant as Clock;\nfn f() { Clock::now(); }"),
        vec![1, 2]
    );
    assert_eq!(flagged("fn f() { std::time::SystemTime::now(); }"), vec![1]);
}

#[test]
fn self_test_hash_maps_and_global_randomness() {
    assert_eq!(flagged("fn f(m: &HashMap<u8, u8>) {}"), vec![1]);
    assert_eq!(flagged("use std::collections::HashMap as Map;"), vec![1]);
    assert_eq!(flagged("use std::collections::hash_map::Entry;"), vec![1]);
    assert_eq!(
        flagged("fn f() { let x: u8 = rand::rng().random(); }"),
        vec![1]
    );
    assert_eq!(flagged("use rand::rngs::OsRng;"), vec![1]);
    assert_eq!(flagged("fn f() { StdRng::from_os_rng(); }"), vec![1]);
}

#[test]
fn self_test_globs_runtimes_and_printing() {
    assert_eq!(flagged("use std::net::*;"), vec![1]);
    assert_eq!(flagged("use tokio::net::UdpSocket;"), vec![1]);
    assert_eq!(flagged("extern crate libc;"), vec![1]);
    assert_eq!(
        flagged("fn f() {\n    println!(\"x\");\n    dbg!(1);\n}"),
        vec![2, 3]
    );
}

#[test]
fn self_test_allowed_constructs_pass() {
    let src = r##"
        //! Mentions of std::fs, Instant::now and HashMap in docs are fine.
        use std::collections::{BTreeMap, BTreeSet, VecDeque};
        use std::net::{self, SocketAddr};
        use std::time::Duration;
        use rand::SeedableRng;
        use rand::rngs::StdRng;
        use super::*;
        /* a block comment: thread::spawn /* nested: UdpSocket */ std::fs */
        fn f<'a>(x: &'a str) -> char {
            let _ = "std::thread::spawn(|| ()) HashMap";
            let _ = r#"Instant::now() "quoted" "#;
            let _ = b"println!";
            let _: SocketAddr = net::SocketAddr::from(([0, 0, 0, 0], 1));
            let _ = StdRng::seed_from_u64(1);
            let _ = Duration::from_millis(1) + std::time::Duration::ZERO;
            let _ = <Vec<u8> as Default>::default();
            let m: BTreeMap<u8, u8> = BTreeMap::new();
            if 1 != 2 { tracing::debug!(x = 1, "ok") }
            '"'
        }
        fn g() -> char { '\'' }
    "##;
    assert_eq!(check_source(src), Vec::new());
}
