//! Fleet mode (issue 13) against real components: a 3-member etcd cluster on loopback, three
//! regcert nodes (each its own state dir, install dir, registry process and HTTP-01 responder
//! on its own loopback address) and a real Pebble.

use std::time::Duration;

use toml::{Value, toml};

use crate::common::etcd::EtcdCluster;
use crate::common::fleet::*;
use crate::common::*;

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

    // The leader's and another node's metrics. The leader may order before node-3's responder
    // is up: a failed first order is tried again a second later (it would cost no issuance).
    let metrics: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    for (n, listen) in fleet.nodes.iter().zip(&metrics) {
        n.setup.edit(|c| set(c, "metrics.listen", listen.as_str()));
    }
    for n in &fleet.nodes {
        n.setup.edit(|c| set(c, "daemon.backoff", Value::from(vec!["1s"])));
    }
    let mut daemons = fleet.start_led_by_node1();

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

    let metric = |at: &str, line: &str| http_get(at, "/metrics").1.lines().any(|l| l == line);
    assert!(metric(&metrics[0], "regcert_cluster_leader 1") && metric(&metrics[1], "regcert_cluster_leader 0"));
    // node-2 learns that the last node finished at its next check (the watch starts it).
    let complete = format!("regcert_cluster_rollout_state{{name=\"{CERT}\"}} 0");
    wait_until(
        "node-2's gauge says complete",
        Duration::from_secs(10),
        || metric(&metrics[1], &complete),
        || http_get(&metrics[1], "/metrics").1,
    );
    let requests = http_get(&metrics[1], "/metrics").1;
    assert!(requests.lines().any(|l| l.starts_with("regcert_cluster_etcd_requests_total ") && !l.ends_with(" 0")), "{requests}");
    assert!(requests.contains("regcert_cluster_etcd_errors_total 0"), "{requests}");

    // A node that stops leaves the fleet at once: another leads without waiting for the lease.
    daemons[0].signal("TERM");
    assert_eq!(daemons[0].wait(Duration::from_secs(30)), 0);
    wait_until(
        "another node leads",
        Duration::from_secs(2),
        || cluster_status(&fleet.nodes[1])["leader"].as_str().is_some_and(|l| l != "node-1"),
        || logs(&daemons),
    );

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

/// Wait until the fleet's rollout is complete over its live nodes.
fn rollout_complete(fleet: &Fleet, what: &str, daemons: &[Daemon]) {
    let complete = || cluster_status(&fleet.nodes[1])["certificates"][0]["rollout"] == "complete";
    wait_until(what, Duration::from_secs(90), complete, || logs(daemons));
}

/// Every node reports failures and rollbacks to `hook`.
fn notify_to(fleet: &Fleet, hook: &Webhook) {
    for n in &fleet.nodes {
        n.setup.edit(|c| {
            let notify = toml! { webhook = (hook.url.as_str()) events = ["failed", "rolled_back"] };
            c.insert("notify".into(), Value::Array(vec![notify.into()]));
        });
    }
}

#[test]
fn a_canary_whose_reload_is_broken_halts_the_rollout_the_others_keep_their_certificate_and_resume_continues_it() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(3, &pebble, &etcd);
    let hook = Webhook::start();
    notify_to(&fleet, &hook);
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[1].addr);
    for n in &fleet.nodes {
        n.install_self_signed();
    }
    // node-1 leads, so it takes the first turn of each rollout: the canary.
    let canary = &fleet.nodes[0];
    let mut daemons = fleet.start_led_by_node1();
    rollout_complete(&fleet, "the first certificate is rolled out", &daemons);
    let working = cluster_status(&fleet.nodes[1])["certificates"][0]["sha256"].as_str().unwrap().to_owned();
    assert!(all_serve(&fleet, &working));

    // The canary's reload breaks (it restarts nothing); a renewal is asked for from another node.
    canary.setup.edit_cert(CERT, |c| set(c, "reload.command", Value::from(canary.broken_reload_command())));
    daemons[0].signal("HUP");
    daemons[0].wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    let asked = fleet.nodes[2].run(&["cluster", "renew", CERT]);
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(asked.stdout.contains("asked the fleet's leader (node-1)"), "{asked:?}");
    wait_until(
        "the canary halted the rollout",
        Duration::from_secs(90),
        || cluster_status(&fleet.nodes[1])["certificates"][0]["rollout"] == "halted",
        || logs(&daemons),
    );
    let status = cluster_status(&fleet.nodes[2]);
    let cert = &status["certificates"][0];
    assert_eq!(cert["halted_by"], "node-1", "{status:#}");
    assert!(cert["error"].as_str().unwrap().contains("still serves another certificate"), "the error says what was served: {status:#}");
    let results = cert["results"].as_array().unwrap();
    let canary_result = results.iter().find(|r| r["node"] == "node-1").unwrap();
    assert_eq!((&canary_result["outcome"], &canary_result["sha256"]), (&"rolled_back".into(), &cert["sha256"]), "{status:#}");
    // The others never started their turn: every node serves the certificate that works.
    std::thread::sleep(Duration::from_secs(3));
    assert!(all_serve(&fleet, &working), "{}", logs(&daemons));
    assert!(results.iter().filter(|r| r["node"] != "node-1").all(|r| r["sha256"] == working.as_str()), "{status:#}");
    assert_eq!(fleet.nodes[1].run(&["cluster", "status"]).code, 1, "a halted rollout is a problem for monitoring");
    // One notification for the fleet, from the node that failed.
    hook.wait_for("rolled_back", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.bodies.lock().unwrap().len(), 1, "{:?}", hook.bodies.lock().unwrap());

    // The cause fixed (and the service told), the rollout resumes: the canary first, then the rest.
    canary.setup.edit_cert(CERT, |c| set(c, "reload.command", Value::from(canary.reload_command())));
    daemons[0].signal("HUP");
    daemons[0].wait_for_log("configuration reloaded", 2, Duration::from_secs(10));
    let resumed = fleet.nodes[2].run(&["cluster", "resume", CERT]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(resumed.stdout.contains("resumed"), "{resumed:?}");
    let sha = cert["sha256"].as_str().unwrap().to_owned();
    wait_until("every node serves the new certificate", Duration::from_secs(90), || all_serve(&fleet, &sha), || logs(&daemons));
    rollout_complete(&fleet, "the rollout is complete", &daemons);
    assert_eq!(fleet.nodes[0].run(&["cluster", "resume", CERT]).code, 1, "nothing left to resume");
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 2, "{}", pebble.logs());
}

/// A DNS-01 hook (`exec` provider) that publishes through pebble-challtestsrv — and the first
/// time it is called, stalls for a while after writing `stalled`, as a slow DNS provider would:
/// the order of whoever calls it first is in flight until then.
fn stalling_dns_hook(pebble: &Pebble, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (script, marker) = (dir.join("dns-hook.sh"), dir.join("stalled"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\n[ \"$1\" = present ] || exit 0\n\
             {curl} -sSf -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" {mgmt}/set-txt\n\
             if [ ! -e {marker} ]; then echo $$ > {marker}; sleep 20; fi\n",
            curl = tool("curl").display(),
            mgmt = pebble.challtest_mgmt,
            marker = marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, marker)
}

/// Every node of `fleet` gets its old pair and answers DNS-01 through [`stalling_dns_hook`] (in
/// `dir`); returns the hook's marker.
fn answer_dns01_through_a_stalling_hook(pebble: &Pebble, fleet: &Fleet, dir: &std::path::Path) -> std::path::PathBuf {
    let (hook, marker) = stalling_dns_hook(pebble, dir);
    for n in &fleet.nodes {
        n.install_self_signed();
        n.setup.edit_cert(CERT, |c| {
            let dns = toml! {
                provider = "exec"
                command = [(hook.display().to_string())]
                nameservers = [(pebble.challtest_dns.as_str())]
            };
            c.insert("dns".into(), dns.into());
        });
    }
    marker
}

#[test]
fn the_leader_killed_mid_order_another_node_takes_over_and_completes_it_with_one_issuance() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(3, &pebble, &etcd);
    let dir = tempfile::tempdir().unwrap();
    let marker = answer_dns01_through_a_stalling_hook(&pebble, &fleet, dir.path());
    let mut daemons = fleet.start_led_by_node1();
    // The leader's order is in flight (its DNS hook stalls): the leader dies, as a host would.
    wait_until("the leader's order is in flight", Duration::from_secs(30), || marker.exists(), || logs(&daemons));
    assert!(daemons[0].log_text().contains("ordering it as the leader"), "{}", logs(&daemons));
    daemons[0].signal("KILL");
    let current = format!("{}certs/{CERT}/current", fleet.prefix);
    assert!(etcd.get(&current).is_none(), "the dead leader published nothing");

    // Its lease runs out; another node leads, orders, and the two live nodes roll it out.
    wait_until("another node published", Duration::from_secs(60), || etcd.get(&current).is_some(), || logs(&daemons));
    let shared: serde_json::Value = serde_json::from_slice(&etcd.get(&current).unwrap()).unwrap();
    let (by, sha) = (shared["by"].as_str().unwrap().to_owned(), shared["meta"]["sha256"].as_str().unwrap().to_owned());
    assert_ne!(by, "node-1");
    let live = &fleet.nodes[1..];
    wait_until(
        "the live nodes serve it",
        Duration::from_secs(60),
        || live.iter().all(|n| n.registry.try_served_sha256().as_deref() == Some(sha.as_str())),
        || logs(&daemons),
    );
    rollout_complete(&fleet, "the rollout is complete over the live nodes", &daemons);
    assert_eq!(cluster_status(&fleet.nodes[1])["leader"], by.as_str());
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "issued once: {}", pebble.logs());

    // The dead node comes back and catches up, without a new order.
    daemons[0] = fleet.nodes[0].start_daemon();
    wait_until("node-1 serves it too", Duration::from_secs(60), || all_serve(&fleet, &sha), || logs(&daemons));
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "{}", pebble.logs());
}

#[test]
fn a_leader_paused_past_its_lease_cannot_publish_over_its_successor() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(2, &pebble, &etcd);
    let dir = tempfile::tempdir().unwrap();
    let marker = answer_dns01_through_a_stalling_hook(&pebble, &fleet, dir.path());
    let mut daemons = fleet.start_led_by_node1();
    wait_until("the leader's order is in flight", Duration::from_secs(30), || marker.exists(), || logs(&daemons));
    // The leader freezes (a VM paused, a long GC, a partition) past its lease; node-2 takes over.
    daemons[0].signal("STOP");
    let current = format!("{}certs/{CERT}/current", fleet.prefix);
    wait_until("node-2 published", Duration::from_secs(60), || etcd.get(&current).is_some(), || logs(&daemons));
    let published = etcd.get(&current).unwrap();
    let shared: serde_json::Value = serde_json::from_slice(&published).unwrap();
    assert_eq!(shared["by"], "node-2");
    // The old leader wakes up, finishes its order — and its write is refused.
    daemons[0].signal("CONT");
    daemons[0].wait_for_log("is no longer the fleet's leader", 1, Duration::from_secs(60));
    assert_eq!(etcd.get(&current).unwrap(), published, "what node-2 published stays");
    let sha = shared["meta"]["sha256"].as_str().unwrap().to_owned();
    wait_until("both nodes serve node-2's certificate", Duration::from_secs(60), || all_serve(&fleet, &sha), || logs(&daemons));
}

#[test]
fn renew_acts_as_a_node_once_with_an_etcd_member_down_and_says_why_it_waits() {
    let pebble = Pebble::start();
    let mut etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(3, &pebble, &etcd);
    for n in &fleet.nodes {
        n.install_self_signed();
    }
    // The CA reaches node-2, the node that runs first: `renew` answers HTTP-01 itself.
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[1].addr);
    // One etcd member down (the raft leader, even): two of three keep quorum, nothing changes.
    let member = etcd.leader_member();
    etcd.stop_member(member);

    // A node that is not the leader and finds nothing published says so and changes nothing.
    // (node-2 runs first while no one leads: it leads, orders, publishes and installs itself.)
    let run = fleet.nodes[1].run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    assert!(run.stdout.contains("installed the fleet's certificate"), "{run:?}");
    let shared: serde_json::Value = serde_json::from_slice(&etcd.get(&format!("{}certs/{CERT}/current", fleet.prefix)).unwrap()).unwrap();
    assert_eq!(shared["by"], "node-2");
    let sha = shared["meta"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(fleet.nodes[1].served_sha256(), sha);
    // Its lease was given back: no leader is left behind by a one-shot run.
    assert_eq!(cluster_status(&fleet.nodes[0])["leader"], serde_json::Value::Null);

    for n in [&fleet.nodes[0], &fleet.nodes[2]] {
        let run = n.run(&["renew"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("installed the fleet's certificate") && run.stdout.contains("ordered by node node-2"), "{run:?}");
        assert_eq!(n.served_sha256(), sha);
    }
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "{}", pebble.logs());
    let again = fleet.nodes[0].run(&["renew"]);
    assert!(again.stdout.contains("not due"), "{again:?}");
    etcd.start_member(member);
}

#[test]
fn with_all_of_etcd_down_nodes_keep_serving_and_report_it_and_a_node_may_issue_alone_when_opted_in() {
    let pebble = Pebble::start();
    let mut etcd = EtcdCluster::start(3);
    let fleet = Fleet::new(2, &pebble, &etcd);
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[1].addr);
    for n in &fleet.nodes {
        n.install_self_signed();
    }
    // node-2's service leads and orders; node-1 takes the certificate with a one-shot renew.
    let node2 = fleet.nodes[1].start_daemon();
    let current = format!("{}certs/{CERT}/current", fleet.prefix);
    wait_until("node-2 published", Duration::from_secs(30), || etcd.get(&current).is_some(), || node2.log_text());
    let shared: serde_json::Value = serde_json::from_slice(&etcd.get(&current).unwrap()).unwrap();
    let sha = shared["meta"]["sha256"].as_str().unwrap().to_owned();
    let run = fleet.nodes[0].run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", node2.log_text());
    wait_until("both serve it", Duration::from_secs(30), || all_serve(&fleet, &sha), || node2.log_text());
    drop(node2);
    let mut daemon = fleet.nodes[0].start_daemon();
    daemon.wait_for_log("this node leads the fleet", 1, Duration::from_secs(30));

    etcd.stop_all();
    // The service keeps running and serving; losing etcd makes it check and say so at once.
    daemon.wait_for_log("etcd is unreachable; every certificate stays as it is", 1, Duration::from_secs(30));
    assert!(daemon.running());
    assert_eq!(fleet.nodes[0].served_sha256(), sha);
    let run = fleet.nodes[1].run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("waiting: ") && run.stdout.contains("etcd is unreachable") && run.stdout.contains("stays"), "{run:?}");
    let status = fleet.nodes[1].run(&["cluster", "status"]);
    assert_ne!(status.code, 0);
    assert!(status.stderr.contains("cannot reach etcd") && status.stderr.contains("[cluster] endpoints"), "{status:?}");

    // Opted in, a node whose certificate would run out issues for itself meanwhile (Pebble's
    // certificates last five years: 2000 days is "soon").
    fleet.nodes[1].setup.edit(|c| set(c, "cluster.issue_alone_within", "2000d"));
    let run = fleet.nodes[1].run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed"), "{run:?}");
    assert_ne!(fleet.nodes[1].served_sha256(), sha, "{run:?}");

    // etcd back: the service finds the fleet again and leads it.
    etcd.start_all();
    daemon.wait_for_log("this node leads the fleet", 2, Duration::from_secs(60));
    assert_eq!(cluster_status(&fleet.nodes[1])["leader"], "node-1");
}

/// The CA's renewal window (ARI, Pebble 2.10's real one) reaches the fleet's certificate: its
/// leader asks for the window and stores it, and when the CA says "renew now" (as for a revoked
/// certificate) the leader orders a new certificate, which every node then installs.
#[test]
fn the_cas_renewal_window_renews_the_fleets_certificate_for_every_node() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let etcd = EtcdCluster::start(1);
    let fleet = Fleet::new(2, &pebble, &etcd);
    for n in &fleet.nodes {
        n.install_self_signed();
        // A known lifetime: Pebble 2.10 picks a profile at random when the order names none.
        n.setup.edit_cert(CERT, |c| set(c, "profile", "default"));
    }
    pebble.point_name_at(FLEET_NAME, &fleet.nodes[0].addr);
    for n in &fleet.nodes {
        let run = n.run(&["renew"]);
        assert!(run.code == 0 && run.stdout.contains("installed the fleet's certificate"), "{run:?}\n{}", pebble.logs());
    }
    let first = fleet.nodes[0].served_serial();
    assert_eq!(fleet.nodes[1].served_serial(), first);
    let first_id = crate::ari::cert_id(&fleet.nodes[0].fullchain());

    // The lifetime keeps it; the leader (node-1, running first) asks the CA for its window and
    // stores it.
    let run = fleet.nodes[0].run(&["renew"]);
    assert!(run.code == 0 && run.stdout.contains("not due"), "{run:?}");
    assert!(run.stderr.contains("CA renewal window (ARI)"), "the leader asked for the window: {run:?}");
    let schedule = fleet.nodes[0].state_dir().join(format!("certs/{CERT}/schedule.json"));
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&schedule).unwrap()).unwrap();
    assert!(stored["ari"]["start"].is_u64(), "{stored}");

    // The CA says "renew now". Its Retry-After (6 h) is moved to now, as a test cannot wait.
    let past = |secs: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(now() - secs)).to_string();
    pebble.set_renewal_info(
        &fleet.nodes[0].fullchain(),
        &serde_json::json!({ "suggestedWindow": { "start": past(7_200), "end": past(3_600) } }),
    );
    stored["ari"]["refetch_at"] = now().into();
    std::fs::write(&schedule, stored.to_string()).unwrap();
    let run = fleet.nodes[0].run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    assert!(run.stderr.contains("the CA's renewal window says renew"), "{run:?}");
    assert!(run.stderr.contains("the fleet's certificate is due; ordering it as the leader"), "{run:?}");
    assert!(run.stdout.contains("installed the fleet's certificate"), "{run:?}");
    let renewed = fleet.nodes[0].served_serial();
    assert_ne!(renewed, first);
    // The leader's order names the certificate it replaces (node-1 serves it, and its account issued it).
    let (account, key) = fleet.nodes[0].setup.account_credentials();
    let order_url = fleet.nodes[0].setup.meta(CERT)["order_url"].as_str().unwrap().to_owned();
    let order = pebble.post_as_get(&order_url, &account, &key);
    assert_eq!(order["replaces"], first_id.as_str(), "the renewal order as Pebble holds it: {order}");
    let run = fleet.nodes[1].run(&["renew"]);
    assert!(run.code == 0 && run.stdout.contains("installed the fleet's certificate"), "{run:?}");
    assert_eq!(fleet.nodes[1].served_serial(), renewed, "node-2 serves the new certificate too");
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 2, "one order per certificate for the fleet");
}

/// SIGHUP applies `[cluster]`: a node started without it joins the fleet when the section is
/// added (it leads, orders and publishes the fleet's certificate, and installs it), and leaves
/// it when the section is removed: its lease, and the leadership with it, is given back.
#[test]
fn sighup_joins_the_fleet_and_leaves_it() {
    let pebble = Pebble::start();
    let etcd = EtcdCluster::start(1);
    let fleet = Fleet::new(1, &pebble, &etcd);
    let node = &fleet.nodes[0];
    node.install_self_signed();
    pebble.point_name_at(FLEET_NAME, &node.addr);
    let mut cluster = None;
    node.setup.edit(|c| cluster = c.remove("cluster"));
    let cluster = cluster.unwrap();

    // Alone: the node renews the certificate as its own; nothing goes to etcd.
    let mut d = node.start_daemon();
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(60));
    let (published, leader) = (format!("{}certs/{CERT}/current", fleet.prefix), format!("{}leader", fleet.prefix));
    assert!(etcd.get(&published).is_none() && etcd.get(&leader).is_none());

    node.setup.edit(|c| {
        c.insert("cluster".into(), cluster.clone());
    });
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    wait_until("node-1 published the fleet's certificate", Duration::from_secs(60), || etcd.get(&published).is_some(), || d.log_text());
    assert_eq!(cluster_status(node)["leader"], "node-1");
    let shared: serde_json::Value = serde_json::from_slice(&etcd.get(&published).unwrap()).unwrap();
    let sha = shared["meta"]["sha256"].as_str().unwrap().to_owned();
    wait_until("node-1 serves the fleet's certificate", Duration::from_secs(60), || all_serve(&fleet, &sha), || d.log_text());

    // New settings (another prefix: another fleet): the node leaves with the old ones, joins with
    // the new ones, and leads there too.
    let prefix = fleet_prefix();
    node.setup.edit(|c| set(c, "cluster.prefix", prefix.as_str()));
    d.signal("HUP");
    d.wait_for_log("the [cluster] settings changed; left the fleet, to join it again with the new ones", 1, Duration::from_secs(30));
    let moved = format!("{prefix}certs/{CERT}/current");
    wait_until("node-1 published under the new prefix", Duration::from_secs(60), || etcd.get(&moved).is_some(), || d.log_text());
    assert!(etcd.get(&leader).is_none(), "the old fleet's leadership was given back");
    let leader = format!("{prefix}leader");
    assert!(etcd.get(&leader).is_some());

    node.setup.edit(|c| {
        c.remove("cluster");
    });
    d.signal("HUP");
    d.wait_for_log("[cluster] is gone from the configuration; left the fleet", 1, Duration::from_secs(30));
    assert!(etcd.get(&leader).is_none(), "the leadership was given back with the lease:\n{}", d.log_text());
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
}
