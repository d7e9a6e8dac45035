//! contrib/prometheus/regcert-alerts.yml and contrib/grafana/regcert.json against the real tools:
//! promtool checks and unit-tests the rules, a real `regcert run` exports every metric they use,
//! and a real Prometheus scrapes that daemon, evaluates the rules and answers the dashboard's queries.

use crate::common::registry::*;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use toml::toml;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(path)
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tool("promtool")).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = contrib("prometheus");
    let check = promtool(&dir, &["check", "rules", "regcert-alerts.yml"]);
    assert!(check.contains("SUCCESS: 9 rules found"), "{check}");
    let test = promtool(&dir, &["test", "rules", "regcert-alerts.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

/// The PromQL expressions of the alert rules: each `expr:`, on its line or as the indented block
/// that follows `expr: |`.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block = lines[i + 1..].iter().take_while(|l| l.trim().is_empty() || indent(l) > indent(line));
            exprs.push(block.map(|l| l.trim()).collect::<Vec<_>>().join(" "));
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

/// The dashboard's queries: every panel target's `expr` and every variable's `definition`.
fn dashboard_expressions(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_expressions(v, out)),
        _ => {}
    }
}

/// The identifiers in a PromQL expression that name regcert's metrics (roughly: outside quoted
/// label values, every `regcert_…` word).
fn regcert_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("regcert_") {
            names.insert(word.clone());
        }
        word.clear();
        if c == '"' {
            quoted = !quoted;
        }
    }
    names
}

/// The dashboard's variables as a query would see them with everything selected.
fn substitute_variables(expr: &str) -> String {
    ["job", "instance", "name"].iter().fold(expr.replace("$__rate_interval", "1m"), |e, var| e.replace(&format!("${var}"), ".*"))
}

/// The sample names of a `/metrics` page.
fn exported_names(text: &str) -> BTreeSet<String> {
    let samples = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    samples.map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned()).collect()
}

/// A real Prometheus server (Debian's `prometheus`) scraping `target` every second as job
/// "regcert" and evaluating `rules` every second; its storage lives in `dir`.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: &str, rules: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        let yml = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: regcert\n    static_configs: [{{targets: [{target:?}]}}]\n"
        );
        std::fs::write(&config, yml).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, addr, log }
    }

    /// GET an API path; the `data` of a successful answer.
    fn api(&mut self, path: &str) -> serde_json::Value {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        let (code, body) = http_get(&self.addr, path);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(code == 200 && answer["status"] == "success", "GET {path}: {code} {body}");
        answer["data"].clone()
    }

    fn query(&mut self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    fn wait_until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(Instant::now() < deadline, "prometheus: {what} did not happen within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether it is ready to answer queries (it listens, then loads its storage: 503 until then).
    fn ready(&self) -> bool {
        std::net::TcpStream::connect(&self.addr).is_ok() && http_get(&self.addr, "/-/ready").0 == 200
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value the dashboard's panel `title` shows for the one certificate (its first query, now).
fn panel_value(prom: &mut Prometheus, dashboard: &serde_json::Value, title: &str) -> f64 {
    let panels = dashboard["panels"].as_array().unwrap();
    let panel = panels.iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("no panel {title:?}"));
    let result = prom.query(&substitute_variables(panel["targets"][0]["expr"].as_str().unwrap()));
    assert_eq!(result.len(), 1, "{title}: {result:?}");
    assert_eq!(result[0]["metric"]["name"], "registry", "{title}: {result:?}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_exported_and_prometheus_evaluates_them() {
    let rules_file = contrib("prometheus/regcert-alerts.yml");
    let alert_exprs = rule_expressions(&std::fs::read_to_string(&rules_file).unwrap());
    assert_eq!(alert_exprs.len(), 9, "{alert_exprs:#?}");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(contrib("grafana/regcert.json")).unwrap()).unwrap();
    let mut dashboard_exprs = Vec::new();
    dashboard_expressions(&dashboard, &mut dashboard_exprs);
    let used: BTreeSet<String> = alert_exprs.iter().chain(&dashboard_exprs).flat_map(|e| regcert_names(e)).collect();
    // The rough parser found the metrics the issue asks for (days left, renewals, ACME latency, verify).
    for name in [
        "regcert_certificate_expiration_timestamp_seconds",
        "regcert_renewals_total",
        "regcert_acme_request_duration_seconds_bucket",
        "regcert_verify_success",
    ] {
        assert!(used.contains(name), "{name} not found in the rules or the dashboard: {used:?}");
    }

    // A daemon that renewed, restarted and verified a registry's certificate over ACME. Its alert
    // point is set as far ahead of expiry as the certificate is due (`alert_before` =
    // `renew_before`): past it from the start, so that the expiry rule has something to fire on.
    let pebble = Pebble::start();
    let name = unique_name("alerting");
    let s = Setup::new(&pebble, &[cert("registry", &[&name], "ecdsa-p256").always_due()]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let metrics = format!("127.0.0.1:{}", free_port());
    s.edit(|c| {
        c.extend(toml! {
            [daemon]
            check = "0 0 0 1 1 *"
            alert_before = "3000d"
            [metrics]
            listen = (metrics.as_str())
        })
    });
    s.edit_cert("registry", |c| {
        set(c, "reload.docker.container", reg.container.as_str());
        set(c, "verify", verify_table(&pebble, &format!("https://{name}:5000/v2/"), &reg.addr()));
    });
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(60));

    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    let exported = exported_names(&text);
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "the rules or the dashboard use metrics regcert does not export: {missing:?}\n/metrics:\n{text}");

    // A real Prometheus scrapes the daemon and loads the rules.
    let dir = tempfile::tempdir().unwrap();
    let mut prom = Prometheus::start(dir.path(), &metrics, &rules_file);
    prom.wait_until("ready", Duration::from_secs(30), |p| p.ready());
    prom.wait_until("a scrape of regcert", Duration::from_secs(30), |p| {
        p.query("up{job=\"regcert\"} == 1").len() == 1 && !p.query("regcert_certificate_ready_status").is_empty()
    });
    prom.wait_until("every rule evaluated", Duration::from_secs(30), |p| {
        let groups = p.api("/api/v1/rules")["groups"].as_array().cloned().unwrap_or_default();
        let rules: Vec<_> = groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect();
        for rule in &rules {
            assert_ne!(rule["health"], "err", "rule failed: {rule}");
        }
        rules.len() == 9 && rules.iter().all(|r| r["health"] == "ok")
    });
    // The one alert is the expiring one, for this certificate, on the real series (its value is
    // the time left); nothing else fires or is pending for a daemon that renewed and verified
    // (RegcertTargetMissing may go pending in an evaluation before the first scrape; the next
    // one resolves it).
    let not_after = s.status_of("registry")["not_after"].as_u64().unwrap();
    let mut alerts = Vec::new();
    prom.wait_until("only RegcertCertificateExpiringSoon", Duration::from_secs(10), |p| {
        alerts = p.api("/api/v1/alerts")["alerts"].as_array().cloned().unwrap_or_default();
        alerts.len() == 1 && alerts[0]["labels"]["alertname"] == "RegcertCertificateExpiringSoon"
    });
    let alert = &alerts[0];
    assert_eq!(alert["state"], "firing", "{alert}");
    assert_eq!(alert["labels"]["name"], "registry", "{alert}");
    assert_eq!(alert["labels"]["instance"], metrics.as_str(), "{alert}");
    let left: f64 = alert["value"].as_str().unwrap().parse().unwrap();
    assert!((left - (not_after as f64 - now() as f64)).abs() < 120.0, "time left {left} s, not_after {not_after}: {alert}");

    // Every dashboard query is valid PromQL on the real series; days left is the installed
    // certificate's.
    for expr in &dashboard_exprs {
        if !expr.starts_with("label_values(") {
            prom.query(&substitute_variables(expr));
        }
    }
    let left = not_after as f64 - now() as f64;
    let days_left = panel_value(&mut prom, &dashboard, "Days left per certificate");
    assert!((days_left - left / 86400.0).abs() < 0.01, "days left: dashboard {days_left}, certificate {}", left / 86400.0);
    let lifetime = s.status_of("registry")["lifetime"].as_u64().unwrap() as f64;
    let share_left = panel_value(&mut prom, &dashboard, "Lifetime left");
    assert!((share_left - left / lifetime).abs() < 0.001, "lifetime left: dashboard {share_left}, certificate {}", left / lifetime);

    // The daemon stops: RegcertDown goes pending for its instance.
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
    prom.wait_until("RegcertDown pending", Duration::from_secs(30), |p| {
        let alerts = p.api("/api/v1/alerts")["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "RegcertDown" && a["labels"]["instance"] == metrics.as_str() && a["state"] == "pending")
    });
}
