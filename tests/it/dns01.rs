//! DNS-01 against a real authoritative server (BIND 9) with TSIG-authenticated RFC 2136 updates,
//! and Pebble validating through that server.

use crate::common::bind::{Bind, ZONE, tsig_key};
use crate::common::*;
use std::fs;
use std::path::Path;
use toml::{Table, Value, toml};

/// BIND serving the test zone, and Pebble validating through it.
fn bind_and_pebble() -> (Bind, Pebble) {
    let bind = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..Default::default() });
    (bind, pebble)
}

fn dns_setup(pebble: &Pebble, names: &[&str], dns: Table) -> Setup {
    Setup::new(pebble, &[cert("registry", names, "ecdsa-p256").with(toml! { challenge = "dns-01" dns = (Value::from(dns)) })])
}

/// The rfc2136 provider for `bind`, signing with `tsig_key`.
fn rfc2136(bind: &Bind, tsig_key: &Path) -> Table {
    toml! {
        provider = "rfc2136"
        server = (format!("127.0.0.1:{}", bind.port))
        zone = (ZONE)
        tsig_key = (tsig_key.display().to_string())
    }
}

#[test]
fn rfc2136_issues_a_name_and_a_wildcard_and_removes_the_records() {
    let (bind, pebble) = bind_and_pebble();
    let s = dns_setup(&pebble, &["registry.regcert.test", "*.registry.regcert.test"], rfc2136(&bind, &bind.key_file));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    let text = cert_text(&s.fullchain("registry"));
    assert!(text.contains("DNS:registry.regcert.test") && text.contains("DNS:*.registry.regcert.test"), "{text}");
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    assert!(run.stderr.contains("TXT records visible on every nameserver"), "{run:?}");
    assert!(bind.txt("_acme-challenge.registry.regcert.test.").is_empty(), "records must be removed afterwards");
}

#[test]
fn wrong_tsig_key_is_a_clear_error_and_leaves_nothing() {
    let (bind, pebble) = bind_and_pebble();
    let wrong = bind.dir.path().join("wrong.key");
    fs::write(&wrong, tsig_key("regcert-test")).unwrap(); // same name, other secret
    let s = dns_setup(&pebble, &["registry.regcert.test"], rfc2136(&bind, &wrong));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("_acme-challenge.registry.regcert.test") && run.stdout.contains("127.0.0.1"), "{run:?}");
    assert!(
        run.stdout.contains("rejected our TSIG signature") && run.stdout.contains("wrong.key"),
        "the error must point at the key: {run:?}"
    );
    assert!(!s.fullchain("registry").exists(), "nothing issued");
    assert!(bind.txt("_acme-challenge.registry.regcert.test.").is_empty(), "nothing left in the zone");
}

#[test]
fn exec_provider_through_nsupdate() {
    let (bind, pebble) = bind_and_pebble();
    let hook = bind.dir.path().join("dns-hook.sh");
    let calls = bind.dir.path().join("calls.log");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\necho \"$1 $2 $REGCERT_DNS_FQDN\" >> {calls}\nif [ \"$1\" = present ]; then op=\"add $2 60\"; else op=\"delete $2\"; fi\n\
             {nsupdate} -k {key} <<EOF\nserver 127.0.0.1 {port}\nzone {ZONE}\nupdate $op TXT \"$3\"\nsend\nEOF\n",
            calls = calls.display(),
            nsupdate = tool("nsupdate").display(),
            key = bind.key_file.display(),
            port = bind.port
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = toml! {
        provider = "exec"
        command = [(hook.display().to_string())]
        nameservers = [(format!("127.0.0.1:{}", bind.port))]
    };
    let s = dns_setup(&pebble, &["registry.regcert.test"], exec);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let log = fs::read_to_string(&calls).unwrap();
    assert!(log.contains("present _acme-challenge.registry.regcert.test. _acme-challenge.registry.regcert.test."), "{log}");
    assert!(log.contains("cleanup _acme-challenge.registry.regcert.test."), "{log}");
    assert!(bind.txt("_acme-challenge.registry.regcert.test.").is_empty());
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
}
