//! Test harness: a real Pebble (Let's Encrypt's test CA) and pebble-challtestsrv per test, on
//! free loopback ports, plus helpers that run the real regcert binary and inspect results with
//! openssl. A missing pebble is a test failure, never a skip.
#![allow(dead_code)]

pub mod ari_frontend;
pub mod bind;
pub mod registry;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tempfile::TempDir;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("`{tool}` is not installed; the tests need it. Run scripts/test.sh, which installs everything (apt-get install pebble openssl)");
}

#[derive(Default, Clone)]
pub struct PebbleOpts {
    /// (kid, base64url HMAC key) pairs; when set, pebble requires EAB.
    pub eab: Vec<(String, String)>,
    pub blocklist: Vec<String>,
    /// Percentage of nonces Pebble rejects with badNonce (Pebble's default is 5).
    pub nonce_reject: Option<u8>,
    /// Port of a DNS server (on 127.0.0.1) for Pebble's validation instead of pebble-challtestsrv.
    pub dns_port: Option<u16>,
}

pub struct Pebble {
    pebble: Child,
    cfg_path: PathBuf,
    dns: u16,
    listen: u16,
    nonce_reject: u8,
    challtest: Child,
    pub dir: TempDir,
    pub directory_url: String,
    pub mgmt_url: String,
    /// Port pebble's VA connects to for HTTP-01 (our responder listens here).
    pub http_port: u16,
    /// Root of pebble's own HTTPS listener (for `[acme] ca_bundle`).
    pub tls_root: PathBuf,
}

impl Pebble {
    pub fn start() -> Self {
        Self::start_with(PebbleOpts::default())
    }

    pub fn start_with(opts: PebbleOpts) -> Self {
        let challtest_bin = require("pebble-challtestsrv");
        let dir = tempfile::tempdir().unwrap();
        let (tls_root, cert, key) = write_tls_material(dir.path());

        let (listen, mgmt, http_port, tls_port, own_dns, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
        let dns = opts.dns_port.unwrap_or(own_dns);
        let mut cfg = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": !opts.eab.is_empty(),
                "domainBlocklist": opts.blocklist,
            }
        });
        if !opts.eab.is_empty() {
            let keys: serde_json::Map<String, serde_json::Value> =
                opts.eab.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            cfg["pebble"]["externalAccountMACKeys"] = serde_json::Value::Object(keys);
        }
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtest = Command::new(challtest_bin)
            .args(["-dns01", &format!("127.0.0.1:{own_dns}"), "-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let nonce_reject = opts.nonce_reject.unwrap_or(5);
        let pebble = spawn_pebble(dir.path(), &cfg_path, dns, nonce_reject);
        let mut me = Pebble {
            pebble,
            cfg_path,
            dns,
            listen,
            nonce_reject,
            challtest,
            directory_url: format!("https://127.0.0.1:{listen}/dir"),
            mgmt_url: format!("https://127.0.0.1:{mgmt}"),
            http_port,
            tls_root,
            dir,
        };
        me.wait_for_port(listen);
        me.wait_for_port(mgmt);
        me.wait_for_port(dns_mgmt);
        me
    }

    fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.pebble.try_wait() {
                panic!("pebble exited ({status}): {}", self.logs());
            }
            assert!(Instant::now() < deadline, "pebble did not listen on {port}: {}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pebble's issuing root (new at every start), as PEM in a file.
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        if !path.exists() {
            let out = Command::new("curl")
                .args(["-sSf", "--cacert", self.tls_root.to_str().unwrap(), &format!("{}/roots/0", self.mgmt_url)])
                .output()
                .expect("curl is needed to fetch pebble's root");
            assert!(out.status.success(), "fetching pebble's root: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(&path, out.stdout).unwrap();
        }
        path
    }

    /// Stop the CA (to simulate an outage).
    pub fn stop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
    }

    /// Start the CA again on the same ports (after [`Pebble::stop`]); it has new roots.
    pub fn restart(&mut self) {
        self.stop();
        self.pebble = spawn_pebble(self.dir.path(), &self.cfg_path, self.dns, self.nonce_reject);
        let _ = std::fs::remove_file(self.dir.path().join("issuing-root.pem"));
        self.wait_for_port(self.listen);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in [&mut self.pebble, &mut self.challtest] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_pebble(dir: &Path, cfg: &Path, dns: u16, nonce_reject: u8) -> Child {
    let log = |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).unwrap();
    Command::new(require("pebble"))
        .args(["-config", cfg.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_AUTHZREUSE", "0")
        .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("start pebble")
}

/// A root CA and a localhost leaf for pebble's own HTTPS listener.
fn write_tls_material(dir: &Path) -> (PathBuf, String, String) {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.distinguished_name.push(DnType::CommonName, "regcert test root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let (root_path, cert_path, key_path) = (dir.join("tls-root.pem"), dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    std::fs::write(&root_path, root.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    (root_path, cert_path.to_str().unwrap().into(), key_path.to_str().unwrap().into())
}

/// One certificate of a test config.
pub struct CertSpec {
    pub name: String,
    pub domains: Vec<String>,
    pub key: String,
    /// Extra keys of the [[certificate]] table.
    pub extra: String,
    /// Sub-tables written after [certificate.install] (reload, verify).
    pub tables: String,
}

pub fn cert(name: &str, domains: &[&str], key: &str) -> CertSpec {
    CertSpec {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        key: key.into(),
        extra: String::new(),
        tables: String::new(),
    }
}

/// A test setup: state dir, one install dir per certificate, and a config file.
pub struct Setup {
    pub root: TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(pebble: &Pebble, certs: &[CertSpec]) -> Self {
        Self::with_acme_extra(pebble, certs, "")
    }

    pub fn with_acme_extra(pebble: &Pebble, certs: &[CertSpec], acme_extra: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut toml = format!(
            "state_dir = \"{state}\"\n\n[acme]\ndirectory = \"{dir}\"\ncontact = [\"mailto:ops@example.com\"]\naccept_terms = true\nca_bundle = \"{ca}\"\n{acme_extra}\n\n[http01]\nlisten = \"127.0.0.1:{port}\"\n",
            state = root.path().join("state").display(),
            dir = pebble.directory_url,
            ca = pebble.tls_root.display(),
            port = pebble.http_port,
        );
        for c in certs {
            let install = root.path().join("install").join(&c.name);
            std::fs::create_dir_all(&install).unwrap();
            let domains: Vec<String> = c.domains.iter().map(|d| format!("\"{d}\"")).collect();
            toml.push_str(&format!(
                "\n[[certificate]]\nname = \"{}\"\ndomains = [{}]\nkey = \"{}\"\n{}\n[certificate.install]\ndir = \"{}\"\n{}\n",
                c.name,
                domains.join(", "),
                c.key,
                c.extra,
                install.display(),
                c.tables
            ));
        }
        let config = root.path().join("config.toml");
        std::fs::write(&config, toml).unwrap();
        Setup { root, config }
    }

    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn install_dir(&self, name: &str) -> PathBuf {
        self.root.path().join("install").join(name)
    }
    pub fn fullchain(&self, name: &str) -> PathBuf {
        self.install_dir(name).join("domain.crt")
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.install_dir(name).join("domain.key")
    }
    pub fn run(&self, args: &[&str]) -> Run {
        regcert(&self.config, args)
    }
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, f(text)).unwrap();
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The regcert binary without a config (trust, import).
pub fn regcert_bare(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_regcert")).args(args).stdin(Stdio::null()).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

pub fn regcert(config: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_regcert"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl` with args; returns stdout, panics with stderr on failure.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new(require("openssl")).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// The fullchain verifies against `root` with openssl, using only the intermediates it carries.
pub fn assert_chain_verifies(fullchain: &Path, root: &Path) {
    let fc = fullchain.to_str().unwrap();
    let out = openssl(&["verify", "-CAfile", root.to_str().unwrap(), "-untrusted", fc, fc]);
    assert!(out.contains(": OK"), "openssl verify: {out}");
}

/// The private key belongs to the fullchain's leaf (compared public keys, by openssl).
pub fn assert_key_matches(fullchain: &Path, key: &Path) {
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in", fullchain.to_str().unwrap()]);
    let key_pub = openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()]);
    assert_eq!(cert_pub, key_pub, "installed key does not match installed certificate");
}

pub fn cert_text(fullchain: &Path) -> String {
    openssl(&["x509", "-noout", "-text", "-in", fullchain.to_str().unwrap()])
}

pub fn serial(fullchain: &Path) -> String {
    openssl(&["x509", "-noout", "-serial", "-in", fullchain.to_str().unwrap()])
}

pub fn pem_count(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
}

/// A test HTTP server that records the bodies POSTed to it (a notification webhook).
pub struct Webhook {
    pub url: String,
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    pub fn start() -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                sink.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                let _ = reader.get_mut().write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        Webhook { url, bodies }
    }

    /// Wait until a body contains `text`; returns it.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.bodies.lock().unwrap().iter().find(|b| b.contains(text)) {
                return b.clone();
            }
            assert!(Instant::now() < deadline, "no webhook body with {text:?}; got {:?}", self.bodies.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running `regcert run`, its log in a file.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path) -> Self {
        let log = config.with_extension("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_regcert"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "regcert=debug")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has `count` lines containing `text`.
    pub fn wait_for_log(&mut self, text: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(text).count() < count {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("regcert run exited ({status}) before logging {text:?}:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "regcert run did not log {text:?} {count} time(s):\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -s {sig}");
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait for the exit code.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "regcert run did not exit:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a plain-HTTP URL on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

pub fn rfc3339(secs: u64) -> String {
    regcert::notify::rfc3339(secs)
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
