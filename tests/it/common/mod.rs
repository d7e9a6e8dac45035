//! Test harness: a real Pebble (Let's Encrypt's test CA) and pebble-challtestsrv per test, on
//! free loopback ports, test configs built as TOML tables, plus helpers that run the real
//! regcert binary and inspect results with openssl.
//!
//! Every external program is found by [`tool`], every port is chosen by [`free_port`] or
//! [`listener`]. A missing program is a test failure that says how to install it, never a skip.
//!
//! [`Pebble::start`] runs Debian's Pebble 2.4; `Pebble::start_with(PebbleOpts::v2_10())` runs
//! Pebble 2.10 ([`pebble_2_10_tool`]) for what only it has: profiles, real ARI with
//! `/set-renewal-info/`, `replaces` held on its orders, longer and alternate chains.

pub mod ari_frontend;
pub mod bind;
pub mod etcd;
pub mod fleet;
pub mod registry;
pub mod stall;

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tempfile::TempDir;
use toml::{Table, Value, toml};

/// The program `name`, from $PATH or an sbin directory (not on every user's PATH). Panics with
/// the Debian package that provides it when it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    let found = std::env::split_paths(&path).chain(sbin).map(|dir| dir.join(name)).find(|p| p.is_file());
    found.unwrap_or_else(|| {
        let package = match name {
            "pebble-challtestsrv" => "pebble",
            "named" | "tsig-keygen" => "bind9",
            "dig" | "nsupdate" => "bind9-dnsutils",
            "docker" => "docker.io",
            "ctr" => "containerd",
            "htpasswd" => "apache2-utils",
            "setpriv" | "nsenter" => "util-linux",
            "tc" | "ip" => "iproute2",
            "systemd-analyze" => "systemd",
            "kill" => "procps",
            "chown" => "coreutils",
            "promtool" => "prometheus",
            "man" => "man-db",
            "dpkg-deb" | "dpkg-query" => "dpkg",
            "getent" => "libc-bin",
            "etcd" => "etcd-server",
            "etcdctl" => "etcd-client",
            other => other,
        };
        panic!(
            "`{name}` is not installed, and the tests need it: `apt-get install {package}`, or run scripts/test.sh, which installs everything the tests need"
        )
    })
}

/// Every port handed out in this process: none is handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A listener on a loopback port no other test of this process got from [`listener`] or
/// [`free_port`].
pub fn listener() -> TcpListener {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Ports already handed out stay bound here until a new one comes up, so the kernel cannot
    // offer them again in this loop.
    let mut refused = Vec::new();
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        if handed_out.insert(l.local_addr().unwrap().port()) {
            return l;
        }
        refused.push(l);
    }
}

/// A loopback port for a server the test starts (Pebble, nginx, a daemon's listener): free when
/// returned, and never returned again.
///
/// Between the return and the server's own bind the port is unbound, so it is taken below the
/// kernel's ephemeral range: no outgoing connection and no `bind(…:0)` (of [`listener`], of any
/// process) can be given it in the meantime. Each process starts at its own offset.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let (low, high) = non_ephemeral_ports();
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let span = high - low;
    let mut candidate = next.unwrap_or(low + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let port = candidate;
        candidate = if candidate + 1 >= high { low } else { candidate + 1 };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            *next = Some(candidate);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

/// Ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range), above the well-known ones.
fn non_ephemeral_ports() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_low: u16 = range.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(32768);
    assert!(ephemeral_low > 12_000, "the ephemeral port range starts at {ephemeral_low}: the tests need ports below it");
    (10_000, ephemeral_low)
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
    /// Pebble 2.10 (profiles, ARI, IP identifiers, longer chains) instead of Debian's 2.4.
    pub v2_10: bool,
    /// Pebble 2.10's PEBBLE_CHAIN_LENGTH: 1 (its default) is leaf + 1 intermediate; more adds
    /// intermediates between them and the root.
    pub chain_length: Option<u8>,
    /// Pebble 2.10's PEBBLE_ALTERNATE_ROOTS: that many alternate chains besides the default one,
    /// offered through `Link: rel="alternate"`.
    pub alternate_roots: Option<u8>,
    /// The port Pebble's VA validates HTTP-01 at, instead of a free one: a second Pebble given
    /// the first one's `http_port` validates at the same responder (several CAs, one config).
    pub http_port: Option<u16>,
}

impl PebbleOpts {
    /// Pebble 2.10 with its defaults.
    pub fn v2_10() -> Self {
        PebbleOpts { v2_10: true, ..Default::default() }
    }
}

/// The profiles the test Pebble 2.10 offers (name, lifetime in seconds), like Let's Encrypt's
/// (`classic` is Pebble's `default`). With none in the order, Pebble picks one at random.
pub const PEBBLE_PROFILES: [(&str, u64); 3] = [("default", 90 * 86_400), ("tlsserver", 45 * 86_400), ("shortlived", 6 * 86_400)];

/// Where scripts/install-deps.sh puts Pebble 2.10 (from Debian sid, beside the system's 2.4).
const PEBBLE_2_10_DEFAULT: &str = "/var/cache/regcert-test/pebble210/x/usr/bin";

/// A program of Pebble 2.10 (`pebble`, `pebble-challtestsrv`), in `$REGCERT_PEBBLE_2_10` (a
/// directory) or where scripts/install-deps.sh puts it. Missing: the test fails and says how to get it.
pub fn pebble_2_10_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("REGCERT_PEBBLE_2_10").map_or_else(|| PathBuf::from(PEBBLE_2_10_DEFAULT), PathBuf::from);
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "Pebble 2.10's `{name}` is not in {} and the tests need it: run `bash scripts/install-deps.sh` (it fetches Debian sid's pebble 2.10 into a private directory), or set REGCERT_PEBBLE_2_10 to a directory holding it",
        dir.display()
    );
    bin
}

pub struct Pebble {
    pebble: Child,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    cfg_path: PathBuf,
    dns: u16,
    listen: u16,
    challtest: Child,
    pub dir: TempDir,
    pub directory_url: String,
    pub mgmt_url: String,
    /// Port pebble's VA connects to for HTTP-01 (our responder listens here).
    pub http_port: u16,
    /// Root of pebble's own HTTPS listener (for `[acme] ca_bundle`).
    pub tls_root: PathBuf,
    /// pebble-challtestsrv: its DNS server ("127.0.0.1:PORT", what Pebble asks unless
    /// `dns_port` is set) and its management API ("http://127.0.0.1:PORT": /set-txt, /clear-txt).
    pub challtest_dns: String,
    pub challtest_mgmt: String,
}

impl Pebble {
    pub fn start() -> Self {
        Self::start_with(PebbleOpts::default())
    }

    pub fn start_with(opts: PebbleOpts) -> Self {
        let (bin, challtest_bin) = if opts.v2_10 {
            (pebble_2_10_tool("pebble"), pebble_2_10_tool("pebble-challtestsrv"))
        } else {
            (tool("pebble"), tool("pebble-challtestsrv"))
        };
        let dir = tempfile::tempdir().unwrap();
        let (tls_root, cert, key) = write_tls_material(dir.path());

        let (listen, mgmt, http_port, tls_port, own_dns, dns_mgmt) =
            (free_port(), free_port(), opts.http_port.unwrap_or_else(free_port), free_port(), free_port(), free_port());
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
        if opts.v2_10 {
            let profiles: serde_json::Map<String, serde_json::Value> = PEBBLE_PROFILES
                .iter()
                .map(|(name, secs)| {
                    (name.to_string(), serde_json::json!({"description": format!("{} days", secs / 86_400), "validityPeriod": secs}))
                })
                .collect();
            cfg["pebble"]["profiles"] = serde_json::Value::Object(profiles);
        }
        if !opts.eab.is_empty() {
            let keys: serde_json::Map<String, serde_json::Value> =
                opts.eab.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            cfg["pebble"]["externalAccountMACKeys"] = serde_json::Value::Object(keys);
        }
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        // 2.10 renamed -dns01 to -dnsserver and added a DNS-over-HTTPS listener (off here).
        let dns_flags: &[&str] = if opts.v2_10 { &["-dnsserver", "-doh", ""] } else { &["-dns01"] };
        let challtest = Command::new(challtest_bin)
            .args([dns_flags[0], &format!("127.0.0.1:{own_dns}")])
            .args(&dns_flags[1..])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let nonce_reject = opts.nonce_reject.unwrap_or(5);
        let mut env = vec![("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())];
        env.extend(opts.chain_length.map(|n| ("PEBBLE_CHAIN_LENGTH", n.to_string())));
        env.extend(opts.alternate_roots.map(|n| ("PEBBLE_ALTERNATE_ROOTS", n.to_string())));
        let pebble = spawn_pebble(&bin, dir.path(), &cfg_path, dns, &env);
        let mut me = Pebble {
            pebble,
            bin,
            env,
            cfg_path,
            dns,
            listen,
            challtest,
            directory_url: format!("https://127.0.0.1:{listen}/dir"),
            mgmt_url: format!("https://127.0.0.1:{mgmt}"),
            http_port,
            tls_root,
            dir,
            challtest_dns: format!("127.0.0.1:{own_dns}"),
            challtest_mgmt: format!("http://127.0.0.1:{dns_mgmt}"),
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
        self.root(0)
    }

    /// Pebble's root number `n` (0: the default chain's; 1…: alternate roots), as PEM in a file.
    pub fn root(&self, n: usize) -> PathBuf {
        let path = self.dir.path().join(format!("issuing-root-{n}.pem"));
        if !path.exists() {
            std::fs::write(&path, self.mgmt_get(&format!("/roots/{n}"))).unwrap();
        }
        path
    }

    /// The account at `account_url` as the CA holds it: a POST-as-GET signed with the account's
    /// key (`key_pkcs8`, base64url PKCS#8 P-256, as instant-acme stores it), sent with curl.
    pub fn account(&self, account_url: &str, key_pkcs8: &str) -> serde_json::Value {
        self.post_as_get(account_url, account_url, key_pkcs8)
    }

    /// The ACME object (JSON) at `url` as the CA holds it (an order, an account): a POST-as-GET
    /// signed with the key of the account at `account_url`.
    pub fn post_as_get(&self, url: &str, account_url: &str, key_pkcs8: &str) -> serde_json::Value {
        self.post(url, account_url, key_pkcs8, None)
    }

    /// Revoke the leaf of `fullchain` at Pebble (RFC 8555 §7.6) as the account at `account_url`,
    /// without regcert: a revocation out of band. `directory_url`: Pebble's, or that of a front
    /// the account was made through. The CA's answer (null when done).
    pub fn revoke(&self, directory_url: &str, fullchain: &Path, account_url: &str, key_pkcs8: &str, reason: u8) -> serde_json::Value {
        use base64::Engine;
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(fullchain).unwrap();
        let payload = serde_json::json!({ "certificate": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der), "reason": reason });
        let url = self.directory(directory_url)["revokeCert"].as_str().unwrap().to_owned();
        self.post(&url, account_url, key_pkcs8, Some(&payload))
    }

    /// Pebble 2.10's management view of the certificate with `serial` (as openssl prints it,
    /// `serial=…`): `Status` is "Valid" or "Revoked", with the `Reason` code.
    pub fn cert_status(&self, serial: &str) -> serde_json::Value {
        let hex = serial.trim().trim_start_matches("serial=");
        serde_json::from_str(&self.mgmt_get(&format!("/cert-status-by-serial/{hex}"))).unwrap()
    }

    fn directory(&self, url: &str) -> serde_json::Value {
        let out = Command::new(tool("curl")).args(["-sS", "--cacert", self.tls_root.to_str().unwrap(), url]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A POST of `payload` (none: a POST-as-GET) to `url`, signed with the key of the account at
    /// `account_url`, sent with curl; the answer (null when empty).
    pub fn post(&self, url: &str, account_url: &str, key_pkcs8: &str, payload: Option<&serde_json::Value>) -> serde_json::Value {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &b64.decode(key_pkcs8).unwrap()).unwrap();
        let curl = |args: &[&str]| {
            let out = Command::new(tool("curl")).args(["-sS", "--cacert", self.tls_root.to_str().unwrap()]).args(args).output().unwrap();
            assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let directory = self.directory(&self.directory_url);
        let payload = payload.map(|p| b64.encode(p.to_string())).unwrap_or_default();
        let mut last = serde_json::Value::Null;
        // Pebble rejects some nonces on purpose: ask again with a fresh one.
        for _ in 0..10 {
            let head = curl(&["-I", directory["newNonce"].as_str().unwrap()]);
            let nonce = head.lines().find_map(|l| l.to_ascii_lowercase().starts_with("replay-nonce:").then(|| l[13..].trim().to_owned()));
            let header = serde_json::json!({ "alg": "ES256", "kid": account_url, "nonce": nonce.unwrap(), "url": url });
            let protected = b64.encode(header.to_string());
            let signature = key.sign(&aws_lc_rs::rand::SystemRandom::new(), format!("{protected}.{payload}").as_bytes()).unwrap();
            let jws = serde_json::json!({ "protected": protected, "payload": payload, "signature": b64.encode(signature.as_ref()) });
            let body = curl(&["-H", "Content-Type: application/jose+json", "--data-binary", &jws.to_string(), url]);
            if body.trim().is_empty() {
                return serde_json::Value::Null;
            }
            last = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            if last["type"] != "urn:ietf:params:acme:error:badNonce" {
                return last;
            }
        }
        panic!("no answer from the CA for {url}: {last}")
    }

    /// GET a path of the management interface (roots, intermediates, cert status).
    pub fn mgmt_get(&self, path: &str) -> String {
        let out = Command::new(tool("curl"))
            .args(["-sSf", "--cacert", self.tls_root.to_str().unwrap(), &format!("{}{path}", self.mgmt_url)])
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path} from pebble's management port: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pebble 2.10: make renewalInfo answer `ari` (any JSON) for the leaf in `fullchain`.
    pub fn set_renewal_info(&self, fullchain: &Path, ari: &serde_json::Value) {
        let pem = std::fs::read_to_string(fullchain).unwrap();
        let end = "-----END CERTIFICATE-----";
        let leaf = &pem[..pem.find(end).expect("a PEM certificate") + end.len()];
        let body = serde_json::json!({ "Certificate": leaf, "ARIResponse": ari.to_string() }).to_string();
        let out = Command::new(tool("curl"))
            .args(["-sSf", "--cacert", self.tls_root.to_str().unwrap(), "-X", "POST", "--data-binary", &body])
            .arg(format!("{}/set-renewal-info/", self.mgmt_url))
            .output()
            .unwrap();
        assert!(out.status.success(), "POST /set-renewal-info/: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stop the CA (to simulate an outage).
    pub fn stop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
    }

    /// Start the CA again on the same ports (after [`Pebble::stop`]); it has new roots.
    pub fn restart(&mut self) {
        self.stop();
        self.pebble = spawn_pebble(&self.bin, self.dir.path(), &self.cfg_path, self.dns, &self.env);
        for n in 0..8 {
            let _ = std::fs::remove_file(self.dir.path().join(format!("issuing-root-{n}.pem")));
        }
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

fn spawn_pebble(bin: &Path, dir: &Path, cfg: &Path, dns: u16, env: &[(&str, String)]) -> Child {
    let log = |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).unwrap();
    Command::new(bin)
        .args(["-config", cfg.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_AUTHZREUSE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("start pebble")
}

/// A root CA and a localhost leaf it signed (for pebble's own HTTPS listener, and as a CA for
/// trust tests): the paths of root, leaf and leaf key.
pub fn write_tls_material(dir: &Path) -> (PathBuf, String, String) {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    // A name of its own (the directory's): in one bundle with another test root (acme.sh's one
    // --ca-bundle for two Pebbles), openssl picks the root by name.
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    root_params.distinguished_name.push(DnType::CommonName, format!("regcert test root {name}").trim_end());
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

/// One certificate of a test config: its name and the other keys of its `[[certificate]]` table.
pub struct CertSpec {
    name: String,
    keys: Table,
}

impl CertSpec {
    pub fn new(name: &str, keys: Table) -> Self {
        CertSpec { name: name.into(), keys }
    }

    /// More keys (replacing ones of the same name).
    pub fn with(mut self, keys: Table) -> Self {
        self.keys.extend(keys);
        self
    }

    /// A renew_before longer than Pebble's 5-year lifetime: due at every check, without any
    /// test-only code path.
    pub fn always_due(self) -> Self {
        self.with(toml! { renew_before = "3000d" })
    }
}

/// An ACME certificate for `domains` with a `key` type.
pub fn cert(name: &str, domains: &[&str], key: &str) -> CertSpec {
    CertSpec::new(name, toml! { domains = (Value::from(domains.to_vec())) key = (key) })
}

/// The `[acme]` and `[http01]` parts of a config for the test Pebble.
pub fn pebble_config(pebble: &Pebble) -> Table {
    toml! {
        [acme]
        directory = (pebble.directory_url.as_str())
        contact = ["mailto:ops@example.com"]
        accept_terms = true
        ca_bundle = (pebble.tls_root.display().to_string())

        [http01]
        listen = (format!("127.0.0.1:{}", pebble.http_port))
    }
}

/// The table `key` of `table`, made if missing.
pub fn table<'a>(table: &'a mut Table, key: &str) -> &'a mut Table {
    table.entry(key).or_insert_with(|| Table::new().into()).as_table_mut().unwrap()
}

/// A `[certificate.verify]` table: `url` through `connect_to`, trusting Pebble's issuing root.
pub fn verify_table(pebble: &Pebble, url: &str, connect_to: &str) -> Table {
    toml! {
        url = (url)
        connect_to = (connect_to)
        ca_bundle = (pebble.issuing_root().display().to_string())
        timeout = "20s"
    }
}

/// Set `value` at the dotted `path` in `config` (tables on the way made if missing).
pub fn set(config: &mut Table, path: &str, value: impl Into<Value>) {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    let parent = keys.into_iter().fold(config, |t, key| table(t, key));
    parent.insert(last.into(), value.into());
}

/// The `[[certificate]]` named `name`.
pub fn certificate<'a>(config: &'a mut Table, name: &str) -> &'a mut Table {
    let certs = config["certificate"].as_array_mut().unwrap();
    certs.iter_mut().filter_map(Value::as_table_mut).find(|c| c["name"].as_str() == Some(name)).unwrap()
}

/// Change the config file at `path` as a TOML table.
pub fn edit_toml(path: &Path, f: impl FnOnce(&mut Table)) {
    let mut config: Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    f(&mut config);
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// A config for one certificate, `registry`, from the private CA "internal" (no ACME anywhere).
pub fn ca_setup(ca: Table, cert: Table) -> Setup {
    let config = toml! { [ca] internal = (Value::from(ca)) };
    Setup::with_config(config, &[CertSpec::new("registry", toml! { issuer = "ca:internal" }).with(cert)])
}

/// A test setup: state dir, one install dir per certificate, and a config file.
pub struct Setup {
    pub root: TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Certificates from the test Pebble.
    pub fn new(pebble: &Pebble, certs: &[CertSpec]) -> Self {
        Self::with_config(pebble_config(pebble), certs)
    }

    /// `config` with a state_dir and `certs`, each installed into a directory of its own.
    pub fn with_config(mut config: Table, certs: &[CertSpec]) -> Self {
        let root = tempfile::tempdir().unwrap();
        set(&mut config, "state_dir", root.path().join("state").display().to_string());
        let mut tables = Vec::new();
        for c in certs {
            let install = root.path().join("install").join(&c.name);
            std::fs::create_dir_all(&install).unwrap();
            let mut t = toml! { name = (c.name.as_str()) };
            t.extend(c.keys.clone());
            set(&mut t, "install.dir", install.display().to_string());
            tables.push(Value::from(t));
        }
        if !tables.is_empty() {
            config.insert("certificate".into(), tables.into());
        }
        let path = root.path().join("config.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        Setup { root, config: path }
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
    /// Run as user `nobody` (which may not write what root made).
    pub fn run_as_nobody(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(tool("setpriv"));
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(regcert_bin()).arg("--config");
        output(cmd.arg(&self.config).args(args).env_remove("RUST_LOG"))
    }
    pub fn edit(&self, f: impl FnOnce(&mut Table)) {
        edit_toml(&self.config, f)
    }
    /// The stored ACME account's (URL, base64url PKCS#8 key), as instant-acme keeps them.
    pub fn account_credentials(&self) -> (String, String) {
        let file = std::fs::read_dir(self.state().join("accounts")).unwrap().next().unwrap().unwrap().path();
        credentials(&serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap())
    }

    /// [`Setup::account_credentials`] of the account kept for the CA at `directory` (one of
    /// several); `None` when there is none.
    pub fn account_for(&self, directory: &str) -> Option<(String, String)> {
        let files = std::fs::read_dir(self.state().join("accounts")).ok()?;
        let stored = files.map(|f| serde_json::from_slice::<serde_json::Value>(&std::fs::read(f.unwrap().path()).unwrap()).unwrap());
        stored.into_iter().find(|s| s["directory"] == directory).map(|s| credentials(&s))
    }

    /// The certificate's record in state_dir (`meta.json`).
    pub fn meta(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state().join("certs").join(name).join("meta.json")).unwrap()).unwrap()
    }

    /// `status --json`'s entry for the certificate `name`.
    pub fn status_of(&self, name: &str) -> serde_json::Value {
        let st = self.run(&["status", "--json"]);
        assert_eq!(st.code, 0, "{st:?}");
        let all: serde_json::Value = serde_json::from_str(&st.stdout).unwrap_or_else(|e| panic!("{e}: {st:?}"));
        let cert = all.as_array().and_then(|a| a.iter().find(|c| c["name"] == name)).cloned();
        cert.unwrap_or_else(|| panic!("no {name} in {all}"))
    }
    /// Change the `[[certificate]]` named `name`.
    pub fn edit_cert(&self, name: &str, f: impl FnOnce(&mut Table)) {
        self.edit(|config| f(certificate(config, name)))
    }
}

/// (URL, base64url PKCS#8 key) of a stored ACME account (state_dir's accounts/*.json).
fn credentials(stored: &serde_json::Value) -> (String, String) {
    let field = |k: &str| stored["credentials"][k].as_str().unwrap_or_else(|| panic!("no {k} in {stored}")).to_owned();
    (field("id"), field("key_pkcs8"))
}

/// A static web server (`python3 -m http.server`) serving `dir` on 127.0.0.1:`port`: the web
/// server that already owns the HTTP-01 port in webroot mode. Stopped when dropped.
pub struct StaticServer(Child);

impl StaticServer {
    pub fn start(dir: &Path, port: u16) -> Self {
        let mut server = Command::new(tool("python3"))
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.try_wait().unwrap() {
                panic!("python3 -m http.server exited ({status})");
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                panic!("python3 -m http.server did not listen on {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        StaticServer(server)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The regcert binary under test: the one cargo built with these tests, or the one named by
/// `REGCERT_BIN` (scripts/test.sh points it at the release build, the binary users get). A
/// `REGCERT_BIN` that is not an executable file fails the test; it never falls back.
pub fn regcert_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("REGCERT_BIN") {
        None => PathBuf::from(env!("CARGO_BIN_EXE_regcert")),
        Some(bin) => {
            let bin = std::fs::canonicalize(&bin).unwrap_or_else(|e| panic!("REGCERT_BIN={}: {e}", Path::new(&bin).display()));
            let executable = std::fs::metadata(&bin).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            assert!(executable, "REGCERT_BIN={} is not an executable file", bin.display());
            bin
        }
    })
    .clone()
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
    regcert_bare_env(&[], args)
}

/// The same, with extra environment variables.
pub fn regcert_bare_env(env: &[(&str, &Path)], args: &[&str]) -> Run {
    output(Command::new(regcert_bin()).args(args).envs(env.iter().copied()))
}

pub fn regcert(config: &Path, args: &[&str]) -> Run {
    output(Command::new(regcert_bin()).arg("--config").arg(config).args(args).env_remove("RUST_LOG"))
}

pub fn output(cmd: &mut Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
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
    let out = Command::new(tool("openssl")).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// A self-signed ECDSA P-256 certificate for `subject` (`/CN=…`) with `extensions` (each an
/// openssl `-addext` value), valid for a year: its key in `key`, the certificate in `cert`.
pub fn self_signed(key: &Path, cert: &Path, subject: &str, extensions: &[&str]) {
    let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "365", "-subj", subject];
    for ext in extensions {
        args.extend(["-addext", ext]);
    }
    args.extend(["-keyout", key, "-out", cert]);
    openssl(&args);
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

/// The first certificate's notBefore and notAfter as read by openssl, in Unix seconds.
pub fn validity(pem: &Path) -> (u64, u64) {
    let out = openssl(&["x509", "-noout", "-dates", "-dateopt", "iso_8601", "-in", pem.to_str().unwrap()]);
    let date = |key: &str| {
        let v = out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {out}"));
        unix_from_iso(v.trim())
    };
    (date("notBefore="), date("notAfter="))
}

/// `YYYY-MM-DD HH:MM:SSZ` (openssl's iso_8601) in Unix seconds (days from the civil date, as in
/// Howard Hinnant's algorithm).
fn unix_from_iso(v: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| v[r].parse::<i64>().unwrap_or_else(|_| panic!("bad date {v:?}"));
    let (y, m, d, hh, mm, ss) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3_600 + mm * 60 + ss) as u64
}

#[test]
fn unix_from_iso_known_answers() {
    assert_eq!(unix_from_iso("1970-01-01 00:00:00Z"), 0);
    assert_eq!(unix_from_iso("2000-03-01 00:00:00Z"), 951_868_800);
    assert_eq!(unix_from_iso("2026-12-01 13:01:36Z"), 1_796_130_096);
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
        let listener = listener();
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
        let child = Command::new(regcert_bin())
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
        let ok = Command::new(tool("kill")).args(["-s", sig, &self.child.id().to_string()]).status().unwrap().success();
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
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(body) } else { body.to_owned() })
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus' API answers so). Sizes count
/// bytes, and a chunk may end inside a character: decoded as bytes.
fn dechunk(body: &str) -> String {
    let (mut rest, mut out) = (body.as_bytes(), Vec::new());
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16).unwrap_or(0);
        let data = &rest[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// `regcert ca export internal`, in a file (the private CA's root, to verify against).
pub fn export_root(s: &Setup) -> PathBuf {
    let run = s.run(&["ca", "export", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let p = s.root.path().join("exported-root.pem");
    std::fs::write(&p, run.stdout).unwrap();
    p
}

/// What a daemon test watches: a webhook and the metrics endpoint on a free port.
pub struct Watched {
    pub hook: Webhook,
    /// `127.0.0.1:PORT` of `[metrics] listen`.
    pub metrics: String,
}

impl Watched {
    pub fn start() -> Self {
        Watched { hook: Webhook::start(), metrics: format!("127.0.0.1:{}", free_port()) }
    }

    /// `[daemon]` with only the check at start-up (the schedule's next tick is next 1 January),
    /// `[metrics]` and the webhook as `[[notify]]`.
    pub fn settings(&self) -> Table {
        toml! {
            [daemon]
            check = "0 0 0 1 1 *"

            [metrics]
            listen = (self.metrics.as_str())

            [[notify]]
            webhook = (self.hook.url.as_str())
        }
    }
}
