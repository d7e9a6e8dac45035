//! `regcert import acme.sh` on homes that the real acme.sh (3.1.4) made against Pebble: its
//! account is reused (same URL), its installed certificates are adopted (the first `renew` is a
//! no-op) and renewed where acme.sh installed them, with its webroot, its `--ca-bundle` and its
//! reload command. Homes that others can change are refused; an account regcert already keeps
//! is never replaced silently.

use crate::common::bind::Bind;
use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The real acme.sh, run from a copy in the test's own directory (it is GPL-3.0 and for tests
/// only: never part of the project). `REGCERT_ACMESH` names the script; by default the machine's
/// shared copy next to the checkout.
pub(crate) struct AcmeSh {
    script: PathBuf,
    /// `--home`, and `--config-home` when it differs.
    pub(crate) home: PathBuf,
    config_home: Option<PathBuf>,
    server: String,
    ca_bundle: PathBuf,
}

impl AcmeSh {
    pub(crate) fn new(root: &Path, pebble: &Pebble, config_home: Option<PathBuf>) -> Self {
        let source = std::env::var_os("REGCERT_ACMESH")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/acmesh/acme.sh"));
        assert!(
            source.is_file(),
            "the real acme.sh is needed at {} (or set REGCERT_ACMESH): these tests import homes that acme.sh itself wrote",
            source.display()
        );
        let bin = root.join("acmesh-bin");
        fs::create_dir_all(&bin).unwrap();
        let script = bin.join("acme.sh");
        fs::copy(&source, &script).unwrap();
        // Its DNS API for BIND, where acme.sh looks for it (next to the script).
        let dnsapi = source.parent().unwrap().join("dnsapi/dns_nsupdate.sh");
        fs::create_dir_all(bin.join("dnsapi")).unwrap();
        fs::copy(&dnsapi, bin.join("dnsapi/dns_nsupdate.sh")).unwrap_or_else(|e| panic!("{}: {e}", dnsapi.display()));
        let home = root.join("acme.sh");
        AcmeSh { script, home, config_home, server: pebble.directory_url.clone(), ca_bundle: pebble.tls_root.clone() }
    }

    /// Where acme.sh keeps its state.
    pub(crate) fn state_home(&self) -> &Path {
        self.config_home.as_deref().unwrap_or(&self.home)
    }

    /// Run acme.sh against the test Pebble (trusting Pebble's HTTPS root with `--ca-bundle`);
    /// its output on failure.
    pub(crate) fn run(&self, args: &[&str]) {
        self.run_env(&[], args)
    }

    pub(crate) fn run_env(&self, env: &[(&str, &str)], args: &[&str]) {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(&self.script).arg("--home").arg(&self.home);
        if let Some(c) = &self.config_home {
            cmd.arg("--config-home").arg(c);
        }
        cmd.args(["--server", &self.server, "--ca-bundle"]).arg(&self.ca_bundle).args(args);
        // Its HOME is the test's: nothing is written to root's ~/.acme.sh.
        let out = cmd.env("HOME", self.home.parent().unwrap()).envs(env.iter().copied()).output().unwrap();
        assert!(
            out.status.success(),
            "acme.sh {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Put acme.sh and its dnsapi/ into the home, where `acme.sh --install` puts them (and where
    /// regcert's acme.sh provider runs the plugins from).
    pub(crate) fn install_into_home(&self) {
        fs::create_dir_all(self.home.join("dnsapi")).unwrap();
        fs::copy(&self.script, self.home.join("acme.sh")).unwrap();
        let plugin = self.script.parent().unwrap().join("dnsapi/dns_nsupdate.sh");
        fs::copy(plugin, self.home.join("dnsapi/dns_nsupdate.sh")).unwrap();
    }

    /// The ACME account URL acme.sh registered, from its ca.conf (acme.sh drops the port:
    /// ca/127.0.0.1/dir for https://127.0.0.1:PORT/dir).
    fn account_url(&self) -> String {
        let conf = fs::read_to_string(self.state_home().join("ca/127.0.0.1/dir/ca.conf")).unwrap();
        conf.lines().find_map(|l| l.strip_prefix("ACCOUNT_URL='")?.strip_suffix('\'')).expect("ACCOUNT_URL in ca.conf").to_owned()
    }
}

pub(crate) fn import(home: &Path, args: &[&str]) -> Run {
    regcert_bare(&[&["import", "acme.sh", "--home", home.to_str().unwrap()], args].concat())
}

/// The account URL regcert stored in `state`.
fn stored_account(state: &Path) -> String {
    let file = fs::read_dir(state.join("accounts")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(mode(&file), 0o600);
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    stored["credentials"]["id"].as_str().unwrap().to_owned()
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// `regcert import acme.sh` of `home` into `root`/state and `root`/imported.toml: it succeeds
/// and everything acme.sh wrote has a place in regcert. Returns the state dir, the config and the run.
fn import_everything(root: &Path, home: &Path) -> (PathBuf, PathBuf, Run) {
    let (state, config) = (root.join("state"), root.join("imported.toml"));
    let run = import(home, &["--state-dir", state.to_str().unwrap(), "--write-config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("could not carry over"), "everything acme.sh wrote here has a place in regcert: {run:?}");
    (state, config, run)
}

#[test]
fn a_home_made_by_acmesh_is_adopted_and_renewed_where_acmesh_installed() {
    let pebble = Pebble::start();
    let root = tempfile::tempdir().unwrap();
    let webroot = root.path().join("www");
    fs::create_dir_all(&webroot).unwrap();
    let _web = StaticServer::start(&webroot, pebble.http_port);
    let acme = AcmeSh::new(root.path(), &pebble, None);
    let reloads = root.path().join("reloads.log");
    let install = |name: &str| root.path().join("install").join(name);

    // acme.sh issues an ECC and an RSA certificate over webroot HTTP-01 and installs them
    // with a reload command, as its users do; the RSA one renews 30 days after issuance.
    for (name, domains, keylength, more) in [
        ("ecc", &["ecc.example.com"][..], "ec-256", &[][..]),
        ("rsa", &["rsa.example.com", "www.rsa.example.com"], "2048", &["--days", "30"]),
    ] {
        fs::create_dir_all(install(name)).unwrap();
        let mut issue = vec!["--issue", "-w", webroot.to_str().unwrap(), "--keylength", keylength];
        domains.iter().for_each(|d| issue.extend(["-d", d]));
        issue.extend(more);
        acme.run(&issue);
        let (key, chain) = (install(name).join("domain.key"), install(name).join("domain.crt"));
        let reload = format!("echo {} >> {}", domains[0], reloads.display());
        let mut install_cert = vec!["--install-cert", "-d", domains[0], "--key-file", key.to_str().unwrap()];
        install_cert.extend(["--fullchain-file", chain.to_str().unwrap(), "--reloadcmd", &reload]);
        if keylength.starts_with("ec-") {
            install_cert.push("--ecc");
        }
        acme.run(&install_cert);
    }
    assert_eq!(lines(&reloads), ["ecc.example.com", "rsa.example.com"], "acme.sh ran its reload commands");
    let account_url = acme.account_url();
    let acmesh_serials = [serial(&install("ecc").join("domain.crt")), serial(&install("rsa").join("domain.crt"))];

    // --dry-run changes nothing.
    let dry_state = root.path().join("dry-state");
    let run = import(&acme.home, &["--state-dir", dry_state.to_str().unwrap(), "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("dry run") && run.stdout.contains(&format!("would adopt the ACME account {account_url}")), "{run:?}");
    assert!(!dry_state.exists());

    let (state, config, run) = import_everything(root.path(), &acme.home);
    assert!(run.stdout.contains(&format!("adopted the ACME account {account_url}")), "{run:?}");
    assert_eq!(stored_account(&state), account_url);
    let text = fs::read_to_string(&config).unwrap();
    for want in [
        format!("directory = \"{}\"", pebble.directory_url),
        // acme.sh's --ca-bundle: without it the renewal could not reach the private CA.
        format!("ca_bundle = \"{}\"", pebble.tls_root.display()),
        format!("webroot = \"{}\"", webroot.display()),
        "key = \"ecdsa-p256\"".into(),
        "key = \"rsa-2048\"".into(),
        "domains = [\"rsa.example.com\", \"www.rsa.example.com\"]".into(),
        format!("command = [\"/bin/sh\", \"-c\", \"echo ecc.example.com >> {}\"]", reloads.display()),
        format!("dir = \"{}\"", install("rsa").display()),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // `--days 30`: renewed 29 days after issuance (acme.sh subtracts a day), i.e. that long
    // before the end of the certificate's lifetime.
    let (not_before, not_after) = validity(&install("rsa").join("domain.crt"));
    edit_toml(&config, |c| {
        let before = certificate(c, "rsa.example.com")["renew_before"].as_str().unwrap().to_owned();
        let before = humantime::parse_duration(&before).unwrap().as_secs();
        let want = not_after - not_before - 29 * 86_400;
        assert!(before.abs_diff(want) < 3600, "renew_before {before} s, acme.sh's --days 30 means {want} s");
        assert!(certificate(c, "ecc.example.com").get("renew_before").is_none(), "no --days: regcert's default");
    });
    // This test bed has no registry behind these names: verification (on by default with a
    // reload) is the one thing turned off.
    edit_toml(&config, |c| {
        for name in ["ecc.example.com", "rsa.example.com"] {
            set(certificate(c, name), "verify.enabled", false);
        }
    });

    // The installed certificates are adopted: nothing is due, nothing is reloaded.
    let run = regcert(&config, &["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("0 renewed, 2 not due, 0 failed"), "{run:?}");
    assert_eq!(lines(&reloads).len(), 2);

    // Renewed by regcert with acme.sh's account, validated through acme.sh's webroot, installed
    // where acme.sh installed them, and acme.sh's reload command ran.
    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("2 renewed, 0 not due, 0 failed"), "{run:?}");
    assert!(!run.stderr.contains("ACME account created"), "no new account: {run:?}");
    assert_eq!(stored_account(&state), account_url);
    for (name, serial_before, key_kind) in [("ecc", &acmesh_serials[0], "id-ecPublicKey"), ("rsa", &acmesh_serials[1], "rsaEncryption")] {
        let chain = install(name).join("domain.crt");
        assert_ne!(&serial(&chain), serial_before, "{name} was renewed in place");
        assert_chain_verifies(&chain, &pebble.issuing_root());
        assert_key_matches(&chain, &install(name).join("domain.key"));
        assert!(cert_text(&chain).contains(key_kind), "{name}: the key type acme.sh used");
    }
    let mut reloaded = lines(&reloads);
    reloaded.sort();
    assert_eq!(reloaded, ["ecc.example.com", "ecc.example.com", "rsa.example.com", "rsa.example.com"]);
    assert_eq!(fs::read_dir(webroot.join(".well-known/acme-challenge")).unwrap().count(), 0, "tokens removed");

    // An install dir that anyone can write: its reload and install would be someone else's.
    let mut perms = fs::metadata(install("rsa")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    fs::set_permissions(install("rsa"), perms).unwrap();
    let other_state = root.path().join("other-state");
    let other_config = root.path().join("other.toml");
    let run = import(&acme.home, &["--state-dir", other_state.to_str().unwrap(), "--write-config", other_config.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&format!("{} is writable by everyone", install("rsa").display())), "{run:?}");
    assert!(run.stderr.contains("--trust-home-owner"), "{run:?}");
    assert!(!other_state.exists() && !other_config.exists(), "nothing written");
}

#[test]
fn dns_nsupdate_becomes_rfc2136_and_renews_through_the_same_bind() {
    let bind = Bind::start();
    let pebble = Pebble::start_with(PebbleOpts { dns_port: Some(bind.port), ..Default::default() });
    let root = tempfile::tempdir().unwrap();
    let acme = AcmeSh::new(root.path(), &pebble, None);
    let install = root.path().join("install");
    fs::create_dir_all(&install).unwrap();
    let reloads = root.path().join("reloads.log");
    let port = bind.port.to_string();
    let nsupdate = [
        ("NSUPDATE_SERVER", "127.0.0.1"),
        ("NSUPDATE_SERVER_PORT", &port),
        ("NSUPDATE_KEY", bind.key_file.to_str().unwrap()),
        ("NSUPDATE_ZONE", "regcert.test"),
    ];
    // --dnssleep: acme.sh would otherwise ask public DNS-over-HTTPS resolvers, which this test bed cannot reach.
    let names = ["-d", "registry.regcert.test", "-d", "*.registry.regcert.test"];
    acme.run_env(&nsupdate, &[&["--issue", "--dns", "dns_nsupdate", "--dnssleep", "1"][..], &names].concat());
    let reload = format!("echo reloaded >> {}", reloads.display());
    let (key, chain) = (install.join("domain.key"), install.join("domain.crt"));
    acme.run(
        &["--install-cert", "--ecc", "-d", "registry.regcert.test", "--key-file", key.to_str().unwrap()]
            .into_iter()
            .chain(["--fullchain-file", chain.to_str().unwrap(), "--reloadcmd", &reload])
            .collect::<Vec<_>>(),
    );
    let acmesh_serial = serial(&chain);

    let (_, config, _) = import_everything(root.path(), &acme.home);
    let text = fs::read_to_string(&config).unwrap();
    let want = format!(
        "dns = {{ provider = \"rfc2136\", server = \"127.0.0.1:{port}\", zone = \"regcert.test.\", tsig_key = \"{}\" }}",
        bind.key_file.display()
    );
    assert!(text.contains(&want) && text.contains("challenge = \"dns-01\""), "missing {want:?} in\n{text}");
    assert!(text.contains("domains = [\"registry.regcert.test\", \"*.registry.regcert.test\"]"), "{text}");
    edit_toml(&config, |c| set(certificate(c, "registry.regcert.test"), "verify.enabled", false));

    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", bind.log());
    assert_ne!(serial(&chain), acmesh_serial);
    assert_chain_verifies(&chain, &pebble.issuing_root());
    assert_key_matches(&chain, &key);
    assert_eq!(lines(&reloads), ["reloaded", "reloaded"], "acme.sh's install, then regcert's");
    assert!(bind.txt("_acme-challenge.registry.regcert.test.").is_empty(), "records removed");
}

/// What `acme.sh --install-cronjob` schedules, as a file in /etc/cron.d (removed when dropped).
struct CronJob(PathBuf);

impl CronJob {
    fn install(acme: &AcmeSh) -> Self {
        fs::create_dir_all("/etc/cron.d").unwrap();
        let path = PathBuf::from(format!("/etc/cron.d/regcert-it-acmesh-{}", std::process::id()));
        let line = format!(
            "17 3 * * * root \"{}\" --cron --home \"{}\" --config-home \"{}\" > /dev/null\n",
            acme.script.display(),
            acme.home.display(),
            acme.state_home().display()
        );
        fs::write(&path, line).unwrap();
        CronJob(path)
    }
}

impl Drop for CronJob {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn config_home_default_ca_cron_job_and_an_account_already_kept() {
    let pebble = Pebble::start();
    let root = tempfile::tempdir().unwrap();
    // No certificate: the CA comes from `--set-default-ca` (DEFAULT_ACME_SERVER).
    let acme = AcmeSh::new(root.path(), &pebble, Some(root.path().join("acme-config")));
    acme.run(&["--register-account", "-m", "ops@example.com"]);
    // (after the registration: acme.sh creates no missing config home for it)
    acme.run(&["--set-default-ca"]);
    let account_url = acme.account_url();
    let cron = CronJob::install(&acme);

    let state = root.path().join("state");
    let config = root.path().join("imported.toml");
    let config_home = acme.state_home().to_str().unwrap();
    let args = ["--config-home", config_home, "--state-dir", state.to_str().unwrap()];
    let run = import(&acme.home, &[&args[..], &["--write-config", config.to_str().unwrap()]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("adopted the ACME account {account_url}")), "{run:?}");
    assert_eq!(stored_account(&state), account_url);
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("directory = \"{}\"", pebble.directory_url)), "{text}");
    assert!(text.contains("contact = [\"mailto:ops@example.com\"]"), "{text}");
    assert!(
        run.stdout.contains(&format!("acme.sh still renews from cron: {}", cron.0.display()))
            && run.stdout.contains("acme.sh --uninstall-cronjob"),
        "{run:?}"
    );
    drop(cron);
    let run = import(&acme.home, &[&args[..], &["--dry-run"]].concat());
    assert!(run.stdout.contains("no acme.sh cron job found"), "{run:?}");

    // The same account again: nothing to replace.
    assert!(run.stdout.contains(&format!("already holds the ACME account {account_url}")), "{run:?}");

    // Another acme.sh account for the same CA is not put over the one regcert keeps …
    let other = AcmeSh::new(&root.path().join("other"), &pebble, Some(root.path().join("other/acme-config")));
    other.run(&["--register-account", "-m", "other@example.com"]);
    other.run(&["--set-default-ca"]);
    let other_url = other.account_url();
    assert_ne!(other_url, account_url);
    let other_args = ["--config-home", other.state_home().to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let run = import(&other.home, &other_args);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&format!("already holds another ACME account for {}", pebble.directory_url)), "{run:?}");
    assert!(run.stderr.contains("--replace-account"), "{run:?}");
    assert_eq!(stored_account(&state), account_url);
    // … unless asked to.
    let run = import(&other.home, &[&other_args[..], &["--replace-account"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stored_account(&state), other_url);
}

#[test]
fn a_home_others_can_change_is_refused_unless_trusted() {
    let pebble = Pebble::start();
    let root = tempfile::tempdir().unwrap();
    let acme = AcmeSh::new(root.path(), &pebble, None);
    acme.run(&["--register-account", "-m", "ops@example.com"]);
    // (after the registration: acme.sh creates no missing config home for it)
    acme.run(&["--set-default-ca"]);
    let home = acme.home.to_str().unwrap();
    let state = root.path().join("state");

    // Another user's home: its files would become commands that regcert runs.
    let out = Command::new(tool("chown")).args(["-R", "nobody", home]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let run = import(&acme.home, &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!("refusing to import {home}")) && run.stderr.contains(&format!("{home} belongs to uid")),
        "{run:?}"
    );
    assert!(run.stderr.contains("--trust-home-owner"), "{run:?}");
    assert!(!state.exists(), "nothing written");
    let run = import(&acme.home, &["--state-dir", state.to_str().unwrap(), "--trust-home-owner"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("trusted on --trust-home-owner") && run.stdout.contains("adopted the ACME account"), "{run:?}");

    // A loop of links where the account key should be: reported, never followed.
    let key = acme.home.join("ca/127.0.0.1/dir/account.key");
    fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink(&key, &key).unwrap();
    let out = Command::new(tool("chown")).args(["-R", "root", home]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let run = import(&acme.home, &["--state-dir", root.path().join("state2").to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&format!("{} leads into a loop of symbolic links", key.display())), "{run:?}");
}

/// acme.sh issues `domains` over webroot HTTP-01 (ECDSA P-256, plus `more` arguments) and
/// installs the pair in `dir` as domain.key / domain.crt; the installed chain's path.
fn issue_and_install(acme: &AcmeSh, webroot: &Path, domains: &[&str], more: &[&str], dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut issue = vec!["--issue", "-w", webroot.to_str().unwrap(), "--keylength", "ec-256"];
    domains.iter().for_each(|d| issue.extend(["-d", d]));
    acme.run(&[&issue[..], more].concat());
    let (key, chain) = (dir.join("domain.key"), dir.join("domain.crt"));
    acme.run(&[
        "--install-cert",
        "--ecc",
        "-d",
        domains[0],
        "--key-file",
        key.to_str().unwrap(),
        "--fullchain-file",
        chain.to_str().unwrap(),
    ]);
    chain
}

/// The ACME accounts regcert keeps in `state`: directory URL → account URL.
fn stored_accounts(state: &Path) -> std::collections::BTreeMap<String, String> {
    fs::read_dir(state.join("accounts"))
        .unwrap()
        .map(|f| {
            let stored: serde_json::Value = serde_json::from_slice(&fs::read(f.unwrap().path()).unwrap()).unwrap();
            (stored["directory"].as_str().unwrap().to_owned(), stored["credentials"]["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn an_ip_certificate_from_acmesh_is_imported_to_ips_and_renewed() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let root = tempfile::tempdir().unwrap();
    let webroot = root.path().join("www");
    fs::create_dir_all(&webroot).unwrap();
    // Pebble validates HTTP-01 for 127.0.0.1 at http://127.0.0.1:<httpPort>/.
    let _web = StaticServer::start(&webroot, pebble.http_port);
    let acme = AcmeSh::new(root.path(), &pebble, None);
    let install = root.path().join("install");
    let chain = issue_and_install(&acme, &webroot, &["127.0.0.1"], &["--cert-profile", "shortlived"], &install);
    assert!(cert_text(&chain).contains("IP Address:127.0.0.1"), "acme.sh got an IP certificate");
    let account_url = acme.account_url();
    let acmesh_serial = serial(&chain);

    let (state, config, _) = import_everything(root.path(), &acme.home);
    edit_toml(&config, |c| {
        let cert = certificate(c, "127.0.0.1");
        assert_eq!(cert["ips"], toml::Value::from(vec!["127.0.0.1"]), "{cert}");
        assert!(cert.get("domains").is_none(), "an IP address is not a domain: {cert}");
        assert_eq!(cert["profile"].as_str(), Some("shortlived"));
        // No registry behind 127.0.0.1 here: verification is the one thing turned off.
        set(cert, "verify.enabled", false);
    });
    let run = regcert(&config, &["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");

    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 0 failed"), "{run:?}");
    assert!(!run.stderr.contains("ACME account created"), "no new account: {run:?}");
    assert_eq!(stored_account(&state), account_url);
    assert_ne!(serial(&chain), acmesh_serial, "renewed in place");
    assert!(cert_text(&chain).contains("IP Address:127.0.0.1"), "{}", cert_text(&chain));
    assert_chain_verifies(&chain, &pebble.issuing_root());
    assert_key_matches(&chain, &install.join("domain.key"));
}

#[test]
fn certificates_of_two_cas_import_into_acme_and_acme_ca_and_renew_with_their_own_accounts() {
    let first = Pebble::start_with(PebbleOpts::v2_10());
    // The second CA validates at the first one's HTTP-01 port: one webroot server answers both.
    let second = Pebble::start_with(PebbleOpts { http_port: Some(first.http_port), ..PebbleOpts::v2_10() });
    let root = tempfile::tempdir().unwrap();
    let webroot = root.path().join("www");
    fs::create_dir_all(&webroot).unwrap();
    let _web = StaticServer::start(&webroot, first.http_port);
    // acme.sh keeps one account per CA host (it drops the port): the second CA is reached as
    // `localhost` (in Pebble's TLS certificate) so that the two do not share ca/127.0.0.1/dir.
    // acme.sh has one --ca-bundle for all CAs: both Pebbles' HTTPS roots.
    let bundle = root.path().join("ca-bundle.pem");
    fs::write(&bundle, [fs::read(&first.tls_root).unwrap(), fs::read(&second.tls_root).unwrap()].concat()).unwrap();
    let mut acme_a = AcmeSh::new(root.path(), &first, None);
    acme_a.ca_bundle = bundle.clone();
    let mut acme_b = AcmeSh::new(root.path(), &second, None);
    acme_b.ca_bundle = bundle.clone();
    acme_b.server = second.directory_url.replace("127.0.0.1", "localhost");
    let install = |name: &str| root.path().join("install").join(name);
    // Two certificates from the first CA (so it becomes [acme]), one from the second.
    let chains = [
        (issue_and_install(&acme_a, &webroot, &["a1.example.com"], &[], &install("a1")), &first),
        (issue_and_install(&acme_a, &webroot, &["a2.example.com"], &[], &install("a2")), &first),
        (issue_and_install(&acme_b, &webroot, &["b.example.com"], &[], &install("b")), &second),
    ];
    let conf_url = |host: &str| {
        let conf = fs::read_to_string(acme_a.home.join(format!("ca/{host}/dir/ca.conf"))).unwrap();
        conf.lines().find_map(|l| l.strip_prefix("ACCOUNT_URL='")?.strip_suffix('\'')).unwrap().to_owned()
    };
    let (url_a, url_b) = (conf_url("127.0.0.1"), conf_url("localhost"));
    let serials: Vec<String> = chains.iter().map(|(c, _)| serial(c)).collect();

    let (state, config, run) = import_everything(root.path(), &acme_a.home);
    assert!(run.stdout.contains(&format!("adopted the ACME account {url_a}")), "{run:?}");
    assert!(run.stdout.contains(&format!("adopted the ACME account {url_b}")), "{run:?}");
    edit_toml(&config, |c| {
        assert_eq!(c["acme"]["directory"].as_str(), Some(first.directory_url.as_str()), "{c}");
        let other = &c["acme_ca"]["localhost"];
        assert_eq!(other["directory"].as_str(), Some(acme_b.server.as_str()), "{c}");
        assert_eq!(other["ca_bundle"].as_str(), Some(bundle.to_str().unwrap()), "{c}");
        assert_eq!(certificate(c, "b.example.com")["issuer"].as_str(), Some("acme:localhost"));
        assert!(certificate(c, "a1.example.com").get("issuer").is_none(), "[acme] is the default issuer");
        for name in ["a1.example.com", "a2.example.com", "b.example.com"] {
            set(certificate(c, name), "verify.enabled", false);
        }
    });
    let want = std::collections::BTreeMap::from([(first.directory_url.clone(), url_a.clone()), (acme_b.server.clone(), url_b.clone())]);
    assert_eq!(stored_accounts(&state), want);

    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("3 renewed, 0 not due, 0 failed"), "{run:?}");
    assert!(!run.stderr.contains("ACME account created"), "no new account: {run:?}");
    assert_eq!(stored_accounts(&state), want, "each CA renewed with acme.sh's account for it");
    for ((chain, ca), before) in chains.iter().zip(&serials) {
        assert_ne!(&serial(chain), before, "{} renewed in place", chain.display());
        assert_chain_verifies(chain, &ca.issuing_root());
    }
}

#[test]
fn a_dns_persist_certificate_from_acmesh_renews_with_dns_persist_01_and_the_same_record() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let root = tempfile::tempdir().unwrap();
    let acme = AcmeSh::new(root.path(), &pebble, None);
    acme.run(&["--register-account", "-m", "ops@example.com"]);
    let account_url = acme.account_url();
    // The one standing record acme.sh's --dns-persist needs (`acme.sh --make-dns-persist-value`
    // prints it), published in the DNS Pebble asks (pebble-challtestsrv).
    let name = "persist.example.com";
    let record = serde_json::json!({
        "host": format!("_validation-persist.{name}."),
        "value": format!("pebble.letsencrypt.org; accounturi={account_url}"),
    });
    let out = Command::new(tool("curl"))
        .args(["-sSf", "-d", &record.to_string(), &format!("{}/set-txt", pebble.challtest_mgmt)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let install = root.path().join("install");
    fs::create_dir_all(&install).unwrap();
    acme.run(&["--issue", "--dns-persist", "-d", name, "--keylength", "ec-256"]);
    let (key, chain) = (install.join("domain.key"), install.join("domain.crt"));
    acme.run(&["--install-cert", "--ecc", "-d", name, "--key-file", key.to_str().unwrap(), "--fullchain-file", chain.to_str().unwrap()]);
    let acmesh_serial = serial(&chain);

    let (state, config, _) = import_everything(root.path(), &acme.home);
    edit_toml(&config, |c| {
        let cert = certificate(c, name);
        assert_eq!(cert["challenge"].as_str(), Some("dns-persist-01"), "{cert}");
        assert!(cert.get("dns").is_none(), "acme.sh never wrote the record; regcert does not either: {cert}");
        set(cert, "verify.enabled", false);
    });

    let run = regcert(&config, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    assert!(run.stdout.contains("1 renewed, 0 not due, 0 failed"), "{run:?}");
    assert!(!run.stderr.contains("ACME account created"), "the record names acme.sh's account, which regcert adopted: {run:?}");
    assert_eq!(stored_account(&state), account_url);
    assert_ne!(serial(&chain), acmesh_serial);
    assert_chain_verifies(&chain, &pebble.issuing_root());
    assert_key_matches(&chain, &key);
}
