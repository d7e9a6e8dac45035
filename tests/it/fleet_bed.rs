//! The fleet test bed proves itself (the fleet tests rely on it): a real etcd cluster that keeps
//! quorum with a member down and keeps its data when stopped whole; registry processes that a
//! reload command restarts onto a new pair (and a broken one does not); pebble-challtestsrv
//! sending a name to the address a test chose. Nothing here tests regcert.

use std::process::Command;

use crate::common::etcd::EtcdCluster;
use crate::common::fleet::*;
use crate::common::*;

#[test]
fn etcd_cluster_keeps_quorum_with_one_member_down_and_comes_back_after_all_stopped() {
    let mut etcd = EtcdCluster::start(3);
    let prefix = fleet_prefix();
    let key = |k: &str| format!("{prefix}{k}");
    // Bytes no shell or text tool would carry whole: a NUL, a newline, a leading dash.
    let binary = b"-\0binary\nvalue".to_vec();
    etcd.put(&key("a"), &binary);
    assert_eq!(etcd.get(&key("a")), Some(binary.clone()));
    assert_eq!(etcd.get(&key("absent")), None);

    // The leader stops: the other two elect one of them and go on reading and writing.
    let first_leader = etcd.leader_member();
    etcd.stop_member(first_leader);
    assert!(!etcd.healthy(first_leader), "a stopped member answers");
    etcd.leader_member(); // waits for the election: a write without a leader fails at once
    etcd.put(&key("b"), "written while a member was down");
    // It rejoins from its data directory and catches up on what it missed (its own copy read).
    etcd.start_member(first_leader);
    etcd.wait_healthy();
    assert_eq!(etcd.get_at(first_leader, &key("b")).as_deref(), Some(&b"written while a member was down"[..]));

    // A member killed outright (SIGKILL, a crash) comes back as well.
    let crashed = (etcd.leader_member() + 1) % 3;
    etcd.kill_member(crashed);
    etcd.put(&key("c"), "written while a member had crashed");
    etcd.start_member(crashed);
    etcd.wait_healthy();
    assert_eq!(etcd.get_at(crashed, &key("c")).as_deref(), Some(&b"written while a member had crashed"[..]));

    // All stopped: no member answers. All started again: every key is still there.
    etcd.stop_all();
    assert!((0..3).all(|i| !etcd.healthy(i)), "a member answers after stop_all");
    etcd.start_all();
    let expected = vec![
        (key("a"), binary),
        (key("b"), b"written while a member was down".to_vec()),
        (key("c"), b"written while a member had crashed".to_vec()),
    ];
    assert_eq!(etcd.get_prefix(&prefix), expected);
}

/// Run a reload command the way regcert runs one: the argv, no shell around it.
fn run_command(argv: &[String]) -> std::process::Output {
    Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
}

#[test]
fn registry_process_restarts_on_reload_command_and_serves_the_new_pair() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(1);
    let fleet = Fleet::new(2, &pebble, &etcd);
    let (one, two) = (&fleet.nodes[0], &fleet.nodes[1]);
    for node in &fleet.nodes {
        node.install_self_signed();
    }
    assert_eq!((one.addr.as_str(), two.addr.as_str()), ("127.0.0.2", "127.0.0.3"));
    let (first, other) = (one.served_sha256(), two.served_sha256());
    assert_eq!(first, leaf_sha256(&one.fullchain()), "node 1 serves another pair than its own");
    assert_eq!(other, leaf_sha256(&two.fullchain()), "node 2 serves another pair than its own");
    assert_ne!(first, other);

    // A new pair on disk is not served by itself: the registry loads its pair at start only.
    one.install_self_signed();
    let second = leaf_sha256(&one.fullchain());
    assert_ne!(second, first);
    assert_eq!(one.served_sha256(), first);

    // The broken command succeeds and changes nothing.
    let pid = one.registry.pid();
    let out = run_command(&one.broken_reload_command());
    assert!(out.status.success(), "{out:?}");
    assert_eq!((one.registry.pid(), one.served_sha256()), (pid, first.clone()));

    // The reload command restarts it and returns once the new process answers: the new pair is
    // served at once, with no retry here.
    let out = run_command(&one.reload_command());
    assert!(out.status.success(), "{out:?}\n{}", one.registry.log());
    assert_ne!(one.registry.pid(), pid, "the registry process was not restarted");
    assert_eq!(one.served_sha256(), second);
    assert_eq!(one.served_serial(), serial(&one.fullchain()));
    // The other node's registry was not touched.
    assert_eq!(two.served_sha256(), other);
}

#[test]
fn fleet_node_configs_share_etcd_prefix_and_key_and_are_valid_apart_from_cluster() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(1);
    let fleet = Fleet::new(2, &pebble, &etcd);
    let key = std::fs::read_to_string(&fleet.secret_key).unwrap();
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.trim_end()).unwrap();
    assert_eq!((decoded.len(), key.lines().count(), mode(&fleet.secret_key)), (32, 1, 0o600), "the secret key file");
    for node in &fleet.nodes {
        let config: toml::Table = std::fs::read_to_string(&node.config).unwrap().parse().unwrap();
        let cluster = &config["cluster"];
        assert_eq!(cluster["node"].as_str(), Some(node.name.as_str()));
        assert_eq!(cluster["prefix"].as_str(), Some(fleet.prefix.as_str()));
        assert_eq!(cluster["secret_key_file"].as_str(), Some(fleet.secret_key.to_str().unwrap()));
        assert_eq!(cluster["endpoints"], toml::Value::from(etcd.endpoints()));
        assert_eq!(config["state_dir"].as_str(), Some(node.state_dir().to_str().unwrap()));
        assert_eq!(config["http01"]["listen"].as_str(), Some(format!("{}:{}", node.addr, pebble.http_port).as_str()));
        // The rest is a config today's regcert accepts ([cluster] is issue 13's, not yet known).
        node.setup.edit(|c| drop(c.remove("cluster")));
        let check = node.run(&["check-config"]);
        assert_eq!(check.code, 0, "{}: {check:?}", node.name);
    }
}

/// The A records pebble-challtestsrv serves for `name` (what Pebble's VA resolves it to).
fn resolve(pebble: &Pebble, name: &str) -> String {
    let (host, port) = pebble.challtest_dns.split_once(':').unwrap();
    let out =
        Command::new(tool("dig")).args(["+short", "+time=2", "+tries=3", "-p", port, &format!("@{host}"), name, "A"]).output().unwrap();
    assert!(out.status.success(), "dig {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn challtestsrv_answers_the_address_a_name_is_pointed_at_in_pebble_2_4_and_2_10() {
    for opts in [PebbleOpts::default(), PebbleOpts::v2_10()] {
        let pebble = Pebble::start_with(opts);
        pebble.point_name_at(FLEET_NAME, "127.0.0.4");
        assert_eq!(resolve(&pebble, FLEET_NAME), "127.0.0.4");
        assert_eq!(resolve(&pebble, "other.fleet.test"), "127.0.0.1", "only the name pointed at moves");
        // Pointed elsewhere, it answers the new address alone (the VA would dial the first one).
        pebble.point_name_at(FLEET_NAME, "127.0.0.5");
        assert_eq!(resolve(&pebble, FLEET_NAME), "127.0.0.5");
        pebble.clear_name(FLEET_NAME);
        assert_eq!(resolve(&pebble, FLEET_NAME), "127.0.0.1");
    }
}

/// One node with today's regcert (its `[cluster]` table left out): the CA validates HTTP-01 only
/// at the address the name is pointed at, and the node's reload command and verify work as
/// regcert runs them: its registry serves the new certificate, verified.
#[test]
fn pebble_validates_at_the_address_a_name_is_pointed_at() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(1);
    let fleet = Fleet::new(2, &pebble, &etcd);
    let (one, two) = (&fleet.nodes[0], &fleet.nodes[1]);
    two.install_self_signed();
    two.setup.edit(|c| drop(c.remove("cluster")));

    // Pointed at node 1, where nothing answers: node 2's responder is never asked.
    pebble.point_name_at(FLEET_NAME, &one.addr);
    let renew = two.run(&["renew"]);
    assert_ne!(renew.code, 0, "{renew:?}");
    assert!(renew.stderr.contains(&one.addr) || renew.stdout.contains(&one.addr), "the failure names node 1's address: {renew:?}");

    pebble.point_name_at(FLEET_NAME, &two.addr);
    let renew = two.run(&["renew"]);
    assert_eq!(renew.code, 0, "{renew:?}\n{}", two.registry.log());
    assert_chain_verifies(&two.fullchain(), &pebble.issuing_root());
    assert_eq!(two.served_sha256(), leaf_sha256(&two.fullchain()), "the registry does not serve the renewed certificate");
}
