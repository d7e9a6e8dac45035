//! podman, CRI-O, skopeo and buildah (containers/image): `<certs.d>/<HOST:PORT>/*.crt` (and
//! `client.cert` + `client.key`) under /etc/containers/certs.d — Docker's layout under another
//! root, so [`super::docker`] writes it. containers/image looks in /etc/containers/certs.d first
//! and then /etc/docker/certs.d, and the first directory for the registry that *exists* wins:
//! an empty (or CA-less) one here hides Docker's CA from all of them.

use std::path::Path;

use super::{Entry, Roots, check_registry, docker, entry_for_file};

pub const DEFAULT_ROOT: &str = "/etc/containers/certs.d";

fn has_ca(dir: &Path) -> bool {
    super::files_in(dir).iter().any(|f| f.extension().is_some_and(|e| e == "crt"))
}

/// Why podman & co. do not see Docker's CA for `registry`, if they don't: their own directory
/// exists without a CA while Docker's has one.
pub fn hiding(roots: &Roots, registry: &str) -> Option<String> {
    let name = check_registry(registry).ok()?;
    let (own, dockers) = (roots.containers.join(&name), roots.docker.join(&name));
    (own.is_dir() && !has_ca(&own) && has_ca(&dockers)).then(|| {
        format!(
            "{} exists without a CA, so podman, CRI-O and skopeo ignore Docker's {}: remove the directory or trust the CA there too (regcert trust install --runtime podman)",
            own.display(),
            dockers.display()
        )
    })
}

/// What the directories hold, and the ones that hide Docker's CA.
pub fn list(roots: &Roots, now: i64) -> Vec<Entry> {
    let mut out = docker::list("podman", "containers/image (podman, CRI-O, skopeo)", &roots.containers, now);
    for (registry, dir) in super::registry_dirs(&roots.containers) {
        if let Some(why) = hiding(roots, &registry) {
            out.push(entry_for_file("podman", &registry, dir, Some(why), now));
        }
    }
    out
}
