//! Crash consistency as a tested property (issue 10, item 2): `regcert renew --force` killed
//! with SIGKILL at many moments (mid-reload included), a full install dir (ENOSPC on a tiny
//! tmpfs) and a read-only one. Afterwards the next plain `renew` exits 0 with a matching,
//! complete, valid pair, no temp files are left in the install dir or in state_dir, the killed
//! run's lock does not block anyone, and what the registry loaded last is what is installed.

use crate::common::*;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use toml::{Table, toml};

/// The reload: a "registry" that takes a while to load the certificate (so that kills land
/// mid-reload) and then records the SHA-256 of the fullchain it loaded, one line per reload.
fn slow_reload(s: &Setup) -> (Table, PathBuf) {
    let log = s.root.path().join("reloads.log");
    let script = format!(
        "echo start >> {log}; sleep 0.2; sha256sum {chain} | cut -c1-64 >> {log}",
        log = log.display(),
        chain = s.fullchain("registry").display()
    );
    (toml! { command = ["/bin/sh", "-c", (script)] }, log)
}

/// The slow reload, without verification (nothing serves HTTPS here).
fn with_slow_reload(s: &Setup) -> PathBuf {
    let (reload, log) = slow_reload(s);
    s.edit_cert("registry", |c| {
        set(c, "reload", reload);
        set(c, "verify", toml! { enabled = false });
    });
    log
}

/// The last line of the reload log: "start" while a reload is under way (or was killed).
fn last_reload(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default().lines().last().unwrap_or_default().to_owned()
}

fn sha256_hex(path: &Path) -> String {
    let out = openssl(&["dgst", "-sha256", "-r", path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_owned()
}

/// A small random generator for the kill moments (xorshift; the seed is printed to replay a run).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
        eprintln!("crash test seed: CRASH_SEED={seed}");
        Rng(seed)
    }

    /// A fraction in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `regcert renew --force` in a process group of its own, killed with SIGKILL (the whole group,
/// its reload command included, like a power cut) once `until` says so. Returns true if it had
/// finished before.
fn kill_renew_when(s: &Setup, mut until: impl FnMut() -> bool) -> bool {
    let mut child = Command::new(regcert_bin())
        .arg("--config")
        .arg(&s.config)
        .args(["renew", "--force"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !until() {
        assert!(Instant::now() < deadline, "the moment to kill regcert never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = child.try_wait().unwrap().is_some();
    // SAFETY: kill(2) on the process group of the child we started; no memory is involved.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    finished
}

/// The same, killed after `delay`.
fn kill_renew_after(s: &Setup, delay: Duration) -> bool {
    let kill_at = Instant::now() + delay;
    kill_renew_when(s, || Instant::now() >= kill_at)
}

/// How long a complete `renew --force` takes here (the kills are spread over it).
fn full_run(s: &Setup) -> Duration {
    let started = Instant::now();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    started.elapsed()
}

/// Every file under `dir` whose name says it is one of regcert's temp files.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if e.file_type().unwrap().is_dir() {
            found.extend(temp_files(&path));
        } else if e.file_name().to_string_lossy().starts_with(".regcert-tmp-") {
            found.push(path);
        }
    }
    found
}

/// The installed pair is matching, complete and valid (by openssl), nothing is left over, and
/// the last reload loaded what is installed.
fn assert_consistent(s: &Setup, root: &Path, reloads: &Path, context: &str) {
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_chain_verifies(&s.fullchain("registry"), root);
    openssl(&["x509", "-noout", "-checkend", "0", "-in", s.fullchain("registry").to_str().unwrap()]);
    assert_eq!(mode(&s.key("registry")), 0o600, "{context}");
    let left: Vec<_> = [s.install_dir("registry"), s.state()].iter().flat_map(|d| temp_files(d)).collect();
    assert!(left.is_empty(), "{context}: temp files left: {left:?}");
    assert!(!s.state().join("certs/registry/installing.json").exists(), "{context}: the install journal is left");
    assert_eq!(last_reload(reloads), sha256_hex(&s.fullchain("registry")), "{context}: the registry last loaded another pair");
}

/// Kill `renew --force` at `points` moments spread over a whole run (one random moment in each
/// of `points` equal slices, so every phase is hit), and check the next plain `renew` each time.
/// Returns how many kills landed mid-reload and how many left an install in progress.
fn kill_at_many_moments(s: &Setup, root: &Path, reloads: &Path, points: u32) -> (u32, u32) {
    let span = full_run(s).mul_f64(1.1);
    assert_consistent(s, root, reloads, "after a complete run");
    let mut rng = Rng::new();
    let (mut mid_reload, mut journaled) = (0, 0);
    for i in 0..points {
        let delay = span.mul_f64((f64::from(i) + rng.unit()) / f64::from(points));
        let finished = kill_renew_after(s, delay);
        let context = format!("killed after {delay:?} (finished before: {finished})");
        mid_reload += u32::from(last_reload(reloads) == "start");
        let interrupted = s.state().join("certs/registry/installing.json").exists();
        journaled += u32::from(interrupted);

        let run = s.run(&["renew"]);
        assert_eq!(run.code, 0, "{context}: {run:?}");
        assert!(!run.stderr.contains("holds the lock"), "{context}: the killed run's lock blocked the next one: {run:?}");
        if interrupted {
            assert!(run.stdout.contains("(an earlier install was interrupted") && run.stdout.contains("1 renewed"), "{context}: {run:?}");
        } else {
            assert!(run.stdout.contains("registry: not due"), "{context}: {run:?}");
        }
        assert_consistent(s, root, reloads, &context);
    }
    (mid_reload, journaled)
}

#[test]
fn sigkill_at_any_moment_leaves_a_matching_pair_and_the_next_run_repairs_and_delivers() {
    let s = ca_setup(toml! { subject = "CN=Crash Test CA" intermediate = true }, toml! { domains = ["registry.corp.lan"] });
    let reloads = with_slow_reload(&s);
    for args in [&["ca", "init", "internal"][..], &["renew"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let root = export_root(&s);
    let (mid_reload, journaled) = kill_at_many_moments(&s, &root, &reloads, 24);
    // The kills covered the phases that matter (a handful each is plenty to show it).
    assert!(mid_reload >= 3, "only {mid_reload} kills landed mid-reload");
    assert!(journaled >= 5, "only {journaled} kills landed in an install or its delivery");
    assert!(journaled < 24, "no kill landed before the install");
}

#[test]
fn sigkill_during_acme_renewals_against_pebble() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let reloads = with_slow_reload(&s);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (_, journaled) = kill_at_many_moments(&s, &pebble.issuing_root(), &reloads, 8);
    assert!(journaled >= 1, "no kill landed in an install or its delivery");
}

#[test]
fn a_renewal_killed_mid_reload_is_delivered_again_by_the_service() {
    let s = ca_setup(toml! { subject = "CN=Crash Test CA" }, toml! { domains = ["registry.corp.lan"] });
    let reloads = with_slow_reload(&s);
    for args in [&["ca", "init", "internal"][..], &["renew"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let root = export_root(&s);
    let before = sha256_hex(&s.fullchain("registry"));
    // Killed exactly while the registry loads the new pair.
    assert!(!kill_renew_when(&s, || last_reload(&reloads) == "start"));
    assert!(s.state().join("certs/registry/installing.json").exists());
    let issued_by_the_dead_run = fs::read(s.state().join("certs/registry/fullchain.pem")).unwrap();

    // The service's first check finds the journal, installs the kept certificate and reloads.
    let mut daemon = Daemon::start(&s.config);
    daemon.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    let log = daemon.log_text();
    assert!(log.contains("an earlier install was interrupted"), "{log}");
    assert_consistent(&s, &root, &reloads, "after the service's check");
    assert_ne!(sha256_hex(&s.fullchain("registry")), before);
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), issued_by_the_dead_run, "the dead run's certificate, not a new one");
}

#[test]
fn a_first_install_killed_mid_reload_is_delivered_without_a_new_certificate() {
    let s = ca_setup(toml! { subject = "CN=Crash Test CA" }, toml! { domains = ["registry.corp.lan"] });
    let reloads = with_slow_reload(&s);
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let root = export_root(&s);
    // No known-good pair to put back: the dead run's pair is installed, but never loaded.
    assert!(!kill_renew_when(&s, || last_reload(&reloads) == "start"));
    let issued = fs::read(s.state().join("certs/registry/fullchain.pem")).unwrap();
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), issued);

    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("installed the certificate already issued and kept in state_dir (an earlier install was interrupted"),
        "{run:?}"
    );
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), issued, "the same certificate, delivered again");
    assert_consistent(&s, &root, &reloads, "after the repair");
}

/// A mount over an install dir, undone when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let out = Command::new(tool("mount")).args(args).output().unwrap();
        assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A tmpfs of `size` on `dir`.
    fn tmpfs(dir: &Path, size: &str) -> Self {
        Self::run(&["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs", dir.to_str().unwrap()]);
        Mount(dir.to_owned())
    }

    /// `dir` itself, read-only (as root, file modes would not stop a write).
    fn read_only(dir: &Path) -> Self {
        let d = dir.to_str().unwrap();
        Self::run(&["--bind", d, d]);
        let mount = Mount(dir.to_owned());
        Self::run(&["-o", "remount,bind,ro", d]);
        mount
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(tool("umount")).arg(&self.0).status();
    }
}

fn installed(s: &Setup) -> (Vec<u8>, Vec<u8>) {
    (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap())
}

/// A private-CA certificate installed once, with the CA's root in a file.
fn installed_from_private_ca() -> (Setup, PathBuf) {
    let s = ca_setup(toml! { subject = "CN=Host Trouble CA" intermediate = true }, toml! { domains = ["registry.corp.lan"] });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let root = export_root(&s);
    (s, root)
}

/// After a failed `renew --force`: the pair is as it was and nothing was left behind; then,
/// once `repair` ran, the next runs work again.
fn assert_untouched_then_recovers(s: &Setup, root: &Path, before: &(Vec<u8>, Vec<u8>), repair: impl FnOnce()) {
    assert_eq!(&installed(s), before, "the installed pair is byte-identical");
    assert_eq!(temp_files(&s.install_dir("registry")), Vec::<PathBuf>::new());
    assert!(!s.state().join("certs/registry/installing.json").exists());
    repair();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: not due"), "{run:?}");
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(&installed(s), before);
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_chain_verifies(&s.fullchain("registry"), root);
}

#[test]
fn a_full_install_dir_fails_with_the_pair_untouched_and_recovers() {
    let (s, root) = installed_from_private_ca();
    let dir = s.install_dir("registry");
    let mount = Mount::tmpfs(&dir, "64k");
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let before = installed(&s);
    // Fill what is left of the tmpfs.
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0u8; 4096]).is_ok() {}
    drop(f);

    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let wanted = format!(
        "cannot write {}: No space left on device (os error 28) (the filesystem of {} is full: free space there, then run regcert again); the installed pair was not changed",
        s.key("registry").display(),
        dir.display()
    );
    assert!(run.stdout.contains(&wanted), "{run:?}");
    assert_untouched_then_recovers(&s, &root, &before, || fs::remove_file(&filler).unwrap());
    drop(mount);
}

#[test]
fn a_read_only_install_dir_fails_with_the_pair_untouched_and_recovers() {
    let (s, root) = installed_from_private_ca();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let before = installed(&s);
    let dir = s.install_dir("registry");
    let mount = Mount::read_only(&dir);

    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let wanted = format!(
        "{d} is not writable: Read-only file system (os error 30) ({d} is on a read-only filesystem: remount it read-write, then run regcert again)",
        d = dir.display()
    );
    assert!(run.stdout.contains(&wanted), "{run:?}");
    assert_untouched_then_recovers(&s, &root, &before, || drop(mount));
}
