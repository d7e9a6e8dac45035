//! Chains: a CA's broken chain never reaches the install dir, and verification — `regcert
//! verify` and the check after a reload — says exactly what is wrong with what a real registry
//! container serves: another name, an expired certificate, a root nobody trusts.

use crate::common::ari_frontend::{AriFrontend, BadChain};
use crate::common::registry::*;
use crate::common::*;
use crate::registry::{issued, verify_registry};
use std::fs;
use std::path::{Path, PathBuf};
use toml::toml;

/// The installed pair and the last issued certificate kept in state_dir, byte for byte.
fn installed_and_kept(s: &Setup) -> [Vec<u8>; 3] {
    [s.fullchain("registry"), s.key("registry"), s.state().join("certs/registry/cert.pem")].map(|p| fs::read(p).unwrap())
}

#[test]
fn a_misordered_or_wrong_intermediate_from_the_ca_is_refused_before_install() {
    let pebble = Pebble::start();
    // A test fixture in front of Pebble spoils the chain of the download; Pebble cannot.
    let front = AriFrontend::in_front_of(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", front.directory_url.as_str()));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let before = installed_and_kept(&s);

    let cases = [
        (BadChain::Misordered, "chain is out of order at position 0"),
        (BadChain::Impostor, "certificate 0 of the chain is not signed by certificate 1"),
    ];
    for (how, message) in cases {
        front.spoil_chain(how);
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 1, "{how:?}: {run:?}");
        assert!(run.stdout.contains(message), "{how:?}: {run:?}");
        let ca = format!("the ACME server {} sent a broken chain, so nothing was installed", front.directory_url);
        assert!(run.stdout.contains(&ca), "{how:?}: {run:?}");
        assert!(run.stdout.contains("1 failed"), "{how:?}: {run:?}");
        assert_eq!(installed_and_kept(&s), before, "{how:?}: the pair in place and the kept certificate are untouched");
        assert!(!s.state().join("certs/registry/previous").exists(), "{how:?}: nothing was installed, so nothing was backed up");
        assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    }
}

/// A root, an intermediate it signed, and a leaf for `name` that the intermediate signed and
/// that expired on 2021-01-01: the fullchain and key go into `install`, the root's path is
/// returned.
fn install_expired_chain(install: &Path, name: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let (root_key, int_key, leaf_key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let root = ca("expired-chain test root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca("expired-chain test root"), root_key);
    let intermediate = ca("expired-chain test intermediate").signed_by(&int_key, &root_issuer).unwrap();
    let int_issuer = Issuer::new(ca("expired-chain test intermediate"), int_key);
    let mut leaf = CertificateParams::new(vec![name.to_owned()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let leaf = leaf.signed_by(&leaf_key, &int_issuer).unwrap();
    fs::write(install.join("domain.crt"), format!("{}{}", leaf.pem(), intermediate.pem())).unwrap();
    fs::write(install.join("domain.key"), leaf_key.serialize_pem()).unwrap();
    let root_path = install.parent().unwrap().join("expired-chain-root.pem");
    fs::write(&root_path, root.pem()).unwrap();
    root_path
}

#[test]
fn regcert_verify_names_a_wrong_name_an_expired_certificate_and_an_untrusted_root() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let verify = |url_host: &str, ca_bundle: &Path| {
        s.edit_cert("registry", |c| {
            let mut v = verify_registry(&pebble, url_host, &reg);
            set(&mut v, "ca_bundle", ca_bundle.display().to_string());
            set(c, "verify", v);
        });
        let run = s.run(&["verify"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.contains(&format!("(connected to {})", reg.addr())), "{run:?}");
        run
    };
    // A control: the right name and root pass.
    s.edit_cert("registry", |c| set(c, "verify", verify_registry(&pebble, &name, &reg)));
    let ok = s.run(&["verify"]);
    assert_eq!(ok.code, 0, "{ok:?}");

    let other = unique_name("other");
    let run = verify(&other, &pebble.issuing_root());
    assert!(run.stdout.contains(&format!("problem:    the served certificate is not valid for {other} (it names {name})")), "{run:?}");

    // Pebble's chain, checked against a root that did not issue it (the one of Pebble's API).
    let run = verify(&name, &pebble.tls_root);
    assert!(
        run.stdout.contains("problem:    the served chain does not lead to a trusted root (issuer \"CN=Pebble Intermediate CA"),
        "{run:?}"
    );
    assert!(run.stdout.contains("2 certificate(s) served, does NOT validate"), "{run:?}");

    // An expired certificate with a complete chain from a trusted root, served for real.
    let root = install_expired_chain(&s.install_dir("registry"), &name);
    docker(&["restart", "-t", "1", &reg.container]);
    reg.wait_listening();
    let run = verify(&name, &root);
    assert!(run.stdout.contains("problem:    the served certificate expired on 2021-01-01"), "{run:?}");
    assert!(run.stdout.contains("(same)"), "the registry serves the installed (expired) certificate: {run:?}");
}

#[test]
fn verification_after_the_reload_rolls_back_a_wrong_name_or_an_untrusted_root() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let other = unique_name("other");
    let cases = [
        (other.clone(), pebble.issuing_root(), format!("the served certificate is not valid for {other} (it names {name})")),
        (name.clone(), pebble.tls_root.clone(), "the served chain does not lead to a trusted root".to_owned()),
    ];
    for (url_host, ca_bundle, problem) in cases {
        s.edit_cert("registry", |c| {
            set(c, "reload", toml! { docker = { container = (reg.container.as_str()), action = "restart" } });
            let mut v = verify_registry(&pebble, &url_host, &reg);
            set(&mut v, "ca_bundle", ca_bundle.display().to_string());
            set(c, "verify", v);
        });
        let old = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());
        let started = reg.started_at();
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.contains("FAILED (--force) and ROLLED BACK"), "{run:?}");
        assert!(run.stdout.contains(&format!("verification of https://{url_host}:5000/v2/ failed: {problem}")), "{run:?}");
        assert_ne!(reg.started_at(), started, "the registry was restarted");
        assert_eq!((fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap()), old, "the old pair, byte for byte");
        assert!(reg.running());
    }
}

/// The common name in `pem`'s first certificate's subject (or issuer, with `-issuer`).
fn common_name(pem: &Path, which: &str) -> String {
    let out = openssl(&["x509", "-noout", which, "-nameopt", "RFC2253", "-in", pem.to_str().unwrap()]);
    let cn = out.trim().split(',').find_map(|part| part.split_once("CN=").map(|(_, cn)| cn.to_owned()));
    cn.unwrap_or_else(|| panic!("no CN in {out}"))
}

/// The last certificate of a PEM chain, in a file of its own.
fn top_certificate(fullchain: &Path) -> PathBuf {
    let pem = fs::read_to_string(fullchain).unwrap();
    let begin = pem.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    let path = fullchain.with_extension("top.pem");
    fs::write(&path, &pem[begin..]).unwrap();
    path
}

#[test]
fn a_longer_chain_and_a_preferred_alternate_root_are_installed_and_verified_on_a_real_registry() {
    // Longer than Generation Y's: three intermediates, and a second root the CA offers a chain to.
    let pebble = Pebble::start_with(PebbleOpts { chain_length: Some(3), alternate_roots: Some(1), ..PebbleOpts::v2_10() });
    let name = unique_name("chain");
    let s = Setup::new(&pebble, &[cert("registry", &[&name], "ecdsa-p256").with(toml! { profile = "default" })]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let fullchain = s.fullchain("registry");
    // PEBBLE_CHAIN_LENGTH counts intermediates (1, its default, is leaf + 1): here leaf + 3,
    // and no root among them.
    assert_eq!(pem_count(&fullchain), 4, "leaf and three intermediates: {}", cert_text(&fullchain));
    let top = top_certificate(&fullchain);
    assert_ne!(common_name(&top, "-issuer"), common_name(&top, "-subject"), "the chain ends below the root");
    assert_chain_verifies(&fullchain, &pebble.root(0));

    // A real registry serves it, and the verification after its restart passes.
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let verify_with = |root: &Path| {
        let mut v = verify_registry(&pebble, &name, &reg);
        set(&mut v, "ca_bundle", root.display().to_string());
        v
    };
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { docker = { container = (reg.container.as_str()), action = "restart" } });
        set(c, "verify", verify_with(&pebble.root(0)));
    });
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("4 certificate(s) served"), "{run:?}");

    // preferred_chain names the alternate root: that chain is installed, served and verified
    // against that root alone.
    let alternate = common_name(&pebble.root(1), "-subject");
    assert_ne!(alternate, common_name(&pebble.root(0), "-subject"));
    s.edit_cert("registry", |c| {
        set(c, "preferred_chain", alternate.as_str());
        set(c, "verify", verify_with(&pebble.root(1)));
    });
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("installing the alternate chain that ends at the preferred issuer"), "{run:?}");
    assert_eq!(common_name(&top_certificate(&fullchain), "-issuer"), alternate);
    assert_chain_verifies(&fullchain, &pebble.root(1));

    // A name no offered chain ends with: the default chain, and the log lists what was offered.
    s.edit_cert("registry", |c| {
        set(c, "preferred_chain", "No Such Root");
        set(c, "verify", verify_with(&pebble.root(0)));
    });
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("no chain the CA offers ends with a certificate issued by preferred_chain"), "{run:?}");
    assert!(run.stderr.contains(&alternate), "the offered issuers are named: {run:?}");
    assert_chain_verifies(&fullchain, &pebble.root(0));
}
