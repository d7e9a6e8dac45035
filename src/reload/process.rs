//! Reload by running a program (`command`, or `systemctl` for `systemd`).

use std::time::Duration;

use tokio::process::Command;

/// A reload command that has not finished after this long is treated as failed.
const TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(cert: &str, what: &str, argv: &[String]) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty reload command".into()) };
    let child = Command::new(program).args(args).kill_on_drop(true).output();
    let out = match tokio::time::timeout(TIMEOUT, child).await {
        Err(_) => return Err(format!("reload `{what}` did not finish within {}s", TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run reload `{what}`: {e} (check the path in [certificate.reload])")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("reload `{what}` failed ({}): {}", out.status, stderr.trim()));
    }
    tracing::info!(cert = %cert, command = %what, "reloaded");
    Ok(())
}
