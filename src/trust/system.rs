//! The operating system's trust store, for the clients that read it (curl, Python, the Docker
//! daemon at its start — not per connection like certs.d): one anchor file per registry, named
//! `regcert-<registry>.crt` so that regcert only ever touches its own, and the distribution's
//! tool that rebuilds the bundle from the anchors.
//!
//! | layout | anchors | rebuilt by |
//! |---|---|---|
//! | Debian, Ubuntu | `/usr/local/share/ca-certificates` | `update-ca-certificates` |
//! | RHEL, Fedora, Rocky, Alma | `/etc/pki/ca-trust/source/anchors` | `update-ca-trust extract` |
//!
//! Every path, the tool included, is looked up under a root: `/`, or the directory named by
//! `REGCERT_SYSTEM_TRUST_ROOT`, which exists for tests (a temporary root with the RHEL layout
//! on a Debian test machine) and must not be set anywhere else.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::certinfo::{LeafInfo, parse_pem_certs};
use crate::fsutil::{FileSpec, write_atomic};

/// The environment variable that moves the root of the system store (tests only).
pub const ROOT_ENV: &str = "REGCERT_SYSTEM_TRUST_ROOT";

/// A rebuild that has not finished after this long is treated as failed.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Debian,
    Rhel,
}

impl Layout {
    /// Where anchors go, relative to the root.
    fn anchors(self) -> &'static str {
        match self {
            Layout::Debian => "usr/local/share/ca-certificates",
            Layout::Rhel => "etc/pki/ca-trust/source/anchors",
        }
    }

    /// The tool that rebuilds the bundle, relative to the root.
    fn tool(self) -> &'static str {
        match self {
            Layout::Debian => "usr/sbin/update-ca-certificates",
            Layout::Rhel => "usr/bin/update-ca-trust",
        }
    }
}

/// The trust store of this host.
pub struct SystemStore {
    root: PathBuf,
    layout: Layout,
}

/// An anchor regcert added to the system store.
pub struct Anchor {
    /// The registry, as far as the file name tells (`:` is written as `_`).
    pub registry: String,
    pub file: PathBuf,
    pub cert: Option<LeafInfo>,
}

impl SystemStore {
    /// The store of this host (under `REGCERT_SYSTEM_TRUST_ROOT` in tests).
    pub fn detect() -> Result<Self, String> {
        let root = std::env::var_os(ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        [Layout::Debian, Layout::Rhel]
            .into_iter()
            .find(|l| root.join(l.tool()).exists())
            .map(|layout| SystemStore { root: root.clone(), layout })
            .ok_or_else(|| {
                "no update-ca-certificates (Debian/Ubuntu) or update-ca-trust (RHEL family) on this host; use certs.d only (without --system)"
                    .to_owned()
            })
    }

    fn anchors(&self) -> PathBuf {
        self.root.join(self.layout.anchors())
    }

    fn tool_name(&self) -> &'static str {
        self.layout.tool().rsplit('/').next().unwrap_or_default()
    }

    /// The anchor file of `registry` (`HOST[:PORT]`).
    fn anchor_path(&self, registry: &str) -> Result<PathBuf, String> {
        let name = super::check_registry(registry)?.replace([':', '[', ']'], "_");
        Ok(self.anchors().join(format!("regcert-{name}.crt")))
    }

    /// Add `pem` as the anchor of `registry` and rebuild the bundle; says what was done.
    pub fn install(&self, registry: &str, pem: &str) -> Result<String, String> {
        let path = self.anchor_path(registry)?;
        let dir = self.anchors();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_atomic(&path, pem.as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.rebuild()?;
        Ok(format!(
            "added {} to the system store ({}); the Docker daemon reads the system store only at start: restart it (systemctl restart docker)",
            path.display(),
            self.tool_name()
        ))
    }

    /// Remove the anchor regcert added for `registry` — only a file with regcert's name that
    /// holds a certificate — and rebuild the bundle. `None` when there was none.
    pub fn remove(&self, registry: &str) -> Result<Option<String>, String> {
        let path = self.anchor_path(registry)?;
        let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
        if parse_pem_certs(&bytes).is_err() {
            return Err(format!("{} has regcert's name but holds no certificate; it was left alone: remove it by hand", path.display()));
        }
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        self.rebuild()?;
        Ok(Some(format!(
            "removed {} from the system store ({}); the Docker daemon keeps the CAs it read at start until it is restarted (systemctl restart docker)",
            path.display(),
            self.tool_name()
        )))
    }

    /// The anchors regcert added, by file name.
    pub fn anchors_added(&self) -> Vec<Anchor> {
        let Ok(files) = std::fs::read_dir(self.anchors()) else { return Vec::new() };
        let mut out: Vec<Anchor> = files
            .flatten()
            .filter_map(|f| {
                let name = f.file_name().to_string_lossy().into_owned();
                let registry = name.strip_prefix("regcert-")?.strip_suffix(".crt")?.to_owned();
                let cert = std::fs::read(f.path()).ok().and_then(|b| parse_pem_certs(&b).ok()).and_then(|c| LeafInfo::parse(&c[0]).ok());
                Some(Anchor { registry, file: f.path(), cert })
            })
            .collect();
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }

    /// Run the distribution's tool so the bundle matches the anchors.
    fn rebuild(&self) -> Result<(), String> {
        let tool = self.root.join(self.layout.tool());
        let mut cmd = Command::new(&tool);
        match self.layout {
            // Its defaults are the paths under `/`; under another root, say each one.
            Layout::Debian if self.root != Path::new("/") => {
                let r = |p: &str| self.root.join(p);
                cmd.arg("--certsconf").arg(r("etc/ca-certificates.conf"));
                cmd.arg("--certsdir").arg(r("usr/share/ca-certificates"));
                cmd.arg("--localcertsdir").arg(r(self.layout.anchors()));
                cmd.arg("--etccertsdir").arg(r("etc/ssl/certs"));
                cmd.arg("--hooksdir").arg(r("etc/ca-certificates/update.d"));
            }
            Layout::Debian => {}
            Layout::Rhel => {
                cmd.arg("extract");
            }
        }
        let what = tool.display().to_string();
        let out = crate::command::output_within(cmd, REBUILD_TIMEOUT).map_err(|e| format!("cannot run {what}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{what} failed ({}): {}", out.status, out.stderr_text()));
        }
        Ok(())
    }
}
