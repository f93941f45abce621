use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn spec(count: u32, greeting: &str) -> JobSpec {
    let json = format!(
        r#"{{"name":"web","spore":"web@1","count":{count},"env":{{"GREETING":"{greeting}"}}}}"#
    );
    JobSpec::from_json(json.as_bytes()).unwrap()
}

#[test]
fn first_deploy_creates_version_one_pinned_to_the_digest() {
    let (change, rec) = next_record(None, spec(3, "hi"), D1, 10).unwrap();
    assert_eq!(change, DeployChange::Created);
    assert_eq!(rec.version, 1);
    assert_eq!(rec.digest(), D1);
    assert_eq!(rec.spore_ref, "web@1");
}

#[test]
fn an_identical_spec_is_not_a_new_version() {
    let (_, v1) = next_record(None, spec(3, "hi"), D1, 10).unwrap();
    let (change, same) = next_record(Some(&v1), spec(3, "hi"), D1, 20).unwrap();
    assert_eq!(change, DeployChange::Unchanged);
    assert_eq!(same, v1);
}

#[test]
fn a_changed_spec_or_digest_is_a_new_version() {
    let (_, v1) = next_record(None, spec(3, "hi"), D1, 10).unwrap();
    let (change, v2) = next_record(Some(&v1), spec(3, "hello"), D1, 20).unwrap();
    assert_eq!((change, v2.version), (DeployChange::NewVersion, 2));
    // The same reference resolving to new bytes is a change too.
    let (change, v3) = next_record(Some(&v2), spec(3, "hello"), D2, 30).unwrap();
    assert_eq!(
        (change, v3.version, v3.digest()),
        (DeployChange::NewVersion, 3, D2)
    );
    assert_eq!(v3.created_ms, 10);
}

#[test]
fn a_count_change_alone_scales_the_same_version() {
    let (_, v1) = next_record(None, spec(3, "hi"), D1, 10).unwrap();
    let (change, scaled) = next_record(Some(&v1), spec(5, "hi"), D1, 20).unwrap();
    assert_eq!(change, DeployChange::Scaled);
    assert_eq!((scaled.version, scaled.spec.count), (1, 5));
    assert_eq!(scaled.updated_ms, 20);
}

#[test]
fn deploying_a_stopped_job_again_starts_it_as_a_new_version() {
    let (_, mut v1) = next_record(None, spec(3, "hi"), D1, 10).unwrap();
    v1.stopped = true;
    let (change, started) = next_record(Some(&v1), spec(3, "hi"), D1, 20).unwrap();
    assert_eq!(change, DeployChange::Started);
    assert!(!started.stopped);
    assert_eq!(started.version, 2);
    assert_eq!(started.spec, v1.spec);
}

#[test]
fn count_is_not_part_of_what_makes_a_version() {
    assert!(same_but_count(&spec(1, "a"), &spec(9, "a")));
    assert!(!same_but_count(&spec(1, "a"), &spec(1, "b")));
}
