//! Verification of a name served by several registries (a load balancer's pool, a dual-stack
//! name): every address is checked, and one that serves the old certificate fails the check
//! and is named. Two real registry containers, one on the installed pair, one on the previous.
//! An address this host has no route to (IPv6 on an IPv4-only host) is skipped.

use crate::common::bind::UnreachableRoute;
use crate::common::registry::*;
use crate::common::*;
use std::path::Path;
use toml::Value;

/// Copy the certificate files of `from` into the new directory `to`.
fn copy_pair(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["domain.crt", "domain.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn every_address_is_verified_and_the_one_serving_the_old_certificate_is_named() {
    let pebble = Pebble::start();
    let name = unique_name("pool");
    let s = Setup::new(&pebble, &[cert("registry", &[&name], "ecdsa-p256")]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let old_dir = s.root.path().join("old-certs");
    copy_pair(&s.install_dir("registry"), &old_dir);
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (old_serial, new_serial) = (serial(&old_dir.join("domain.crt")), serial(&s.fullchain("registry")));
    assert_ne!(old_serial, new_serial);

    let current = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let stale = Registry::start(&old_dir, RegistryOpts::default());
    let url = format!("https://{name}:5000/v2/");
    let verify_at = |addrs: Value| {
        s.edit_cert("registry", |c| {
            let mut v = verify_table(&pebble, &url, "unused");
            v.insert("connect_to".into(), addrs);
            set(c, "verify", v);
        });
        s.run(&["verify"])
    };

    // A connect_to list: the registry on the old pair fails the check, and is named.
    let run = verify_at(vec![current.addr(), stale.addr()].into());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(&format!("at {}: the registry still serves another certificate", stale.addr())), "{run:?}");
    assert!(!run.stdout.contains(&format!("at {}:", current.addr())), "{run:?}");
    // Control: the current one alone passes (one string, the old form of connect_to).
    let run = verify_at(current.addr().into());
    assert_eq!(run.code, 0, "{run:?}");

    // The name itself resolving to both (/etc/hosts): both are checked without connect_to.
    s.edit_cert("registry", |c| {
        table(c, "verify").remove("connect_to");
    });
    let hosts = HostsEntry::add(&name, &[&current.ip, &stale.ip]);
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 1, "{run:?}");
    let addresses = run.stdout.lines().find(|l| l.contains("addresses:")).unwrap_or_default();
    assert!(addresses.contains(&current.addr()) && addresses.contains(&stale.addr()), "{run:?}");
    assert!(run.stdout.contains(&format!("at {}: the registry still serves another certificate", stale.addr())), "{run:?}");
    drop(hosts);

    // A dual-stack name on a host without a route to its IPv6 address: that address is skipped
    // (said in the log), the IPv4 one checked.
    let (_route, v6) = UnreachableRoute::add();
    let _hosts = HostsEntry::add(&name, &[&current.ip, &v6]);
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("not checked") && run.stderr.contains(&format!("[{v6}]:5000")), "{run:?}");
    assert!(run.stdout.contains(&format!("connected to {}", current.addr())), "{run:?}");
}
