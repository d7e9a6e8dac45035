//! A real etcd cluster for the fleet tests: Debian's `etcd-server` 3.4, N members on 127.0.0.1,
//! each its own process with its own data directory, so that a test can stop, SIGKILL and restart
//! members (quorum lost and regained) the way an operator's cluster fails. Read and written with
//! the real `etcdctl`, so what a test sees in etcd is what an operator would see.
//!
//! [`EtcdCluster::start_secure`] makes the cluster an operator should run: clients over https
//! (a server certificate from a test CA), optionally `--client-cert-auth`, and etcd's auth on
//! with a user whose role may read and write the fleets' prefixes only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use tempfile::TempDir;

use super::{free_port, tool, write_tls_material};

/// How long a cluster (or a member that rejoins) may take to answer health checks: ~2 s on an
/// idle machine, more when the machine's two cores are busy compiling.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// The prefix under which the user of a secure cluster may read and write: every fleet's
/// prefix starts with it ([`super::fleet::fleet_prefix`]).
pub const USER_PREFIX: &str = "/regcert-test-";

/// One member: its ports stay the same across restarts, so its peers find it again.
struct Member {
    name: String,
    peer: u16,
    client: u16,
    process: Option<Child>,
    /// "http" or "https" (clients only: the peers talk plain HTTP on loopback).
    scheme: &'static str,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client)
    }
}

/// What a secure cluster asks of its clients, beyond https and a user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Security {
    /// `--client-cert-auth`: a client must present a certificate from the client CA.
    pub client_cert_auth: bool,
    /// `--auth-token-ttl` in seconds (etcd's default: 300): how long an unused token lives.
    pub auth_token_ttl: Option<u32>,
}

/// What a client of a secure cluster needs: the CA of the members' certificates, a client
/// certificate, and an etcd user (allowed under [`USER_PREFIX`]) with its password in a file.
pub struct Credentials {
    pub ca: PathBuf,
    /// The CA etcd trusts for client certificates (not the members' CA: it need not be).
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub user: String,
    pub password: String,
    /// The password on one line, mode 0600 (`[cluster] password_file`).
    pub password_file: PathBuf,
    /// The server pair every member serves (SANs localhost and 127.0.0.1).
    server_cert: PathBuf,
    server_key: PathBuf,
    root_password: String,
}

struct Secure {
    security: Security,
    credentials: Credentials,
    /// etcdctl's `--user root:…`, once auth is enabled.
    admin: Option<String>,
}

pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
    /// `n1=http://127.0.0.1:P1,…`: every member's peer URL, given to each at start.
    initial_cluster: String,
    secure: Option<Secure>,
}

impl EtcdCluster {
    /// A new `members`-member cluster, healthy on every member when returned.
    pub fn start(members: usize) -> Self {
        Self::launch(members, tempfile::tempdir().unwrap(), None)
    }

    /// A new cluster whose clients use https and authenticate as [`Credentials::user`] (etcd's
    /// auth enabled, a root user for the harness's own etcdctl), healthy when returned.
    pub fn start_secure(members: usize, security: Security) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pair = |sub: &str| {
            let at = dir.path().join(sub);
            std::fs::create_dir(&at).unwrap();
            let (ca, cert, key) = write_tls_material(&at);
            (ca, PathBuf::from(cert), PathBuf::from(key))
        };
        let (ca, server_cert, server_key) = pair("server");
        let (client_ca, client_cert, client_key) = pair("client");
        let password = random_hex();
        let password_file = dir.path().join("etcd-password");
        write_private(&password_file, &format!("{password}\n"));
        let credentials = Credentials {
            ca,
            client_ca,
            client_cert,
            client_key,
            user: "regcert".into(),
            password,
            password_file,
            server_cert,
            server_key,
            root_password: random_hex(),
        };
        let mut cluster = Self::launch(members, dir, Some(Secure { security, credentials, admin: None }));
        cluster.enable_auth();
        cluster
    }

    fn launch(members: usize, dir: TempDir, secure: Option<Secure>) -> Self {
        assert!(members > 0, "an etcd cluster needs at least one member");
        // A missing program fails here, with its install hint, not halfway through a test.
        for program in ["etcd", "etcdctl"] {
            tool(program);
        }
        let scheme = if secure.is_some() { "https" } else { "http" };
        let members: Vec<Member> = (1..=members)
            .map(|i| Member { name: format!("n{i}"), peer: free_port(), client: free_port(), process: None, scheme })
            .collect();
        let initial_cluster = members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { dir, members, initial_cluster, secure };
        for i in 0..cluster.members.len() {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy();
        cluster
    }

    /// The root user, the test user and its role (read-write under [`USER_PREFIX`]), then
    /// `auth enable`: from here on the harness's etcdctl is root.
    fn enable_auth(&mut self) {
        let c = &self.secure.as_ref().unwrap().credentials;
        let root_password = format!("--new-user-password={}", c.root_password);
        let password = format!("--new-user-password={}", c.password);
        let endpoints = self.running_endpoints();
        let steps: [&[&str]; 7] = [
            &["user", "add", "root", &root_password],
            &["user", "grant-role", "root", "root"],
            &["user", "add", &c.user, &password],
            &["role", "add", "regcert-fleet"],
            &["role", "grant-permission", "--prefix=true", "regcert-fleet", "readwrite", USER_PREFIX],
            &["user", "grant-role", &c.user, "regcert-fleet"],
            &["auth", "enable"],
        ];
        for step in steps {
            self.etcdctl(&endpoints, step, None).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        }
        let admin = format!("root:{}", c.root_password);
        self.secure.as_mut().unwrap().admin = Some(admin);
        self.wait_healthy();
    }

    /// The TLS material and the user of a cluster from [`EtcdCluster::start_secure`].
    pub fn credentials(&self) -> &Credentials {
        &self.secure.as_ref().expect("this etcd cluster was started without TLS and auth").credentials
    }

    /// The client URLs of every member, running or not (what a node's `[cluster] endpoints` lists).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Start member `i` with `state` ("new" for the first start; "existing" to rejoin with its
    /// data directory, which etcd then reads instead of the initial-cluster flags).
    fn spawn(&mut self, i: usize, state: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).unwrap();
        let m = &self.members[i];
        assert!(m.process.is_none(), "etcd member {i} ({}) is already running", m.name);
        let (peer, client) = (format!("http://127.0.0.1:{}", m.peer), m.endpoint());
        let mut tls: Vec<String> = Vec::new();
        if let Some(Secure { security, credentials: c, .. }) = &self.secure {
            tls.extend([
                "--cert-file".into(),
                c.server_cert.display().to_string(),
                "--key-file".into(),
                c.server_key.display().to_string(),
            ]);
            if security.client_cert_auth {
                tls.extend(["--client-cert-auth".into(), "--trusted-ca-file".into(), c.client_ca.display().to_string()]);
            }
            tls.extend(security.auth_token_ttl.map(|ttl| format!("--auth-token-ttl={ttl}")));
        }
        let child = Command::new(tool("etcd"))
            .args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            // One token per cluster: members of another test's cluster can never join this one.
            .args(["--initial-cluster-token", &self.dir.path().display().to_string()])
            .args(&tls)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start etcd member {}: {e}", m.name));
        self.members[i].process = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    /// The last lines of every member's log, for a failure message.
    pub fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        (0..self.members.len()).map(|i| format!("--- etcd {}\n{}\n", self.members[i].name, tail(&self.log_path(i)))).collect()
    }

    /// Stop member `i` cleanly (SIGTERM, as systemd would), waiting until it has exited.
    pub fn stop_member(&mut self, i: usize) {
        let mut child = self.members[i].process.take().unwrap_or_else(|| panic!("etcd member {i} is not running"));
        let _ = Command::new(tool("kill")).args(["-s", "TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill(); // a member that ignores SIGTERM still goes
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// SIGKILL member `i`: a crash, with no chance to flush or say goodbye to its peers.
    pub fn kill_member(&mut self, i: usize) {
        let mut child = self.members[i].process.take().unwrap_or_else(|| panic!("etcd member {i} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start a stopped or killed member again, from its data directory. Returns once it accepts
    /// client connections; it is healthy only when a quorum runs ([`EtcdCluster::wait_healthy`]).
    pub fn start_member(&mut self, i: usize) {
        self.spawn(i, "existing");
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", self.members[i].client)).is_err() {
            if let Some(status) = self.members[i].process.as_mut().unwrap().try_wait().unwrap() {
                panic!("etcd member {i} exited ({status}) on restart:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "etcd member {i} did not listen on restart:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop every running member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_some() {
                self.stop_member(i);
            }
        }
    }

    /// Start every stopped member and wait until the whole cluster is healthy again.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy();
    }

    /// Wait until every running member passes `etcdctl endpoint health` (it commits a proposal
    /// through raft, so this also means a leader and a quorum). Panics with the logs after ~20 s.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let running: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].process.is_some()).collect();
        loop {
            let unhealthy: Vec<usize> = running.iter().copied().filter(|&i| !self.healthy(i)).collect();
            if unhealthy.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd members {unhealthy:?} not healthy within {HEALTHY_WITHIN:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Does member `i` answer `etcdctl endpoint health` (false when stopped, or without quorum)?
    /// A member that refuses connections is not asked: etcdctl would wait out its timeout.
    pub fn healthy(&self, i: usize) -> bool {
        let listening = std::net::TcpStream::connect(("127.0.0.1", self.members[i].client)).is_ok();
        listening && self.etcdctl(&[self.members[i].endpoint()], &["endpoint", "health"], None).is_ok()
    }

    /// The member that is the raft leader, as the running members report it; waits (bounded)
    /// through an election, e.g. right after the leader was stopped.
    pub fn leader_member(&self) -> usize {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let status = self.etcdctl(&self.running_endpoints(), &["endpoint", "status", "-w", "json"], None).unwrap_or_default();
            let status: serde_json::Value = serde_json::from_slice(&status).unwrap_or_default();
            let leader = status.as_array().into_iter().flatten().find(|s| {
                let id = &s["Status"]["header"]["member_id"];
                id.as_u64().is_some() && *id == s["Status"]["leader"]
            });
            if let Some(endpoint) = leader.and_then(|s| s["Endpoint"].as_str()) {
                return self.members.iter().position(|m| m.endpoint() == endpoint).unwrap();
            }
            assert!(Instant::now() < deadline, "no etcd member is leader within {HEALTHY_WITHIN:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client URLs of the running members: etcdctl is never sent to one known to be down.
    fn running_endpoints(&self) -> Vec<String> {
        let running: Vec<String> = self.members.iter().filter(|m| m.process.is_some()).map(Member::endpoint).collect();
        // With no endpoint at all etcdctl would try its default, localhost:2379: someone else's etcd.
        assert!(!running.is_empty(), "no member of this etcd cluster is running");
        running
    }

    /// The value of `key` (a linearizable read through any running member); None when absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.read(&self.running_endpoints(), &[key, "--consistency=l"]).into_iter().next().map(|(_, v)| v)
    }

    /// The value of `key` in member `i`'s own copy (a serializable read, answered by that member
    /// alone): shows whether a member that was down has caught up.
    pub fn get_at(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        self.read(&[self.members[i].endpoint()], &[key, "--consistency=s"]).into_iter().next().map(|(_, v)| v)
    }

    /// Every (key, value) under `prefix`, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.read(&self.running_endpoints(), &[prefix, "--prefix", "--consistency=l"])
    }

    /// `etcdctl get … -w json`, whose keys and values are base64: exact bytes, binary included.
    fn read(&self, endpoints: &[String], args: &[&str]) -> Vec<(String, Vec<u8>)> {
        let mut argv = vec!["get", "-w", "json"];
        argv.extend(args);
        let out = self.etcdctl(endpoints, &argv, None).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        let answer: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("etcdctl get -w json: {e}"));
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap();
        let kvs = answer["kvs"].as_array().cloned().unwrap_or_default(); // no "kvs" at all when nothing matched
        kvs.iter().map(|kv| (String::from_utf8(b64(&kv["key"])).unwrap(), b64(&kv["value"]))).collect()
    }

    /// Put `value` at `key`. The value goes through stdin: any bytes, and one starting with `-`
    /// is not taken for a flag.
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) {
        self.etcdctl(&self.running_endpoints(), &["put", key], Some(value.as_ref())).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// `etcdctl` (API v3) against `endpoints`, `stdin` fed to it; its stdout, or what went wrong.
    /// Timeouts are short: a request to a cluster without quorum fails in seconds, not hangs.
    /// On a secure cluster it trusts the members' CA, presents the client certificate and,
    /// once auth is on, is root.
    fn etcdctl(&self, endpoints: &[String], args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let mut secure = Vec::new();
        if let Some(Secure { credentials: c, admin, .. }) = &self.secure {
            secure.extend([format!("--cacert={}", c.ca.display()), format!("--cert={}", c.client_cert.display())]);
            secure.push(format!("--key={}", c.client_key.display()));
            secure.extend(admin.as_ref().map(|a| format!("--user={a}")));
        }
        run_etcdctl(endpoints, &secure, args, stdin)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `etcdctl` (API v3) with the `secure` flags, see [`EtcdCluster::etcdctl`].
fn run_etcdctl(endpoints: &[String], secure: &[String], args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new(tool("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints.join(","), "--dial-timeout=2s", "--command-timeout=5s"])
        .args(secure)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // An etcdctl that exits early closes its stdin: its own error says why, not this write's.
    let _ = input.write_all(stdin.unwrap_or_default());
    drop(input); // end of the value
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("etcdctl {args:?} at {endpoints:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// 16 random bytes in hex: a password no other test (or log) could hold by chance.
fn random_hex() -> String {
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random).unwrap();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `text` to a new file of mode 0600 (from its creation: never readable by others).
fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}
