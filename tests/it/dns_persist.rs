//! dns-persist-01 end to end: the real Pebble 2.10 validating through BIND 9 (Pebble asks the
//! DNS server it was given, over TCP). What the zone holds is read back from BIND (`dig`) and
//! from named's log of the updates it applied, never from regcert's account of it.

use crate::common::bind::{Bind, ZONE};
use crate::common::*;
use toml::{Table, Value, toml};

const NAME: &str = "registry.regcert.test";
const RECORD: &str = "_validation-persist.registry.regcert.test.";
/// Pebble's issuer-domain-name: its default `caaIdentities`.
const ISSUER: &str = "pebble.letsencrypt.org";

/// BIND serving the test zone, and Pebble 2.10 validating through it.
fn bind_and_pebble() -> (Bind, Pebble) {
    let bind = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..PebbleOpts::v2_10() });
    (bind, pebble)
}

fn persist_setup(pebble: &Pebble, domains: &[&str], dns: Option<Table>) -> Setup {
    let mut keys = toml! { challenge = "dns-persist-01" };
    if let Some(dns) = dns {
        keys.insert("dns".into(), Value::from(dns));
    }
    Setup::new(pebble, &[cert("registry", domains, "ecdsa-p256").with(keys)])
}

/// The zone-file line for the record that authorizes `account` (with `policy=wildcard`).
fn zone_line(account: &str, wildcard: bool) -> String {
    let policy = if wildcard { "; policy=wildcard" } else { "" };
    format!("{RECORD} 3600 IN TXT \"{ISSUER}; accounturi={account}{policy}\"")
}

/// named's log lines that added a TXT record at the persist name.
fn adds(bind: &Bind) -> Vec<String> {
    bind.updates_of(RECORD).into_iter().filter(|l| l.contains("adding an RR") && l.contains("TXT")).collect()
}

fn assert_installed(s: &Setup, pebble: &Pebble) {
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
}

#[test]
fn show_prints_the_record_the_provider_writes_once_and_renewals_leave_dns_alone() {
    let (bind, pebble) = bind_and_pebble();
    let dns = toml! {
        provider = "rfc2136"
        server = (format!("127.0.0.1:{}", bind.port))
        zone = (ZONE)
        tsig_key = (bind.key_file.display().to_string())
    };
    let s = persist_setup(&pebble, &[NAME], Some(dns));

    let show = s.run(&["dns-persist", "show"]);
    assert_eq!(show.code, 0, "{show:?}");
    let (account, _) = s.account_credentials();
    let line = zone_line(&account, false);
    assert!(show.stdout.lines().any(|l| l == line), "expected the line {line:?}: {show:?}");
    assert!(show.stdout.contains("created just now"), "the account was made for the record: {show:?}");
    // Every other line is a zone-file comment: the whole output pastes into a zone file.
    assert!(show.stdout.lines().all(|l| l == line || l.starts_with("; ")), "{show:?}");
    let json = s.run(&["dns-persist", "show", "--json", "--cert", "registry"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert_eq!(json[0]["account_created"], false, "{json}");
    assert_eq!(json[0]["records"][0]["zone_line"], line.as_str(), "{json}");
    assert!(bind.txt(RECORD).is_empty(), "show writes nothing into DNS");

    let first = s.run(&["renew"]);
    assert_eq!(first.code, 0, "{first:?}\n{}", pebble.logs());
    assert_installed(&s, &pebble);
    assert_eq!(bind.txt(RECORD), [format!("{ISSUER}; accounturi={account}")], "{}", bind.log());
    assert_eq!(adds(&bind).len(), 1, "{:?}", bind.updates_of(RECORD));
    let first_serial = serial(&s.fullchain("registry"));

    let validations = || pebble.logs().matches("Pulled a task from the Tasks queue").count();
    let before = validations();
    assert!(before > 0, "Pebble logs each validation (the first renewal's): {}", pebble.logs());
    let second = s.run(&["renew", "--force"]);
    assert_eq!(second.code, 0, "{second:?}\n{}", pebble.logs());
    assert_installed(&s, &pebble);
    assert_ne!(serial(&s.fullchain("registry")), first_serial, "a new certificate was installed");
    // Pebble now and then reuses the first order's valid authorization even with
    // PEBBLE_AUTHZREUSE=0 (seen once in ~20 runs): then there is nothing to validate and regcert
    // rightly never looks at DNS. When the CA did validate, regcert found its record in place.
    if validations() > before {
        assert!(second.stderr.contains("the dns-persist-01 record is in place; DNS left as it is"), "{second:?}");
    }
    // Written once, never removed: the second renewal changed nothing in DNS.
    assert_eq!(bind.updates_of(RECORD).len(), 1, "{:?}", bind.updates_of(RECORD));
    assert_eq!(bind.txt(RECORD).len(), 1);
}

#[test]
fn without_a_provider_the_error_prints_the_record_and_that_line_is_what_the_ca_wants() {
    let (bind, pebble) = bind_and_pebble();
    let s = persist_setup(&pebble, &[NAME], None);

    let failed = s.run(&["renew"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    let (account, _) = s.account_credentials();
    let line = zone_line(&account, false);
    let out = format!("{}{}", failed.stdout, failed.stderr);
    assert!(out.contains(&line), "the error prints the record to create ({line}): {failed:?}");
    assert!(out.contains("dns = { provider"), "{failed:?}");
    assert!(!s.fullchain("registry").exists(), "nothing installed");

    // The operator pastes the printed line into the zone.
    bind.nsupdate(&format!("update add {line}"));
    let ok = s.run(&["renew"]);
    assert_eq!(ok.code, 0, "{ok:?}\n{}", pebble.logs());
    assert_installed(&s, &pebble);
}

#[test]
fn a_wildcard_needs_policy_wildcard() {
    let (bind, pebble) = bind_and_pebble();
    let wildcard = format!("*.{NAME}");
    let s = persist_setup(&pebble, &[NAME, &wildcard], None);

    let show = s.run(&["dns-persist", "show"]);
    assert_eq!(show.code, 0, "{show:?}");
    let (account, _) = s.account_credentials();
    let wild_line = zone_line(&account, true);
    // One record serves the name and its wildcard.
    assert_eq!(show.stdout.lines().filter(|l| l.contains(" IN TXT ")).collect::<Vec<_>>(), [wild_line.as_str()], "{show:?}");

    // A record without the policy authorizes the name but not the wildcard.
    bind.nsupdate(&format!("update add {}", zone_line(&account, false)));
    let refused = s.run(&["renew"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let out = format!("{}{}", refused.stdout, refused.stderr);
    assert!(out.contains("policy mismatch"), "the CA's reason: {refused:?}");
    assert!(out.contains(&wild_line), "the record to create: {refused:?}");

    bind.nsupdate(&format!("update delete {RECORD} TXT\nupdate add {wild_line}"));
    let ok = s.run(&["renew"]);
    assert_eq!(ok.code, 0, "{ok:?}\n{}", pebble.logs());
    assert_installed(&s, &pebble);
    assert!(cert_text(&s.fullchain("registry")).contains(&format!("DNS:{wildcard}")), "the wildcard is certified");
}

#[test]
fn an_exec_hook_is_called_once_to_present_and_never_to_clean_up() {
    // Pebble 2.10 asks its own pebble-challtestsrv; the hook publishes through its management API.
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let dir = tempfile::tempdir().unwrap();
    let (script, calls) = (dir.path().join("dns-hook.sh"), dir.path().join("calls.log"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\necho \"$1 $2\" >> {calls}\n[ \"$1\" = present ] || exit 0\n\
             {curl} -sSf -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" {mgmt}/set-txt\n",
            calls = calls.display(),
            curl = tool("curl").display(),
            mgmt = pebble.challtest_mgmt
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = toml! {
        provider = "exec"
        command = [(script.display().to_string())]
        nameservers = [(pebble.challtest_dns.as_str())]
    };
    let s = persist_setup(&pebble, &[NAME], Some(exec));

    for args in [&["renew"][..], &["renew", "--force"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}\n{}", pebble.logs());
        assert_installed(&s, &pebble);
    }
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), format!("present {RECORD}\n"), "one present, no cleanup, over two renewals");
}
