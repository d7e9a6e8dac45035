//! "Can this reload work here, with our privileges?" — asked before anything is ordered, so that
//! a reload that is bound to fail costs no issuance and touches nothing (the check for Docker
//! actions is in [`super::docker`]).
//!
//! What is checked: the program of a `command` exists and we may execute it; `nginx -s SIGNAL`
//! can signal a running nginx master (as another user it needs root or CAP_KILL); `systemctl`
//! reaches systemd, knows the unit, the unit can do the verb, and — when we are not root —
//! polkit lets us (the rule `systemd/regcert-reload.rules` grants it to the `regcert` user).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::config::{SystemdAction, SystemdVerb};

/// A check that does not answer within this long fails.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The `systemctl` arguments of a systemd reload: never waiting for a password prompt.
pub fn systemctl_args(s: &SystemdAction) -> Vec<String> {
    vec!["--no-ask-password".into(), s.action.as_str().into(), "--".into(), s.unit.clone()]
}

/// A `command` reload: the program must be found and executable by us; an `nginx -s` must be
/// able to signal its master.
pub fn command(argv: &[String]) -> Result<(), String> {
    let Some(program) = argv.first() else { return Err("reload.command is empty".into()) };
    let path = executable(program).map_err(|why| format!("reload command `{}` cannot run: {why}", argv.join(" ")))?;
    if path.file_name().is_some_and(|n| n == "nginx") && argv.iter().any(|a| a == "-s") {
        nginx_signal(&path, argv).map_err(|why| format!("reload command `{}` cannot work: {why}", argv.join(" ")))?;
    }
    Ok(())
}

/// The program as `Command` would run it: a path as given, a bare name through PATH.
fn executable(program: &str) -> Result<PathBuf, String> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
    };
    let Some(path) = found else {
        return Err(format!("\"{program}\" is not in PATH ({}); give its full path", std::env::var("PATH").unwrap_or_default()));
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if !may(&path, libc::X_OK) {
        return Err(format!("{} is not executable by uid {} ({})", path.display(), euid(), std::io::Error::last_os_error()));
    }
    Ok(path)
}

fn may(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; faccessat only reads it. AT_EACCESS: as the
    // effective user, who will run the program.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `nginx [-c CONF] [-g "pid …;"] -s SIGNAL` sends SIGNAL to the pid in nginx's pid file: that
/// file must name a running process we are allowed to signal.
fn nginx_signal(nginx: &Path, argv: &[String]) -> Result<(), String> {
    let pid_file = nginx_pid_file(nginx, argv)?;
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("nginx's pid file {} cannot be read ({e}): is nginx running?", pid_file.display()))?;
    let pid: libc::pid_t =
        text.trim().parse().map_err(|_| format!("nginx's pid file {} does not hold a pid: {:?}", pid_file.display(), text.trim()))?;
    // SAFETY: signal 0 only checks that the process exists and that we may signal it.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EPERM) => format!(
            "the nginx master (pid {pid}) runs as another user and uid {} may not signal it: run regcert as root, \
             give it CAP_KILL (systemd: AmbientCapabilities=CAP_KILL, see systemd/regcert.service), \
             or reload through systemd instead: systemd = {{ unit = \"nginx.service\" }}",
            euid()
        ),
        Some(libc::ESRCH) => format!("nginx is not running (no process {pid} from {})", pid_file.display()),
        _ => format!("cannot signal the nginx master (pid {pid}): {err}"),
    })
}

/// Where nginx keeps its pid: `-g "pid …;"`, else the `pid` directive of its configuration
/// (`-c CONF`, else the compiled-in path), else the compiled-in `--pid-path`.
fn nginx_pid_file(nginx: &Path, argv: &[String]) -> Result<PathBuf, String> {
    let after = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1));
    if let Some(pid) = after("-g").and_then(|g| pid_directive(g)) {
        return Ok(pid);
    }
    let in_conf = |conf: &Path| std::fs::read_to_string(conf).ok().and_then(|text| pid_directive(&text));
    if let Some(pid) = after("-c").and_then(|c| in_conf(Path::new(c))) {
        return Ok(pid);
    }
    // The compiled-in paths (`nginx -V` prints them at once; it reads no configuration).
    let built =
        std::process::Command::new(nginx).arg("-V").output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    let option = |name: &str| built.split_whitespace().find_map(|w| w.strip_prefix(name)).map(PathBuf::from);
    let conf = if after("-c").is_some() { None } else { option("--conf-path=") };
    if let Some(pid) = conf.and_then(|c| in_conf(&c)) {
        return Ok(pid);
    }
    option("--pid-path=").ok_or_else(|| format!("cannot tell where {} keeps its pid (no `pid` directive, no --pid-path)", nginx.display()))
}

/// The file of a top-level `pid FILE;` directive.
fn pid_directive(text: &str) -> Option<PathBuf> {
    text.split(';').find_map(|stmt| {
        let stmt = stmt.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join(" ");
        let mut words = stmt.split_whitespace();
        (words.next() == Some("pid")).then(|| words.next().map(|p| PathBuf::from(p.trim_matches(['"', '\'']))))?
    })
}

/// A `systemd` reload: `systemctl` reaches systemd, the unit exists and can do the verb, and we
/// are authorized to ask.
pub async fn systemd(s: &SystemdAction) -> Result<(), String> {
    let what = format!("systemctl {} {}", s.action, s.unit);
    let fail = |why: String| format!("reload `{what}` cannot work here: {why}");
    let systemctl = executable("systemctl").map_err(fail)?;
    let out = run(Command::new(&systemctl).args(["show", "--property=LoadState,CanReload,LoadError", "--", &s.unit]))
        .await
        .map_err(|e| fail(format!("systemctl: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        return Err(fail(format!(
            "systemctl cannot reach systemd ({stderr}); on a host without systemd as init, reload with a `command` or `docker` action"
        )));
    }
    let props = String::from_utf8_lossy(&out.stdout);
    let prop = |name: &str| props.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('=')).unwrap_or_default().to_owned();
    if prop("LoadState") != "loaded" {
        return Err(fail(format!("systemd has no unit \"{}\" ({}): check reload.systemd.unit", s.unit, prop("LoadState"))));
    }
    if s.action == SystemdVerb::Reload && prop("CanReload") == "no" {
        return Err(fail(format!("{} cannot reload (no ExecReload=): use action = \"try-reload-or-restart\" or \"restart\"", s.unit)));
    }
    if euid() != 0 {
        polkit(s).await.map_err(fail)?;
    }
    Ok(())
}

/// Not root: systemd asks polkit whether we may manage the unit, with the details `unit` and
/// `verb` (what the rule in systemd/regcert-reload.rules looks at). Ask the same question.
async fn polkit(s: &SystemdAction) -> Result<(), String> {
    let verb = match s.action {
        SystemdVerb::Reload => "reload",
        SystemdVerb::Restart => "restart",
        SystemdVerb::ReloadOrRestart => "reload-or-restart",
        SystemdVerb::TryReloadOrRestart => "reload-or-try-restart",
    };
    let pkcheck = executable("pkcheck").map_err(|_| {
        format!(
            "regcert runs as uid {} (not root) and polkit is not installed, so systemd will refuse it: install polkitd and \
             systemd/regcert-reload.rules, or reload with a `command`",
            euid()
        )
    })?;
    let pid = std::process::id().to_string();
    let out = run(Command::new(pkcheck).args([
        "--action-id",
        "org.freedesktop.systemd1.manage-units",
        "--process",
        &pid,
        "--detail",
        "unit",
        &s.unit,
        "--detail",
        "verb",
        verb,
    ]))
    .await?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "polkit does not let uid {} {verb} {} ({}): install systemd/regcert-reload.rules (listing this unit) in /etc/polkit-1/rules.d/",
        euid(),
        s.unit,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

async fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    let child = cmd.kill_on_drop(true).stdin(std::process::Stdio::null()).output();
    match tokio::time::timeout(TIMEOUT, child).await {
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
        Ok(result) => result.map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_directives_are_found_outside_comments() {
        assert_eq!(pid_directive("# pid /nope;\nuser www-data;\npid /run/x.pid;\nevents {}"), Some(PathBuf::from("/run/x.pid")));
        assert_eq!(pid_directive("pid \"/tmp/a b\";"), Some(PathBuf::from("/tmp/a")));
        assert_eq!(pid_directive("daemon off; master_process on;"), None);
        assert_eq!(pid_directive("pid /tmp/g.pid; daemon off;"), Some(PathBuf::from("/tmp/g.pid")));
    }

    #[test]
    fn programs_that_cannot_run_are_named() {
        let err = command(&["no-such-reload-program-here".into()]).unwrap_err();
        assert!(err.contains("is not in PATH") && err.contains("full path"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("reload.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = command(&[script.display().to_string()]).unwrap_err();
        assert!(err.contains("is not executable by uid"), "{err}");
        let err = command(&[dir.path().display().to_string()]).unwrap_err();
        assert!(err.contains("is not a file"), "{err}");
        assert!(command(&["true".into()]).is_ok());
    }
}
