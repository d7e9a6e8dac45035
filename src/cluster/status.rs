//! `regcert cluster status` and `regcert cluster resume`.

use serde::Serialize;

use super::rollout::{Phase, progress};
use super::store::{NodeResult, RolloutState, Store};
use crate::certinfo::fmt_time;
use crate::config::Config;

#[derive(Serialize)]
pub struct FleetStatus {
    pub prefix: String,
    pub leader: Option<String>,
    /// Live nodes (those whose lease is alive).
    pub nodes: Vec<String>,
    pub certificates: Vec<CertStatus>,
}

#[derive(Serialize)]
pub struct CertStatus {
    pub name: String,
    /// The fleet's certificate (what rolls out); absent before the leader published one.
    pub serial: Option<String>,
    pub sha256: Option<String>,
    pub not_after: Option<u64>,
    /// complete | rolling | halted | none
    pub rollout: String,
    pub halted_by: Option<String>,
    pub error: Option<String>,
    /// Nodes holding a reload slot now.
    pub reloading: Vec<String>,
    pub results: Vec<NodeStatus>,
}

#[derive(Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub live: bool,
    #[serde(flatten)]
    pub result: NodeResult,
}

/// What the fleet's etcd says about every shared certificate of `config`.
pub async fn fleet_status(config: &Config) -> Result<FleetStatus, String> {
    let cluster = config.cluster.as_ref().ok_or("this config has no [cluster]: there is no fleet to show")?;
    let store = Store::connect(cluster).await?;
    let leader = store.leader().await?;
    let nodes: Vec<String> = store.nodes().await?.into_iter().map(|(n, _)| n).collect();
    let mut certificates = Vec::new();
    for cert in config.certificates.iter().filter(|c| c.fleet) {
        let shared = store.shared(&cert.name).await.ok().flatten();
        let rollout = store.rollout(&cert.name).await?;
        let results = store.results(&cert.name).await?;
        let reloading = store.slots(&cert.name).await?.into_iter().map(|(_, n)| n).collect();
        let phase = rollout.as_ref().map(|(r, _)| progress(r, &nodes, &results).state);
        certificates.push(CertStatus {
            name: cert.name.clone(),
            serial: rollout.as_ref().map(|(r, _)| r.serial.clone()),
            sha256: rollout.as_ref().map(|(r, _)| r.sha256.clone()),
            not_after: shared.as_ref().map(|(s, _)| s.meta.not_after),
            rollout: phase.map_or("none", Phase::as_str).to_owned(),
            halted_by: rollout.as_ref().and_then(|(r, _)| r.halted_by.clone()),
            error: rollout.as_ref().and_then(|(r, _)| r.error.clone()),
            reloading,
            results: results.into_iter().map(|(node, result)| NodeStatus { live: nodes.contains(&node), node, result }).collect(),
        });
    }
    Ok(FleetStatus { prefix: store.prefix().to_owned(), leader, nodes, certificates })
}

impl std::fmt::Display for FleetStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "fleet {}: leader {}; live nodes: {}", self.prefix, self.leader.as_deref().unwrap_or("none"), self.nodes.join(", "))?;
        for c in &self.certificates {
            match (&c.serial, c.not_after) {
                (Some(serial), Some(not_after)) => {
                    writeln!(f, "{}: serial {serial}, expires {}; rollout {}", c.name, fmt_time(not_after), c.rollout)?
                }
                _ => writeln!(f, "{}: nothing published yet", c.name)?,
            }
            if let (Some(by), Some(error)) = (&c.halted_by, &c.error) {
                writeln!(f, "  halted by {by}: {error}\n  once fixed: regcert cluster resume {}", c.name)?;
            }
            if !c.reloading.is_empty() {
                writeln!(f, "  reloading now: {}", c.reloading.join(", "))?;
            }
            for n in &c.results {
                let current = c.sha256.as_deref() == Some(n.result.sha256.as_str());
                write!(
                    f,
                    "  {:<16} {:<14} serial {}{} at {}{}",
                    n.node,
                    format!("{:?}", n.result.outcome).to_lowercase(),
                    n.result.serial,
                    if current { "" } else { " (older)" },
                    fmt_time(n.result.at),
                    if n.live { "" } else { " (node not live)" }
                )?;
                match &n.result.error {
                    Some(e) => writeln!(f, ": {e}")?,
                    None => writeln!(f)?,
                }
            }
        }
        Ok(())
    }
}

/// Ask the fleet's leader to renew `name` now (it acts at once if it runs `regcert run`).
pub async fn request_renewal(config: &Config, name: &str) -> Result<String, String> {
    let cluster = config.cluster.as_ref().ok_or("this config has no [cluster]: use `regcert renew --force` instead")?;
    if !config.certificates.iter().any(|c| c.fleet && c.name == name) {
        return Err(format!("no certificate `{name}` is shared by the fleet in this config (see `regcert cluster status`)"));
    }
    let store = Store::connect(cluster).await?;
    store.request_renewal(name).await?;
    let leader = store.leader().await?;
    Ok(match leader {
        Some(leader) => format!("{name}: asked the fleet's leader ({leader}) to renew it now; follow it with `regcert cluster status`"),
        None => format!("{name}: renewal asked for; no node leads the fleet now, the next one that does renews it"),
    })
}

/// Let a halted rollout go on (after its cause was fixed): the node that failed retries first.
pub async fn resume(config: &Config, name: &str) -> Result<String, String> {
    let cluster = config.cluster.as_ref().ok_or("this config has no [cluster]: there is no fleet rollout to resume")?;
    if !config.certificates.iter().any(|c| c.fleet && c.name == name) {
        return Err(format!("no certificate `{name}` is shared by the fleet in this config (see `regcert cluster status`)"));
    }
    let store = Store::connect(cluster).await?;
    let (mut rollout, revision) = store.rollout(name).await?.ok_or_else(|| format!("the fleet has no rollout of `{name}`"))?;
    if rollout.state != RolloutState::Halted {
        return Err(format!("the rollout of `{name}` (serial {}) is not halted; nothing to resume", rollout.serial));
    }
    let by = rollout.halted_by.take().unwrap_or_default();
    rollout.state = RolloutState::Rolling;
    rollout.error = None;
    if !store.set_rollout_state(name, &rollout, revision).await? {
        return Err(format!("the rollout of `{name}` changed meanwhile; look at `regcert cluster status` and try again"));
    }
    tracing::info!(cert = %name, halted_by = %by, "rollout resumed");
    Ok(format!("{name}: rollout of serial {} resumed; nodes take their turns again ({by} retries)", rollout.serial))
}
