//! One pass of a fleet node over the certificates the fleet shares: first the leader's work
//! (decide on the fleet's certificate, order it once, publish it), then this node's turn
//! (install → reload → verify → roll back, in a reload slot, halting the rollout on failure).
//!
//! `regcert run` makes a pass at every check and whenever something under the prefix changes
//! (a new certificate, a slot given back, a leader gone); `regcert renew` makes one pass and
//! leaves the fleet again. Each step reuses the renewal pipeline of a single host
//! ([`crate::renew::Renewer`]): only who orders and when a node installs differ.

use std::sync::Arc;
use std::time::SystemTime;

use super::ClusterConfig;
use super::rollout::{Turn, turn};
use super::store::{Leader, NodeOutcome, NodeResult, RolloutState, Session, Store};
use super::tokens::Publisher;
use crate::challenge::Solver;
use crate::config::{CertificateConfig, Config};
use crate::install;
use crate::obtain::Issuers;
use crate::policy::{Decision, Reason};
use crate::renew::{CertReport, Error, Outcome, RenewOptions, Renewer};
use crate::state::StateDir;

/// This node's membership: its etcd connection and its session (lease).
pub struct Member {
    store: Store,
    config: ClusterConfig,
    session: Option<Session>,
    /// This process runs the fleet's HTTP-01 responder (`regcert run`): a certificate renewed
    /// alone while etcd is down is answered through it.
    answers_http01: bool,
}

impl Member {
    /// Connect to the fleet's etcd (the session is opened by the first pass).
    pub async fn join(config: &ClusterConfig) -> Result<Member, String> {
        Ok(Member { store: Store::connect(config).await?, config: config.clone(), session: None, answers_http01: false })
    }

    /// The live session, opened again when the last one's lease was lost.
    async fn session(&mut self) -> Result<&Session, String> {
        if self.session.as_ref().is_none_or(Session::is_lost) {
            self.session = None;
            let session = self.store.open_session(self.config.lease_ttl).await?;
            tracing::info!(node = %self.store.node(), lease = session.lease, "joined the fleet");
            self.session = Some(session);
        }
        self.session.as_ref().ok_or_else(|| "no session".to_owned())
    }

    /// [`Member::leave`], then log `why` with this node's name (a configuration change).
    async fn leave_saying(self, why: &str) {
        let node = self.store.node().to_owned();
        self.leave().await;
        tracing::info!(%node, "{why}");
    }

    /// Leave the fleet now (a one-shot run that is done): leadership and slots go to the
    /// others at once instead of when the lease runs out.
    pub async fn leave(mut self) {
        if let Some(session) = self.session.take() {
            self.store.close_session(session).await;
        }
    }
}

/// `[cluster]` is gone from the configuration (SIGHUP): leave the fleet, so that leadership and
/// slots pass on at once; the node's certificates are its own from now on.
pub async fn leave_if_removed(member: &mut Option<Member>, config: &Config) {
    if config.cluster.is_none()
        && let Some(old) = member.take()
    {
        old.leave_saying("[cluster] is gone from the configuration; left the fleet").await;
    }
}

/// The certificates of `config` the fleet shares (all but those with `fleet = false`).
pub fn shared<'c>(config: &'c Config, certs: &[&'c CertificateConfig]) -> (Vec<&'c CertificateConfig>, Vec<&'c CertificateConfig>) {
    if config.cluster.is_none() {
        return (Vec::new(), certs.to_vec());
    }
    certs.iter().copied().partition(|c| c.fleet)
}

/// `regcert renew` in a fleet: join, make one pass as a node (the leader's work if this node
/// wins the leadership), answer HTTP-01 meanwhile, and leave.
pub async fn once(config: &Config, state: &StateDir, certs: &[&CertificateConfig], opts: RenewOptions) -> Vec<CertReport> {
    let Some(cluster) = &config.cluster else { return Vec::new() };
    let mut member = match Member::join(cluster).await {
        Ok(m) => m,
        Err(e) => return cut_off(config, state, certs, &e, false).await,
    };
    // Nothing to answer for the fleet when etcd is down: the port stays free for a renewal alone.
    if let Err(e) = member.session().await {
        return cut_off(config, state, certs, &e, false).await;
    }
    // This node's responder, unless `regcert run` on this host answers already.
    let _responder = match config.http01.mode() {
        crate::config::Http01Mode::Listen(addr) => match super::tokens::serve(member.store.clone(), addr).await {
            Ok(task) => {
                member.answers_http01 = true;
                Some(AbortOnDrop(task))
            }
            Err(e) => {
                tracing::info!(error = %e, "not answering HTTP-01 from this process (is `regcert run` answering here?)");
                None
            }
        },
        crate::config::Http01Mode::Webroot(_) => None,
    };
    let mut reports = pass(&mut member, config, state, certs, opts).await;
    // Another node reloading: wait for this node's turn (bounded), as the service would.
    let deadline = tokio::time::Instant::now() + config.renewal_timeout;
    while reports.iter().any(waits_for_turn) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let waiting: Vec<&CertificateConfig> =
            certs.iter().copied().filter(|c| reports.iter().any(|r| r.name == c.name && waits_for_turn(r))).collect();
        let again = pass(&mut member, config, state, &waiting, RenewOptions::default()).await;
        for report in again {
            if let Some(old) = reports.iter_mut().find(|r| r.name == report.name) {
                *old = report;
            }
        }
    }
    member.leave().await;
    reports
}

/// Does this node wait only for another node's reload to end?
fn waits_for_turn(report: &CertReport) -> bool {
    matches!(report.outcome, Outcome::Waiting { for_turn: true, .. })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`pass`], joining the fleet first when this node is not a member yet (etcd was down when
/// the service started, say).
pub async fn pass_joining(member: &mut Option<Member>, config: &Config, state: &StateDir, certs: &[&CertificateConfig]) -> Vec<CertReport> {
    let Some(cluster) = &config.cluster else { return Vec::new() };
    // `[cluster]` changed (SIGHUP): leave with the old settings, join with the new ones.
    if let Some(old) = member.take_if(|m| &m.config != cluster) {
        old.leave_saying("the [cluster] settings changed; left the fleet, to join it again with the new ones").await;
    }
    if member.is_none() {
        match Member::join(cluster).await {
            Ok(mut joined) => {
                joined.answers_http01 = matches!(config.http01.mode(), crate::config::Http01Mode::Listen(_));
                *member = Some(joined);
            }
            Err(e) => return cut_off(config, state, certs, &e, matches!(config.http01.mode(), crate::config::Http01Mode::Listen(_))).await,
        }
    }
    match member.as_mut() {
        Some(m) => pass(m, config, state, certs, RenewOptions::default()).await,
        None => Vec::new(),
    }
}

/// One pass of this node over `certs` (all shared by the fleet).
pub async fn pass(
    member: &mut Member,
    config: &Config,
    state: &StateDir,
    certs: &[&CertificateConfig],
    opts: RenewOptions,
) -> Vec<CertReport> {
    if certs.is_empty() {
        return Vec::new();
    }
    let node = member.store.node().to_owned();
    let store = member.store.clone();
    let (lease, campaign) = match member.session().await {
        Ok(session) => (session.lease, store.campaign(session).await),
        Err(e) => return cut_off(config, state, certs, &e, member.answers_http01).await,
    };
    let leader = match campaign {
        Ok(Ok(leader)) => {
            if crate::metrics::global().cluster_leader.set(1) != 1 {
                tracing::info!(node = %node, "this node leads the fleet");
            }
            Some(leader)
        }
        Ok(Err(other)) => {
            crate::metrics::global().cluster_leader.set(0);
            tracing::debug!(node = %node, leader = %other, "another node leads the fleet");
            None
        }
        Err(e) => return cut_off(config, state, certs, &e, member.answers_http01).await,
    };
    let mut ordered = Vec::new();
    if let Some(leader) = leader {
        let publisher = Solver::Fleet(Arc::new(Publisher::new(store.clone(), leader, lease)));
        let issuers = Issuers::from_config(config, state).answering_http01_with(publisher);
        for cert in certs {
            if let Err(report) = lead(&store, leader, config, state, &issuers, cert, opts).await {
                ordered.push(report);
            }
        }
    }
    let issuers = Issuers::from_config(config, state);
    let renewer = Renewer::new(config, state, &issuers, RenewOptions::default());
    let mut reports = Vec::with_capacity(certs.len());
    for cert in certs {
        // The leader's failure to order is the fleet's news: it is reported (and notified) once, by the leader.
        if let Some(i) = ordered.iter().position(|r: &CertReport| r.name == cert.name) {
            reports.push(ordered.swap_remove(i));
            continue;
        }
        let Some(session) = member.session.as_ref() else { break };
        let outcome = match my_turn(&store, session, &member.config, state, &issuers, &renewer, cert).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::waiting(e),
        };
        reports.push(CertReport { name: cert.name.clone(), outcome });
    }
    reports
}

/// The leader's work for `cert`: is the fleet's certificate due? Then order it (once, for
/// every node) and publish it. Err: the report of a failed order.
async fn lead(
    store: &Store,
    leader: Leader,
    config: &Config,
    state: &StateDir,
    issuers: &Issuers,
    cert: &CertificateConfig,
    opts: RenewOptions,
) -> Result<(), CertReport> {
    let failed = |reason: Reason, error: Error| {
        tracing::error!(cert = %cert.name, node = %store.node(), %error, "the fleet's renewal failed");
        CertReport { name: cert.name.clone(), outcome: Outcome::Failed { reason, error } }
    };
    // etcd trouble is not an order that failed: this node waits, like every other.
    let shared = store.shared(&cert.name).await.map_err(|why| CertReport { name: cert.name.clone(), outcome: Outcome::waiting(why) })?;
    let now = SystemTime::now();
    let requested = store.renewal_requested(&cert.name).await.unwrap_or(None);
    let reason = match &shared {
        _ if opts.force || requested.is_some() => Some(Reason::Forced),
        None => Some(Reason::NothingInstalled),
        Some((_, issued)) => {
            // Judged like an installed certificate, against the CA state_dir records it from.
            if state.load_meta(&cert.name).is_none_or(|m| m.sha256 != issued.meta.sha256) {
                let _ = state.save_issued(issued);
            }
            let pair = install::inspect_pair(issued.fullchain_pem().as_bytes(), Some(&issued.key_pem)).map(Some);
            match (crate::renew::policy_decision(state, issuers, cert, &pair, now, false), &pair) {
                (Decision::Due(reason), _) => Some(reason),
                // The lifetime keeps it; its CA's renewal window (ARI) may still say renew.
                (Decision::NotDue { .. }, Ok(Some(installed))) => {
                    crate::renew::windows::reason_for(state, issuers, cert, installed, crate::certinfo::unix(now)).await
                }
                (Decision::NotDue { .. }, _) => None,
            }
        }
    };
    let Some(reason) = reason else { return Ok(()) };
    if let Some(by) = &requested {
        tracing::info!(cert = %cert.name, asked_by = %by, "a renewal of the fleet's certificate was asked for");
    }
    // A failed order waits out its backoff like any renewal: nodes' results wake the leader
    // often, and each wake must not cost an order.
    let schedule = crate::schedule::Schedule::load(state, &cert.name);
    if !opts.force && requested.is_none() && schedule.backing_off(crate::certinfo::unix(now)) {
        tracing::debug!(cert = %cert.name, "the fleet's certificate is due, but the leader backs off after failures");
        return Ok(());
    }
    tracing::info!(cert = %cert.name, node = %store.node(), %reason, "the fleet's certificate is due; ordering it as the leader");
    share_accounts_in(store, state, issuers, cert).await;
    let renewer = Renewer::new(config, state, issuers, RenewOptions::default());
    let (issued, by) = renewer.issue_bounded(cert, &reason).await.map_err(|e| failed(reason.clone(), e))?;
    store.publish(leader, &issued).await.map_err(|e| failed(reason.clone(), Error::Step(e)))?;
    tracing::info!(cert = %cert.name, serial = %issued.meta.serial, ca = %by.label(), "published the new certificate for the fleet; the rollout starts");
    share_accounts_out(store, leader, state, &issued.meta.directory).await;
    Ok(())
}

/// Before ordering: the fleet's ACME account for each CA of `cert`, when this node has none,
/// so that a new leader orders with the same account (its rate limits, its `replaces`).
async fn share_accounts_in(store: &Store, state: &StateDir, issuers: &Issuers, cert: &CertificateConfig) {
    for issuer in issuers.in_turn(cert).unwrap_or_default() {
        let directory = issuer.origin();
        let path = state.account_path(&directory);
        if path.exists() {
            continue;
        }
        match store.account(&directory).await {
            Ok(Some(credentials)) => {
                let written = path
                    .parent()
                    .map_or(Ok(()), crate::fsutil::create_private_dir)
                    .and_then(|()| crate::fsutil::write_atomic(&path, &credentials, crate::fsutil::FileSpec::PRIVATE));
                match written {
                    Ok(()) => tracing::info!(cert = %cert.name, ca = %directory, "using the fleet's ACME account"),
                    Err(e) => {
                        tracing::warn!(cert = %cert.name, path = %path.display(), error = %e, "cannot store the fleet's ACME account")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(cert = %cert.name, error = %e, "cannot read the fleet's ACME account; this node uses its own"),
        }
    }
}

/// After ordering: share this node's account for `directory` unless the fleet has one.
async fn share_accounts_out(store: &Store, leader: Leader, state: &StateDir, directory: &str) {
    let Ok(credentials) = std::fs::read(state.account_path(directory)).map(zeroize::Zeroizing::new) else { return };
    if let Err(e) = store.share_account(leader, directory, &credentials).await {
        tracing::warn!(ca = %directory, error = %e, "cannot share the ACME account with the fleet");
    }
}

/// This node's turn for `cert`: install what the fleet published when the rollout lets it.
async fn my_turn(
    store: &Store,
    session: &Session,
    cluster: &ClusterConfig,
    state: &StateDir,
    issuers: &Issuers,
    renewer: &Renewer<'_>,
    cert: &CertificateConfig,
) -> Result<Outcome, String> {
    let name = &cert.name;
    let installed = install::read_installed(&cert.install);
    let sha = installed.as_ref().ok().and_then(Option::as_ref).map(|i| i.leaf.sha256.clone());
    let rollout = store.rollout(name).await?;
    let results = store.results(name).await?;
    let progress_gauge = crate::metrics::global().rollout_state.get_or_create(&crate::metrics::Metrics::name(name)).clone();
    match turn(rollout.as_ref().map(|(r, _)| r), sha.as_deref(), &results, cluster.max_unavailable) {
        Turn::NothingPublished => {
            let leader = store.leader().await?.unwrap_or_else(|| "none yet".into());
            Ok(Outcome::waiting(format!("the fleet has no certificate `{name}` yet; its leader ({leader}) orders it")))
        }
        Turn::UpToDate => {
            if let Some((r, _)) = &rollout {
                let live: Vec<String> = store.nodes().await?.into_iter().map(|(n, _)| n).collect();
                progress_gauge.set(super::rollout::progress(r, &live, &results).state.gauge());
            }
            // What is left is this host's own.
            let decision = crate::renew::decision(state, issuers, cert, &installed, SystemTime::now(), false);
            match decision {
                // A reload held for its window, or an install a killed run left unfinished (the
                // fleet's certificate is in state_dir: delivered again, never ordered here).
                Decision::Due(Reason::ReloadPending { .. } | Reason::Interrupted) => {
                    let report = renewer.run_once(vec![(cert, decision)]).await.pop().map(|r| r.outcome);
                    let outcome = report.ok_or("nothing was done")?;
                    if let Some(result) = result_of(&outcome, rollout.as_ref().map(|(r, _)| r.sha256.as_str()).unwrap_or_default(), "") {
                        store.put_result(name, &result).await?;
                    }
                    Ok(outcome)
                }
                Decision::NotDue { not_after, due_at } => {
                    let reload_pending = crate::renew::pending::load(state, name).map(|p| p.until);
                    Ok(Outcome::NotDue { not_after, due_at, reload_pending })
                }
                Decision::Due(reason) => Ok(Outcome::waiting(format!("due ({reason}); the fleet's leader orders it"))),
            }
        }
        Turn::Halted { by, error } => {
            progress_gauge.set(super::rollout::Phase::Halted.gauge());
            Ok(Outcome::waiting(format!(
                "the rollout is halted since node `{by}` failed ({error}); this node keeps its certificate. Fix it, then: regcert cluster resume {name}"
            )))
        }
        Turn::Go { slots } => {
            progress_gauge.set(super::rollout::Phase::Rolling.gauge());
            let Some(slot) = store.take_slot(name, slots, session).await? else {
                let holders: Vec<String> = store.slots(name).await?.into_iter().map(|(_, n)| n).collect();
                let why = format!("waiting for its turn: {} reloading", holders.join(", "));
                return Ok(Outcome::Waiting { why, for_turn: true });
            };
            let delivered = deliver(store, state, issuers, renewer, cert).await;
            if let Err(e) = store.release_slot(name, &slot).await {
                tracing::warn!(cert = %name, error = %e, "the reload slot goes with this node's lease");
            }
            delivered
        }
    }
}

/// Install, reload and verify the fleet's certificate in this node's slot; record the result,
/// and halt the rollout when it failed here.
async fn deliver(
    store: &Store,
    state: &StateDir,
    issuers: &Issuers,
    renewer: &Renewer<'_>,
    cert: &CertificateConfig,
) -> Result<Outcome, String> {
    let name = &cert.name;
    let (shared, issued) = store.shared(name).await?.ok_or_else(|| format!("certificate `{name}` vanished from etcd"))?;
    let Some((rollout, revision)) = store.rollout(name).await?.filter(|(r, _)| r.sha256 == issued.meta.sha256) else {
        return Ok(Outcome::waiting("a newer certificate is being published"));
    };
    tracing::info!(cert = %name, node = %store.node(), serial = %issued.meta.serial, "this node's turn in the rollout");
    state.save_issued(&issued).map_err(|e| format!("cannot keep the fleet's certificate in {}: {e}", state.cert_dir(name).display()))?;
    let issuer = issuers.by_origin(cert, Some(&issued.meta.directory)).map_err(|e| e.to_string())?;
    let reason = Reason::Fleet { serial: issued.meta.serial.clone(), by: shared.by.clone() };
    let outcome = match renewer.deliver_issued(cert, &reason, &issued, issuer).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed { reason, error },
    };
    let Some(result) = result_of(&outcome, &issued.meta.sha256, &issued.meta.serial) else { return Ok(outcome) };
    store.put_result(name, &result).await?;
    if !matches!(result.outcome, NodeOutcome::RolledBack | NodeOutcome::Failed) {
        tracing::info!(cert = %name, node = %store.node(), outcome = ?result.outcome, "this node's turn is done");
        return Ok(outcome);
    }
    let mut halted = rollout.clone();
    halted.state = RolloutState::Halted;
    halted.halted_by = Some(store.node().to_owned());
    halted.error = result.error.clone();
    if store.set_rollout_state(name, &halted, revision).await? {
        tracing::error!(cert = %name, node = %store.node(), "the rollout is halted for the whole fleet: the other nodes keep their certificate");
        crate::metrics::global()
            .rollout_state
            .get_or_create(&crate::metrics::Metrics::name(name))
            .set(super::rollout::Phase::Halted.gauge());
        Ok(outcome)
    } else {
        // Another node halted it first and told everyone: the fleet hears of it once.
        tracing::warn!(cert = %name, node = %store.node(), outcome = %CertReport { name: name.clone(), outcome }, "failed here too");
        Ok(Outcome::waiting("failed here too; the rollout was already halted by another node"))
    }
}

/// What a node records in etcd for an outcome of its turn.
fn result_of(outcome: &Outcome, sha256: &str, serial: &str) -> Option<NodeResult> {
    let (outcome, error, serial) = match outcome {
        Outcome::Renewed { verified: Some(_), serial, .. } => (NodeOutcome::Verified, None, serial.clone()),
        Outcome::Renewed { serial, .. } => (NodeOutcome::Installed, None, serial.clone()),
        Outcome::ReloadPending { serial, .. } => (NodeOutcome::ReloadPending, None, serial.clone()),
        Outcome::RolledBack { error, .. } => (NodeOutcome::RolledBack, Some(error.clone()), serial.to_owned()),
        Outcome::Failed { error, .. } => (NodeOutcome::Failed, Some(error.to_string()), serial.to_owned()),
        Outcome::NotDue { .. } | Outcome::DryRun { .. } | Outcome::Waiting { .. } => return None,
    };
    Some(NodeResult { sha256: sha256.to_owned(), serial, outcome, error, at: crate::certinfo::unix(SystemTime::now()) })
}

/// etcd cannot be reached: every node keeps serving what it has. With `issue_alone_within`, a
/// certificate that would otherwise run out is renewed by this node alone.
/// `answering`: this process runs the fleet's responder, which then answers for this node alone.
async fn cut_off(config: &Config, state: &StateDir, certs: &[&CertificateConfig], error: &str, answering: bool) -> Vec<CertReport> {
    tracing::error!(%error, "the fleet's etcd is unreachable; every certificate stays as it is");
    crate::metrics::global().cluster_leader.set(0);
    let alone = config.cluster.as_ref().and_then(|c| c.issue_alone_within);
    let mut issuers = Issuers::from_config(config, state);
    if answering {
        issuers = issuers.answering_http01_with(Solver::Fleet(Arc::new(Publisher::alone())));
    }
    let now = SystemTime::now();
    let mut due = Vec::new();
    let mut reports = Vec::new();
    for cert in certs {
        let installed = install::read_installed(&cert.install);
        let left = installed.as_ref().ok().and_then(Option::as_ref).map(|i| i.leaf.not_after.saturating_sub(crate::certinfo::unix(now)));
        match alone {
            Some(within) if left.is_none_or(|l| l < within.as_secs()) => {
                tracing::warn!(cert = %cert.name, "etcd is unreachable and the certificate runs out soon: renewing it on this node alone ([cluster] issue_alone_within)");
                due.push((*cert, crate::renew::decision(state, &issuers, cert, &installed, now, true)));
            }
            _ => reports.push(CertReport {
                name: cert.name.clone(),
                outcome: Outcome::waiting(format!("the fleet's etcd is unreachable ({error}); the installed certificate stays")),
            }),
        }
    }
    if !due.is_empty() {
        reports.extend(Renewer::new(config, state, &issuers, RenewOptions::default()).run_once(due).await);
    }
    reports
}
