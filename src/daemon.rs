//! `regcert run`: the long-running service.
//!
//! A cron schedule (tokio-cron-scheduler computes its ticks; the process sleeps until the next)
//! and one check at start-up trigger *checks*. A check takes
//! the state lock (the same one `regcert renew` takes, so both can be installed), decides per
//! certificate — lifetime policy, the CA's renewal window (ARI), backoff after failures — and
//! runs the ordinary renewal pipeline for what is due. Between checks the process only waits.
//!
//! Signals: SIGTERM/SIGINT let the check in flight finish (files are never left half-written)
//! and exit 0; SIGHUP re-reads the configuration and keeps the old one if the new one is invalid.
//! systemd: READY=1 after start-up, STATUS= after each check, WATCHDOG=1 when WatchdogSec is set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::certinfo::{LeafInfo, fmt_time, unix};
use crate::config::{self, CertificateConfig, Config, Purpose};
use crate::fsutil::{FileSpec, write_atomic};
use crate::install::{self, Installed};
use crate::metrics::{self, Metrics};
use crate::notify::{self, EventKind};
use crate::obtain::{Issuers, local_ca};
use crate::policy::{Decision, Reason};
use crate::renew::{CertReport, Error, Outcome, RenewOptions, Renewer, windows};
use crate::schedule::{Schedule, backoff, is_emergency};
use crate::state::{LockError, StateDir};

/// What `regcert status` shows about the daemon (state_dir/daemon.json).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub started_at: u64,
    pub check: String,
    pub next_check_at: Option<u64>,
    pub last_check_at: Option<u64>,
}

impl DaemonStatus {
    pub fn load(state: &StateDir) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(state.daemon_status_path()).ok()?).ok()
    }

    fn save(&self, state: &StateDir) {
        if let Ok(json) = serde_json::to_vec_pretty(self) {
            let _ = write_atomic(&state.daemon_status_path(), &json, FileSpec::PUBLIC);
        }
    }
}

/// Run the service until SIGTERM/SIGINT.
pub fn run(config_path: PathBuf, config: Config) -> Result<(), String> {
    // One thread: between checks the process should not wake at all, and a check is I/O-bound
    // (RSA key generation goes to the blocking pool).
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(serve(config_path, config)).inspect_err(|e| tracing::error!(error = %e, "regcert run stopped"))
}

struct Daemon {
    config_path: PathBuf,
    config: Mutex<Arc<Config>>,
    state: Arc<StateDir>,
    status: Mutex<DaemonStatus>,
    /// Every certificate's schedule, read from state_dir once and written through on change.
    schedules: tokio::sync::Mutex<HashMap<String, Schedule>>,
    /// Told after each check (which may have held a reload for its window).
    checked: tokio::sync::Notify,
    /// Has a check swept every directory for what killed runs left? (Once; after that each
    /// check sweeps only the certificates it works on.)
    swept: std::sync::atomic::AtomicBool,
    /// Fleet mode: this node's membership (joined at start-up, or by the first check that can).
    fleet: tokio::sync::Mutex<Option<crate::cluster::fleet::Member>>,
}

impl Daemon {
    fn config(&self) -> Arc<Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn serve(config_path: PathBuf, config: Config) -> Result<(), String> {
    let state = Arc::new(StateDir::open(&config.state_dir)?.remembering_records());
    let _metrics = match &config.metrics {
        Some(m) => Some(metrics::serve(m.listen).await?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;

    let (tick, mut ticks) = mpsc::channel::<()>(1);
    // tokio-cron-scheduler holds the schedule and computes its ticks; it is not started, because
    // its runner polls twice a second. Sleeping until the next tick keeps an idle daemon asleep.
    let mut scheduler = JobScheduler::new().await.map_err(|e| format!("cannot start the scheduler: {e}"))?;
    let mut job = add_check_job(&scheduler, &config.daemon.check).await?;
    let mut wake = next_wake(&mut scheduler, job).await;

    let status = DaemonStatus {
        pid: std::process::id(),
        started_at: unix(SystemTime::now()),
        check: config.daemon.check.clone(),
        ..Default::default()
    };
    let daemon = Arc::new(Daemon {
        config_path,
        config: Mutex::new(Arc::new(config)),
        state,
        status: Mutex::new(status),
        schedules: tokio::sync::Mutex::new(HashMap::new()),
        checked: tokio::sync::Notify::new(),
        swept: std::sync::atomic::AtomicBool::new(false),
        fleet: tokio::sync::Mutex::new(None),
    });
    // Fleet mode: every node answers the leader's HTTP-01 tokens, and acts at once on what the
    // others change (a new certificate, a slot given back, a leader gone).
    let mut fleet_tasks = start_fleet_tasks(&daemon.config(), &tick).await;
    spawn_watchdog();
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("started; first check running")]);
    tracing::info!(pid = std::process::id(), "regcert run started");

    let _ = tick.try_send(()); // the check at start-up
    let mut check: Option<tokio::task::JoinHandle<()>> = None;
    // A tick that came while a check was running (something changed in the fleet meanwhile):
    // one more check when it is done.
    let mut again = false;
    // A reload held for its window is done by a check when the window opens, whatever the
    // check schedule says.
    let mut reload_wake: Option<tokio::time::Instant> = None;
    // So is a renewal the CA's window (ARI) asks for, and asking it again after its Retry-After.
    let mut ari_wake: Option<tokio::time::Instant> = None;
    let why = loop {
        tokio::select! {
            () = sleep_until_some(reload_wake) => {
                reload_wake = None;
                tracing::info!("a reload window opens; checking");
                let _ = tick.try_send(());
            }
            () = sleep_until_some(ari_wake) => {
                ari_wake = None;
                tracing::info!("a CA renewal window (ARI) calls for a check: its renewal moment, or asking it again");
                let _ = tick.try_send(());
            }
            () = daemon.checked.notified() => {
                if std::mem::take(&mut again) {
                    let _ = tick.try_send(());
                }
                reload_wake = next_reload_window(&daemon.config(), &daemon.state);
                ari_wake = next_window_moment(&daemon).await;
            }
            () = tokio::time::sleep_until(wake) => {
                let _ = tick.try_send(());
                // Re-adding the job makes the scheduler compute the tick after this one.
                let cron = daemon.config().daemon.check.clone();
                if let Ok(next) = add_check_job(&scheduler, &cron).await {
                    let _ = scheduler.remove(&job).await;
                    job = next;
                }
                wake = next_wake(&mut scheduler, job).await;
            }
            Some(()) = ticks.recv() => {
                if check.as_ref().is_some_and(|h| !h.is_finished()) {
                    again = true;
                    tracing::debug!("the previous check is still running; checking again when it is done");
                } else {
                    check = Some(tokio::spawn(run_check(daemon.clone())));
                }
                record_next_check(&daemon, &mut scheduler, job).await;
            }
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[NotifyState::Reloading]);
                let fleet_changed;
                (job, fleet_changed) = reload_config(&daemon, &scheduler, job).await;
                if fleet_changed {
                    // The responder and the watch follow the new settings now; the membership
                    // (lease, leadership) at the next check, which the tick starts.
                    if let Some(old) = fleet_tasks.take() {
                        old.stop().await;
                    }
                    fleet_tasks = start_fleet_tasks(&daemon.config(), &tick).await;
                    let _ = tick.try_send(());
                }
                wake = next_wake(&mut scheduler, job).await;
                record_next_check(&daemon, &mut scheduler, job).await;
                let _ = sd_notify::notify(&[NotifyState::Ready]);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    tracing::info!(signal = why, "stopping");
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    if let Some(handle) = check.filter(|h| !h.is_finished()) {
        tracing::info!("letting the check in flight finish");
        let abort = handle.abort_handle();
        let grace = daemon.config().daemon.stop_grace;
        if tokio::time::timeout(grace, handle).await.is_err() {
            // Only await points are abandoned; every file write is atomic on its own, and an
            // install's journal makes the next run reload and verify what was installed.
            abort.abort();
            tracing::warn!("abandoned the check in flight after {} ([daemon] stop_grace)", humantime::format_duration(grace));
        }
    }
    let _ = scheduler.shutdown().await;
    // Leave the fleet now: leadership and slots pass on at once, not after the lease's TTL.
    if let Some(member) = daemon.fleet.lock().await.take() {
        member.leave().await;
    }
    Ok(())
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the first of the pending reloads' windows opens (a second in, so that it is open).
fn next_reload_window(config: &Config, state: &StateDir) -> Option<tokio::time::Instant> {
    let now = unix(SystemTime::now());
    let first = config
        .certificates
        .iter()
        .filter_map(|c| crate::renew::pending::load(state, &c.name))
        .map(|p| p.until)
        .filter(|u| *u > now)
        .min()?;
    Some(tokio::time::Instant::now() + Duration::from_secs(first - now + 1))
}

/// When the stored renewal windows (ARI) next call for a check (see [`windows::next_moment`]).
async fn next_window_moment(daemon: &Daemon) -> Option<tokio::time::Instant> {
    let now = unix(SystemTime::now());
    let at = windows::next_moment(daemon.schedules.lock().await.values(), now)?;
    Some(tokio::time::Instant::now() + Duration::from_secs(at - now))
}

async fn add_check_job(scheduler: &JobScheduler, cron: &str) -> Result<uuid::Uuid, String> {
    // The scheduler only keeps time here (see `serve`); the check is started by the main loop.
    let job = Job::new_async(cron, |_, _| Box::pin(async {})).map_err(|e| format!("[daemon] check = \"{cron}\": {e}"))?;
    scheduler.add(job).await.map_err(|e| format!("cannot schedule the check: {e}"))
}

/// When the job's next tick is due, as a tokio instant (far away when there is none).
async fn next_wake(scheduler: &mut JobScheduler, job: uuid::Uuid) -> tokio::time::Instant {
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let wait = match scheduler.next_tick_for_job(job).await {
        Ok(Some(t)) => Duration::from_millis(t.timestamp_millis().saturating_sub(now_ms).max(0) as u64),
        _ => Duration::from_secs(86_400 * 365),
    };
    tokio::time::Instant::now() + wait
}

async fn record_next_check(daemon: &Daemon, scheduler: &mut JobScheduler, job: uuid::Uuid) {
    let next = scheduler.next_tick_for_job(job).await.ok().flatten().map(|t| t.timestamp().max(0) as u64);
    let snapshot = {
        let mut st = daemon.status.lock().unwrap_or_else(|p| p.into_inner());
        st.next_check_at = next;
        st.clone()
    };
    snapshot.save(&daemon.state);
}

/// Fleet mode: every node answers the leader's HTTP-01 tokens, and acts at once on what the
/// others change (a new certificate, a slot given back, a leader gone).
async fn start_fleet_tasks(config: &Arc<Config>, tick: &tokio::sync::mpsc::Sender<()>) -> Option<crate::cluster::watch::Background> {
    match &config.cluster {
        Some(_) => Some(crate::cluster::watch::start(config.clone(), tick.clone()).await),
        None => None,
    }
}

/// SIGHUP: read the file again; an invalid file changes nothing. Also says whether what the
/// fleet's background tasks depend on changed (`[cluster]`, or `[http01]` in a fleet).
async fn reload_config(daemon: &Daemon, scheduler: &JobScheduler, job: uuid::Uuid) -> (uuid::Uuid, bool) {
    let new = match config::load(&daemon.config_path, Purpose::Work) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.to_string().trim_end(), "SIGHUP: the configuration is invalid; keeping the previous one");
            return (job, false);
        }
    };
    let old = daemon.config();
    let mut job = job;
    if new.daemon.check != old.daemon.check {
        match add_check_job(scheduler, &new.daemon.check).await {
            Ok(new_job) => {
                let _ = scheduler.remove(&job).await;
                job = new_job;
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: keeping the previous configuration");
                return (job, false);
            }
        }
    }
    if new.state_dir != old.state_dir || new.metrics.as_ref().map(|m| m.listen) != old.metrics.as_ref().map(|m| m.listen) {
        tracing::warn!("SIGHUP: state_dir and [metrics] listen take effect after a restart");
    }
    {
        let mut st = daemon.status.lock().unwrap_or_else(|p| p.into_inner());
        st.check = new.daemon.check.clone();
    }
    let fleet_changed = new.cluster != old.cluster || (new.cluster.is_some() && new.http01.mode() != old.http01.mode());
    *daemon.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    tracing::info!(config = %daemon.config_path.display(), "configuration reloaded");
    (job, fleet_changed)
}

/// Feed systemd's watchdog (`WatchdogSec=`) from the progress of the work, not from a timer:
/// between checks always, during a check only while it moved within half the watchdog interval
/// (see [`crate::progress`]). A check stuck on something no timeout covers stops the pings, and
/// systemd restarts the service.
fn spawn_watchdog() {
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(interval / 4);
            let mut warned = false;
            loop {
                every.tick().await;
                match crate::progress::stalled(interval / 2) {
                    None => {
                        warned = false;
                        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    }
                    Some((step, quiet)) if !std::mem::replace(&mut warned, true) => {
                        tracing::error!(
                            step,
                            quiet_s = quiet.as_secs(),
                            watchdog_s = interval.as_secs(),
                            "the check in flight made no progress within the watchdog interval; no longer feeding the systemd watchdog"
                        );
                    }
                    Some(_) => {}
                }
            }
        });
    }
}

async fn run_check(daemon: Arc<Daemon>) {
    let config = daemon.config();
    let started = Instant::now();
    // From here until the check is done, the watchdog is fed only while work moves.
    let _busy = crate::progress::busy();
    let _lock = match daemon.state.lock("regcert run (check)") {
        Ok(lock) => lock,
        Err(LockError::Busy { holder, .. }) => {
            tracing::warn!(%holder, "another regcert process is working on the state; skipping this check");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot take the state lock; skipping this check");
            return;
        }
    };
    if !daemon.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
        crate::renew::tidy(&daemon.state, &config.certificates);
    }
    let mut schedules = daemon.schedules.lock().await;
    let mut fleet = daemon.fleet.lock().await;
    let summary = check(&config, &daemon.state, &mut schedules, &mut fleet).await;
    drop(fleet);
    drop(schedules);
    daemon.checked.notify_one();
    let snapshot = {
        let mut st = daemon.status.lock().unwrap_or_else(|p| p.into_inner());
        st.last_check_at = Some(unix(SystemTime::now()));
        st.clone()
    };
    snapshot.save(&daemon.state);
    metrics::global().set_ready();
    let took = started.elapsed();
    let line = format!("{summary}; last check {}", fmt_time(unix(SystemTime::now())));
    let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
    tracing::info!(took_ms = took.as_millis() as u64, "{summary}");
}

/// What a check does with one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Triage {
    /// Renew it in this check.
    Due(Reason),
    /// Due, but waiting out the backoff of earlier failures.
    BackingOff,
    /// Nothing to do.
    Fine,
}

/// Decide, from the renewal policy's `decision`, the serial of the installed leaf and what the
/// daemon remembers, what a check does with a certificate at `now` (Unix time). Pure.
pub(crate) fn triage(decision: Decision, installed_serial: Option<&str>, schedule: &Schedule, now: u64) -> Triage {
    let reason = match decision {
        Decision::Due(reason) => Some(reason),
        // Valid by the policy; the CA's renewal window (ARI) may still say "now".
        Decision::NotDue { .. } => installed_serial.and_then(|serial| schedule.window_reason(serial, now)),
    };
    match reason {
        None => Triage::Fine,
        Some(_) if schedule.backing_off(now) => Triage::BackingOff,
        Some(reason) => Triage::Due(reason),
    }
}

/// One certificate during a check.
struct Entry<'c> {
    cert: &'c CertificateConfig,
    installed: Option<Installed>,
    schedule: Schedule,
    /// The schedule changed and must be stored.
    dirty: bool,
}

/// One check of every certificate: triage → one renewal pass over what is due → record →
/// notify, metrics, alerts. `known` holds the schedules of earlier checks (missing ones are
/// read from state_dir). Returns a one-line summary.
pub async fn check(
    config: &Config,
    state: &StateDir,
    known: &mut HashMap<String, Schedule>,
    fleet: &mut Option<crate::cluster::fleet::Member>,
) -> String {
    let now = SystemTime::now();
    state.new_pass();
    let issuers = Issuers::from_config(config, state);
    let all: Vec<&CertificateConfig> = config.certificates.iter().collect();
    // Fleet mode: what the fleet shares goes through its pass (the leader orders, every node
    // takes its turn); this host's own certificates are checked here as without a fleet.
    crate::cluster::fleet::leave_if_removed(fleet, config).await;
    let (shared, own) = crate::cluster::fleet::shared(config, &all);
    let fleet_reports =
        if shared.is_empty() { Vec::new() } else { crate::cluster::fleet::pass_joining(fleet, config, state, &shared).await };
    // Each installed pair is looked at once per check (500 certificates: a few ms, no network).
    let mut entries = Vec::with_capacity(config.certificates.len());
    let mut decisions = Vec::with_capacity(config.certificates.len());
    for cert in own {
        let current = install::read_installed(&cert.install);
        let decision = crate::renew::decision(state, &issuers, cert, &current, now, false);
        let schedule = latest_schedule(known, state, &cert.name);
        entries.push(Entry { cert, installed: current.ok().flatten(), schedule, dirty: false });
        decisions.push(decision);
    }
    refresh_windows(&issuers, &mut entries, &decisions, now).await;

    let mut due = Vec::new();
    let mut waiting = 0;
    for (entry, decision) in entries.iter_mut().zip(decisions) {
        let serial = entry.installed.as_ref().map(|i| i.leaf.serial.as_str());
        match triage(decision, serial, &entry.schedule, unix(now)) {
            Triage::Due(reason) => due.push((entry.cert, Decision::Due(reason))),
            Triage::BackingOff => {
                waiting += 1;
                tracing::debug!(cert = %entry.cert.name, retry_at = %fmt_time(entry.schedule.retry_at.unwrap_or(0)), "due, but backing off after failures");
            }
            // Nothing due (renewed meanwhile by `regcert renew`, say): earlier failures are
            // history. A renewal the CA's window asks for keeps its backoff until it succeeds.
            Triage::Fine if entry.schedule.failures > 0 => {
                entry.schedule.clear_failures();
                entry.dirty = true;
            }
            Triage::Fine => {}
        }
    }
    for (cert, _) in &due {
        crate::renew::tidy_certificate(state, cert);
    }
    let mut reports =
        if due.is_empty() { Vec::new() } else { Renewer::new(config, state, &issuers, RenewOptions::default()).run_once(due).await };
    for cert in shared {
        // The fleet's leader stores the CA's renewal window (ARI) there during its pass.
        let schedule = latest_schedule(known, state, &cert.name);
        entries.push(Entry { cert, installed: install::read_installed(&cert.install).ok().flatten(), schedule, dirty: false });
    }
    reports.extend(fleet_reports);
    if !reports.is_empty() {
        // What the renewals wrote is read afresh.
        state.new_pass();
    }
    for report in &reports {
        let Some(entry) = entries.iter_mut().find(|e| e.cert.name == report.name) else { continue };
        // What was just installed replaces what was read before.
        entry.installed = install::read_installed(&entry.cert.install).ok().flatten();
        record(config, entry, report, now);
    }
    notify::send_reports(config, &reports).await;
    for entry in &mut entries {
        let leaf = entry.installed.as_ref().map(|i| &i.leaf);
        let meta = leaf.and_then(|l| state.meta_for(&entry.cert.name, &l.sha256));
        update_gauges(entry.cert, leaf, meta.as_ref(), &entry.schedule, config.daemon.alert_before, now);
        let pending = crate::renew::pending::load(state, &entry.cert.name).map_or(0, |p| p.until as i64);
        metrics::global().reload_pending.get_or_create(&Metrics::name(&entry.cert.name)).set(pending);
        if alert_expiring(config, entry.cert, leaf, &mut entry.schedule, now).await {
            entry.dirty = true;
        }
        if entry.dirty
            && let Err(e) = entry.schedule.save(state, &entry.cert.name)
        {
            tracing::warn!(cert = %entry.cert.name, error = %e, "cannot store the schedule");
        }
    }
    known.extend(entries.into_iter().map(|e| (e.cert.name.clone(), e.schedule)));
    alert_ca_expiry(config, state, now).await;
    let failed = reports.iter().filter(|r| r.failed()).count();
    let renewed = reports.iter().filter(|r| matches!(r.outcome, Outcome::Renewed { .. } | Outcome::ReloadPending { .. })).count();
    format!("{} certificates: {renewed} renewed, {failed} failed, {waiting} backing off", config.certificates.len())
}

/// The schedule of `name`: the one of the last check, unless something stored a newer one
/// meanwhile (`regcert renew` or `revoke`, the fleet's pass); then, or at the first check, the
/// stored one.
fn latest_schedule(known: &mut HashMap<String, Schedule>, state: &StateDir, name: &str) -> Schedule {
    match known.remove(name) {
        Some(mine) if !mine.changed_on_disk(state, name) => mine,
        _ => Schedule::load(state, name),
    }
}

/// Ask the CAs for the renewal windows (ARI) of valid certificates whose window is stale.
async fn refresh_windows(issuers: &Issuers, entries: &mut [Entry<'_>], decisions: &[Decision], now: SystemTime) {
    let each = entries.iter_mut().zip(decisions).filter_map(|(e, decision)| match (decision, &e.installed) {
        (Decision::NotDue { .. }, Some(installed)) => Some((e.cert, installed, &mut e.schedule, &mut e.dirty)),
        _ => None,
    });
    windows::refresh_each(issuers, each, unix(now)).await;
}

/// Remember a renewal result: clear or extend the backoff, count it.
fn record(config: &Config, entry: &mut Entry<'_>, report: &CertReport, now: SystemTime) {
    let (cert, schedule) = (entry.cert, &mut entry.schedule);
    entry.dirty = true;
    let m = metrics::global();
    match &report.outcome {
        Outcome::ReloadPending { .. } => {
            schedule.record_success(now, report.to_string());
            m.count_renewal(&cert.name, "reload_pending");
        }
        Outcome::Renewed { verified, .. } => {
            schedule.record_success(now, report.to_string());
            m.count_renewal(&cert.name, "success");
            if verified.is_some() {
                m.verify_success.get_or_create(&Metrics::name(&cert.name)).set(1);
            }
        }
        Outcome::RolledBack { .. } | Outcome::Failed { .. } => {
            let leaf = entry.installed.as_ref().map(|i| &i.leaf);
            let emergency = is_emergency(leaf, now);
            let retry_after = match &report.outcome {
                Outcome::Failed { error, .. } => error.retry_after(),
                _ => None,
            };
            let wait = backoff(schedule.failures + 1, leaf, &config.daemon.backoff, retry_after, now);
            schedule.record_failure(now, report.to_string(), wait);
            let rolled_back = matches!(report.outcome, Outcome::RolledBack { .. });
            m.count_renewal(&cert.name, if rolled_back { "rolled_back" } else { "failure" });
            if rolled_back || matches!(report.outcome, Outcome::Failed { error: Error::NotVerified(_), .. }) {
                m.verify_success.get_or_create(&Metrics::name(&cert.name)).set(0);
            }
            tracing::warn!(
                cert = %cert.name,
                failures = schedule.failures,
                retry_at = %fmt_time(schedule.retry_at.unwrap_or(0)),
                emergency,
                "renewal failed; backing off"
            );
        }
        Outcome::NotDue { .. } | Outcome::DryRun { .. } | Outcome::Waiting { .. } => {}
    }
}

fn update_gauges(
    cert: &CertificateConfig,
    leaf: Option<&LeafInfo>,
    meta: Option<&crate::state::IssuedMeta>,
    schedule: &Schedule,
    alert_before: Option<Duration>,
    now: SystemTime,
) {
    let m = metrics::global();
    let label = Metrics::name(&cert.name);
    let valid = leaf.is_some_and(|l| !l.remaining(now).is_zero() && l.covers_all(&cert.domains, &cert.ips));
    let last_ok = schedule.last_result.as_ref().is_none_or(|r| r.ok);
    m.ready.get_or_create(&label).set(i64::from(valid && last_ok));
    if let Some(l) = leaf {
        m.expiration.get_or_create(&label).set(l.not_after as i64);
        let due = crate::policy::due_at(l, cert.renew_before);
        let due = schedule.ari.as_ref().filter(|w| w.serial == l.serial).map_or(due, |w| w.renew_at.min(due));
        m.renewal.get_or_create(&label).set(due as i64);
        m.alert.get_or_create(&label).set(crate::policy::alert_at(l, cert.renew_before, alert_before) as i64);
        m.lifetime.get_or_create(&label).set(l.not_after.saturating_sub(l.not_before) as i64);
        m.set_info(&cert.name, meta.map_or("", |m| m.directory.as_str()), meta.and_then(|m| m.profile.as_deref()).unwrap_or(""));
        match schedule.ari.as_ref().filter(|w| w.serial == l.serial) {
            Some(w) => {
                m.window_start.get_or_create(&label).set(w.start as i64);
                m.window_end.get_or_create(&label).set(w.end as i64);
            }
            None => {
                m.window_start.remove(&label);
                m.window_end.remove(&label);
            }
        }
    }
}

/// "Past its alert point and still not renewed" (see [`crate::policy::alert_at`]): once per
/// certificate, again a day later.
async fn alert_expiring(
    config: &Config,
    cert: &CertificateConfig,
    leaf: Option<&LeafInfo>,
    schedule: &mut Schedule,
    now: SystemTime,
) -> bool {
    let Some(leaf) = leaf else { return false };
    let left = leaf.remaining(now);
    let now_s = unix(now);
    if !schedule.alert_due(leaf, crate::policy::alert_at(leaf, cert.renew_before, config.daemon.alert_before), now_s) {
        return false;
    }
    tracing::error!(cert = %cert.name, not_after = %fmt_time(leaf.not_after), left = %humantime::format_duration(Duration::from_secs(left.as_secs())), "certificate expires soon and is still not renewed");
    let event = notify::Event::new(
        cert,
        EventKind::Expiring,
        Some(&leaf.serial),
        Some(leaf.not_after),
        schedule.last_result.as_ref().filter(|r| !r.ok).map(|r| r.message.clone()),
    );
    notify::send(&config.notify, &event).await;
    schedule.record_alert(leaf, now_s);
    true
}

/// A private CA that leaves would now outlive (see [`local_ca::CaExpiry`]): the metric every
/// check, an `expiring` event for `ca:NAME` once a day.
async fn alert_ca_expiry(config: &Config, state: &StateDir, now: SystemTime) {
    let now_s = unix(now);
    for ca in local_ca::expiries(config, state) {
        metrics::global().ca_expiry.get_or_create(&Metrics::name(&ca.ca)).set(ca.not_after as i64);
        if !ca.alerting(now_s) || local_ca::last_alert(state, &ca.ca).is_some_and(|at| now_s < at + 86_400) {
            continue;
        }
        let message = ca.message(now_s);
        tracing::error!(ca = %ca.ca, not_after = %fmt_time(ca.not_after), "{message}");
        let event = notify::Event::for_ca(&ca, config, message);
        notify::send(&config.notify, &event).await;
        if let Err(e) = local_ca::record_alert(state, &ca.ca, now_s) {
            tracing::warn!(ca = %ca.ca, error = %e, "cannot remember the CA expiry alert");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::AriWindow;

    const NOW: u64 = 1_000_000;

    fn not_due() -> Decision {
        Decision::NotDue { due_at: NOW + 86_400, not_after: NOW + 30 * 86_400 }
    }

    fn window(serial: &str, renew_at: u64) -> Option<AriWindow> {
        Some(AriWindow { serial: serial.into(), start: NOW - 10, end: NOW + 10, renew_at, refetch_at: NOW + 3_600, explanation_url: None })
    }

    #[test]
    fn the_policy_decides_first_and_backoff_holds_it_back() {
        let fresh = Schedule::default();
        assert_eq!(triage(not_due(), Some("01"), &fresh, NOW), Triage::Fine);
        assert_eq!(triage(Decision::Due(Reason::NothingInstalled), None, &fresh, NOW), Triage::Due(Reason::NothingInstalled));
        let failing = Schedule { failures: 2, retry_at: Some(NOW + 60), ..Schedule::default() };
        assert_eq!(triage(Decision::Due(Reason::KeyMismatch), Some("01"), &failing, NOW), Triage::BackingOff);
        assert_eq!(triage(Decision::Due(Reason::KeyMismatch), Some("01"), &failing, NOW + 60), Triage::Due(Reason::KeyMismatch));
        // Backing off only matters for something due.
        assert_eq!(triage(not_due(), Some("01"), &failing, NOW), Triage::Fine);
    }

    #[test]
    fn the_renewal_window_of_the_installed_certificate_makes_it_due_at_its_moment() {
        let s = Schedule { ari: window("01", NOW), ..Schedule::default() };
        assert_eq!(triage(not_due(), Some("01"), &s, NOW), Triage::Due(Reason::RenewalWindow { start: NOW - 10, end: NOW + 10 }));
        assert_eq!(triage(not_due(), Some("01"), &s, NOW - 1), Triage::Fine, "not before the chosen moment");
        assert_eq!(triage(not_due(), Some("02"), &s, NOW), Triage::Fine, "a window of another certificate does not count");
        let backing_off = Schedule { retry_at: Some(NOW + 5), ..s };
        assert_eq!(triage(not_due(), Some("01"), &backing_off, NOW), Triage::BackingOff);
    }
}
