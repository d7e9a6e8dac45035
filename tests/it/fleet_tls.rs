//! Fleet mode (issue 13) over the etcd an operator should run: clients over https (a server
//! certificate from a CA of its own), client certificates required, etcd's auth on with a user
//! whose role covers the fleet's prefix only — and what a node says when one of those settings
//! is wrong. Real etcd 3.4 members, real Pebble, real registry processes.

use std::path::Path;
use std::time::Duration;

use crate::common::etcd::{EtcdCluster, Security};
use crate::common::fleet::*;
use crate::common::*;

/// What every node of `fleet` needs to reach the secure `etcd`: its CA, its user and password
/// file, and (`client_cert`) the client certificate.
fn secure_nodes(fleet: &Fleet, etcd: &EtcdCluster, client_cert: bool) {
    let c = etcd.credentials();
    let path = |p: &Path| p.display().to_string();
    for n in &fleet.nodes {
        n.setup.edit(|t| {
            set(t, "cluster.ca_bundle", path(&c.ca));
            set(t, "cluster.user", c.user.as_str());
            set(t, "cluster.password_file", path(&c.password_file));
            if client_cert {
                set(t, "cluster.client_cert", path(&c.client_cert));
                set(t, "cluster.client_key", path(&c.client_key));
            }
        });
    }
}

/// The published certificate's SHA-256, once the leader published one.
fn published_sha256(etcd: &EtcdCluster, fleet: &Fleet, daemons: &[Daemon]) -> String {
    let current = format!("{}certs/{CERT}/current", fleet.prefix);
    wait_until("the leader published a certificate", Duration::from_secs(60), || etcd.get(&current).is_some(), || logs(daemons));
    let shared: serde_json::Value = serde_json::from_slice(&etcd.get(&current).unwrap()).unwrap();
    shared["meta"]["sha256"].as_str().unwrap().to_owned()
}

#[test]
fn a_fleet_over_etcd_with_tls_client_certificates_and_a_user_issues_once_and_every_node_verifies() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start_secure(3, Security { client_cert_auth: true, ..Security::default() });
    let fleet = Fleet::new(3, &pebble, &etcd);
    assert!(etcd.endpoints().iter().all(|e| e.starts_with("https://")), "{:?}", etcd.endpoints());
    secure_nodes(&fleet, &etcd, true);
    for n in &fleet.nodes {
        n.install_self_signed();
    }
    // The CA reaches node-1, whose responder reads the token from etcd (over TLS, as the
    // user). Not another node: the leader orders at once, maybe before another responder runs.
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[0].addr);

    let daemons = fleet.start_led_by_node1();
    let sha = published_sha256(&etcd, &fleet, &daemons);
    wait_until("every node serves the fleet's certificate", Duration::from_secs(90), || all_serve(&fleet, &sha), || logs(&daemons));
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "{}", pebble.logs());
    let node1 = daemons[0].log_text();
    assert!(node1.contains("HTTP-01 request") && node1.contains("found=true"), "node-1 answered the CA:\n{node1}");
    for n in &fleet.nodes {
        assert_chain_verifies(&n.fullchain(), &pebble.issuing_root());
        assert_key_matches(&n.fullchain(), &n.install_dir().join("domain.key"));
    }
    wait_until(
        "every node recorded its result",
        Duration::from_secs(30),
        || cluster_status(&fleet.nodes[1])["certificates"][0]["rollout"] == "complete",
        || logs(&daemons),
    );
    let status = cluster_status(&fleet.nodes[1]);
    assert_eq!(status["leader"], "node-1", "{status:#}");
    let results = status["certificates"][0]["results"].as_array().unwrap().clone();
    let mut verified: Vec<&str> =
        results.iter().filter(|r| r["outcome"] == "verified" && r["sha256"] == sha.as_str()).map(|r| r["node"].as_str().unwrap()).collect();
    verified.sort();
    assert_eq!(verified, ["node-1", "node-2", "node-3"], "{status:#}");

    // The password is nowhere: not in a log, not in what the commands print, not in etcd.
    let password = &etcd.credentials().password;
    let plain = fleet.nodes[0].run(&["cluster", "status"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    let mut seen = logs(&daemons) + &plain.stdout + &plain.stderr + &status.to_string();
    seen.extend(etcd.get_prefix(&fleet.prefix).iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))));
    assert!(!seen.contains(password.as_str()), "the etcd password leaked:\n{seen}");
}

#[test]
fn nodes_whose_etcd_auth_tokens_expired_while_idle_still_order_answer_http01_and_roll_out() {
    let pebble = Pebble::start();
    // Tokens live 2 s unused (etcd's default is 5 min): any node idle longer holds an expired one.
    let etcd = EtcdCluster::start_secure(3, Security { auth_token_ttl: Some(2), ..Security::default() });
    let fleet = Fleet::new(2, &pebble, &etcd);
    secure_nodes(&fleet, &etcd, false);
    for n in &fleet.nodes {
        n.install_self_signed();
    }
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[0].addr);
    let daemons = fleet.start_led_by_node1();
    let first = published_sha256(&etcd, &fleet, &daemons);
    wait_until("both serve the first certificate", Duration::from_secs(90), || all_serve(&fleet, &first), || logs(&daemons));

    // Idle well past the tokens' life; then a renewal is asked for through another connection,
    // and the CA sent to node-2, whose responder has been idle all along.
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[1].addr);
    std::thread::sleep(Duration::from_secs(6));
    let asked = fleet.nodes[1].run(&["cluster", "renew", CERT]);
    assert_eq!(asked.code, 0, "{asked:?}");
    // The leader reads and orders, node-2's responder answers the CA, both roll it out: every
    // one of them with a token that etcd had forgotten.
    let renewed = || {
        let sha = cluster_status(&fleet.nodes[0])["certificates"][0]["sha256"].as_str().map(str::to_owned);
        sha.filter(|s| *s != first && all_serve(&fleet, s)).is_some()
    };
    wait_until("both serve the renewed certificate", Duration::from_secs(90), renewed, || logs(&daemons) + &pebble.logs());
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 2, "{}", pebble.logs());
    let node2 = daemons[1].log_text();
    assert!(node2.contains("HTTP-01 request") && node2.contains("found=true"), "node-2 answered the CA:\n{node2}");
    assert!(!logs(&daemons).contains("invalid auth token"), "{}", logs(&daemons));
}

/// A one-node fleet on a new one-member secure etcd (client certificates required), its
/// `[cluster]` complete; `edit` then breaks it.
fn one_secure_node(pebble: &Pebble, etcd: &EtcdCluster, edit: impl FnOnce(&mut toml::Table)) -> Fleet {
    let fleet = Fleet::new(1, pebble, etcd);
    secure_nodes(&fleet, etcd, true);
    fleet.nodes[0].setup.edit(edit);
    fleet
}

fn secure_etcd() -> EtcdCluster {
    EtcdCluster::start_secure(1, Security { client_cert_auth: true, ..Security::default() })
}

#[test]
fn a_wrong_etcd_password_fails_naming_the_user_and_password_file_and_the_password_is_never_shown() {
    let pebble = Pebble::start();
    let etcd = secure_etcd();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password-5f1c9e\n").unwrap();
    let fleet = one_secure_node(&pebble, &etcd, |t| set(t, "cluster.password_file", wrong.display().to_string()));
    let run = fleet.nodes[0].run(&["cluster", "status"]);
    assert_ne!(run.code, 0, "{run:?}");
    let user = format!("`{}`", etcd.credentials().user);
    for part in [user.as_str(), "[cluster] user", "password_file", &wrong.display().to_string()] {
        assert!(run.stderr.contains(part), "the error names {part}: {run:?}");
    }
    let shown = format!("{}{}", run.stdout, run.stderr);
    assert!(!shown.contains("not-the-password-5f1c9e") && !shown.contains(&etcd.credentials().password), "{run:?}");
}

#[test]
fn a_missing_ca_bundle_file_is_named_with_its_key_and_path() {
    let pebble = Pebble::start();
    let etcd = secure_etcd();
    let missing = "/nonexistent/regcert-test/etcd-ca.pem";
    let fleet = one_secure_node(&pebble, &etcd, |t| set(t, "cluster.ca_bundle", missing));
    let run = fleet.nodes[0].run(&["cluster", "status"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[cluster] ca_bundle") && run.stderr.contains(missing), "{run:?}");
}

#[test]
fn an_etcd_certificate_from_a_ca_not_in_ca_bundle_fails_saying_tls_failed_and_what_to_check() {
    let pebble = Pebble::start();
    let etcd = secure_etcd();
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = write_tls_material(other.path());
    // With the user (authentication is the first request) and without (the first read is).
    for with_user in [true, false] {
        let fleet = one_secure_node(&pebble, &etcd, |t| {
            set(t, "cluster.ca_bundle", other_ca.display().to_string());
            if !with_user {
                let cluster = table(t, "cluster");
                cluster.remove("user");
                cluster.remove("password_file");
            }
        });
        let run = fleet.nodes[0].run(&["cluster", "status"]);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("TLS") && run.stderr.contains("[cluster] ca_bundle"), "with user: {with_user}: {run:?}");
        assert!(run.stderr.contains(&other_ca.display().to_string()), "names the file: {run:?}");
    }
}

#[test]
fn without_the_client_certificate_that_etcd_requires_the_error_names_client_cert() {
    let pebble = Pebble::start();
    let etcd = secure_etcd();
    let fleet = one_secure_node(&pebble, &etcd, |t| {
        let cluster = table(t, "cluster");
        cluster.remove("client_cert");
        cluster.remove("client_key");
    });
    let run = fleet.nodes[0].run(&["cluster", "status"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[cluster] client_cert"), "{run:?}");
}

#[test]
fn a_user_without_permission_on_the_prefix_is_told_which_prefix_to_grant() {
    let pebble = Pebble::start();
    let etcd = secure_etcd();
    let fleet = one_secure_node(&pebble, &etcd, |t| set(t, "cluster.prefix", "/elsewhere/"));
    let run = fleet.nodes[0].run(&["cluster", "status"]);
    assert_ne!(run.code, 0, "{run:?}");
    let user = format!("`{}`", etcd.credentials().user);
    assert!(run.stderr.contains(&user) && run.stderr.contains("/elsewhere/") && run.stderr.contains("permission"), "{run:?}");
}
