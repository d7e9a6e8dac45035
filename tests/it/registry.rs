//! The whole loop against real registries: Pebble issues, regcert installs, reloads the
//! registry container (Docker Engine API) or nginx, verifies over HTTPS, and rolls back when the
//! registry does not serve the new certificate. The real `docker` client proves the result.

use crate::common::registry::*;
use crate::common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use toml::{Table, toml};

/// A certificate for a fresh registry name, issued and installed (no reload yet).
pub(crate) fn issued(pebble: &Pebble) -> (Setup, String) {
    let name = unique_name("reg");
    let s = Setup::new(pebble, &[cert("registry", &[&name], "ecdsa-p256")]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    (s, name)
}

/// Sets the certificate's `[reload]` and, if given, `[verify]`.
pub(crate) fn reload_and_verify(s: &Setup, reload: Table, verify: Option<Table>) {
    s.edit_cert("registry", |c| {
        set(c, "reload", reload);
        if let Some(verify) = verify {
            set(c, "verify", verify);
        }
    });
}

/// [`reload_and_verify`] with a verification that gives up after 2 s (for registries that will not
/// serve the new certificate).
fn reload_and_verify_briefly(s: &Setup, reload: Table, mut verify: Table) {
    set(&mut verify, "timeout", "2s");
    reload_and_verify(s, reload, Some(verify));
}

/// Verification of https://NAME:5000/v2/ at the registry container.
pub(crate) fn verify_registry(pebble: &Pebble, name: &str, reg: &Registry) -> Table {
    verify_table(pebble, &format!("https://{name}:5000/v2/"), &reg.addr())
}

fn htpasswd(dir: &Path, user: &str, pass: &str) -> std::path::PathBuf {
    let out = Command::new(tool("htpasswd")).args(["-Bbn", user, pass]).output().unwrap();
    assert!(out.status.success());
    let path = dir.join("htpasswd");
    fs::write(&path, out.stdout).unwrap();
    path
}

#[test]
fn restart_verify_then_docker_login_push_pull() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let auth = htpasswd(s.root.path(), "ci", "s3cret");
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { htpasswd: Some(auth), ..Default::default() });
    let pass = s.root.path().join("registry.pass");
    fs::write(&pass, "s3cret\n").unwrap();
    let url = format!("https://{name}:5000/v2/");
    let credentials = toml! { username = "ci" password_file = (pass.display().to_string()) };
    let mut verify = verify_registry(&pebble, &name, &reg);
    verify.extend(credentials.clone());
    reload_and_verify(&s, toml! { docker = { container = (reg.container.as_str()), action = "restart" } }, Some(verify));

    let before = serial(&s.fullchain("registry"));
    let started = reg.started_at();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
    assert!(run.stdout.contains(&format!("reloaded; verified: {url} serves it")), "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), before);
    assert!(reg.running());
    assert_ne!(reg.started_at(), started, "the container was restarted");

    // What the registry serves is exactly what is installed, and /v2/ accepts the credentials.
    let v = s.run(&["verify", "--json"]);
    assert_eq!(v.code, 0, "{v:?}");
    let report: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let r = &report[0]["report"];
    assert_eq!(r["served"]["sha256"], r["expected_sha256"]);
    assert_eq!(r["served"]["chain_depth"], 2);
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["chain_valid"], true);

    // The real docker client, trusting Pebble's root through certs.d/HOST:PORT/ca.crt.
    let _trust = DockerClientTrust::new(&name, &reg.ip, 5000, &pebble.issuing_root());
    let repo = format!("{name}:5000/tiny:1");
    docker_retry(&["login", &format!("{name}:5000"), "-u", "ci", "-p", "s3cret"]).expect("docker login");
    docker(&["tag", TINY, &repo]);
    docker_retry(&["push", &repo]).expect("docker push");
    docker(&["rmi", &repo]);
    docker_retry(&["pull", &repo]).expect("docker pull");
    docker(&["rmi", &repo]);
    docker(&["logout", &format!("{name}:5000")]);

    // Without credentials, a 401 that speaks the registry API still counts as a registry.
    s.edit_cert("registry", |c| table(c, "verify").retain(|key, _| !credentials.contains_key(key)));
    let v = s.run(&["verify"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("GET /v2/:   401, Docker-Distribution-Api-Version: registry/2.0"), "{v:?}");
    // Wrong credentials are caught.
    fs::write(&pass, "wrong\n").unwrap();
    s.edit_cert("registry", |c| table(c, "verify").extend(credentials));
    let v = s.run(&["verify"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("answered 401 with the configured credentials"), "{v:?}");
}

#[test]
fn reload_that_does_not_reload_is_rolled_back() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    // A "reload" that does nothing: the registry keeps serving the old certificate.
    reload_and_verify_briefly(&s, toml! { command = ["true"] }, verify_registry(&pebble, &name, &reg));
    let old = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());
    let old_serial = serial(&s.fullchain("registry"));

    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("FAILED (--force) and ROLLED BACK"), "{run:?}");
    assert!(run.stdout.contains("still serves another certificate"), "{run:?}");
    assert!(run.stdout.contains("is installed and served again"), "{run:?}");
    assert!(run.stderr.contains("ERROR") && run.stderr.contains("rolled back"), "logged at error level: {run:?}");
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), old.0);
    assert_eq!(fs::read(s.key("registry")).unwrap(), old.1);
    assert_eq!(serial(&s.fullchain("registry")), old_serial);
    assert!(run.stdout.contains("1 failed"), "{run:?}");
}

#[test]
fn verify_reports_an_incomplete_chain() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    // The classic mistake: the bare leaf installed by hand.
    fs::copy(s.state().join("certs/registry/cert.pem"), s.fullchain("registry")).unwrap();
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    s.edit_cert("registry", |c| set(c, "verify", verify_registry(&pebble, &name, &reg)));
    let v = s.run(&["verify"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("incomplete chain: the server sends only the leaf"), "{v:?}");
    assert!(v.stdout.contains("1 certificate(s) served, does NOT validate"), "{v:?}");
    assert!(v.stdout.contains(&format!("(connected to {})", reg.addr())), "{v:?}");
    // renew sees it too: an installed fullchain without intermediate is due.
    let st = s.run(&["status"]);
    assert!(st.stdout.contains("no intermediate (incomplete chain)"), "{st:?}");
}

#[test]
fn wrong_container_or_missing_socket_changes_nothing() {
    let pebble = Pebble::start();
    let (s, _name) = issued(&pebble);
    let before = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());
    let issued_before = fs::read(s.state().join("certs/registry/cert.pem")).unwrap();
    reload_and_verify(&s, toml! { docker = { container = "no-such-registry" } }, None);
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("no Docker container named \"no-such-registry\""), "{run:?}");
    assert_eq!((fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap()), before);
    assert_eq!(fs::read(s.state().join("certs/registry/cert.pem")).unwrap(), issued_before, "checked before ordering");

    s.edit_cert("registry", |c| set(c, "reload.docker_socket", "unix:///tmp/regcert-no-docker.sock"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("Docker socket /tmp/regcert-no-docker.sock is not there"), "{run:?}");
    assert_eq!((fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap()), before);
}

#[test]
fn signal_to_the_distribution_registry_is_refused() {
    let pebble = Pebble::start();
    let (s, _name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let before = fs::read(s.fullchain("registry")).unwrap();
    reload_and_verify(&s, toml! { docker = { container = (reg.container.as_str()), action = "signal", signal = "SIGHUP" } }, None);
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("refusing to send SIGHUP") && run.stdout.contains("exits on SIGHUP"), "{run:?}");
    assert!(reg.running(), "the registry must still run");
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), before);
}

#[test]
fn single_file_bind_mounts_are_rewritten_in_place() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let label = format!("regcert.reload={name}");
    let reg =
        Registry::start(&s.install_dir("registry"), RegistryOpts { single_files: true, label: Some(label.clone()), ..Default::default() });
    // Two actions in one key, run in order: an exec that must exit 0, then a restart of every
    // container with the label.
    let actions = toml! {
        [[docker]]
        container = (reg.container.as_str())
        action = "exec"
        exec = ["/bin/registry", "--version"]

        [[docker]]
        label = (label.as_str())
    };
    reload_and_verify(&s, actions, Some(verify_registry(&pebble, &name, &reg)));
    let inodes = || [s.fullchain("registry"), s.key("registry")].map(|p| fs::metadata(p).unwrap().ino());
    let before = inodes();
    // A key left world-readable by hand: the rewrite in place tightens it to the configured
    // mode (0600 by default, then 0640) before the new key goes in.
    for key_mode in [None, Some("0640")] {
        if let Some(m) = key_mode {
            s.edit_cert("registry", |c| set(c, "install.key_mode", m));
        }
        fs::set_permissions(s.key("registry"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let started = reg.started_at();
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
        assert!(run.stdout.contains("verified"), "{run:?}");
        assert_ne!(reg.started_at(), started, "the labelled container was restarted");
        assert_eq!(inodes(), before, "same inodes: the container sees the new content");
        assert_eq!(mode(&s.key("registry")), if key_mode.is_some() { 0o640 } else { 0o600 });
        assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    }
}

/// nginx terminates TLS in front of a plain registry; `nginx -s reload` swaps the certificate
/// while a poller keeps requesting /v2/: no request may fail.
#[test]
fn nginx_reload_without_failed_requests() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { plain_http: true, ..Default::default() });
    let port = free_port();
    let dir = s.root.path().join("nginx");
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    let install = s.install_dir("registry");
    fs::write(
        &conf,
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {name};\n    ssl_certificate {i}/domain.crt;\n    ssl_certificate_key {i}/domain.key;\n    client_max_body_size 0;\n    location / {{\n      proxy_pass http://{addr};\n      proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_read_timeout 900;\n    }}\n  }}\n}}\n",
            d = dir.display(),
            i = install.display(),
            addr = reg.addr(),
        ),
    )
    .unwrap();
    let nginx = tool("nginx");
    let started = Command::new(&nginx).args(["-c", conf.to_str().unwrap()]).status().unwrap();
    assert!(started.success(), "nginx did not start: {}", fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    struct Stop(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(&self.0).args(["-c", self.1.to_str().unwrap(), "-s", "stop"]).status();
        }
    }
    let _stop = Stop(nginx.clone(), conf.clone());
    let url = format!("https://{name}:{port}/v2/");
    let reload = toml! { command = [(nginx.display().to_string()), "-c", (conf.display().to_string()), "-s", "reload"] };
    reload_and_verify(&s, reload, Some(verify_table(&pebble, &url, &format!("127.0.0.1:{port}"))));

    // Poll /v2/ through nginx the whole time, as a client would, recording the leaf served to
    // each request (curl's %{certs}) and when the request started.
    let old_serial = leaf_serial(&s.fullchain("registry"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, root, name, url, curl) = (stop.clone(), pebble.issuing_root(), name.clone(), url.clone(), tool("curl"));
        std::thread::spawn(move || {
            let (mut served, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && served.len() + failed.len() < 2000 {
                let at = std::time::Instant::now();
                let out = Command::new(&curl)
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}\n%{certs}", "--cacert", root.to_str().unwrap()])
                    .args(["--resolve", &format!("{name}:{port}:127.0.0.1"), &url])
                    .output()
                    .unwrap();
                let out = String::from_utf8_lossy(&out.stdout).to_string();
                let code = out.lines().next().unwrap_or_default().to_owned();
                // The first "Serial Number:" is the leaf's.
                let leaf = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Serial Number:"))
                    .map(|v| v.trim().replace(':', "").trim_start_matches('0').to_uppercase());
                match (code.as_str(), leaf) {
                    ("200", Some(leaf)) => served.push((at, leaf)),
                    _ => failed.push(out),
                }
            }
            (served, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = s.run(&["renew", "--force"]);
    let verified = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (served, failed) = poller.join().unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("reloaded; verified: {url} serves it")), "{run:?}");
    let ok = served.len();
    assert!(ok > 5, "the poller must have run ({ok} requests)");
    assert!(failed.is_empty(), "{} of {} requests failed during the reload: {failed:?}", failed.len(), ok + failed.len());
    let new_serial = leaf_serial(&s.fullchain("registry"));
    assert_ne!(new_serial, old_serial);
    let seen: std::collections::BTreeSet<&str> = served.iter().map(|(_, leaf)| leaf.as_str()).collect();
    assert_eq!(seen, [old_serial.as_str(), new_serial.as_str()].into(), "requests were served both the old and the new certificate");
    let stale: Vec<_> = served.iter().filter(|(at, leaf)| *at > verified && *leaf != new_serial).collect();
    assert!(stale.is_empty(), "after \"verified\", nginx still served another certificate: {stale:?}");
    assert!(served.iter().any(|(at, _)| *at > verified), "requests after the renewal");
}

/// The leaf's serial as uppercase hex without leading zeros (curl's form, uppercased).
fn leaf_serial(fullchain: &Path) -> String {
    serial(fullchain).trim().trim_start_matches("serial=").trim_start_matches('0').to_uppercase()
}

#[test]
fn failed_exec_and_unreachable_registry_without_previous_pair_are_reported() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    // An exec whose command fails inside the container: its exit code is checked.
    let exec =
        toml! { docker = { container = (reg.container.as_str()), action = "exec", exec = ["/bin/registry", "serve", "/nonexistent.yml"] } };
    reload_and_verify_briefly(&s, exec, verify_registry(&pebble, &name, &reg));
    let old = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("`/bin/registry serve /nonexistent.yml` exited with 1 inside the container"), "{run:?}");
    assert!(run.stdout.contains("ROLLED BACK"), "{run:?}");
    assert_eq!((fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap()), old, "the old pair, byte for byte");
    assert_ne!(fs::read(s.state().join("certs/registry/cert.pem")).unwrap(), old.0, "a new certificate was issued (and not installed)");

    // An exec that never ends (a second registry on another port, from a config in the mounted
    // install dir): bounded by its `timeout`, failed and rolled back.
    fs::write(s.install_dir("registry").join("hang.yml"), "version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: 127.0.0.1:5999\n")
        .unwrap();
    let hang = toml! { docker = { container = (reg.container.as_str()), action = "exec", exec = ["/bin/registry", "serve", "/certs/hang.yml"], timeout = "2s" } };
    reload_and_verify_briefly(&s, hang, verify_registry(&pebble, &name, &reg));
    let started = std::time::Instant::now();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("`/bin/registry serve /certs/hang.yml` (it may still be running inside the container) did not finish within 2s"),
        "{run:?}"
    );
    assert!(run.stdout.contains("ROLLED BACK"), "{run:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the exec was cut at its timeout: {:?}", started.elapsed());
    assert_eq!((fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap()), old, "the old pair, byte for byte");

    // A first issuance whose verification fails has nothing to roll back to: the new pair stays.
    let fresh = Setup::new(&pebble, &[cert("fresh", &[&unique_name("fresh")], "ecdsa-p256")]);
    let mut verify = verify_table(&pebble, "https://nothing.regcert.test/v2/", &format!("127.0.0.1:{}", free_port()));
    set(&mut verify, "timeout", "1s");
    fresh.edit_cert("fresh", |c| {
        set(c, "reload", toml! { command = ["true"] });
        set(c, "verify", verify);
    });
    let run = fresh.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("cannot connect to 127.0.0.1:"), "{run:?}");
    assert!(run.stdout.contains("there is no previous pair to restore, so the new one stays installed"), "{run:?}");
    assert_key_matches(&fresh.fullchain("fresh"), &fresh.key("fresh"));
    // `regcert verify` does not claim a connection it could not make.
    let v = fresh.run(&["verify"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("url:        https://nothing.regcert.test/v2/\n"), "{v:?}");
    assert!(!v.stdout.contains("connected to") && v.stdout.contains("problem:    cannot connect to 127.0.0.1:"), "{v:?}");
}

/// A verification that cannot succeed (nothing listens where it connects), after a reload that
/// does nothing.
fn failing_verification(s: &Setup, name: &str, pebble: &Pebble) {
    let mut verify = verify_table(pebble, &format!("https://{name}/v2/"), &format!("127.0.0.1:{}", free_port()));
    set(&mut verify, "timeout", "1s");
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = ["true"] });
        set(c, "verify", verify);
    });
}

#[test]
fn failed_verification_keeps_the_new_pair_with_rollback_off_or_an_expired_previous_pair() {
    let pebble = Pebble::start();
    // rollback = false: the operator chose to keep what was installed.
    let (s, name) = issued(&pebble);
    failing_verification(&s, &name, &pebble);
    s.edit_cert("registry", |c| set(c, "verify.rollback", false));
    let old_serial = serial(&s.fullchain("registry"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("rollback = false, so the new pair stays installed"), "{run:?}");
    assert!(!run.stdout.contains("ROLLED BACK"), "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), old_serial);
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), fs::read(s.state().join("certs/registry/fullchain.pem")).unwrap());
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());

    // An expired previous pair is not worth restoring, even with rollback on.
    let (s, name) = issued(&pebble);
    failing_verification(&s, &name, &pebble);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).unwrap();
    fs::write(s.fullchain("registry"), expired.pem()).unwrap();
    fs::write(s.key("registry"), key.serialize_pem()).unwrap();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("(the pair it replaced is not one: the certificate expired on 2021-01-01"), "{run:?}");
    assert!(run.stdout.contains("so the new one stays installed"), "{run:?}");
    assert_ne!(fs::read_to_string(s.fullchain("registry")).unwrap(), expired.pem());
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
}

#[test]
fn docker_socket_permission_denied_names_the_fix() {
    let pebble = Pebble::start();
    let (s, _name) = issued(&pebble);
    reload_and_verify(&s, toml! { docker = { container = "registry" } }, None);
    // Let `nobody` use the state and install dirs, but not the Docker socket (root:docker 0660).
    for dir in [s.root.path().to_path_buf(), s.state(), s.install_dir("registry"), s.root.path().join("install")] {
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    Command::new(tool("chown")).args(["-R", "nobody", s.state().to_str().unwrap()]).status().unwrap();
    let before = fs::read(s.fullchain("registry")).unwrap();
    let run = s.run_as_nobody(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("permission denied on the Docker socket") && run.stdout.contains("`docker` group"), "{run:?}");
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), before);
}
