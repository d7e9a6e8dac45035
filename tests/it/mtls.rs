//! Registries that require client certificates (mTLS): a registry container with
//! REGISTRY_HTTP_TLS_CLIENTCAS, a client certificate (`usage = "client"`) from the private CA that
//! regcert installs into Docker's certs.d/HOST:PORT and renews, the real `docker push` that needs
//! it, and verification of the registry's own certificate that presents one; containerd
//! (`ctr image pull --hosts-dir`) given the installed pair through hosts.toml's `client`.

use crate::common::registry::*;
use crate::common::*;
use crate::trust_runtimes::ctr_pull;
use std::fs;
use std::path::{Path, PathBuf};
use toml::{Value, toml};

/// /etc/docker/certs.d/HOST:PORT of one test (HOST is the registry's unique bridge address),
/// removed on drop.
struct CertsD(PathBuf);

impl CertsD {
    fn new(registry: &str) -> Self {
        let dir = Path::new("/etc/docker/certs.d").join(registry);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        CertsD(dir)
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A registry on `ip` that requires client certificates from the private CA "internal", serving
/// a certificate of the same CA; Docker on this host trusts the CA for it (certs.d/…/ca.crt).
/// The config also has the client certificate `client`, installed into that certs.d directory.
struct MtlsRegistry {
    s: Setup,
    reg: Registry,
    certs_d: CertsD,
    root: PathBuf,
}

impl MtlsRegistry {
    fn start() -> Self {
        let ip = fixed_ip();
        let certs_d = CertsD::new(&format!("{ip}:5000"));
        let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=mTLS Test CA" })) };
        let s = Setup::with_config(
            config,
            &[
                CertSpec::new("registry", toml! { issuer = "ca:internal" ips = [(ip.as_str())] }),
                CertSpec::new("client", toml! { issuer = "ca:internal" usage = "client" client_name = "ci-runner-1" validity = "30d" }),
            ],
        );
        s.edit_cert("client", |c| {
            set(c, "install.dir", certs_d.0.display().to_string());
            set(c, "install.fullchain", "client.cert");
            set(c, "install.key", "client.key");
        });
        let run = s.run(&["ca", "init", "internal"]);
        assert_eq!(run.code, 0, "{run:?}");
        let run = s.run(&["renew", "--cert", "registry"]);
        assert_eq!(run.code, 0, "{run:?}");
        let root = export_root(&s);
        fs::copy(&root, certs_d.0.join("ca.crt")).unwrap();
        let opts = RegistryOpts { ip: Some(ip), client_cas: Some(root.clone()), ..Default::default() };
        let reg = Registry::start(&s.install_dir("registry"), opts);
        MtlsRegistry { s, reg, certs_d, root }
    }

    fn url(&self) -> String {
        format!("https://{}/v2/", self.reg.addr())
    }

    fn client_cert(&self) -> PathBuf {
        self.certs_d.0.join("client.cert")
    }

    fn client_key(&self) -> PathBuf {
        self.certs_d.0.join("client.key")
    }

    /// `docker push` of the tiny test image to this registry.
    fn push(&self, tag: &str) -> Result<String, String> {
        let repo = format!("{}/tiny:{tag}", self.reg.addr());
        docker(&["tag", TINY, &repo]);
        let pushed = docker_retry(&["push", &repo]);
        docker(&["rmi", &repo]);
        pushed
    }
}

#[test]
fn docker_push_needs_the_client_certificate_regcert_installs_and_renews() {
    let m = MtlsRegistry::start();
    // The server certificate alone is not enough: the registry refuses the handshake.
    let err = m.push("before").expect_err("a push without a client certificate must fail");
    assert!(err.contains("certificate required") || err.contains("bad certificate"), "{err}");

    // The client certificate, verified by presenting it to the registry.
    let url = m.url();
    let root = m.root.display().to_string();
    m.s.edit_cert("client", |c| {
        set(c, "verify.url", url.as_str());
        set(c, "verify.ca_bundle", root.as_str());
        set(c, "verify.timeout", "20s");
    });
    let run = m.s.run(&["renew", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("verified: {url} accepts it as a client certificate")), "{run:?}");
    let text = cert_text(&m.client_cert());
    assert!(text.contains("TLS Web Client Authentication") && !text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("Subject: CN = ci-runner-1"), "{text}");
    assert_eq!(mode(&m.client_key()), 0o600);
    assert_chain_verifies(&m.client_cert(), &m.root);
    assert_key_matches(&m.client_cert(), &m.client_key());
    assert_eq!(m.s.status_of("client")["client_name"], "ci-runner-1");
    let status = m.s.run(&["status", "--cert", "client"]);
    assert!(status.stdout.contains("client:     CN=ci-runner-1 (client certificate, clientAuth)"), "{status:?}");
    let run = m.s.run(&["verify", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("client cert: requested by the server") && run.stdout.contains("presented SHA256"), "{run:?}");
    m.push("with-client-cert").expect("docker push with certs.d/HOST:PORT/client.cert + client.key");

    // Docker reads certs.d at every connection (no daemon restart): without the files a push
    // fails again, and the renewal's files are used by the very next push.
    let first = serial(&m.client_cert());
    fs::remove_file(m.client_cert()).unwrap();
    fs::remove_file(m.client_key()).unwrap();
    let err = m.push("removed").expect_err("the push must fail once the client certificate is gone");
    assert!(err.contains("certificate required") || err.contains("bad certificate"), "{err}");
    let run = m.s.run(&["renew", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    m.push("reinstalled").expect("docker push with the client certificate installed again");
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("verified: the registry accepts the new client certificate"), "{run:?}");
    let renewed = serial(&m.client_cert());
    assert_ne!(first, renewed);
    m.push("renewed").expect("docker push with the renewed client certificate");
    // podman's library (containers/image, here in skopeo) reads the same file names, and
    // Docker's directory when /etc/containers/certs.d/HOST:PORT does not exist.
    let image = format!("docker://{}/tiny:renewed", m.reg.addr());
    assert!(!Path::new("/etc/containers/certs.d").join(m.reg.addr()).exists());
    let inspect = |args: &[&str]| std::process::Command::new(tool("skopeo")).arg("inspect").args(args).arg(&image).output().unwrap();
    let out = inspect(&[]);
    assert!(out.status.success(), "skopeo inspect with certs.d client.cert: {}", String::from_utf8_lossy(&out.stderr));
    let ca_only = tempfile::tempdir().unwrap();
    fs::copy(&m.root, ca_only.path().join("ca.crt")).unwrap();
    let out = inspect(&["--cert-dir", ca_only.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && (err.contains("certificate required") || err.contains("bad certificate")), "{err}");

    // A client certificate the registry refuses (its CA replaced, the registry not told) is
    // rolled back: the working one stays in certs.d and pushes keep working.
    let run = m.s.run(&["ca", "init", "internal", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("ROLLED BACK")
            && run.stdout.contains("it refused install.fullchain")
            && run.stdout.contains("the previous client certificate (serial")
            && run.stdout.contains("is installed again, and the registry accepts it")
            && !run.stdout.contains("served"),
        "{run:?}"
    );
    assert_eq!(serial(&m.client_cert()), renewed);
    m.push("rolled-back").expect("docker push with the client certificate restored by the rollback");

    // A registry that does not ask for client certificates proves nothing about one: the same
    // server certificate, without REGISTRY_HTTP_TLS_CLIENTCAS.
    let open = Registry::start(&m.s.install_dir("registry"), RegistryOpts::default());
    let addr = open.addr();
    m.s.edit_cert("client", |c| set(c, "verify.connect_to", addr.as_str()));
    let run = m.s.run(&["verify", "--cert", "client"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("did not ask for a client certificate, so presenting"), "{run:?}");
}

#[test]
fn verify_presents_a_client_certificate_to_a_registry_that_requires_one() {
    let m = MtlsRegistry::start();
    let run = m.s.run(&["renew", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    // A client certificate names no registry: checking it by hand needs the URL.
    let run = m.s.run(&["verify", "--cert", "client"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("client: a client certificate is verified against the registry it is for: set [certificate.verify] url"),
        "{run:?}"
    );
    // The registry's own certificate, renewed: restart, then verified with the client certificate.
    let (url, root) = (m.url(), m.root.display().to_string());
    let (cert, key) = (m.client_cert().display().to_string(), m.client_key().display().to_string());
    let container = m.reg.container.clone();
    m.s.edit_cert("registry", |c| {
        set(c, "reload.docker", toml! { container = (container.as_str()) action = "restart" });
        set(c, "verify", toml! { url = (url.as_str()) ca_bundle = (root.as_str()) timeout = "20s" });
        set(c, "verify.client_cert", cert.as_str());
        set(c, "verify.client_key", key.as_str());
    });
    let before = m.reg.started_at();
    let served = serial(&m.s.fullchain("registry"));
    let run = m.s.run(&["renew", "--force", "--cert", "registry"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(m.reg.started_at(), before, "the registry was not restarted");
    assert_ne!(serial(&m.s.fullchain("registry")), served);
    let run = m.s.run(&["verify", "--cert", "registry"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("result:     OK") && run.stdout.contains("client cert: requested by the server"), "{run:?}");

    // Without the client certificate: the check fails and says what to set.
    m.s.edit_cert("registry", |c| {
        let verify = c["verify"].as_table_mut().unwrap();
        verify.remove("client_cert");
        verify.remove("client_key");
    });
    let run = m.s.run(&["verify", "--cert", "registry"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("the registry requires a client certificate (mTLS from CAs CN=mTLS Test CA)")
            && run.stdout.contains("set [certificate.verify] client_cert and client_key"),
        "{run:?}"
    );
    // A client certificate of another CA is refused, and the message says which file and why.
    let other = tempfile::tempdir().unwrap();
    self_signed(&other.path().join("c.key"), &other.path().join("c.cert"), "/CN=stranger", &["extendedKeyUsage=clientAuth"]);
    let (cert, key) = (other.path().join("c.cert").display().to_string(), other.path().join("c.key").display().to_string());
    m.s.edit_cert("registry", |c| {
        set(c, "verify.client_cert", cert.as_str());
        set(c, "verify.client_key", key.as_str());
    });
    let run = m.s.run(&["verify", "--cert", "registry"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(&format!("it refused verify.client_cert {cert}")), "{run:?}");
}

/// `[certificate.trust]` on the client certificate: every renewal lists the installed pair in
/// containerd's hosts.toml `client` (merged into the operator's file, once), which a real
/// `ctr image pull` needs; the client CA is not made the registry's `ca`.
#[test]
fn containerd_pulls_with_the_client_pair_regcert_lists_in_hosts_toml() {
    let m = MtlsRegistry::start();
    let run = m.s.run(&["renew", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    m.push("1").expect("docker push with certs.d/HOST:PORT/client.cert + client.key");
    let (registry, image) = (m.reg.addr(), format!("{}/tiny:1", m.reg.addr()));

    // The operator's hosts.toml, top-level keys only as containerd's docs show it: the registry's
    // CA, pull only; no client certificate.
    let hosts_dir = m.s.root.path().join("containerd/certs.d");
    let hosts = hosts_dir.join(&registry).join("hosts.toml");
    fs::create_dir_all(hosts.parent().unwrap()).unwrap();
    let user = format!(
        "# the registry's CA; nodes only pull\nserver = \"https://{registry}\"\ncapabilities = [\"pull\", \"resolve\"] # no push\nca = \"{}\"\n",
        m.root.display()
    );
    fs::write(&hosts, &user).unwrap();
    ctr_pull(&hosts_dir, &image).expect_err("ctr pull without a client pair in hosts.toml must fail");

    let containerd = hosts_dir.display().to_string();
    m.s.edit_cert("client", |c| {
        set(c, "trust", toml! { registries = [(registry.as_str())] runtimes = ["containerd"] containerd_certs_d = (containerd.as_str()) })
    });
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("containerd on this host presents {} to {registry}", m.client_cert().display())), "{run:?}");
    let (cert, key) = (m.client_cert().display().to_string(), m.client_key().display().to_string());
    let merged = fs::read_to_string(&hosts).unwrap();
    let pair = format!("client = [[\"{cert}\", \"{key}\"]]\n");
    assert!(merged.starts_with(&format!("{user}{pair}")), "only `client` is added; the operator's file stays: {merged}");
    // containerd 1.6/1.7 ignore a hosts.toml without a [host] table (containerd#10027).
    assert!(merged.ends_with("\n[host]\n"), "{merged}");
    assert!(!hosts.parent().unwrap().join("regcert-ca.crt").exists(), "the client CA is not the registry's server CA");
    ctr_pull(&hosts_dir, &image).expect("ctr pull with the client pair regcert listed");

    // Renewed: the same files, listed once; the next pull presents the new certificate.
    let first = serial(&m.client_cert());
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(serial(&m.client_cert()), first);
    assert_eq!(fs::read_to_string(&hosts).unwrap(), merged, "idempotent");
    ctr_pull(&hosts_dir, &image).expect("ctr pull with the renewed client certificate");

    // The pair is what the registry asks for: without it (and nothing else changed) the
    // handshake fails; the next renewal lists it again.
    fs::write(&hosts, merged.replace(&pair, "")).unwrap();
    let err = ctr_pull(&hosts_dir, &image).expect_err("ctr pull without the client pair must fail");
    assert!(err.contains("certificate required") || err.contains("bad certificate"), "{err}");
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(fs::read_to_string(&hosts).unwrap(), merged);
    ctr_pull(&hosts_dir, &image).expect("ctr pull with the client pair listed again");

    // `trust remove` takes the pair out again (the configuration says which pair regcert listed)
    // and says that the certificate still names the registry; the operator's file stays.
    let run = m.s.run(&["trust", "remove", "--registry", &registry, "--runtime", "containerd", "--containerd-certs-d", &containerd]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("removed the client certificate {cert} for {registry}")), "{run:?}");
    assert!(run.stdout.contains("[certificate.trust] of `client` still names"), "{run:?}");
    let left = fs::read_to_string(&hosts).unwrap();
    assert!(left.starts_with(&user) && !left.contains(&cert), "{left}");
    ctr_pull(&hosts_dir, &image).expect_err("ctr pull after `trust remove` must fail: no client pair is presented");
    let run = m.s.run(&["trust", "remove", "--registry", &registry, "--runtime", "containerd", "--containerd-certs-d", &containerd]);
    assert!(run.code == 0 && run.stdout.contains(&format!("nothing to remove for {registry}")), "{run:?}");
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(fs::read_to_string(&hosts).unwrap(), merged, "the next renewal lists it again, as said");

    // A hosts.toml containerd (named in `runtimes`) cannot take the pair into fails the
    // renewal, which says what did happen: the pair is installed; nothing was verified.
    fs::write(&hosts, "server = \n").unwrap();
    m.s.edit_cert("client", |c| set(c, "verify.enabled", false));
    let run = m.s.run(&["renew", "--force", "--cert", "client"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("client: FAILED") && run.stdout.contains("the client certificate is installed, but "), "{run:?}");
    assert!(!run.stdout.contains("verified"), "{run:?}");
}
