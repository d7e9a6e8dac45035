//! Issue #12 part 3: what regcert ships as. scripts/package.sh builds the Debian package and the
//! container image from the binary under test ([`regcert_bin`]), and both are tried for real:
//! the package is installed on this machine with `dpkg -i` (and always purged), the image renews
//! the certificate of a registry container next to it through the mounted Docker socket.
//!
//! scripts/test.sh runs these two against the release build (the binary users get), once.

use crate::common::registry::*;
use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `bash scripts/package.sh ARGS` with the binary under test; its last line of output (the
/// .deb's path or the image's tag).
fn package_sh(args: &[&str]) -> String {
    let out = Command::new(tool("bash")).arg("scripts/package.sh").args(args).env("REGCERT_BIN", regcert_bin()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/package.sh {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_else(|| panic!("scripts/package.sh {args:?} printed nothing")).to_owned()
}

/// `PROGRAM ARGS`: (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool(program)).args(args).env("LC_ALL", "C").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `dpkg ARGS`, waiting while another dpkg or apt holds the package database (a parallel
/// `apt-get install` by scripts/install-deps.sh, say).
fn dpkg(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, text) = run("dpkg", args);
        if ok {
            return text;
        }
        let locked = text.contains("lock") && text.contains("dpkg");
        assert!(locked && Instant::now() < deadline, "dpkg {args:?} failed:\n{text}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f", "${Status}", "regcert"]).1.contains("install ok installed")
}

/// The installed package, purged when dropped: a failing test does not leave it on the machine.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = run("dpkg", &["--purge", "regcert"]);
        }
    }
}

const UNITS: [&str; 3] = ["regcert.service", "regcert-renew.service", "regcert-renew.timer"];

#[test]
fn deb_installs_runs_shows_its_man_page_verifies_its_units_and_purges_cleanly() {
    assert!(
        !installed(),
        "a regcert package is already installed on this machine; this test installs and purges its own: `dpkg --purge regcert` first"
    );
    let out = tempfile::tempdir().unwrap();
    let deb = package_sh(&["deb", out.path().to_str().unwrap()]);
    let (ok, listing) = run("dpkg-deb", &["--contents", &deb]);
    assert!(ok, "{listing}");
    // The package's files (not its directories), as absolute paths.
    let files: Vec<PathBuf> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect();
    for shipped in [
        "/usr/bin/regcert",
        "/lib/systemd/system/regcert.service",
        "/lib/systemd/system/regcert-renew.timer",
        "/usr/share/man/man1/regcert.1.gz",
        "/usr/share/man/man1/regcert-renew.1.gz",
        "/usr/share/bash-completion/completions/regcert",
        "/usr/share/zsh/vendor-completions/_regcert",
        "/usr/share/fish/vendor_completions.d/regcert.fish",
        "/usr/share/doc/regcert/config.example.toml",
    ] {
        assert!(files.contains(&PathBuf::from(shipped)), "{shipped} is not in the package:\n{listing}");
    }

    let guard = Installed;
    dpkg(&["-i", &deb]);
    assert!(installed());
    let version = Command::new(regcert_bin()).arg("--version").output().unwrap();
    let installed_version = Command::new("/usr/bin/regcert").arg("--version").output().unwrap();
    assert!(
        installed_version.status.success() && installed_version.stdout == version.stdout,
        "installed: {installed_version:?}, under test: {version:?}"
    );

    // man-db finds and renders the pages (plain text: stdout is not a terminal).
    let (ok, page) = run("man", &["regcert"]);
    assert!(ok && page.contains("regcert-renew(1)") && page.contains("--config") && page.contains("EXAMPLES"), "man regcert:\n{page}");
    let (ok, page) = run("man", &["regcert-renew"]);
    assert!(ok && page.contains("--dry-run"), "man regcert-renew:\n{page}");
    // bash loads the completion and completes the subcommands.
    let (ok, text) = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/regcert; COMP_WORDS=(regcert re); COMP_CWORD=1; _regcert regcert re regcert; echo ${COMPREPLY[*]}",
        ],
    );
    assert!(ok && text.contains("renew"), "bash completion of `regcert re`: {text}");

    // The units as installed (ExecStart=/usr/bin/regcert, User=regcert) pass systemd's checks.
    let paths: Vec<String> = UNITS.iter().map(|u| format!("/lib/systemd/system/{u}")).collect();
    let (ok, text) = run("systemd-analyze", &["verify", &paths[0], &paths[1], &paths[2]]);
    assert!(ok, "systemd-analyze verify:\n{text}");
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("regcert")).collect();
    assert!(ours.is_empty(), "warnings about the installed units: {ours:?}");
    let service = std::fs::read_to_string(&paths[0]).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/regcert ") && service.contains("User=regcert"), "{service}");

    // postinst: the system user, its private state dir, the config dir it may read.
    let (ok, user) = run("getent", &["passwd", "regcert"]);
    assert!(ok && user.contains(":/var/lib/regcert:") && user.trim_end().ends_with("nologin"), "{user}");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    let state = std::fs::metadata("/var/lib/regcert").unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o700), "/var/lib/regcert");
    let etc = std::fs::metadata("/etc/regcert").unwrap();
    assert_eq!((etc.uid(), etc.mode() & 0o7777), (0, 0o750), "/etc/regcert");
    // Nothing enabled (nor started: no systemd runs here to start it, and nothing asked it to).
    let wants =
        ["/etc/systemd/system/multi-user.target.wants/regcert.service", "/etc/systemd/system/timers.target.wants/regcert-renew.timer"];
    for link in wants {
        assert!(std::fs::symlink_metadata(link).is_err(), "{link}: the package enabled a unit by itself");
    }

    // What an operator adds: state (keys!) and `systemctl enable`. Purge removes both.
    std::fs::write("/var/lib/regcert/account.json", "{}").unwrap();
    std::fs::create_dir_all("/etc/systemd/system/multi-user.target.wants").unwrap();
    std::os::unix::fs::symlink(&paths[0], wants[0]).unwrap();
    dpkg(&["--purge", "regcert"]);
    drop(guard);
    assert!(!installed());
    for f in &files {
        assert!(std::fs::symlink_metadata(f).is_err(), "{} is left after the purge", f.display());
    }
    for left in ["/var/lib/regcert", "/etc/regcert", "/usr/share/doc/regcert", wants[0]] {
        assert!(std::fs::symlink_metadata(left).is_err(), "{left} is left after the purge");
    }
    // The user stays (Debian practice: files elsewhere may still carry its uid).
    assert!(run("getent", &["passwd", "regcert"]).0, "the regcert user was removed");
}

/// The test's image, removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = run("docker", &["rmi", "-f", &self.0]);
    }
}

/// A container, removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run("docker", &["rm", "-f", &self.0]);
    }
}

/// The leaf the registry at `addr` serves, as a PEM file in `dir`.
fn served_leaf(addr: &str, dir: &Path) -> PathBuf {
    let out = Command::new(tool("openssl")).args(["s_client", "-connect", addr]).stdin(std::process::Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (start, end) = (text.find("-----BEGIN CERTIFICATE-----"), text.find("-----END CERTIFICATE-----"));
    let (Some(start), Some(end)) = (start, end) else { panic!("{addr} served no certificate:\n{text}") };
    let path = dir.join("served.pem");
    std::fs::write(&path, format!("{}\n", &text[start..end + "-----END CERTIFICATE-----".len()])).unwrap();
    path
}

/// A registry on a placeholder self-signed certificate (the state of a host before regcert);
/// the regcert container, as the README runs it, replaces it with one from its private CA,
/// restarts the registry through the mounted socket and verifies it over the test network.
#[test]
fn container_image_renews_restarts_and_verifies_the_registry_next_to_it() {
    require_docker();
    let image = Image(package_sh(&["image", &format!("regcert-test/regcert:{}", std::process::id())]));
    let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", &image.0]);
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap_or_else(|_| panic!("image user {user:?}"));
    assert_ne!(uid, 0, "the image runs as root");

    let dir = tempfile::tempdir().unwrap();
    let (conf, state, certs) = (dir.path().join("conf"), dir.path().join("state"), dir.path().join("certs"));
    for d in [&conf, &state, &certs] {
        std::fs::create_dir(d).unwrap();
    }
    let ip = fixed_ip();
    let (crt, key) = (certs.join("domain.crt"), certs.join("domain.key"));
    let (c, k) = (crt.to_str().unwrap(), key.to_str().unwrap());
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", c, "-days", "30", "-subj", "/CN=placeholder"]);
    let reg = Registry::start(&certs, RegistryOpts { ip: Some(ip.clone()), ..Default::default() });
    let placeholder = serial(&served_leaf(&reg.addr(), dir.path()));
    let started = reg.started_at();

    let config = format!(
        r#"state_dir = "/var/lib/regcert"

[ca.internal]
subject = "CN=regcert container test CA"

[[certificate]]
name = "registry"
issuer = "ca:internal"
ips = ["{ip}"]

[certificate.install]
dir = "/certs"

[certificate.reload]
docker = {{ container = "{container}" }}

[certificate.verify]
url = "https://{ip}:5000/v2/"
# By the registry's container name, as compose users name their services: Docker's DNS for
# the network, read by the image's libc.
connect_to = "{container}:5000"
timeout = "20s"
"#,
        container = reg.container
    );
    std::fs::write(conf.join("config.toml"), config).unwrap();
    // The volumes belong to the image's user, as the README says to prepare them.
    for d in [&state, &certs] {
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
        for f in std::fs::read_dir(d).unwrap() {
            std::os::unix::fs::chown(f.unwrap().path(), Some(uid), Some(uid)).unwrap();
        }
    }
    let socket_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid().to_string();
    let volumes = [
        format!("{}:/etc/regcert:ro", conf.display()),
        format!("{}:/var/lib/regcert", state.display()),
        format!("{}:/certs", certs.display()),
        "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
    ];
    let mut args: Vec<&str> = vec!["run", "--label"];
    let owner = format!("{OWNER_LABEL}={}", std::process::id());
    args.extend([owner.as_str(), "--network", NETWORK, "--group-add", &socket_gid]);
    for v in &volumes {
        args.extend(["-v", v]);
    }

    // The private CA, with a one-off container.
    let mut init = args.clone();
    init.extend(["--rm", &image.0, "ca", "init", "internal"]);
    let (ok, text) = run("docker", &init);
    assert!(ok, "regcert ca init in the container:\n{text}");

    // The service: checks once at start-up, the placeholder is due.
    let name = format!("regcert-test-{}-regcert", std::process::id());
    let mut service = args.clone();
    service.extend(["-d", "--name", &name, &image.0]);
    docker(&service);
    let container = Container(name);
    let logs = || run("docker", &["logs", &container.0]).1;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !logs().contains("verified: the registry serves the new certificate") {
        assert!(Instant::now() < deadline, "no verified renewal within 90 s; regcert's log:\n{}\nregistry:\n{}", logs(), reg.logs());
        assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &container.0]), "true", "regcert exited:\n{}", logs());
        std::thread::sleep(Duration::from_millis(300));
    }

    // It ran as the image's user, with the socket's group added, not as root.
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container.0]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_default().split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), vec![uid.to_string(); 4], "{status}");
    assert!(field("Groups:").contains(&socket_gid), "{status}");

    // The registry was restarted and now serves the installed certificate, from the CA.
    assert_ne!(reg.started_at(), started, "the registry was not restarted");
    let served = serial(&served_leaf(&reg.addr(), dir.path()));
    assert_ne!(served, placeholder);
    assert_eq!(served, serial(&crt));
    assert_chain_verifies(&crt, &state.join("ca/internal/root.crt"));
    let key_meta = std::fs::metadata(&key).unwrap();
    assert_eq!((key_meta.uid(), key_meta.mode() & 0o777), (uid, 0o600), "domain.key");

    // `docker stop` (SIGTERM to regcert as PID 1) ends the service cleanly.
    docker(&["stop", "-t", "30", &container.0]);
    assert_eq!(docker(&["inspect", "-f", "{{.State.ExitCode}}", &container.0]), "0", "{}", logs());
}
