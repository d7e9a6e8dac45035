//! Reloads that cannot work with regcert's privileges (and a certs.d it cannot write) are found
//! before anything is ordered (#10 item 14), and the `systemd` reload action (#17): a failure of
//! that certificate with a message that says what is missing, the installed pair untouched.
//!
//! No systemd runs as PID 1 on these machines, so no real `systemctl reload` can succeed here.
//! The real `systemctl` shows how regcert fails without systemd; [`FakeSystemctl`], a stand-in
//! clearly named as such, shows that the right unit and verb are asked for, in the right way.

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use toml::{Table, Value, toml};

/// One certificate from a private CA (nothing to order from a network CA), issued once.
fn issued(reload: Table) -> Setup {
    let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Reload Test CA" })) };
    let s = Setup::with_config(config, &[CertSpec::new("registry", toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] })]);
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    // Only the reload is under test here (verification, on by default with a reload, is not).
    s.edit_cert("registry", |c| {
        set(c, "reload", reload);
        set(c, "verify.enabled", false);
    });
    s
}

/// `regcert renew --force` with `path` first in PATH, as `user` (root when None).
fn renew_with_path(s: &Setup, path: &Path, user: Option<&str>) -> Run {
    let search = format!("{}:{}", path.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new(tool("setpriv"));
            c.args([&format!("--reuid={user}"), "--regid=nogroup", "--clear-groups"]).arg(regcert_bin());
            c
        }
        None => Command::new(regcert_bin()),
    };
    let out = cmd.arg("--config").arg(&s.config).args(["renew", "--force"]).env("PATH", search).env_remove("RUST_LOG").output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// The certificate failed before anything was issued: the installed pair and the stored
/// certificate are the ones from before.
fn assert_nothing_issued(s: &Setup, before: &str, run: &Run) {
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(fs::read_to_string(s.fullchain("registry")).unwrap(), before, "the installed certificate changed: {run:?}");
    let stored = fs::read_to_string(s.state().join("certs/registry/fullchain.pem")).unwrap();
    assert_eq!(stored, before, "a certificate was issued although the reload could not work: {run:?}");
}

/// A stand-in for `systemctl` (no systemd PID 1 here): records its arguments and answers
/// `show` with the given properties, as systemd would.
struct FakeSystemctl {
    dir: PathBuf,
    log: PathBuf,
}

impl FakeSystemctl {
    fn new(root: &Path, load_state: &str, can_reload: &str) -> Self {
        let dir = root.join("fake-systemctl");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("calls.log");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nif [ \"$1\" = show ]; then printf 'LoadState={load_state}\\nCanReload={can_reload}\\nLoadError=\\n'; fi\n",
            log = log.display()
        );
        let path = dir.join("systemctl");
        fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        FakeSystemctl { dir, log }
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

#[test]
fn systemd_reload_without_systemd_fails_before_anything_is_issued() {
    let s = issued(toml! { systemd = { unit = "nginx.service" } });
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    // The real systemctl of this machine, which has no systemd as PID 1.
    let run = s.run(&["renew", "--force"]);
    assert_nothing_issued(&s, &before, &run);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("reload `systemctl reload nginx.service` cannot work here: systemctl cannot reach systemd")
            && out.contains("has not been booted with systemd")
            && out.contains("reload with a `command` or `docker` action"),
        "{run:?}"
    );
}

#[test]
fn systemd_reload_asks_for_the_unit_and_verb_and_checks_them_first() {
    let s = issued(toml! { systemd = { unit = "nginx.service" } });
    let fake = FakeSystemctl::new(s.root.path(), "loaded", "yes");
    let run = renew_with_path(&s, &fake.dir, None);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fake.calls(),
        ["show --property=LoadState,CanReload,LoadError -- nginx.service", "--no-ask-password reload -- nginx.service"]
    );

    s.edit_cert("registry", |c| set(c, "reload", toml! { systemd = { unit = "registry.service", action = "try-reload-or-restart" } }));
    fs::remove_file(&fake.log).unwrap();
    let run = renew_with_path(&s, &fake.dir, None);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(fake.calls()[1], "--no-ask-password try-reload-or-restart -- registry.service");

    // A unit that cannot reload, or that does not exist: refused before issuing, only asked.
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    s.edit_cert("registry", |c| set(c, "reload", toml! { systemd = { unit = "registry.service" } }));
    let cannot = FakeSystemctl::new(&s.root.path().join("cannot"), "loaded", "no");
    let run = renew_with_path(&s, &cannot.dir, None);
    assert_nothing_issued(&s, &before, &run);
    assert!(run.stdout.contains("registry.service cannot reload (no ExecReload=): use action = \"try-reload-or-restart\""), "{run:?}");
    assert_eq!(cannot.calls().len(), 1, "only `show`: {:?}", cannot.calls());
    let missing = FakeSystemctl::new(&s.root.path().join("missing"), "not-found", "no");
    let run = renew_with_path(&s, &missing.dir, None);
    assert_nothing_issued(&s, &before, &run);
    assert!(run.stdout.contains("systemd has no unit \"registry.service\" (not-found)"), "{run:?}");
}

#[test]
fn systemd_reload_as_a_user_polkit_does_not_allow_is_refused_before_issuing() {
    let s = issued(toml! { systemd = { unit = "nginx.service" } });
    let fake = FakeSystemctl::new(s.root.path(), "loaded", "yes");
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    assert!(Command::new(tool("chown")).args(["-R", "nobody:nogroup"]).arg(s.root.path()).status().unwrap().success());
    // The real pkcheck; no polkit rule lets `nobody` reload anything (here, no polkitd answers at all).
    let run = renew_with_path(&s, &fake.dir, Some("nobody"));
    assert_nothing_issued(&s, &before, &run);
    assert!(
        run.stdout.contains("polkit does not let uid 65534 reload nginx.service") && run.stdout.contains("regcert-reload.rules"),
        "{run:?}"
    );
    assert_eq!(fake.calls().len(), 1, "systemctl was only asked `show`: {:?}", fake.calls());
}

/// A real nginx, master as root, on a loopback port.
struct Nginx {
    bin: PathBuf,
    conf: PathBuf,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        let port = free_port();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{ listen 127.0.0.1:{port}; }}\n}}\n"
            ),
        )
        .unwrap();
        let bin = tool("nginx");
        let ok = Command::new(&bin).arg("-c").arg(&conf).status().unwrap().success();
        assert!(ok, "nginx did not start: {}", fs::read_to_string(dir.join("error.log")).unwrap_or_default());
        Nginx { bin, conf, dir: dir.to_owned() }
    }

    fn reload_command(&self) -> Table {
        toml! { command = [(self.bin.display().to_string()), "-c", (self.conf.display().to_string()), "-s", "reload"] }
    }

    fn stop(&self) {
        let _ = Command::new(&self.bin).arg("-c").arg(&self.conf).args(["-s", "stop"]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.dir.join("nginx.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.dir.join("nginx.pid").exists() {
            self.stop();
        }
    }
}

#[test]
fn nginx_signal_reload_needs_a_running_master_it_may_signal() {
    let s = issued(Table::new());
    let nginx = Nginx::start(&s.root.path().join("nginx"));
    s.edit_cert("registry", |c| set(c, "reload", nginx.reload_command()));
    // As root: checked, then nginx really reloads.
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default().contains("reconfiguring") {
        assert!(Instant::now() < deadline, "nginx never reloaded: {}", fs::read_to_string(nginx.dir.join("error.log")).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }

    // As a user who may not signal root's nginx: refused before anything is issued.
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    assert!(Command::new(tool("chown")).args(["-R", "nobody:nogroup"]).arg(s.root.path()).status().unwrap().success());
    let run = renew_with_path(&s, Path::new("/nonexistent"), Some("nobody"));
    assert_nothing_issued(&s, &before, &run);
    assert!(
        run.stdout.contains("runs as another user and uid 65534 may not signal it")
            && run.stdout.contains("CAP_KILL")
            && run.stdout.contains("systemd = { unit = \"nginx.service\" }"),
        "{run:?}"
    );

    // nginx not running: said so, nothing issued.
    nginx.stop();
    let run = s.run(&["renew", "--force"]);
    assert_nothing_issued(&s, &before, &run);
    assert!(run.stdout.contains("pid file") && run.stdout.contains("is nginx running?"), "{run:?}");
}

#[test]
fn a_reload_program_that_cannot_run_fails_before_anything_is_issued() {
    let s = issued(toml! { command = ["/usr/local/bin/no-such-reload-hook"] });
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    let run = s.run(&["renew", "--force"]);
    assert_nothing_issued(&s, &before, &run);
    assert!(run.stdout.contains("reload command `/usr/local/bin/no-such-reload-hook` cannot run"), "{run:?}");
    let hook = s.root.path().join("hook.sh");
    fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap(); // not executable
    s.edit_cert("registry", |c| set(c, "reload", toml! { command = [(hook.display().to_string())] }));
    let run = s.run(&["renew", "--force"]);
    assert_nothing_issued(&s, &before, &run);
    assert!(run.stdout.contains("is not executable by uid 0"), "{run:?}");
}

/// `[certificate.trust] docker_clients` is written after the registry is verified: a certs.d
/// regcert may not write (the sandbox's read-only /etc, or its permissions) is found before
/// anything is issued, not reported as a failed renewal at the end.
#[test]
fn a_certs_d_regcert_cannot_write_fails_before_anything_is_issued() {
    let s = issued(Table::new());
    let certs_d = s.root.path().join("certs.d");
    fs::create_dir_all(certs_d.join("registry.corp.lan:5000")).unwrap();
    s.edit_cert("registry", |c| {
        c.remove("reload");
        c.remove("verify");
        set(
            c,
            "trust",
            toml! { docker_clients = ["registry.corp.lan:5000"] runtimes = ["docker"] certs_d = (certs_d.display().to_string()) },
        );
    });
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    assert!(Command::new(tool("chown")).args(["-R", "nobody:nogroup"]).arg(s.root.path()).status().unwrap().success());
    // certs.d stays root's: nobody may not write there.
    assert!(Command::new(tool("chown")).args(["-R", "root:root"]).arg(&certs_d).status().unwrap().success());
    let run = s.run_as_nobody(&["renew", "--force"]);
    assert_nothing_issued(&s, &before, &run);
    assert!(
        run.stdout.contains("[certificate.trust] docker_clients \"registry.corp.lan:5000\"")
            && run.stdout.contains("is not writable by this user"),
        "{run:?}"
    );
    // Writable: renewed, and Docker's trust written.
    assert!(Command::new(tool("chown")).args(["-R", "nobody:nogroup"]).arg(&certs_d).status().unwrap().success());
    let run = s.run_as_nobody(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(certs_d.join("registry.corp.lan:5000/ca.crt").exists());
}
