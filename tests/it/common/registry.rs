//! Real registry containers for the tests: the distribution registry from Debian's
//! `docker-registry`, in an image built offline by scripts/docker-testbed.sh, on the Docker bridge.
//!
//! Containers are reached on their bridge address, never on 127.0.0.1: dockerd treats loopback
//! registries as insecure and would skip the very TLS checks these tests are about.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::tool;

pub const IMAGE: &str = "regcert-test/registry:2";
pub const TINY: &str = "regcert-test/tiny:1";
/// An image with one large layer of random bytes (incompressible), for pushes that take a while.
pub const LARGE: &str = "regcert-test/large:1";
/// The size of [`LARGE`]'s layer.
pub const LARGE_LAYER_MB: usize = 24;
/// The test network (172.31.0.0/16) made by scripts/docker-testbed.sh.
pub const NETWORK: &str = "regcert-test";

/// The label on every container the tests start: the id of the test process that owns it.
pub const OWNER_LABEL: &str = "regcert-test.pid";

/// An address on the test network that no container holds: one block per process, one address
/// per container, skipping addresses in use (by containers of another run, say).
pub fn fixed_ip() -> String {
    static N: AtomicUsize = AtomicUsize::new(2);
    remove_leftovers();
    let fmt = "{{range .Containers}}{{.IPv4Address}} {{end}}";
    let in_use = docker(&["network", "inspect", "-f", fmt, NETWORK]);
    let in_use: Vec<&str> = in_use.split_whitespace().map(|a| a.split('/').next().unwrap()).collect();
    for _ in 0..250 {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let ip = format!("172.31.{}.{}", 10 + std::process::id() % 240, n % 250 + 2);
        if !in_use.contains(&ip.as_str()) {
            return ip;
        }
    }
    panic!("no free address on {NETWORK} in this process's block; in use: {in_use:?}")
}

/// Once per process: remove test containers whose test process is gone (a crashed or killed
/// run), so their names and addresses are free again. Containers of running tests stay.
pub fn remove_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fmt = format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}");
        let listed = docker(&["ps", "-a", "--filter", &format!("label={OWNER_LABEL}"), "--format", &fmt]);
        for line in listed.lines() {
            let Some((id, pid)) = line.split_once(' ') else { continue };
            if !Path::new("/proc").join(pid.trim()).exists() {
                let _ = Command::new(tool("docker")).args(["rm", "-f", id]).output();
            }
        }
    });
}

/// `docker …`; panics with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new(tool("docker")).args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The engine and the test image must be there (scripts/docker-testbed.sh provides them).
pub fn require_docker() {
    let ok = |args: &[&str]| Command::new(tool("docker")).args(args).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok(&["image", "inspect", IMAGE]) && ok(&["network", "inspect", NETWORK]),
        "the Docker engine with image {IMAGE} and network {NETWORK} is needed: run scripts/test.sh (it starts dockerd and builds the image offline)"
    );
}

/// A unique DNS name per registry, so tests can run side by side.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{tag}-{}-{}.regcert.test", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub struct Registry {
    pub container: String,
    pub ip: String,
    pub port: u16,
}

#[derive(Default)]
pub struct RegistryOpts {
    /// htpasswd file to enable basic auth.
    pub htpasswd: Option<PathBuf>,
    /// Mount domain.crt and domain.key one by one instead of the directory.
    pub single_files: bool,
    /// No TLS (for running behind nginx).
    pub plain_http: bool,
    /// A `key=value` label on the container.
    pub label: Option<String>,
    /// The address on the test network (default: a fresh one).
    pub ip: Option<String>,
    /// Require client certificates issued by the CA(s) in this PEM file (mTLS).
    pub client_cas: Option<PathBuf>,
    /// Share the host's network instead and listen on `:PORT` (every address, 127.0.0.1 and ::1 among them)
    /// (for certificates of those IP addresses; no docker push then: dockerd skips TLS on loopback).
    pub host_port: Option<u16>,
    /// Publish the registry's port 5000 on this host port at the test network's gateway
    /// address (`-p GATEWAY:PORT:5000`), as most registries are reached: see [`gateway`].
    pub publish: Option<u16>,
}

/// The host's own address on the test network, where [`RegistryOpts::publish`] publishes.
pub fn gateway() -> String {
    let fmt = "{{range .IPAM.Config}}{{.Gateway}}{{end}}";
    let gw = docker(&["network", "inspect", "-f", fmt, NETWORK]);
    assert!(gw.parse::<std::net::Ipv4Addr>().is_ok(), "no gateway address for {NETWORK}: {gw:?}");
    gw
}

impl Registry {
    /// Start a registry serving `certs/domain.crt` + `certs/domain.key` on :5000.
    pub fn start(certs: &Path, opts: RegistryOpts) -> Self {
        require_docker();
        remove_leftovers();
        let container = format!("regcert-test-{}-{}", std::process::id(), unique_name("c").split('.').next().unwrap());
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), container.clone()];
        args.extend(["--label".into(), format!("{OWNER_LABEL}={}", std::process::id())]);
        let (ip, port) = match opts.host_port {
            Some(port) => {
                args.extend(["--network".into(), "host".into(), "-e".into(), format!("REGISTRY_HTTP_ADDR=:{port}")]);
                ("127.0.0.1".to_owned(), port)
            }
            None => {
                let ip = opts.ip.clone().unwrap_or_else(fixed_ip);
                args.extend(["--network".into(), NETWORK.into(), "--ip".into(), ip.clone()]);
                (ip, 5000)
            }
        };
        if !opts.plain_http {
            if opts.single_files {
                for f in ["domain.crt", "domain.key"] {
                    args.extend(["-v".into(), format!("{}:/certs/{f}", certs.join(f).display())]);
                }
            } else {
                args.extend(["-v".into(), format!("{}:/certs", certs.display())]);
            }
            args.extend(["-e".into(), "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt".into()]);
            args.extend(["-e".into(), "REGISTRY_HTTP_TLS_KEY=/certs/domain.key".into()]);
        }
        if let Some(h) = &opts.htpasswd {
            args.extend(["-v".into(), format!("{}:/auth/htpasswd", h.display())]);
            args.extend(["-e".into(), "REGISTRY_AUTH=htpasswd".into()]);
            args.extend(["-e".into(), "REGISTRY_AUTH_HTPASSWD_REALM=regcert-test".into()]);
            args.extend(["-e".into(), "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd".into()]);
        }
        if let Some(cas) = &opts.client_cas {
            args.extend(["-v".into(), format!("{}:/clientcas/ca.pem:ro", cas.display())]);
            args.extend(["-e".into(), "REGISTRY_HTTP_TLS_CLIENTCAS=[/clientcas/ca.pem]".into()]);
        }
        if let Some(port) = opts.publish {
            args.extend(["-p".into(), format!("{}:{port}:5000", gateway())]);
        }
        if let Some(label) = &opts.label {
            args.extend(["--label".into(), label.clone()]);
        }
        args.push(IMAGE.into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&argv);
        let reg = Registry { container, ip, port };
        reg.wait_listening();
        reg
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&self.addr().parse().unwrap(), Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "registry {} did not listen: {}", self.container, self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        let out = Command::new(tool("docker")).args(["logs", "--tail", "30", &self.container]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    pub fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.container]) == "true"
    }

    /// When the container's process last started, as Docker reports it (changes on every restart).
    pub fn started_at(&self) -> String {
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &self.container])
    }
}

impl Registry {
    /// The host end of the container's network link, found from the container's side
    /// (`eth0@ifN` inside its namespace names the host interface N).
    fn host_link(&self) -> String {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.container]);
        let out = Command::new(tool("nsenter"))
            .args(["-t", &pid, "-n", tool("ip").to_str().unwrap(), "-o", "link", "show", "eth0"])
            .output()
            .unwrap();
        let inside = String::from_utf8_lossy(&out.stdout).to_string();
        let index = inside
            .split_once("@if")
            .and_then(|(_, r)| r.split(':').next())
            .unwrap_or_else(|| panic!("eth0 of {}: {inside}", self.container));
        let out = Command::new(tool("ip")).args(["-o", "link"]).output().unwrap();
        let host = String::from_utf8_lossy(&out.stdout).to_string();
        let line = host.lines().find(|l| l.starts_with(&format!("{index}: "))).unwrap_or_else(|| panic!("no host link {index}: {host}"));
        line.split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned()
    }

    /// Slow down everything sent to the container (what clients push) to `rate` (tc's form,
    /// e.g. "12mbit") with a token bucket on the host end of its link, so that a push is
    /// certainly still in flight seconds later. A restart gives the container a new link,
    /// unshaped.
    pub fn throttle_uploads(&self, rate: &str) {
        let link = self.host_link();
        let out = Command::new(tool("tc"))
            .args(["qdisc", "replace", "dev", &link, "root", "tbf", "rate", rate, "burst", "32kb", "latency", "2s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tc on {link}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// [`LARGE`], built once (offline, FROM scratch) when it is not there.
pub fn large_image() -> &'static str {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        require_docker();
        let present = Command::new(tool("docker")).args(["image", "inspect", LARGE]).output().unwrap().status.success();
        if present {
            return;
        }
        let ctx = tempfile::tempdir().unwrap();
        let mut payload = vec![0u8; LARGE_LAYER_MB << 20];
        let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut urandom, &mut payload).unwrap();
        std::fs::write(ctx.path().join("payload.bin"), payload).unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY payload.bin /payload.bin\nCMD [\"/payload.bin\"]\n").unwrap();
        let out =
            Command::new(tool("docker")).env("DOCKER_BUILDKIT", "0").args(["build", "-q", "-t", LARGE]).arg(ctx.path()).output().unwrap();
        assert!(out.status.success(), "docker build {LARGE}: {}", String::from_utf8_lossy(&out.stderr));
    });
    LARGE
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(tool("docker")).args(["rm", "-f", &self.container]).output();
    }
}

/// Makes `name` resolve to `ip` for dockerd (via /etc/hosts) and trusts `ca` for it in
/// /etc/docker/certs.d/NAME:PORT/ca.crt; both undone on drop.
pub struct DockerClientTrust {
    _hosts: HostsEntry,
    dir: PathBuf,
}

impl DockerClientTrust {
    pub fn new(name: &str, ip: &str, port: u16, ca: &Path) -> Self {
        let hosts = HostsEntry::add(name, &[ip]);
        let dir = PathBuf::from(format!("/etc/docker/certs.d/{name}:{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerClientTrust { _hosts: hosts, dir }
    }
}

impl Drop for DockerClientTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines `IP NAME` in /etc/hosts, one per address (names are unique per test), removed on drop.
pub struct HostsEntry {
    name: String,
}

/// /etc/hosts is read, changed and written whole: one test of this process at a time.
static HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl HostsEntry {
    pub fn add(name: &str, ips: &[&str]) -> Self {
        let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        let lines: String = ips.iter().map(|ip| format!("{ip} {name}\n")).collect();
        std::fs::write("/etc/hosts", format!("{hosts}{}{lines}", if hosts.ends_with('\n') { "" } else { "\n" })).unwrap();
        HostsEntry { name: name.to_owned() }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = hosts.lines().filter(|l| !l.ends_with(&format!(" {}", self.name))).map(|l| format!("{l}\n")).collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// `docker` with retries: dockerd caches name resolution for a few seconds.
pub fn docker_retry(args: &[&str]) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(tool("docker")).args(args).output().unwrap();
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into());
        }
        last = String::from_utf8_lossy(&out.stderr).into();
        if last.contains("x509") || last.contains("certificate") {
            break; // a TLS failure will not fix itself
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}
