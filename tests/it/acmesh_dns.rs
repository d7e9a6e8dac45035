//! DNS-01 through acme.sh's own DNS API plugins: the real acme.sh (3.1.4) and its real
//! `dns_nsupdate` plugin update the real BIND 9, and Pebble validates through that BIND. The
//! plugin's credentials are the `SAVED_NSUPDATE_*` keys that the real acme.sh wrote into its
//! account.conf on its own first run.

use crate::common::bind::{Bind, ZONE, tsig_key};
use crate::common::*;
use crate::import_acmesh::{AcmeSh, import, lines};
use std::fs;
use std::path::Path;
use toml::{Table, Value, toml};

const CHALLENGE: &str = "_acme-challenge.registry.regcert.test.";

/// BIND, Pebble validating through it, and an acme.sh home (acme.sh and its dnsapi/ installed
/// in it) whose account.conf acme.sh wrote while issuing `first` through dns_nsupdate.
fn acmesh_home_with_nsupdate(root: &Path, names: &[&str]) -> (Bind, Pebble, AcmeSh) {
    let bind = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..Default::default() });
    let acme = AcmeSh::new(root, &pebble, None);
    let port = bind.port.to_string();
    let nsupdate = [
        ("NSUPDATE_SERVER", "127.0.0.1"),
        ("NSUPDATE_SERVER_PORT", port.as_str()),
        ("NSUPDATE_KEY", bind.key_file.to_str().unwrap()),
        ("NSUPDATE_ZONE", "regcert.test"),
    ];
    // --dnssleep: acme.sh would otherwise ask public DNS-over-HTTPS resolvers, which this test bed cannot reach.
    let mut issue = vec!["--issue", "--dns", "dns_nsupdate", "--dnssleep", "1"];
    names.iter().for_each(|n| issue.extend(["-d", n]));
    acme.run_env(&nsupdate, &issue);
    acme.install_into_home();
    let conf = fs::read_to_string(acme.state_home().join("account.conf")).unwrap();
    assert!(conf.contains(&format!("SAVED_NSUPDATE_KEY='{}'", bind.key_file.display())), "acme.sh saved the credentials:\n{conf}");
    (bind, pebble, acme)
}

/// `dns = { provider = "acme.sh", … }` for the plugin in `acme`'s home, checked at `bind`.
fn plugin_dns(acme: &AcmeSh, bind: &Bind, more: Table) -> Table {
    let mut dns = toml! {
        provider = "acme.sh"
        api = "dns_nsupdate"
        home = (acme.home.display().to_string())
        nameservers = [(format!("127.0.0.1:{}", bind.port))]
    };
    dns.extend(more);
    dns
}

fn dns_cert(name: &str, domains: &[&str], dns: Table) -> CertSpec {
    cert(name, domains, "ecdsa-p256").with(toml! { challenge = "dns-01" dns = (Value::from(dns)) })
}

/// named's log lines that added a TXT record at `fqdn`.
fn txt_adds(bind: &Bind, fqdn: &str) -> Vec<String> {
    bind.updates_of(fqdn).into_iter().filter(|l| l.contains("adding an RR") && l.contains("TXT")).collect()
}

#[test]
fn a_name_and_a_wildcard_through_the_real_dns_nsupdate_plugin() {
    let root = tempfile::tempdir().unwrap();
    let (bind, pebble, acme) = acmesh_home_with_nsupdate(root.path(), &["first.regcert.test"]);
    let account_conf = acme.state_home().join("account.conf");
    let conf_before = fs::read(&account_conf).unwrap();

    let s = Setup::new(
        &pebble,
        &[dns_cert("registry", &["registry.regcert.test", "*.registry.regcert.test"], plugin_dns(&acme, &bind, Table::new()))],
    );
    let check = s.run(&["check-config"]);
    assert_eq!(check.code, 0, "bash, acme.sh and the plugin with both functions are there: {check:?}");

    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    let text = cert_text(&s.fullchain("registry"));
    assert!(text.contains("DNS:registry.regcert.test") && text.contains("DNS:*.registry.regcert.test"), "{text}");
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    // The plugin added both values (name and wildcard), signed with the key acme.sh saved, and
    // removed them again: nothing is left at the challenge name.
    let adds = txt_adds(&bind, CHALLENGE);
    assert_eq!(adds.len(), 2, "{}", bind.log());
    assert!(adds.iter().all(|l| l.contains("/key regcert-test:")), "{adds:?}");
    assert!(bind.txt(CHALLENGE).is_empty(), "records removed: {}", bind.log());
    for f in ["dns_nsupdate_add", "dns_nsupdate_rm"] {
        assert!(run.stderr.contains(f), "each plugin call is logged: {run:?}");
    }
    // The plugin's output is logged with the SAVED_* values replaced (acme.sh prints the server).
    assert!(run.stderr.contains("Updating DNS server: <redacted>"), "{run:?}");
    assert!(!run.stderr.contains(bind.key_file.to_str().unwrap()) && !run.stdout.contains(bind.key_file.to_str().unwrap()), "{run:?}");
    // regcert wrote nothing into acme.sh's home (the plugin saved into a private copy).
    assert_eq!(fs::read(&account_conf).unwrap(), conf_before);

    // A plugin that lacks the functions, and an api that has no plugin: check-config says so.
    fs::write(acme.home.join("dnsapi/dns_half.sh"), "dns_half_add() {\n  return 0\n}\n").unwrap();
    for (api, want) in [
        ("dns_half", format!("{} defines no function dns_half_rm", acme.home.join("dnsapi/dns_half.sh").display())),
        ("dns_nothere", format!("the acme.sh DNS API plugin {}", acme.home.join("dnsapi/dns_nothere.sh").display())),
    ] {
        s.edit_cert("registry", |c| set(c, "dns.api", api));
        let check = s.run(&["check-config"]);
        assert_eq!(check.code, 2, "{check:?}");
        assert!(check.stderr.contains(&want) || check.stdout.contains(&want), "missing {want:?}: {check:?}");
    }

    // A plugin that hangs is killed at dns.hook_timeout, with what it started.
    fs::write(acme.home.join("dnsapi/dns_hang.sh"), "dns_hang_add() {\n  sleep 600 & sleep 600\n}\ndns_hang_rm() {\n  return 0\n}\n")
        .unwrap();
    s.edit_cert("registry", |c| {
        set(c, "dns.api", "dns_hang");
        set(c, "dns.hook_timeout", "1s");
    });
    let started = std::time::Instant::now();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(run.stdout.contains("dns_hang_add") && run.stdout.contains("did not finish within 1s (killed"), "{run:?}");
    assert!(run.stdout.contains("dns.hook_timeout"), "{run:?}");

    // A plugin anyone can change would run with regcert's rights: refused, nothing updated.
    let plugin = acme.home.join("dnsapi/dns_nsupdate.sh");
    fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    s.edit_cert("registry", |c| set(c, "dns.api", "dns_nsupdate"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("refusing to run the acme.sh DNS API dns_nsupdate"), "{run:?}");
    assert!(run.stdout.contains(&format!("{} is writable by everyone", plugin.display())), "{run:?}");
    assert_eq!(txt_adds(&bind, CHALLENGE).len(), 2, "no update since: {}", bind.log());
    let check = s.run(&["check-config"]);
    assert_eq!(check.code, 2, "{check:?}");
}

#[test]
fn a_wrong_key_is_a_clear_error_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let (bind, pebble, acme) = acmesh_home_with_nsupdate(root.path(), &["first.regcert.test"]);
    let account_conf = acme.state_home().join("account.conf");
    let conf_before = fs::read(&account_conf).unwrap();
    // Same key name, another secret; given in an env_file, which wins over account.conf as the
    // environment wins in acme.sh.
    let wrong = root.path().join("wrong.key");
    fs::write(&wrong, tsig_key("regcert-test")).unwrap();
    let env_file = root.path().join("dns.env");
    fs::write(&env_file, format!("NSUPDATE_KEY='{}'\n", wrong.display())).unwrap();
    let secret = "an-env-secret-value";
    let more = toml! { env_file = (env_file.display().to_string()) env = { REGCERT_IT_SECRET = (secret) } };
    let s = Setup::new(&pebble, &[dns_cert("registry", &["registry.regcert.test"], plugin_dns(&acme, &bind, more))]);

    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("the acme.sh DNS API dns_nsupdate_add _acme-challenge.registry.regcert.test"), "{run:?}");
    assert!(run.stdout.contains("failed (exit status: 1)") && run.stdout.contains("error updating domain"), "the plugin's reason: {run:?}");
    assert!(run.stdout.contains("dns.env_file"), "where to look: {run:?}");
    assert!(!s.fullchain("registry").exists(), "nothing issued");
    assert!(txt_adds(&bind, CHALLENGE).is_empty() && bind.txt(CHALLENGE).is_empty(), "the server applied nothing: {}", bind.log());
    // The plugin saved the wrong key path — into regcert's private copy, not acme.sh's home.
    assert_eq!(fs::read(&account_conf).unwrap(), conf_before);
    for shown in [&run.stdout, &run.stderr] {
        assert!(!shown.contains(secret) && !shown.contains(wrong.to_str().unwrap()), "secrets are never shown: {run:?}");
    }
    let check = s.run(&["check-config"]);
    assert!(!check.stdout.contains(secret) && check.stdout.contains("REGCERT_IT_SECRET = \"<redacted>\""), "{check:?}");
}

#[test]
fn an_imported_home_keeps_its_plugin_and_renews_through_it() {
    let root = tempfile::tempdir().unwrap();
    let names = ["registry.regcert.test", "*.registry.regcert.test"];
    let (bind, pebble, acme) = acmesh_home_with_nsupdate(root.path(), &names);
    let install = root.path().join("install");
    fs::create_dir_all(&install).unwrap();
    let (key, chain) = (install.join("domain.key"), install.join("domain.crt"));
    let reloads = root.path().join("reloads.log");
    let reload = format!("echo reloaded >> {}", reloads.display());
    let mut install_cert = vec!["--install-cert", "--ecc", "-d", names[0], "--key-file", key.to_str().unwrap()];
    install_cert.extend(["--fullchain-file", chain.to_str().unwrap(), "--reloadcmd", &reload]);
    acme.run(&install_cert);
    let acmesh_serial = serial(&chain);

    let state = root.path().join("state");
    let config = root.path().join("imported.toml");
    let args = ["--state-dir", state.to_str().unwrap(), "--write-config", config.to_str().unwrap(), "--keep-dns-plugins"];
    let run = import(&acme.home, &args);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("could not carry over"), "{run:?}");
    let text = fs::read_to_string(&config).unwrap();
    // The plugin by name, acme.sh's home, and the update server and zone acme.sh saved (for
    // the propagation check); the credentials stay in acme.sh's account.conf.
    let want = format!(
        "dns = {{ provider = \"acme.sh\", api = \"dns_nsupdate\", home = \"{}\", server = \"127.0.0.1:{}\", zone = \"{ZONE}\" }}",
        acme.home.display(),
        bind.port
    );
    assert!(text.contains(&want), "missing {want:?} in\n{text}");
    assert!(!text.contains(bind.key_file.to_str().unwrap()), "no credential is copied: {text}");
    edit_toml(&config, |c| set(certificate(c, names[0]), "verify.enabled", false));

    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    assert!(run.stderr.contains("dns_nsupdate_add") && run.stderr.contains("TXT records visible on every nameserver"), "{run:?}");
    assert_ne!(serial(&chain), acmesh_serial);
    assert_chain_verifies(&chain, &pebble.issuing_root());
    assert_key_matches(&chain, &key);
    assert_eq!(lines(&reloads), ["reloaded", "reloaded"], "acme.sh's install, then regcert's");
    assert!(bind.txt(CHALLENGE).is_empty(), "records removed");
}
