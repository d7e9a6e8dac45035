//! Reload by running a program (`command`, or `systemctl` for `systemd`).

use std::time::Duration;

/// A reload command that has not finished after this long is killed (with every process it
/// started) and treated as failed.
const TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(cert: &str, what: &str, argv: &[String]) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty reload command".into()) };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let out = crate::command::run(cmd, None, TIMEOUT).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => format!("reload `{what}` {e}"),
        _ => format!("cannot run reload `{what}`: {e} (check the path in [certificate.reload])"),
    })?;
    if !out.status.success() {
        return Err(format!("reload `{what}` failed ({}): {}", out.status, out.stderr_text()));
    }
    tracing::info!(cert = %cert, command = %what, "reloaded");
    Ok(())
}
