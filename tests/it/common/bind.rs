//! A real authoritative DNS server for the tests: BIND 9 (`named`) serving the zone
//! `regcert.test.` on a free loopback port, with RFC 2136 updates allowed for one TSIG key.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tool};

pub const ZONE: &str = "regcert.test.";

pub struct Bind {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The BIND key file (nsupdate -k format) allowed to update the zone.
    pub key_file: PathBuf,
}

/// A fresh TSIG key in BIND's key file format.
pub fn tsig_key(name: &str) -> String {
    let out = Command::new(tool("tsig-keygen")).args(["-a", "hmac-sha256", name]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

impl Bind {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display().to_string();
        let key_file = dir.path().join("tsig.key");
        std::fs::write(&key_file, tsig_key("regcert-test")).unwrap();
        std::fs::write(
            dir.path().join("db.regcert.test"),
            "$TTL 60\n@ IN SOA ns.regcert.test. admin.regcert.test. ( 1 60 60 600 60 )\n@ IN NS ns.regcert.test.\nns IN A 127.0.0.1\nregistry IN A 127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; pid-file \"{d}/named.pid\"; \
                 recursion no; dnssec-validation no; allow-query {{ any; }}; }};\ninclude \"{d}/tsig.key\";\n\
                 controls {{ }};\nzone \"regcert.test\" {{ type primary; file \"{d}/db.regcert.test\"; allow-update {{ key \"regcert-test\"; }}; }};\n"
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
        let mut bind = Bind { child, dir, port, key_file };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = bind.child.try_wait() {
                panic!("named exited ({s}): {}", bind.log());
            }
            assert!(Instant::now() < deadline, "named did not listen: {}", bind.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        bind
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The TXT values the server answers for `fqdn`.
    pub fn txt(&self, fqdn: &str) -> Vec<String> {
        let out = Command::new(tool("dig")).args(["@127.0.0.1", "-p", &self.port.to_string(), "+short", "TXT", fqdn]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_matches('"').to_owned()).filter(|l| !l.is_empty()).collect()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
