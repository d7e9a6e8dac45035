//! The fleet test bed: regcert nodes that share one certificate through etcd, each with its own
//! state dir, install dir, config and a real registry process (Debian's `docker-registry`, the
//! distribution registry) serving that node's install dir on a loopback address of its own.
//!
//! Node `i` (1, 2, 3, …) is `node-i` on 127.0.0.(i+1): all of 127.0.0.0/8 is local on Linux, and
//! 127.0.0.1 stays for Pebble and etcd. Its registry and its HTTP-01 responder both listen on that
//! address, so [`Pebble::point_name_at`] decides which node's responder the CA reaches. Until a
//! test points [`FLEET_NAME`] at a node, Pebble resolves it to 127.0.0.1, where no node answers.
//!
//! The registry loads its certificate once, at start (TESTBED.md), like the container it stands
//! for: a new pair is served only after a restart, which the node's reload command does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use tempfile::TempDir;
use toml::{Value, toml};

use super::etcd::{EtcdCluster, USER_PREFIX};
use super::{CertSpec, Daemon, Pebble, Run, Setup, free_port, openssl, pebble_config, self_signed, serial, set, tool, verify_table};

/// Wait until `check` holds, polling; panic with `what` (and `context()`) after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fleet's status as node `node` reads it from etcd (`regcert cluster status --json`).
pub fn cluster_status(node: &FleetNode) -> serde_json::Value {
    let out = node.run(&["cluster", "status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("cluster status --json: {e}\n{}\n{}", out.stdout, out.stderr))
}

/// Every daemon's log, each under its node's name.
pub fn logs(daemons: &[Daemon]) -> String {
    daemons.iter().enumerate().map(|(i, d)| format!("--- node-{} ---\n{}", i + 1, d.log_text())).collect()
}

/// Every node's registry serves the same leaf, the one the fleet published (not its own
/// self-signed one).
pub fn all_serve(fleet: &Fleet, sha256: &str) -> bool {
    fleet.nodes.iter().all(|n| n.registry.try_served_sha256().as_deref() == Some(sha256))
}

/// The name every node's registry serves (one certificate for the fleet).
pub const FLEET_NAME: &str = "registry.fleet.test";

/// The name of the shared certificate in every node's config.
pub const CERT: &str = "registry";

/// How long a registry may take to listen after a (re)start.
const LISTENING_WITHIN: Duration = Duration::from_secs(20);

/// A registry process under a supervisor thread that starts it again whenever it exits, the way
/// systemd or Docker's restart policy would: "restart the registry" is then just "kill it".
pub struct RegistryProcess {
    /// Config, storage, pid file, log and the last served leaf.
    dir: TempDir,
    /// `127.0.0.N:PORT`.
    pub addr: String,
    pub port: u16,
    supervisor: OnceLock<Supervisor>,
}

struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl RegistryProcess {
    /// A registry for `ip` on a free port, not started yet (it needs a pair to serve first).
    pub fn new(ip: &str) -> Self {
        let port = free_port();
        RegistryProcess { dir: tempfile::tempdir().unwrap(), addr: format!("{ip}:{port}"), port, supervisor: OnceLock::new() }
    }

    /// The file holding the running registry's process id, replaced (atomically) at each start.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("registry.pid")
    }

    /// The running registry's process id.
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.pid_file()).unwrap_or_else(|e| panic!("the registry at {} never started: {e}", self.addr));
        text.trim().parse().unwrap()
    }

    /// The registry's log, over all its restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Start serving `install_dir`'s `domain.crt`/`domain.key` (regcert's default file names),
    /// if not started yet; returns once it listens.
    pub fn ensure_started(&self, install_dir: &Path) {
        self.supervisor.get_or_init(|| {
            let config = self.dir.path().join("config.yml");
            let (cert, key, storage) = (install_dir.join("domain.crt"), install_dir.join("domain.key"), self.dir.path().join("storage"));
            let yaml = format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {:?}\n  secret: regcert-test\n  tls:\n    certificate: {:?}\n    key: {:?}\n",
                storage.display().to_string(),
                self.addr,
                cert.display().to_string(),
                key.display().to_string(),
            );
            std::fs::write(&config, yaml).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            // Looked up here: a missing registry fails the test with the install hint, not a thread.
            let program = tool("docker-registry");
            let (pid_file, log, flag) = (self.pid_file(), self.dir.path().join("registry.log"), stop.clone());
            let thread = std::thread::spawn(move || supervise(&program, &config, &pid_file, &log, &flag));
            Supervisor { stop, thread }
        });
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + LISTENING_WITHIN;
        let addr = self.addr.parse().unwrap();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen on {} within {LISTENING_WITHIN:?}:\n{}", self.addr, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A reload command as an operator would write it for a registry under a supervisor: kill it,
    /// then wait (at most 10 s) until the restarted one answers HTTPS, so that regcert's verify
    /// right after it sees the new process. Exits 1, saying why, when the registry does not return.
    pub fn reload_command(&self) -> Vec<String> {
        let script = r#"old=$(cat "$1") || exit 1
kill -TERM "$old" || { echo "no registry process $old to restart" >&2; exit 1; }
i=0
while :; do
  if [ "$(cat "$1" 2>/dev/null)" != "$old" ] && "$3" -sk -o /dev/null --max-time 1 "$2"; then exit 0; fi
  i=$((i + 1))
  if [ $i -ge 200 ]; then echo "the registry did not come back at $2 within 10 s" >&2; exit 1; fi
  sleep 0.05
done"#;
        let url = format!("https://{}/v2/", self.addr);
        let sh = tool("sh").display().to_string();
        let curl = tool("curl").display().to_string();
        vec![sh, "-c".into(), script.into(), "reload-registry".into(), self.pid_file().display().to_string(), url, curl]
    }

    /// A reload command that succeeds but does nothing: the registry keeps serving the pair it
    /// loaded at its start (a reload that "works" and reloads nothing, which verify must catch).
    pub fn broken_reload_command(&self) -> Vec<String> {
        vec![tool("true").display().to_string()]
    }

    /// The leaf the registry serves for [`FLEET_NAME`], as a PEM file (overwritten at each call).
    pub fn served_leaf(&self) -> PathBuf {
        served_leaf(&self.addr, FLEET_NAME, &self.dir.path().join("served.pem"))
    }

    /// The SHA-256 of the served leaf; `None` while nothing answers (restarting).
    pub fn try_served_sha256(&self) -> Option<String> {
        try_served_leaf(&self.addr, FLEET_NAME, &self.dir.path().join("served.pem")).ok().map(|p| leaf_sha256(&p))
    }
}

/// The supervisor's loop: start the registry, record its pid, and start it again when it exits,
/// until `stop`. It polls rather than blocks in `wait`, so that a stop between two starts is
/// never missed.
fn supervise(program: &Path, config: &Path, pid_file: &Path, log: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let started = Instant::now();
        let mut child: Child = Command::new(program)
            .arg("serve")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let tmp = pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, child.id().to_string()).unwrap();
        std::fs::rename(&tmp, pid_file).unwrap();
        while child.try_wait().unwrap().is_none() {
            if stop.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // One that dies at once (a bad pair) is not restarted in a tight loop.
        if started.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.stop.store(true, Ordering::SeqCst);
            let _ = s.thread.join();
        }
    }
}

/// The leaf a TLS server at `addr` serves for SNI `name` (openssl s_client, at most 10 s), written
/// to `path` as PEM.
pub fn served_leaf(addr: &str, name: &str, path: &Path) -> PathBuf {
    try_served_leaf(addr, name, path).unwrap_or_else(|e| panic!("{addr} served no certificate: {e}"))
}

/// [`served_leaf`], or why there is none (nothing listening: a registry restarting, say).
pub fn try_served_leaf(addr: &str, name: &str, path: &Path) -> Result<PathBuf, String> {
    let out = Command::new(tool("timeout"))
        .arg("10")
        .arg(tool("openssl"))
        .args(["s_client", "-connect", addr, "-servername", name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let start = text.find(begin).ok_or_else(|| format!("{text}{}", String::from_utf8_lossy(&out.stderr)))?;
    let stop = text[start..].find(end).ok_or("a cut-off certificate")? + start + end.len();
    std::fs::write(path, format!("{}\n", &text[start..stop])).unwrap();
    Ok(path.to_owned())
}

/// The SHA-256 of the first certificate in `pem`, uppercase hex without colons: the form of
/// regcert's own reports (`served.sha256`, `expected_sha256`).
pub fn leaf_sha256(pem: &Path) -> String {
    let out = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", pem.to_str().unwrap()]);
    let hex = out.trim().rsplit('=').next().unwrap_or_default();
    hex.replace(':', "").to_ascii_uppercase()
}

/// A fresh etcd key prefix, so that fleets of tests running side by side never see each other
/// (under [`USER_PREFIX`]: the user of a secure etcd may write there).
pub fn fleet_prefix() -> String {
    let mut random = [0u8; 6];
    aws_lc_rs::rand::fill(&mut random).unwrap();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{USER_PREFIX}{}-{hex}/", std::process::id())
}

/// The fleet's secret key (`[cluster] secret_key_file`) in `dir`: base64 of 32 random bytes on
/// one line, mode 0600 from its creation (never readable by others, even for a moment).
pub fn write_secret_key(dir: &Path) -> PathBuf {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    let path = dir.join("fleet.key");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    writeln!(file, "{}", base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    path
}

/// One regcert node of a fleet.
pub struct FleetNode {
    /// `node-i`, its `[cluster] node`.
    pub name: String,
    /// `127.0.0.(i+1)`: its registry and its HTTP-01 responder listen here.
    pub addr: String,
    pub config: PathBuf,
    /// Its state dir, install dir and config (status, meta, edits).
    pub setup: Setup,
    pub registry: RegistryProcess,
}

impl FleetNode {
    /// Node `i` (from 1) of the fleet at `prefix` in `etcd`, its config written: Pebble's `[acme]`,
    /// its responder on its own address at Pebble's HTTP-01 port, `[cluster]`, and the shared
    /// certificate [`CERT`] for [`FLEET_NAME`], reloaded by restarting its registry and verified
    /// at that registry alone. Its registry is not started ([`FleetNode::install_self_signed`]).
    pub fn new(i: usize, pebble: &Pebble, etcd: &EtcdCluster, prefix: &str, secret_key_file: &Path) -> Self {
        assert!((1..=250).contains(&i), "fleet nodes are numbered 1 to 250 (127.0.0.2 to 127.0.0.251), not {i}");
        let (name, addr) = (format!("node-{i}"), format!("127.0.0.{}", i + 1));
        let registry = RegistryProcess::new(&addr);
        let mut config = pebble_config(pebble);
        set(&mut config, "http01.listen", format!("{addr}:{}", pebble.http_port));
        config.insert(
            "cluster".into(),
            toml! {
                endpoints = (Value::from(etcd.endpoints()))
                prefix = (prefix)
                node = (name.as_str())
                secret_key_file = (secret_key_file.display().to_string())
                lease_ttl = "3s"
            }
            .into(),
        );
        let url = format!("https://{FLEET_NAME}:{}/v2/", registry.port);
        let mut keys = toml! {
            domains = (Value::from(vec![FLEET_NAME]))
            [reload]
            command = (Value::from(registry.reload_command()))
            disruptive = true
        };
        keys.insert("verify".into(), verify_table(pebble, &url, &registry.addr).into());
        let cert = CertSpec::new(CERT, keys);
        let setup = Setup::with_config(config, &[cert]);
        FleetNode { name, addr, config: setup.config.clone(), setup, registry }
    }

    pub fn install_dir(&self) -> PathBuf {
        self.setup.install_dir(CERT)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.setup.state()
    }

    pub fn fullchain(&self) -> PathBuf {
        self.setup.fullchain(CERT)
    }

    /// `regcert --config <this node's config> ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.setup.run(args)
    }

    /// `regcert run` as this node.
    #[allow(dead_code, reason = "for the fleet tests of issue 13, which land with src/cluster/")]
    pub fn start_daemon(&self) -> Daemon {
        Daemon::start(&self.config)
    }

    pub fn reload_command(&self) -> Vec<String> {
        self.registry.reload_command()
    }

    pub fn broken_reload_command(&self) -> Vec<String> {
        self.registry.broken_reload_command()
    }

    /// Install a new self-signed pair for [`FLEET_NAME`] (the node's working "old" certificate,
    /// before any from the CA) and start the registry on it if it is not running. A running
    /// registry keeps serving what it loaded until its reload command restarts it.
    pub fn install_self_signed(&self) {
        let dir = self.install_dir();
        let (key, cert) = (dir.join(".self-signed.key"), dir.join(".self-signed.crt"));
        self_signed(&key, &cert, &format!("/CN={FLEET_NAME}"), &[&format!("subjectAltName=DNS:{FLEET_NAME}")]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Renamed into place, as regcert installs: a registry starting now reads a whole pair.
        std::fs::rename(&key, dir.join("domain.key")).unwrap();
        std::fs::rename(&cert, self.fullchain()).unwrap();
        self.registry.ensure_started(&dir);
    }

    /// The SHA-256 of the leaf the node's registry serves (see [`leaf_sha256`]).
    pub fn served_sha256(&self) -> String {
        leaf_sha256(&self.registry.served_leaf())
    }

    /// The serial of the leaf the node's registry serves, as openssl prints it (`serial=…`).
    pub fn served_serial(&self) -> String {
        serial(&self.registry.served_leaf())
    }
}

/// The nodes of one fleet: one prefix, one secret key, nodes 1..=n.
pub struct Fleet {
    pub nodes: Vec<FleetNode>,
    pub prefix: String,
    pub secret_key: PathBuf,
    _key_dir: TempDir,
}

impl Fleet {
    /// `regcert run` on every node: node-1 first, until it leads (so it orders, and takes the
    /// first turn of each rollout: the canary), then the others.
    pub fn start_led_by_node1(&self) -> Vec<Daemon> {
        let mut first = self.nodes[0].start_daemon();
        first.wait_for_log("this node leads the fleet", 1, Duration::from_secs(30));
        let mut daemons = vec![first];
        daemons.extend(self.nodes[1..].iter().map(FleetNode::start_daemon));
        daemons
    }

    pub fn new(nodes: usize, pebble: &Pebble, etcd: &EtcdCluster) -> Self {
        let key_dir = tempfile::tempdir().unwrap();
        let (prefix, secret_key) = (fleet_prefix(), write_secret_key(key_dir.path()));
        let nodes = (1..=nodes).map(|i| FleetNode::new(i, pebble, etcd, &prefix, &secret_key)).collect();
        Fleet { nodes, prefix, secret_key, _key_dir: key_dir }
    }
}

impl Pebble {
    /// Make pebble-challtestsrv answer `name`'s A queries with `ipv4` alone (instead of its
    /// default 127.0.0.1), so that Pebble's validation goes to the node on that address.
    /// Same management API in Pebble 2.4 and 2.10 (`/add-a`). `/add-a` adds to the name's
    /// addresses, and the VA dials the first: what was there is cleared first.
    pub fn point_name_at(&self, name: &str, ipv4: &str) {
        self.clear_name(name);
        self.challtest_post("/add-a", &serde_json::json!({ "host": name, "addresses": [ipv4] }));
    }

    /// Undo [`Pebble::point_name_at`]: `name` resolves to the default address again.
    pub fn clear_name(&self, name: &str) {
        self.challtest_post("/clear-a", &serde_json::json!({ "host": name }));
    }

    fn challtest_post(&self, path: &str, body: &serde_json::Value) {
        let out = Command::new(tool("curl"))
            .args(["-sSf", "--max-time", "10", "-X", "POST", "--data-binary", &body.to_string()])
            .arg(format!("{}{path}", self.challtest_mgmt))
            .output()
            .unwrap();
        assert!(out.status.success(), "POST {path} {body} to pebble-challtestsrv: {}", String::from_utf8_lossy(&out.stderr));
    }
}
