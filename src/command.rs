//! Running the programs regcert is told to run — reload commands, notify commands, DNS hooks,
//! the system trust store's tool — through one function, [`run`], so none of them can hang it.
//!
//! Each program runs in a process group of its own. Its output is read up to [`OUTPUT_CAP`] per
//! stream (the rest is read and dropped, so a chatty program never blocks on a full pipe). When
//! the program exits, regcert does not wait for children it left behind: a hook that starts
//! `daemon &` returns as soon as the hook itself exits, although the daemon still holds the
//! pipes (`Command::output()` would wait for the daemon). When the deadline passes, the whole
//! group is killed — the hook and everything it started — and the run fails.

use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// At most this much of each of stdout and stderr is kept.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// After the program exits, how long its output may still take to arrive (a background child
/// keeping the pipe open never sends EOF; what came until then is kept).
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// What a finished program left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// The first [`OUTPUT_CAP`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The first [`OUTPUT_CAP`] bytes of stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Stderr as text, trimmed, for an error message.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Run `cmd` with `stdin` as its input (none: /dev/null) until it exits or `timeout` passes;
/// then the process group is killed and the error is [`std::io::ErrorKind::TimedOut`]. Writing
/// stdin counts towards the timeout (a program that never reads it cannot block us).
pub async fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> std::io::Result<Output> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own group: on timeout, one kill reaches every process it started.
    cmd.process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let group = Group(child.id().map(|id| id as libc::pid_t));
    let stdout = Capture::start(child.stdout.take());
    let stderr = Capture::start(child.stderr.take());
    let mut input = child.stdin.take();
    let work = async {
        if let (Some(pipe), Some(body)) = (input.as_mut(), stdin) {
            // A program may exit without reading its input: that is its business.
            let _ = pipe.write_all(body).await;
        }
        drop(input.take());
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, work).await {
        Ok(status) => status?,
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {} (killed, with every process it started)", humantime::format_duration(timeout)),
            ));
        }
    };
    // Exited: whatever it left running is its business (a reload may start a daemon).
    group.release();
    Ok(Output { status, stdout: stdout.finish().await, stderr: stderr.finish().await })
}

/// [`run`] for synchronous code (the trust commands run without an async runtime).
pub fn output_within(cmd: Command, timeout: Duration) -> std::io::Result<Output> {
    // A thread of its own, so this works inside and outside an async runtime alike.
    std::thread::scope(|s| {
        s.spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(cmd, None, timeout)))
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the command runner panicked")))
    })
}

/// A process group to kill if the program it belongs to is abandoned (timeout, or the caller's
/// future dropped), unless released.
struct Group(Option<libc::pid_t>);

impl Group {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg has no memory effects; a group that is gone is ESRCH, ignored.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }

    fn release(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One output stream, read in the background into a capped buffer.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                    let mut buf = buf.lock().unwrap_or_else(|p| p.into_inner());
                    let room = OUTPUT_CAP.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
            })
        });
        Capture { buf, task }
    }

    /// What was read, once the stream ended or [`DRAIN_GRACE`] passed.
    async fn finish(mut self) -> Vec<u8> {
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    /// Whether any process of group `pgid` is alive: `kill -0 -PGID` succeeds, and not only for
    /// zombies (killed children whose reaper has not come by yet are dead).
    fn group_alive(pgid: i32) -> bool {
        if !Command::new("kill").args(["-0", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status().unwrap().success() {
            return false;
        }
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // "pid (comm) state ppid pgrp …": fields after the last ')'.
            let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
            fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
        })
    }

    #[test]
    fn output_status_and_input() {
        let out = output_within(sh("echo out; echo err >&2; exit 3"), Duration::from_secs(10)).unwrap();
        assert_eq!((out.status.code(), &out.stdout[..], &out.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let out = rt.block_on(run(sh("tr a b"), Some(b"aaa"), Duration::from_secs(10))).unwrap();
        assert_eq!(out.stdout, b"bbb");
    }

    #[test]
    fn output_is_capped_and_never_blocks_the_program() {
        let out = output_within(sh("head -c 1000000 /dev/zero; echo done >&2"), Duration::from_secs(20)).unwrap();
        assert!(out.status.success());
        assert_eq!((out.stdout.len(), out.stderr_text().as_str()), (OUTPUT_CAP, "done"));
    }

    #[test]
    fn a_background_child_holding_the_output_does_not_hold_us() {
        let started = Instant::now();
        let out = output_within(sh("sleep 600 & echo $! ; echo started"), Duration::from_secs(30)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for the background child", started.elapsed());
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.ends_with("started\n"), "{text}");
        // It is not killed: a reload may start a daemon on purpose.
        let pid = text.lines().next().unwrap().trim().to_owned();
        assert!(Command::new("kill").args(["-0", &pid]).status().unwrap().success(), "the background child was killed");
        let _ = Command::new("kill").arg(&pid).status();
    }

    #[test]
    fn a_hanging_program_is_killed_with_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let script = format!("echo $$ > {}; sleep 600 & sleep 600", pidfile.display());
        let err = output_within(sh(&script), Duration::from_millis(500)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("did not finish within 500ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // SIGKILL is delivered at once; allow the kernel a moment to finish the processes off.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) {
            assert!(Instant::now() < deadline, "process group {pgid} still alive after the timeout");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
