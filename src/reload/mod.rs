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
mod preflight;
mod process;
pub mod window;

use std::path::PathBuf;

use crate::config::CertificateConfig;
use config::ReloadAction;
use drain::Drain;

/// Reload actions checked against the host, ready to run.
pub struct Plan {
    steps: Vec<Step>,
    /// Installed files that a container bind-mounts as single files: they must be rewritten
    /// in place, because a rename gives a new inode the container never sees.
    pub in_place: Vec<PathBuf>,
    /// Wait for client connections to end before each disruptive step (`drain`).
    drain: Option<Drain>,
}

enum Step {
    Docker(docker::Prepared),
    Process { what: String, argv: Vec<String>, disrupts: bool },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run every action in order; stop at the first failure. A disruptive step waits for the
    /// registry's client connections to end first, when `drain` is configured.
    pub async fn run(&self, cert: &str) -> Result<(), String> {
        for step in &self.steps {
            match step {
                Step::Docker(d) => d.run(cert, self.drain.as_ref()).await?,
                Step::Process { what, argv, disrupts } => {
                    if let (Some(drain), true) = (&self.drain, *disrupts) {
                        drain::wait(cert, what, drain, || drain::count(drain::Netns::Own, drain.port)).await;
                    }
                    process::run(cert, what, argv).await?
                }
            }
        }
        Ok(())
    }
}

/// Check the configured actions against the host (without running them).
pub async fn prepare(cert: &CertificateConfig) -> Result<Plan, String> {
    let mut plan = Plan { steps: Vec::new(), in_place: Vec::new(), drain: None };
    let Some(reload) = &cert.reload else { return Ok(plan) };
    plan.drain = reload.drain.map(|limit| Drain { limit, port: reload.port, quiet: drain::QUIET });
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
