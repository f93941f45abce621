//! `myco trust remove` / `DELETE /v1/trust/{key}`: a key that is not 64
//! hex digits is refused (400), one that is not trusted is not found
//! (404); each exits non-zero from the CLI, and only a trusted key's
//! removal succeeds.

mod support;

use support::{Harness, Opts, cli, myco, ok, s};

#[test]
fn trust_remove_refuses_what_it_cannot_remove() {
    let mut h = Harness::new("trust-remove");
    let a = h.start("a", Opts::default());
    let a = h.agent(a);
    let key = h.root.join("pub.key");
    ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
    let pubkey = h.root.join("pub.key.pub");
    let hex = std::fs::read_to_string(&pubkey).unwrap().trim().to_string();

    // Regression: `DELETE /v1/trust/zz` answered 200 {"removed":"zz"}.
    for (bad, status) in [
        ("zz", "400"),
        (&"0".repeat(63)[..], "400"),
        (&hex[..], "404"),
    ] {
        let out = cli(a, &["trust", "remove", bad]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {e}");
        assert!(e.contains(&format!("answered {status}")), "{bad}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = String::from_utf8_lossy(&cli(a, &["trust", "remove", "zz"]).stderr).into_owned();
    assert!(e.contains("64 hex digits"), "{e}");
    let e = String::from_utf8_lossy(&cli(a, &["trust", "remove", &hex]).stderr).into_owned();
    assert!(e.contains("is not trusted"), "{e}");

    ok(&cli(a, &["trust", "add", s(&pubkey)]), "myco trust add");
    // Case does not matter; the answer names the key as stored.
    let removed = a.client().raw(
        "DELETE",
        &format!("/v1/trust/{}", hex.to_ascii_uppercase()),
        &[("authorization", &format!("Bearer {}", a.token()))],
        b"",
    );
    let removed = removed.expect("DELETE /v1/trust");
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.text(), format!(r#"{{"removed":"{hex}"}}"#));
    let out = cli(a, &["trust", "list", "--json"]);
    assert_eq!(ok(&out, "myco trust list").trim(), "[]");
    let out = cli(a, &["trust", "remove", &hex]);
    assert!(!out.status.success(), "removed twice");
}
