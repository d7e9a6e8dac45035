//! DNS-01 against real authoritative servers (BIND 9) with TSIG-authenticated RFC 2136 updates,
//! and Pebble validating through them.
//!
//! What the zone holds is read back from the servers (`dig`) and from named's own log of the
//! updates it applied, never from regcert's account of it.

use crate::common::bind::{Bind, BindOpts, LoopbackAddr, UnreachableRoute, ZONE, tsig_key};
use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use toml::{Table, Value, toml};

const CHALLENGE: &str = "_acme-challenge.registry.regcert.test.";
/// A TXT record someone else keeps at the challenge name: it must survive every run.
const FOREIGN: &str = "foreign-verification-token";

/// BIND serving the test zone, and Pebble validating through it.
fn bind_and_pebble() -> (Bind, Pebble) {
    let bind = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..Default::default() });
    (bind, pebble)
}

/// A zone with a real nameserver set: `primary` (updated by regcert, used by Pebble) and a
/// second server — a secondary that follows it by NOTIFY + IXFR, or (`stale`) a copy of the
/// zone that never hears of updates. ns1 also has an IPv6 address this host has no route to.
/// The foreign TXT record is in the zone from the start.
struct NsSet {
    primary: Bind,
    second: Bind,
    unreachable_v6: String,
    _route: UnreachableRoute,
}

impl NsSet {
    fn start(stale: bool) -> Self {
        let (a1, a2) = (LoopbackAddr::add(), LoopbackAddr::add());
        let (route, v6) = UnreachableRoute::add();
        let ns_set = vec![("ns1".to_owned(), a1.ip.clone()), ("ns1".to_owned(), v6.clone()), ("ns2".to_owned(), a2.ip.clone())];
        let records = format!("_acme-challenge.registry IN TXT \"{FOREIGN}\"");
        let primary_ip = a1.ip.clone();
        let primary = Bind::start_with(BindOpts { ns: Some(a1), ns_set: ns_set.clone(), records: records.clone(), secondary_of: None });
        let second = Bind::start_with(BindOpts { ns: Some(a2), ns_set, records, secondary_of: (!stale).then_some(primary_ip) });
        second.wait_txt(CHALLENGE, &[FOREIGN]);
        NsSet { primary, second, unreachable_v6: format!("[{v6}]:53"), _route: route }
    }
}

fn dns_setup(pebble: &Pebble, names: &[&str], dns: Table) -> Setup {
    Setup::new(pebble, &[dns_cert("registry", names, dns)])
}

fn dns_cert(name: &str, domains: &[&str], dns: Table) -> CertSpec {
    cert(name, domains, "ecdsa-p256").with(toml! { challenge = "dns-01" dns = (Value::from(dns)) })
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

/// named's log lines for `fqdn`: (adds, deletes) of TXT records.
fn adds_and_deletes(bind: &Bind, fqdn: &str) -> (Vec<String>, Vec<String>) {
    let lines = bind.updates_of(fqdn);
    let of = |verb: &str| lines.iter().filter(|l| l.contains(verb) && l.contains("TXT")).cloned().collect::<Vec<_>>();
    (of("adding an RR"), of("deleting an RR"))
}

#[test]
fn a_real_nameserver_set_is_checked_and_exactly_our_records_come_and_go() {
    let ns = NsSet::start(false);
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(ns.primary.port), ..Default::default() });
    let s = dns_setup(&pebble, &["registry.regcert.test", "*.registry.regcert.test"], rfc2136(&ns.primary, &ns.primary.key_file));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", ns.primary.log());
    let text = cert_text(&s.fullchain("registry"));
    assert!(text.contains("DNS:registry.regcert.test") && text.contains("DNS:*.registry.regcert.test"), "{text}");
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    // Both servers of the NS set were asked (found through the zone's NS records at the update
    // server), and the IPv6 address without a route was skipped, not waited for.
    assert!(run.stderr.contains("TXT records visible on every nameserver") && run.stderr.contains("servers=2"), "{run:?}");
    assert!(run.stderr.contains("not checked") && run.stderr.contains(&ns.unreachable_v6), "{run:?}");
    // The primary applied both of our values (name and wildcard) and removed exactly those.
    let (adds, deletes) = adds_and_deletes(&ns.primary, CHALLENGE);
    assert_eq!((adds.len(), deletes.len()), (2, 2), "{}", ns.primary.log());
    assert!(adds.iter().chain(&deletes).all(|l| !l.contains(FOREIGN)), "{adds:?} {deletes:?}");
    // What is left on both servers: the foreign record, alone.
    ns.primary.wait_txt(CHALLENGE, &[FOREIGN]);
    ns.second.wait_txt(CHALLENGE, &[FOREIGN]);
    // The secondary really followed the primary (our records reached it by zone transfer).
    assert!(ns.second.log().matches("Transfer status: success").count() >= 2, "{}", ns.second.log());
}

#[test]
fn a_nameserver_without_the_record_is_named_and_the_records_are_removed() {
    let ns = NsSet::start(true);
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(ns.primary.port), ..Default::default() });
    let mut dns = rfc2136(&ns.primary, &ns.primary.key_file);
    dns.insert("propagation_timeout".into(), "2s".into());
    let s = dns_setup(&pebble, &["registry.regcert.test"], dns);
    let started = Instant::now();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    let stale = ns.second.ns_addr();
    assert!(run.stdout.contains(&format!("{stale} lacks {CHALLENGE}")), "the error must name the server: {run:?}");
    assert!(!run.stdout.contains(&format!("{} lacks", ns.primary.ns_addr())), "the primary has it: {run:?}");
    assert!(run.stdout.contains("within 2s") && run.stdout.contains("dns.propagation_timeout"), "{run:?}");
    let (adds, deletes) = adds_and_deletes(&ns.primary, CHALLENGE);
    assert_eq!((adds.len(), deletes.len()), (1, 1), "added, then removed after the failure: {}", ns.primary.log());
    assert_eq!(ns.primary.txt(CHALLENGE), [FOREIGN]);
    assert!(!s.fullchain("registry").exists(), "nothing issued");
}

#[test]
fn a_failed_ns_lookup_names_the_zone_and_the_server() {
    let (bind, pebble) = bind_and_pebble();
    let hook = nsupdate_hook(&bind, "");
    let closed = free_port(); // nothing answers here
    let exec = toml! {
        provider = "exec"
        command = [(hook.script.display().to_string())]
        server = (format!("127.0.0.1:{closed}"))
        zone = (ZONE)
    };
    let s = dns_setup(&pebble, &["registry.regcert.test"], exec);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!("cannot look up the NS set of zone {ZONE} at 127.0.0.1:{closed}")),
        "the error must name the zone and the server: {run:?}"
    );
    let calls = hook.calls();
    assert!(calls.contains(&format!("present {CHALLENGE}")) && calls.contains(&format!("cleanup {CHALLENGE}")), "{calls}");
    assert!(bind.txt(CHALLENGE).is_empty(), "removed again: {}", bind.log());
}

#[test]
fn wrong_tsig_key_is_a_clear_error_and_leaves_nothing() {
    let (bind, pebble) = bind_and_pebble();
    let wrong = bind.dir.path().join("wrong.key");
    fs::write(&wrong, tsig_key("regcert-test")).unwrap(); // same name, other secret
    let s = dns_setup(&pebble, &["registry.regcert.test"], rfc2136(&bind, &wrong));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(CHALLENGE) && run.stdout.contains("127.0.0.1"), "{run:?}");
    assert!(
        run.stdout.contains("rejected our TSIG signature") && run.stdout.contains("wrong.key"),
        "the error must point at the key: {run:?}"
    );
    assert!(!s.fullchain("registry").exists(), "nothing issued");
    assert_eq!(adds_and_deletes(&bind, CHALLENGE), (vec![], vec![]), "the server applied nothing: {}", bind.log());
}

#[test]
fn hmac_sha384_and_sha512_keys_sign_the_updates() {
    let (bind, pebble) = bind_and_pebble();
    let certs: Vec<CertSpec> = ["hmac-sha384", "hmac-sha512"]
        .iter()
        .map(|alg| {
            let name = format!("{}.regcert.test", &alg[5..]);
            dns_cert(&alg[5..], &[name.as_str()], rfc2136(&bind, &bind.key(alg)))
        })
        .collect();
    let s = Setup::new(&pebble, &certs);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    for (alg, key) in [("sha384", "regcert-test-sha384"), ("sha512", "regcert-test-sha512")] {
        assert_chain_verifies(&s.fullchain(alg), &pebble.issuing_root());
        let (adds, deletes) = adds_and_deletes(&bind, &format!("_acme-challenge.{alg}.regcert.test."));
        assert_eq!((adds.len(), deletes.len()), (1, 1), "{}", bind.log());
        assert!(adds.iter().chain(&deletes).all(|l| l.contains(&format!("/key {key}:"))), "signed with {key}: {adds:?} {deletes:?}");
    }
}

#[test]
fn delegate_and_a_cname_in_the_zone_both_lead_the_record_to_the_target() {
    let bind = Bind::start_with(BindOpts {
        records: "_acme-challenge.delegated IN CNAME delegated.validation.regcert.test.\n\
                  _acme-challenge.followed IN CNAME followed.validation.regcert.test.\n"
            .into(),
        ..Default::default()
    });
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..Default::default() });
    let mut delegated = rfc2136(&bind, &bind.key_file);
    delegated.insert("delegate".into(), "delegated.validation.regcert.test.".into());
    let certs = [
        dns_cert("delegated", &["delegated.regcert.test"], delegated),
        dns_cert("followed", &["followed.regcert.test"], rfc2136(&bind, &bind.key_file)),
    ];
    let s = Setup::new(&pebble, &certs);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    for name in ["delegated", "followed"] {
        assert_chain_verifies(&s.fullchain(name), &pebble.issuing_root());
        let (adds, deletes) = adds_and_deletes(&bind, &format!("{name}.validation.regcert.test."));
        assert_eq!((adds.len(), deletes.len()), (1, 1), "{name}: {}", bind.log());
        // Nothing was written beside the CNAME (BIND would ignore it), and the CNAME stays.
        assert_eq!(adds_and_deletes(&bind, &format!("_acme-challenge.{name}.regcert.test.")), (vec![], vec![]));
        let cname = Command::new(tool("dig"))
            .args(["@127.0.0.1", "-p", &bind.port.to_string(), "+short", "CNAME", &format!("_acme-challenge.{name}.regcert.test.")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&cname.stdout).trim(), format!("{name}.validation.regcert.test."));
    }
    assert!(run.stderr.contains("the challenge name is a CNAME"), "{run:?}");
}

#[test]
fn records_are_removed_when_the_ca_rejects_the_validation() {
    // regcert updates and checks `bind`; the CA asks `elsewhere`, which never has the record.
    let bind = Bind::start();
    let elsewhere = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(elsewhere.port), ..Default::default() });
    let mut dns = rfc2136(&bind, &bind.key_file);
    dns.insert("nameservers".into(), vec![format!("127.0.0.1:{}", bind.port)].into());
    let s = dns_setup(&pebble, &["registry.regcert.test"], dns);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("TXT records visible on every nameserver"), "published and seen: {run:?}");
    assert!(
        run.stdout.contains("ACME unauthorized") && run.stdout.contains("with DNS-01"),
        "the CA's verdict, with advice for DNS-01: {run:?}"
    );
    let (adds, deletes) = adds_and_deletes(&bind, CHALLENGE);
    assert_eq!((adds.len(), deletes.len()), (1, 1), "{}", bind.log());
    assert!(bind.txt(CHALLENGE).is_empty());
    assert!(!s.fullchain("registry").exists());
}

/// An exec hook that runs nsupdate against `bind` and logs its calls; `extra` runs first.
struct Hook {
    script: PathBuf,
    log: PathBuf,
}

impl Hook {
    fn calls(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn nsupdate_hook(bind: &Bind, extra: &str) -> Hook {
    let script = bind.dir.path().join("dns-hook.sh");
    let log = bind.dir.path().join("calls.log");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\necho \"$1 $2 $REGCERT_DNS_FQDN\" >> {calls}\n{extra}\nif [ \"$1\" = present ]; then op=\"add $2 60\"; else op=\"delete $2\"; fi\n\
             {nsupdate} -k {key} <<EOF\nserver 127.0.0.1 {port}\nzone {ZONE}\nupdate $op TXT \"$3\"\nsend\nEOF\n",
            calls = log.display(),
            nsupdate = tool("nsupdate").display(),
            key = bind.key_file.display(),
            port = bind.port
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Hook { script, log }
}

fn exec_config(hook: &Hook, bind: &Bind, more: Table) -> Table {
    let mut exec = toml! {
        provider = "exec"
        command = [(hook.script.display().to_string())]
        nameservers = [(format!("127.0.0.1:{}", bind.port))]
    };
    exec.extend(more);
    exec
}

#[test]
fn exec_provider_through_nsupdate_with_a_background_child() {
    let (bind, pebble) = bind_and_pebble();
    // The hook leaves a child behind that keeps its stdout and stderr open for 10 minutes.
    let pids = bind.dir.path().join("background.pid");
    let hook = nsupdate_hook(&bind, &format!("sleep 600 & echo $! >> {}", pids.display()));
    let s = dns_setup(&pebble, &["registry.regcert.test"], exec_config(&hook, &bind, Table::new()));
    let started = Instant::now();
    let run = s.run(&["renew"]);
    let took = started.elapsed();
    for pid in fs::read_to_string(&pids).unwrap_or_default().lines() {
        let _ = Command::new(tool("kill")).arg(pid.trim()).status();
    }
    assert_eq!(run.code, 0, "{run:?}");
    assert!(took < Duration::from_secs(60), "the background child held the hook for {took:?}");
    let log = hook.calls();
    assert!(log.contains(&format!("present {CHALLENGE} {CHALLENGE}")), "{log}");
    assert!(log.contains(&format!("cleanup {CHALLENGE}")), "{log}");
    assert_eq!(adds_and_deletes(&bind, CHALLENGE).1.len(), 1, "{}", bind.log());
    assert!(bind.txt(CHALLENGE).is_empty());
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
}

#[test]
fn an_exec_hook_that_fails_or_hangs_is_a_clear_error() {
    let (bind, pebble) = bind_and_pebble();
    // Fails: its exit status and stderr are in the error.
    let failing = nsupdate_hook(&bind, "if [ \"$1\" = present ]; then echo 'the DNS API said no' >&2; exit 3; fi");
    let s = dns_setup(&pebble, &["registry.regcert.test"], exec_config(&failing, &bind, Table::new()));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let hook = failing.script.display().to_string();
    assert!(run.stdout.contains(&format!("dns hook `{hook} present {CHALLENGE}` failed")), "{run:?}");
    assert!(run.stdout.contains("exit status: 3") && run.stdout.contains("the DNS API said no"), "{run:?}");
    assert!(!s.fullchain("registry").exists());

    // Hangs, with a child of its own: both are killed at dns.hook_timeout.
    let pgid_file = bind.dir.path().join("hook.pgid");
    let hanging =
        nsupdate_hook(&bind, &format!("if [ \"$1\" = present ]; then echo $$ > {}; sleep 600 & sleep 600; fi", pgid_file.display()));
    let s = dns_setup(&pebble, &["registry.regcert.test"], exec_config(&hanging, &bind, toml! { hook_timeout = "1s" }));
    let started = Instant::now();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(run.stdout.contains("did not finish within 1s") && run.stdout.contains("dns.hook_timeout"), "{run:?}");
    let pgid = fs::read_to_string(&pgid_file).unwrap().trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(&pgid) {
        assert!(Instant::now() < deadline, "the hook's process group {pgid} outlived the timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether any process of group `pgid` is alive: `kill -0 -PGID` succeeds, and not only for
/// zombies waiting for their reaper (they are dead).
fn group_alive(pgid: &str) -> bool {
    let kill0 = Command::new(tool("kill")).args(["-0", "--", &format!("-{pgid}")]).stderr(std::process::Stdio::null()).status();
    if !kill0.unwrap().success() {
        return false;
    }
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
        fields.len() > 2 && fields[2] == pgid && fields[0] != "Z"
    })
}
