//! Issue 10 (hardening): configurations that would loop or panic are refused, secrets stay out
//! of every output, and the listeners regcert opens cannot be held by idle clients.

use crate::common::*;
use toml::{Value, toml};

#[test]
fn lifetimes_that_would_loop_or_panic_are_refused_by_check_config() {
    let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Lifetime CA" validity = "8000y" })) };
    let s = Setup::with_config(
        config,
        &[
            CertSpec::new("zero", toml! { issuer = "ca:internal" domains = ["zero.corp.lan"] validity = "0s" }),
            CertSpec::new("loop", toml! { issuer = "ca:internal" domains = ["loop.corp.lan"] validity = "30d" renew_before = "30d" }),
            CertSpec::new("default", toml! { issuer = "ca:internal" domains = ["d.corp.lan"] renew_before = "100d" }),
        ],
    );
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    for expected in [
        "[ca.internal] validity = \"8000years\" is more than 100 years",
        "`zero`: validity = \"0s\" would issue certificates that are already expired",
        "`loop`: renew_before = \"30d\" is not shorter than validity \"30d\": every check would renew it again",
        "`default`: renew_before = \"100d\" is not shorter than the default validity \"90d\"",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?}: {run:?}");
    }
    // Nothing reaches the CA code, which must not panic either.
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stderr.contains("panicked") && !s.state().join("ca").exists(), "{run:?}");

    // Fixed, the same configuration is accepted and issues.
    s.edit(|c| set(c, "ca.internal.validity", "100y"));
    s.edit_cert("zero", |c| set(c, "validity", "1d"));
    s.edit_cert("loop", |c| set(c, "renew_before", "10d"));
    s.edit_cert("default", |c| set(c, "renew_before", "30d"));
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("3 renewed"), "{run:?}");
}
