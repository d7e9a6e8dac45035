//! `[certificate.trust]` on a client certificate (`usage = "client"`, mTLS): the runtimes on this
//! host present the INSTALLED pair to the listed registries. Docker and podman read
//! `client.cert` + `client.key` from their certs.d/HOST:PORT, so the install dir does it for them
//! (regcert only says when it is not one they read: no second copy of the private key);
//! containerd reads only what hosts.toml lists, so the pair is merged into its `client`. The
//! private CA is never written as the registry's server `ca`: the CA that signs clients need not
//! be the one that signs the registry.

use std::path::{Path, PathBuf};

use super::{Roots, Runtime, check_registry, containerd, runtimes_of};
use crate::config::{CertificateConfig, TrustConfig, Usage};

/// The installed pair, as absolute paths (containerd reads a relative one relative to hosts.toml).
fn installed_pair(cert: &CertificateConfig) -> (PathBuf, PathBuf) {
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    (abs(cert.install.fullchain_path()), abs(cert.install.key_path()))
}

/// List the installed pair for every registry in the runtimes `[certificate.trust]` names (or
/// finds).
pub(super) fn sync(cert: &CertificateConfig, trust: &TrustConfig) -> Result<(), String> {
    let (fullchain, key) = installed_pair(cert);
    if !fullchain.exists() || !key.exists() {
        // `ca init` before the first issuance: nothing installed to list yet.
        tracing::debug!(cert = %cert.name, "no client certificate installed yet: containerd's hosts.toml is written after it is");
        return Ok(());
    }
    let roots = Roots::of(trust);
    let (all, strict) = runtimes_of(trust, &roots, Usage::Client)?;
    for runtime in all {
        for registry in &trust.docker_clients {
            let done = match runtime {
                Runtime::Containerd => containerd::add_client_pair(&roots.containerd, registry, &fullchain, &key).map(|hosts| {
                    format!(
                        "containerd on this host presents {} to {registry}: {} lists it in `client` (read on every pull: no restart needed)",
                        fullchain.display(),
                        hosts.display()
                    )
                }),
                Runtime::Docker | Runtime::Podman => match unread_by(runtime, &roots, registry, &cert.install.dir) {
                    None => continue,
                    Some(what_to_do) => Err(what_to_do),
                },
            };
            match done {
                Ok(done) => tracing::info!(cert = %cert.name, registry = %registry, runtime = runtime.name(), "{done}"),
                Err(e) if strict.contains(&runtime) => return Err(format!("the client certificate is installed, but {e}")),
                Err(e) => tracing::warn!(cert = %cert.name, registry = %registry, runtime = runtime.name(), "{e}"),
            }
        }
    }
    Ok(())
}

/// Why Docker or podman (`runtime`) would not present a pair installed in `install_dir` to
/// `registry`, and what to do; None when it does. podman & co. read their own certs.d/HOST:PORT,
/// or Docker's when theirs does not exist.
fn unread_by(runtime: Runtime, roots: &Roots, registry: &str, install_dir: &Path) -> Option<String> {
    let name = check_registry(registry).ok()?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (dockers, own) = (roots.docker.join(&name), roots.containers.join(&name));
    let dir = abs(install_dir);
    let read = match runtime {
        Runtime::Docker => dir == dockers,
        _ => dir == own || (dir == dockers && !own.exists()),
    };
    let wanted = if runtime == Runtime::Docker || !own.exists() { &dockers } else { &own };
    (!read).then(|| {
        format!(
            "{} on this host does not present this client certificate to {registry}: it reads client.cert + client.key in {}, \
             not in {}; set install.dir = \"{}\" (or leave {} out of [certificate.trust] runtimes)",
            if runtime == Runtime::Docker { "Docker" } else { "podman (CRI-O, skopeo)" },
            wanted.display(),
            dir.display(),
            wanted.display(),
            runtime.name()
        )
    })
}

/// For `regcert trust remove --registry R`: take the pairs [`sync`] listed for `registry` out of
/// containerd's hosts.toml again — those of the client certificates in `certs` whose
/// `[certificate.trust]` names it. A line per pair taken out, saying too that the certificate's
/// configuration still names the registry (its next renewal would list the pair again).
pub fn remove_listed(certs: &[CertificateConfig], registry: &str) -> Result<Vec<String>, String> {
    let wanted = check_registry(registry)?;
    let mut done = Vec::new();
    for cert in certs.iter().filter(|c| c.usage == Usage::Client) {
        let Some(trust) = &cert.trust else { continue };
        let Some(listed) = trust.docker_clients.iter().find(|r| check_registry(r).is_ok_and(|n| n == wanted)) else { continue };
        let (fullchain, key) = installed_pair(cert);
        if containerd::remove_client_pair(&Roots::of(trust).containerd, listed, &fullchain, &key)? {
            done.push(format!(
                "removed the client certificate {} for {registry} from containerd's hosts.toml (containerd no longer presents it; \
                 read on every pull: no restart needed). [certificate.trust] of `{}` still names {listed}: take it out of \
                 `registries` there, or its next renewal lists the pair again",
                fullchain.display(),
                cert.name
            ));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_podman_read_the_pair_only_in_their_certs_d() {
        let t = tempfile::tempdir().unwrap();
        let roots = Roots::new(&t.path().join("docker"), &t.path().join("containerd"), &t.path().join("containers"));
        let reg = "reg.example:5000";
        let dockers = roots.docker.join(reg);
        assert_eq!(unread_by(Runtime::Docker, &roots, reg, &dockers), None);
        assert_eq!(unread_by(Runtime::Podman, &roots, reg, &dockers), None, "podman falls back to Docker's directory");
        let elsewhere = t.path().join("certs");
        let why = unread_by(Runtime::Docker, &roots, reg, &elsewhere).unwrap();
        assert!(why.contains(&format!("set install.dir = \"{}\"", dockers.display())), "{why}");
        // A directory of podman's own hides Docker's: the pair must be there.
        std::fs::create_dir_all(roots.containers.join(reg)).unwrap();
        let why = unread_by(Runtime::Podman, &roots, reg, &dockers).unwrap();
        assert!(why.starts_with("podman") && why.contains(&roots.containers.join(reg).display().to_string()), "{why}");
        assert_eq!(unread_by(Runtime::Podman, &roots, reg, &roots.containers.join(reg)), None);
    }
}
