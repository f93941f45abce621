use super::*;

#[test]
fn cpu_ticks_reads_utime_and_stime_past_a_name_with_spaces() {
    let stat = "42 (my co (x)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 1 2 3";
    assert_eq!(cpu_ticks(stat), Some(12));
    assert_eq!(cpu_ticks("garbage"), None);
}

#[test]
fn process_and_disk_metrics_are_in_base_units() {
    let mut r = Registry::with_prefix("myco");
    process(&mut r);
    disk(&mut r, std::path::Path::new("/"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    // More than a MiB resident: bytes, not pages or KiB.
    assert!(value("myco_process_resident_memory_bytes") > 1048576.0);
    assert!(value("myco_process_open_fds") >= 3.0);
    assert!(value("myco_process_cpu_seconds") >= 0.0);
    let (size, free) = (
        value("myco_data_dir_filesystem_size_bytes"),
        value("myco_data_dir_filesystem_free_bytes"),
    );
    assert!(size > 0.0 && free <= size, "size {size}, free {free}");
}

#[test]
fn a_revert_is_an_older_spore_coming_back_after_another_ran() {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let spec = || {
        myco_proto::job::JobSpec::from_toml(&format!("name = \"web\"\nspore = \"{}\"", d('a')))
            .unwrap()
    };
    let v1 = JobRecord::first(spec(), &d('a'), 1).unwrap();
    let v2 = v1.next(spec(), &d('b'), 2).unwrap();
    assert!(!reverted(std::slice::from_ref(&v1)));
    assert!(
        !reverted(&[v1.clone(), v2.clone()]),
        "a new spore is a rollout"
    );
    let v3 = v2.revert_to(&v1, 3);
    assert!(reverted(&[v1.clone(), v2.clone(), v3.clone()]));
    // A scale after it (same spore) ends the signal: the operator moved on.
    let v4 = v3.next(spec(), &d('a'), 4).unwrap();
    assert!(!reverted(&[v1, v2, v3, v4]));
}
