//! A real authoritative DNS server for the tests: BIND 9 (`named`) serving the zone
//! `regcert.test.` on a free loopback port, with RFC 2136 updates allowed for TSIG keys of
//! every algorithm regcert supports.
//!
//! The zone's NS records point at real servers: an NS record has no port, so every server also
//! listens on an address of its own, 127.53.X.Y:53, added to `lo` for the test
//! ([`LoopbackAddr`]), and regcert's propagation check finds it through the zone's NS set. A
//! second server can be a secondary that follows the primary by NOTIFY and zone transfer, or a
//! stale copy of the zone that never learns of updates.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, tool};

pub const ZONE: &str = "regcert.test.";

/// The TSIG algorithms BIND and regcert share; a key of each may update the zone.
pub const ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

pub struct Bind {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Port on 127.0.0.1 (Pebble and the update client use it).
    pub port: u16,
    /// The BIND key file (nsupdate -k format, hmac-sha256) allowed to update the zone.
    pub key_file: PathBuf,
    /// The address this server also answers on, port 53: where the zone's NS records point.
    pub ns: LoopbackAddr,
}

#[derive(Default)]
pub struct BindOpts {
    /// The address it also answers on, port 53 (default: a fresh one).
    pub ns: Option<LoopbackAddr>,
    /// The zone's NS set as (name in the zone, address); default: `ns` at the port-53 address.
    pub ns_set: Vec<(String, String)>,
    /// More lines for the zone file.
    pub records: String,
    /// Be a secondary of this primary (the address of a server with `ns`). A primary NOTIFYs
    /// the addresses of its NS set, as a real one does.
    pub secondary_of: Option<String>,
}

/// A fresh TSIG key in BIND's key file format.
pub fn tsig_key(name: &str) -> String {
    tsig_key_with(name, "hmac-sha256")
}

/// A fresh TSIG key of `algorithm` in BIND's key file format.
pub fn tsig_key_with(name: &str, algorithm: &str) -> String {
    let out = Command::new(tool("tsig-keygen")).args(["-a", algorithm, name]).output().unwrap();
    assert!(out.status.success(), "tsig-keygen -a {algorithm}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Bind {
    pub fn start() -> Self {
        Self::start_with(BindOpts::default())
    }

    pub fn start_with(opts: BindOpts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display().to_string();
        let mut keys = String::new();
        for alg in ALGORITHMS {
            let file = dir.path().join(format!("tsig-{alg}.key"));
            std::fs::write(&file, tsig_key_with(&key_name(alg), alg)).unwrap();
            keys.push_str(&format!("include \"{}\";\n", file.display()));
        }
        let key_file = dir.path().join("tsig-hmac-sha256.key");
        std::fs::copy(&key_file, dir.path().join("tsig.key")).unwrap();
        let key_file = dir.path().join("tsig.key");
        let ns = opts.ns.unwrap_or_else(LoopbackAddr::add);
        let ns_set = match opts.ns_set.is_empty() {
            true => format!("@ IN NS ns.regcert.test.\nns IN A {}\n", ns.ip),
            false => opts
                .ns_set
                .iter()
                .map(|(name, ip)| format!("@ IN NS {name}.regcert.test.\n{name} IN {} {ip}\n", if ip.contains(':') { "AAAA" } else { "A" }))
                .collect(),
        };
        let zone_file = dir.path().join("db.regcert.test");
        std::fs::write(
            &zone_file,
            format!(
                "$TTL 60\n@ IN SOA ns.regcert.test. admin.regcert.test. ( 1 60 60 600 60 )\n{ns_set}registry IN A 127.0.0.1\n{}\n",
                opts.records
            ),
        )
        .unwrap();
        let listen_ns = format!("listen-on port 53 {{ {}; }}; ", ns.ip);
        // NOTIFYs and transfers leave from the port-53 address, which is what a secondary expects.
        let sources = format!("notify-source {0}; transfer-source {0}; ", ns.ip);
        let updaters: String = ALGORITHMS.iter().map(|a| format!("key \"{}\"; ", key_name(a))).collect();
        let zone = match &opts.secondary_of {
            None => format!(
                "zone \"regcert.test\" {{ type primary; file \"{}\"; allow-update {{ {updaters}}}; allow-transfer {{ any; }}; }};\n",
                zone_file.display()
            ),
            Some(primary) => format!(
                "zone \"regcert.test\" {{ type secondary; primaries {{ {primary}; }}; file \"{d}/secondary.db\"; allow-notify {{ any; }}; }};\n"
            ),
        };
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; {listen_ns}listen-on-v6 {{ none; }}; pid-file \"{d}/named.pid\"; \
                 recursion no; dnssec-validation no; allow-query {{ any; }}; {sources}}};\n{keys}\
                 controls {{ }};\n{zone}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new(tool("named"))
            .args(["-g", "-c", &format!("{d}/named.conf")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut bind = Bind { child, dir, port, key_file, ns };
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening =
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && std::net::TcpStream::connect((bind.ns.ip.as_str(), 53)).is_ok();
        while !listening() {
            if let Ok(Some(s)) = bind.child.try_wait() {
                panic!("named exited ({s}): {}", bind.log());
            }
            assert!(Instant::now() < deadline, "named did not listen: {}", bind.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        bind
    }

    /// The key file of `algorithm` (one of [`ALGORITHMS`]).
    pub fn key(&self, algorithm: &str) -> PathBuf {
        self.dir.path().join(format!("tsig-{algorithm}.key"))
    }

    /// "IP:53" of the port-53 address.
    pub fn ns_addr(&self) -> String {
        format!("{}:53", self.ns.ip)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The TXT values the server answers for `fqdn`.
    pub fn txt(&self, fqdn: &str) -> Vec<String> {
        let out = Command::new(tool("dig")).args(["@127.0.0.1", "-p", &self.port.to_string(), "+short", "TXT", fqdn]).output().unwrap();
        assert!(out.status.success(), "dig: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_matches('"').to_owned()).filter(|l| !l.is_empty()).collect()
    }

    /// Wait until `fqdn` has exactly the TXT values `values` here (a secondary catching up).
    pub fn wait_txt(&self, fqdn: &str, values: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut now = self.txt(fqdn);
            now.sort();
            let mut want: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            want.sort();
            if now == want {
                return;
            }
            assert!(Instant::now() < deadline, "{fqdn}: {now:?}, expected {want:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send `commands` (nsupdate's language, e.g. `update add NAME TTL IN TXT "v"`) to this
    /// server as an operator would, signed with the test key.
    pub fn nsupdate(&self, commands: &str) {
        let script = format!("server 127.0.0.1 {}\nzone {ZONE}\n{commands}\nsend\n", self.port);
        let mut child = Command::new(tool("nsupdate"))
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nsupdate {script}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The update lines of named's log that mention `fqdn` (adds and deletes of its RRs).
    pub fn updates_of(&self, fqdn: &str) -> Vec<String> {
        let name = fqdn.trim_end_matches('.');
        // named writes "adding an RR at 'NAME' TXT …" but "deleting an RR at NAME TXT".
        let (quoted, bare) = (format!("an RR at '{name}' "), format!("an RR at {name} "));
        self.log().lines().filter(|l| l.contains(&quoted) || l.contains(&bare)).map(str::to_owned).collect()
    }
}

/// The name of the test's key of `algorithm`.
fn key_name(algorithm: &str) -> String {
    if algorithm == "hmac-sha256" { "regcert-test".into() } else { format!("regcert-test-{}", &algorithm[5..]) }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address 127.53.X.Y on `lo`, for this test only (removed on drop): BIND listens only on
/// addresses its interfaces have.
pub struct LoopbackAddr {
    pub ip: String,
}

impl LoopbackAddr {
    pub fn add() -> Self {
        static N: AtomicU32 = AtomicU32::new(1);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let ip = format!("127.53.{}.{}", std::process::id() % 200 + 20, n % 250 + 1);
        let out = Command::new(tool("ip")).args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"]).output().unwrap();
        assert!(out.status.success(), "ip addr add {ip}: {}", String::from_utf8_lossy(&out.stderr));
        LoopbackAddr { ip }
    }
}

impl Drop for LoopbackAddr {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip")).args(["addr", "del", &format!("{}/32", self.ip), "dev", "lo"]).output();
    }
}

/// An `unreachable` IPv6 route for a documentation prefix: this host then has no route to its
/// addresses, as an IPv4-only host has none to any IPv6 address. Removed on drop.
pub struct UnreachableRoute {
    prefix: String,
}

impl UnreachableRoute {
    /// A prefix of its own, 2001:db8:53:N::/64; returns the guard and an address inside.
    pub fn add() -> (Self, String) {
        static N: AtomicU32 = AtomicU32::new(1);
        let n = format!("{:x}", (std::process::id() % 0x1000) * 16 + N.fetch_add(1, Ordering::SeqCst) % 16);
        let prefix = format!("2001:db8:53:{n}::/64");
        let out = Command::new(tool("ip")).args(["-6", "route", "replace", "unreachable", &prefix]).output().unwrap();
        assert!(out.status.success(), "ip -6 route add unreachable {prefix}: {}", String::from_utf8_lossy(&out.stderr));
        (UnreachableRoute { prefix }, format!("2001:db8:53:{n}::1"))
    }
}

impl Drop for UnreachableRoute {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip")).args(["-6", "route", "del", "unreachable", &self.prefix]).output();
    }
}
