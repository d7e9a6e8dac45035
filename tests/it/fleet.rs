//! Fleet mode (issue 13) against real components: a 3-member etcd cluster on loopback, three
//! regcert nodes (each its own state dir, install dir, registry process and HTTP-01 responder
//! on its own loopback address) and a real Pebble.

use std::time::{Duration, Instant};

use crate::common::etcd::EtcdCluster;
use crate::common::fleet::*;
use crate::common::*;

/// Wait until `check` holds, polling; panic with `what` (and `context()`) after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fleet's status as node `node` reads it from etcd (`regcert cluster status --json`).
fn cluster_status(node: &FleetNode) -> serde_json::Value {
    let out = node.run(&["cluster", "status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("cluster status --json: {e}\n{}\n{}", out.stdout, out.stderr))
}

fn logs(daemons: &[Daemon]) -> String {
    daemons.iter().enumerate().map(|(i, d)| format!("--- node-{} ---\n{}", i + 1, d.log_text())).collect()
}

/// Every node's registry serves the same leaf, the one the fleet published (not its own
/// self-signed one).
fn all_serve(fleet: &Fleet, sha256: &str) -> bool {
    fleet.nodes.iter().all(|n| n.registry.try_served_sha256().as_deref() == Some(sha256))
}

#[test]
fn one_order_for_three_nodes_all_verified_http01_answered_by_a_node_that_is_not_the_leader_and_no_key_in_clear_in_etcd() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(3, &pebble, &etcd);
    let old: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| {
            n.install_self_signed();
            n.served_sha256()
        })
        .collect();
    // The CA reaches node-3 only, as a load balancer might send it there.
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[2].addr);

    let mut first = fleet.nodes[0].start_daemon();
    first.wait_for_log("this node leads the fleet", 1, Duration::from_secs(30));
    let mut daemons = vec![first];
    daemons.extend(fleet.nodes[1..].iter().map(FleetNode::start_daemon));

    let published = || etcd.get(&format!("{}certs/{CERT}/current", fleet.prefix));
    wait_until("the leader published a certificate", Duration::from_secs(60), || published().is_some(), || logs(&daemons) + &pebble.logs());
    let shared: serde_json::Value = serde_json::from_slice(&published().unwrap()).unwrap();
    let sha = shared["meta"]["sha256"].as_str().unwrap().to_owned();
    wait_until("every node serves the fleet's certificate", Duration::from_secs(90), || all_serve(&fleet, &sha), || logs(&daemons));

    // One order for the fleet, by the leader; the CA's validation went to node-3's responder.
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "{}", pebble.logs());
    assert_eq!(logs(&daemons).matches("published the new certificate for the fleet").count(), 1, "{}", logs(&daemons));
    assert!(daemons[0].log_text().contains("published the new certificate for the fleet"), "node-1 led and ordered");
    let node3 = daemons[2].log_text();
    assert!(node3.contains("HTTP-01 request") && node3.contains("found=true"), "node-3 answered the CA:\n{node3}");
    for (n, before) in fleet.nodes.iter().zip(&old) {
        assert_ne!(&n.served_sha256(), before);
        assert_chain_verifies(&n.fullchain(), &pebble.issuing_root());
        assert_key_matches(&n.fullchain(), &n.install_dir().join("domain.key"));
    }

    // Every node recorded its verified result; the rollout is complete.
    let status = cluster_status(&fleet.nodes[1]);
    assert_eq!(status["leader"], "node-1", "{status:#}");
    let cert = &status["certificates"][0];
    assert_eq!(cert["rollout"], "complete", "{status:#}");
    let mut verified: Vec<&str> = cert["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "verified" && r["sha256"] == sha.as_str())
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    verified.sort();
    assert_eq!(verified, ["node-1", "node-2", "node-3"], "{status:#}");

    // Nothing under the prefix holds a private key in clear: not the certificate's, not the account's.
    let all = etcd.get_prefix(&fleet.prefix);
    assert!(
        all.iter().any(|(k, _)| k.contains("/accounts/")),
        "the ACME account is shared: {:?}",
        all.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (key, value) in &all {
        let text = String::from_utf8_lossy(value);
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("\"d\"") && !text.contains("key_pkcs8"),
            "{key} holds key material in clear: {text}"
        );
    }
    let key_pem = std::fs::read_to_string(fleet.nodes[0].install_dir().join("domain.key")).unwrap();
    let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!all.iter().any(|(_, v)| String::from_utf8_lossy(v).contains(&body[..40])), "the key's base64 is in etcd");
}
