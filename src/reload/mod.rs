//! Step three of the pipeline: make the registry load what was installed.
//!
//! Reloading happens in two phases. [`prepare`] runs *before* anything is installed: it connects
//! to Docker, finds the containers, refuses actions that would kill the registry, notices
//! single-file bind mounts, and checks that commands and `systemctl` can work with our privileges
//! ([`preflight`]). If any of that fails, nothing has been touched. [`Plan::run`] then
//! performs the actions, in order, after the files are in place.

pub mod config;
mod docker;
pub mod drain;
mod guard;
pub mod hold;
mod preflight;
mod process;
pub mod window;

use std::path::PathBuf;

use crate::config::CertificateConfig;
use config::ReloadAction;
use drain::Drain;
use guard::Guard;

/// Reload actions checked against the host, ready to run.
pub struct Plan {
    steps: Vec<Step>,
    /// Installed files that a container bind-mounts as single files: they must be rewritten
    /// in place, because a rename gives a new inode the container never sees.
    pub in_place: Vec<PathBuf>,
    /// Around each disruptive step: wait for client connections to end (`drain`), hold new
    /// ones while it runs (`hold`).
    guard: Guard,
    /// The registry's port on this host (`port`), for the guard of host steps.
    port: Option<u16>,
}

enum Step {
    Docker(docker::Prepared),
    Process { what: String, argv: Vec<String>, disrupts: bool },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run every action in order; stop at the first failure. A disruptive step is guarded:
    /// drained before (`drain`) and new connections held across it (`hold`), when configured.
    pub async fn run(&self, cert: &str) -> Result<(), String> {
        for step in &self.steps {
            match step {
                Step::Docker(d) => d.run(cert, &self.guard).await?,
                Step::Process { what, argv, disrupts: true } if !self.guard.is_none() => {
                    let site = HostPort { what, port: self.port };
                    self.guard.around(cert, &site, process::run(cert, what, argv)).await?
                }
                Step::Process { what, argv, .. } => process::run(cert, what, argv).await?,
            }
        }
        Ok(())
    }
}

/// A registry on this host, behind `port` (a systemd unit, a command).
struct HostPort<'a> {
    what: &'a str,
    port: Option<u16>,
}

impl guard::Site for HostPort<'_> {
    fn target(&self) -> &str {
        self.what
    }

    fn connections(&self) -> Result<usize, String> {
        drain::count(drain::Netns::Own, self.port)
    }

    fn doors(&self) -> hold::Doors {
        hold::Doors { ports: self.port.into_iter().collect(), ..Default::default() }
    }

    async fn listening(&self) -> Result<bool, String> {
        let listening = drain::listening_any(drain::Netns::Own)?;
        Ok(self.port.is_some_and(|p| listening.contains(&p)))
    }
}

/// Check the configured actions against the host (without running them).
pub async fn prepare(cert: &CertificateConfig) -> Result<Plan, String> {
    let mut plan = Plan { steps: Vec::new(), in_place: Vec::new(), guard: Guard::default(), port: None };
    let Some(reload) = &cert.reload else { return Ok(plan) };
    plan.guard = Guard { drain: reload.drain.map(|limit| Drain { limit, port: reload.port, quiet: drain::QUIET }), hold: reload.hold };
    plan.port = reload.port;
    if reload.hold.is_some() && reload.disrupts() {
        hold::ready().await.map_err(|e| format!("[certificate.reload] hold: {e}"))?;
    }
    let installed = [cert.install.fullchain_path(), cert.install.key_path()];
    let mut client = None;
    for action in &reload.actions {
        match action {
            ReloadAction::Docker(action) => {
                if client.is_none() {
                    client = Some(docker::connect(reload.docker_socket.as_deref()).await?);
                }
                let Some(client) = client.as_ref() else { continue };
                let prepared = docker::prepare(client, action).await?;
                for path in prepared.file_mounts_of(&installed) {
                    if !plan.in_place.contains(&path) {
                        plan.in_place.push(path);
                    }
                }
                plan.steps.push(Step::Docker(prepared));
            }
            ReloadAction::Systemd(s) => {
                preflight::systemd(s).await?;
                let argv = std::iter::once("systemctl".to_owned()).chain(preflight::systemctl_args(s)).collect();
                let disrupts = action.disrupts(reload.disruptive);
                plan.steps.push(Step::Process { what: format!("systemctl {} {}", s.action, s.unit), argv, disrupts });
            }
            ReloadAction::Command(argv) => {
                preflight::command(argv)?;
                plan.steps.push(Step::Process { what: argv.join(" "), argv: argv.clone(), disrupts: reload.disruptive });
            }
        }
    }
    Ok(plan)
}
