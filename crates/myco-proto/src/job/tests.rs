use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const FULL: &str = r#"
name = "hello"
spore = "hello@1.2.0"
count = 3
strategy = "pack"
duplicates = "never"
kill_timeout_ms = 2000
[env]
GREETING = "hi"
[resources]
cpu_milli = 250
memory_mb = 128
pids = 64
[constraints]
zone = ["a", "b"]
arch = "!arm"
disk = { not_in = ["hdd"] }
[health]
http = "/health"
interval_ms = 500
[update]
max_parallel = 2
auto_revert = false
[restart]
attempts = 5
delay_ms = 100
[[volumes]]
name = "data"
path = "var/data"
"#;

fn minimal() -> JobSpec {
    JobSpec::from_toml(&format!("name = \"web\"\nspore = \"{DIGEST}\"")).unwrap()
}

fn err(spec: &JobSpec) -> String {
    spec.validate().unwrap_err().to_string()
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let s = minimal();
    assert_eq!(s.count, 1);
    assert_eq!(s.strategy, Strategy::Spread);
    assert_eq!(s.driver, Driver::Exec);
    assert_eq!(s.duplicates, Duplicates::Allowed);
    assert_eq!(
        s.resources,
        Resources {
            cpu_milli: 100,
            memory_mb: 64,
            pids: 256,
            vcpus: 1,
        }
    );
    assert_eq!(s.health, None);
    assert_eq!(s.kill_timeout_ms, 5_000);
    assert_eq!(s.restart.attempts, 3);
    assert_eq!(s.restart.interval_ms, 300_000);
    assert_eq!(s.restart.delay_ms, 1_000);
    assert_eq!(s.restart.max_delay_ms, 30_000);
    assert_eq!(s.restart.backoff, 2);
    assert!(s.update.auto_revert);
    assert_eq!(s.update.max_parallel, 1);
}

#[test]
fn a_full_file_parses_and_the_same_spec_reads_back_from_json() {
    let s = JobSpec::from_toml(FULL).unwrap();
    assert_eq!(s.count, 3);
    assert_eq!(s.strategy, Strategy::Pack);
    assert_eq!(s.duplicates, Duplicates::Never);
    assert_eq!(s.constraints["arch"], Constraint::Ne("arm".into()));
    assert!(s.constraints["zone"].matches(Some("b")));
    assert!(!s.constraints["disk"].matches(Some("hdd")));
    let h = s.health.as_ref().unwrap();
    assert_eq!(h.probe(), Some(Probe::Http("/health")));
    assert_eq!(
        h.timeout_ms, 1_000,
        "defaults fill the rest of a given table"
    );
    assert_eq!(s.update.max_parallel, 2);
    assert_eq!(s.restart.attempts, 5);
    assert_eq!(
        s.restart.interval_ms, 300_000,
        "defaults fill the rest of the restart table"
    );
    assert_eq!(s.volumes[0].path, "var/data");
    assert_eq!(JobSpec::from_json(s.to_json().as_bytes()).unwrap(), s);
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for (text, word) in [
        ("name = \"a\"\nspore = \"x@1\"\ncuont = 3", "cuont"),
        (
            "name = \"a\"\nspore = \"x@1\"\n[resources]\nmemory = 3",
            "memory",
        ),
        (
            "name = \"a\"\nspore = \"x@1\"\n[health]\nhttps = \"/\"",
            "https",
        ),
        (
            "name = \"a\"\nspore = \"x@1\"\n[update]\nparallel = 1",
            "parallel",
        ),
    ] {
        let e = JobSpec::from_toml(text).unwrap_err().to_string();
        assert!(e.starts_with("job file:") && e.contains(word), "{e}");
    }
    let e = JobSpec::from_json(br#"{"name":"a","spore":"x@1","extra":1}"#).unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");
}

/// One edit of a valid spec that makes it invalid.
type Change = Box<dyn Fn(&mut JobSpec)>;

#[test]
fn errors_name_the_field_and_the_problem() {
    let base = minimal();
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|s| s.name = "Web".into()),
            "name: only [a-z0-9-], 1..=63 chars",
        ),
        (Box::new(|s| s.name = "a".repeat(64)), "name:"),
        (Box::new(|s| s.name = "-web".into()), "name:"),
        (
            Box::new(|s| s.spore = "sha256:12".into()),
            "spore: a digest is",
        ),
        (Box::new(|s| s.spore = "hello".into()), "spore: give sha256"),
        (Box::new(|s| s.count = 0), "count: must be 1..=1000, got 0"),
        (Box::new(|s| s.count = 1001), "count: must be 1..=1000"),
        (
            Box::new(|s| s.resources.memory_mb = 0),
            "resources.memory_mb: must be",
        ),
        (
            Box::new(|s| s.resources.cpu_milli = 0),
            "resources.cpu_milli: must be",
        ),
        (
            Box::new(|s| _ = s.env.insert("PORT".into(), "1".into())),
            "env.PORT: PORT and MYCO_*",
        ),
        (
            Box::new(|s| _ = s.env.insert("1X".into(), "1".into())),
            "env.1X: names are",
        ),
        (
            Box::new(|s| {
                _ = s
                    .constraints
                    .insert("zone".into(), Constraint::In(Default::default()))
            }),
            "constraints.zone: an empty list",
        ),
        (
            Box::new(|s| {
                s.health = Some(Health {
                    tcp: true,
                    http: Some("/".into()),
                    ..health()
                })
            }),
            "health: give exactly one",
        ),
        (
            Box::new(|s| {
                s.health = Some(Health {
                    http: Some("x".into()),
                    tcp: false,
                    ..health()
                })
            }),
            "health.http: a path starting",
        ),
        (
            Box::new(|s| {
                s.health = Some(Health {
                    timeout_ms: 0,
                    ..health()
                })
            }),
            "health.timeout_ms: must be 10..=600000, got 0",
        ),
        (
            Box::new(|s| {
                s.health = Some(Health {
                    exec: Some(vec![]),
                    tcp: false,
                    ..health()
                })
            }),
            "health.exec:",
        ),
        (
            Box::new(|s| s.restart.max_delay_ms = 1),
            "restart.max_delay_ms:",
        ),
        (
            Box::new(|s| s.update.min_healthy_ms = 400_000),
            "update.min_healthy_ms:",
        ),
        (
            Box::new(|s| s.kill_timeout_ms = 700_000),
            "kill_timeout_ms: must be",
        ),
        (
            Box::new(|s| {
                s.volumes.push(Volume {
                    name: "v".into(),
                    path: "../x".into(),
                })
            }),
            "volumes[0].path: a relative path",
        ),
        (
            Box::new(|s| {
                s.volumes.push(Volume {
                    name: "v".into(),
                    path: "/etc".into(),
                })
            }),
            "volumes[0].path:",
        ),
    ];
    for (change, want) in cases {
        let mut s = base.clone();
        change(&mut s);
        let got = err(&s);
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn a_spec_too_large_to_replicate_is_refused() {
    let mut s = minimal();
    for i in 0..10 {
        s.env.insert(format!("V{i}"), "x".repeat(4000));
    }
    let e = err(&s);
    assert!(
        e.starts_with("env: the job is") && e.contains("at most 32768"),
        "{e}"
    );
}

fn health() -> Health {
    Health {
        http: None,
        tcp: true,
        exec: None,
        interval_ms: 10_000,
        timeout_ms: 1_000,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
    }
}

#[test]
fn spore_references_are_digests_or_name_at_version() {
    assert_eq!(SporeRef::parse(DIGEST).unwrap(), SporeRef::Digest(DIGEST));
    assert_eq!(
        SporeRef::parse("hello@1.2.0").unwrap(),
        SporeRef::Named {
            name: "hello",
            version: "1.2.0"
        }
    );
    assert!(SporeRef::parse(&DIGEST.to_uppercase()).is_err());
    assert!(SporeRef::parse("@1").is_err());
    assert!(SporeRef::parse("a@").is_err());
}

#[test]
fn a_record_pins_the_spore_and_round_trips() {
    let spec = JobSpec::from_toml(FULL).unwrap();
    let r1 = JobRecord::first(spec.clone(), DIGEST, 1_000).unwrap();
    assert_eq!(r1.digest(), DIGEST);
    assert_eq!(r1.spore_ref, "hello@1.2.0");
    assert_eq!(r1.version, 1);
    let r2 = r1
        .next(
            JobSpec {
                count: 5,
                ..spec.clone()
            },
            DIGEST,
            2_000,
        )
        .unwrap();
    assert_eq!(
        (r2.version, r2.created_ms, r2.updated_ms),
        (2, 1_000, 2_000)
    );
    assert_eq!(r2.version_key(), "hello/00000000000000000002");
    assert!(r2.version_key() > r1.version_key());

    let bytes = r2.encode();
    assert_eq!(bytes[0], JOB_RECORD_FORMAT);
    assert_eq!(JobRecord::decode(&bytes).unwrap(), r2);
    assert!(JobRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut long = bytes.clone();
    long.push(1);
    assert!(JobRecord::decode(&long).is_err());
    assert!(
        JobRecord::decode(&[9, 0])
            .unwrap_err()
            .to_string()
            .contains("format 9")
    );
    assert!(JobRecord::decode(&[]).is_err());
    let r3 = r2.revert_to(&r1, 3_000);
    assert_eq!((r3.version, r3.spec.count, r3.updated_ms), (3, 3, 3_000));
    assert_eq!(r3.spore_ref, "hello@1.2.0");
    assert!(matches!(
        JobRecord::first(spec, "hello@1", 0),
        Err(JobRecordError::NotADigest(_))
    ));
}

#[test]
fn the_pinned_digest_is_findable_as_text_in_the_record() {
    // The spore garbage collector scans job records for `sha256:` text.
    let r = JobRecord::first(minimal(), DIGEST, 0).unwrap();
    assert!(String::from_utf8_lossy(&r.encode()).contains(DIGEST));
}

#[test]
fn the_brief_example_parses() {
    let text = format!(
        r#"
name = "hello"
spore = "{DIGEST}"
count = 3
strategy = "spread"
[env]
GREETING = "hi"
[resources]
cpu_milli = 100
memory_mb = 64
[constraints]
zone = "a"
[health]
http = "/health"
interval_ms = 500
[update]
max_parallel = 1
"#
    );
    let s = JobSpec::from_toml(&text).unwrap();
    assert_eq!(s.constraints["zone"], Constraint::Eq("a".into()));
    assert_eq!(s.health.unwrap().interval_ms, 500);
}

#[test]
fn decoders_survive_damaged_bytes() {
    // A cheap fuzz: every truncation and many byte flips of a valid record
    // decode to an error or a record, never a panic.
    let bytes = JobRecord::first(JobSpec::from_toml(FULL).unwrap(), DIGEST, 7)
        .unwrap()
        .encode();
    for cut in 0..bytes.len() {
        assert!(JobRecord::decode(&bytes[..cut]).is_err());
    }
    let mut x: u32 = 12345;
    for _ in 0..5_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let mut b = bytes.clone();
        let at = (x as usize >> 8) % b.len();
        b[at] ^= (x as u8) | 1;
        let _ = JobRecord::decode(&b);
    }
}

#[test]
fn more_memory_than_any_node_has_is_valid_and_left_to_placement() {
    // It stays pending with a reason; nodes with more memory may join.
    let mut spec = minimal();
    spec.resources.memory_mb = 50_000_000;
    assert_eq!(spec.validate(), Ok(()));
    spec.resources.memory_mb = 0;
    assert!(err(&spec).starts_with("resources.memory_mb"));
}

#[test]
fn a_microvm_job_reads_its_driver_and_vcpus_and_reserves_qemu_memory() {
    let s = JobSpec::from_toml(
        "name = \"vm\"\nspore = \"vm@1\"\ndriver = \"microvm\"\n[resources]\nvcpus = 2\nmemory_mb = 128\n",
    )
    .unwrap();
    assert_eq!(s.driver, Driver::Microvm);
    assert_eq!(s.resources.vcpus, 2);
    assert_eq!(s.reserved().memory_mb, 128 + super::MICROVM_OVERHEAD_MB);
    assert_eq!(minimal().reserved(), minimal().resources);
    let mut bad = s.clone();
    bad.resources.vcpus = 0;
    assert!(err(&bad).contains("resources.vcpus"), "{}", err(&bad));
    let unknown = JobSpec::from_toml("name = \"vm\"\nspore = \"vm@1\"\ndriver = \"docker\"\n");
    assert!(unknown.is_err());
}

#[test]
fn restart_durations_may_carry_units_and_the_record_keeps_milliseconds() {
    let text = "name = \"a\"\nspore = \"x@1\"\n[restart]\nattempts = 4\ndelay = \"1.5s\"\ninterval = \"10m\"\nmax_delay = \"1m\"\nbackoff = 2.0\n";
    let s = JobSpec::from_toml(text).unwrap();
    assert_eq!(
        (
            s.restart.delay_ms,
            s.restart.interval_ms,
            s.restart.max_delay_ms,
            s.restart.backoff
        ),
        (1_500, 600_000, 60_000, 2)
    );
    // Plain numbers are milliseconds, under either name, in JSON too.
    let s = JobSpec::from_toml("name = \"a\"\nspore = \"x@1\"\n[restart]\ndelay = 250\n").unwrap();
    assert_eq!(s.restart.delay_ms, 250);
    let json = br#"{"name": "a", "spore": "x@1", "restart": {"delay_ms": "2s", "backoff": 1}}"#;
    let s = JobSpec::from_json(json).unwrap();
    assert_eq!((s.restart.delay_ms, s.restart.backoff), (2_000, 1));
    // The record (postcard) reads back what was written.
    let r = JobRecord::first(s.clone(), DIGEST, 1).unwrap();
    assert_eq!(
        JobRecord::decode(&r.encode()).unwrap().spec.restart,
        s.restart
    );
    // What cannot be taken is refused with what to write.
    for (bad, word) in [
        ("delay = \"soon\"", "not a duration"),
        ("delay = \"1d\"", "not a duration"),
        ("delay = -5", "negative"),
        ("backoff = 1.5", "not a whole factor"),
    ] {
        let text = format!("name = \"a\"\nspore = \"x@1\"\n[restart]\n{bad}\n");
        let e = JobSpec::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains(word), "{bad}: {e}");
    }
}
