//! Commands regcert runs (here a reload command) do not hold it up with what they leave
//! behind: a child started in the background that keeps the command's output open.

use crate::common::*;
use std::fs;
use std::time::{Duration, Instant};
use toml::{Value, toml};

#[test]
fn a_reload_command_that_leaves_a_background_child_returns_promptly() {
    let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Hook Test CA" key = "ecdsa-p256" })) };
    let s = Setup::with_config(config, &[CertSpec::new("registry", toml! { issuer = "ca:internal" domains = ["hooks.regcert.test"] })]);
    let pid_file = s.root.path().join("background.pid");
    let script = format!("sleep 600 & echo $! > {}; echo reloading", pid_file.display());
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = [(tool("sh").display().to_string()), "-c", (script.as_str())] });
        set(c, "verify", toml! { enabled = false });
    });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let started = Instant::now();
    let run = s.run(&["renew"]);
    let took = started.elapsed();
    let pid = fs::read_to_string(&pid_file).unwrap_or_default().trim().to_owned();
    // The child is left alone (a reload may start a daemon on purpose): it is still running.
    let alive = !pid.is_empty() && std::process::Command::new(tool("kill")).args(["-0", &pid]).status().unwrap().success();
    if !pid.is_empty() {
        let _ = std::process::Command::new(tool("kill")).arg(&pid).status();
    }
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("reloaded"), "{run:?}");
    assert!(took < Duration::from_secs(30), "the background child held the reload for {took:?}");
    assert!(alive, "the background child {pid:?} was killed");
}
