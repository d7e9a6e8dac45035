//! Proof that work is moving: a heartbeat the renewal pipeline beats at every step (and at every
//! answer from a CA), the step each certificate is in, and a bound on a certificate's work.
//!
//! The systemd watchdog is fed from the heartbeat, not from a timer of its own: while a check is
//! in flight, `WATCHDOG=1` goes out only if the check made progress within the watchdog
//! interval, so a check stuck on something no timeout covers lets systemd restart the service.
//! Between checks there is nothing to wait for, and the watchdog is fed.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The process's heartbeat: how many checks are in flight, and when work last moved.
struct Heartbeat {
    busy: u32,
    last: Option<Instant>,
    step: &'static str,
}

impl Heartbeat {
    const fn new() -> Self {
        Heartbeat { busy: 0, last: None, step: "idle" }
    }

    fn beat(&mut self, at: Instant) {
        self.last = Some(at);
    }

    /// `None` when the watchdog may be fed at `now`; otherwise the stuck step and for how long.
    fn stalled(&self, limit: Duration, now: Instant) -> Option<(&'static str, Duration)> {
        let quiet = self.last.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        (!alive(self.busy > 0, quiet, limit)).then_some((self.step, quiet))
    }
}

static HEARTBEAT: Mutex<Heartbeat> = Mutex::new(Heartbeat::new());

fn heartbeat() -> std::sync::MutexGuard<'static, Heartbeat> {
    HEARTBEAT.lock().unwrap_or_else(|p| p.into_inner())
}

tokio::task_local! {
    /// The step of the certificate whose work is being polled (see [`bounded`]).
    static STEP: std::cell::Cell<&'static str>;
}

/// Work moved (an answer from the CA, a poll that came back).
pub fn beat() {
    heartbeat().beat(Instant::now());
}

/// A certificate's work entered `step` ("finalizing the order"): a beat, and the step a timeout
/// of [`bounded`] names.
pub fn step(step: &'static str) {
    let _ = STEP.try_with(|s| s.set(step));
    let mut hb = heartbeat();
    hb.beat(Instant::now());
    hb.step = step;
}

/// While the guard lives, a check is in flight and the watchdog wants to see progress.
pub struct Busy(());

pub fn busy() -> Busy {
    let mut hb = heartbeat();
    hb.busy += 1;
    hb.beat(Instant::now());
    Busy(())
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut hb = heartbeat();
        hb.busy = hb.busy.saturating_sub(1);
        hb.beat(Instant::now());
    }
}

/// Feed the watchdog now? `None` when yes; otherwise the step that has been stuck, and for how long.
pub fn stalled(limit: Duration) -> Option<(&'static str, Duration)> {
    heartbeat().stalled(limit, Instant::now())
}

/// The watchdog's rule: idle is alive; busy is alive only with progress within `limit`. Pure.
pub fn alive(busy: bool, quiet_for: Duration, limit: Duration) -> bool {
    !busy || quiet_for < limit
}

/// `work` did not finish within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub after: Duration,
    /// The step it was in.
    pub step: &'static str,
}

/// Run `work` for at most `limit`, keeping track of its step.
pub async fn bounded<T>(limit: Duration, work: impl Future<Output = T>) -> Result<T, TimedOut> {
    let cell = std::cell::Cell::new("starting");
    STEP.scope(cell, async {
        match tokio::time::timeout(limit, work).await {
            Ok(v) => Ok(v),
            Err(_) => Err(TimedOut { after: limit, step: STEP.with(|s| s.get()) }),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_when_idle_or_when_work_moved_recently() {
        let limit = Duration::from_secs(60);
        assert!(alive(false, Duration::from_secs(3_600), limit), "between checks nothing needs to move");
        assert!(alive(true, Duration::from_secs(59), limit));
        assert!(!alive(true, Duration::from_secs(60), limit), "a check with no progress for the whole interval is stuck");
    }

    #[test]
    fn a_bounded_task_names_the_step_it_was_stuck_in() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stuck = rt.block_on(bounded(Duration::from_millis(50), async {
            step("ordering");
            step("finalizing the order");
            std::future::pending::<()>().await
        }));
        assert_eq!(stuck, Err(TimedOut { after: Duration::from_millis(50), step: "finalizing the order" }));
        assert_eq!(rt.block_on(bounded(Duration::from_secs(5), async { 7 })), Ok(7));
    }

    #[test]
    fn a_busy_heartbeat_without_progress_is_stalled_and_names_the_step() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new();
        assert_eq!(hb.stalled(Duration::from_secs(1), t0 + Duration::from_secs(3_600)), None, "idle");
        hb.busy = 1;
        hb.step = "downloading the certificate";
        hb.beat(t0);
        assert_eq!(hb.stalled(Duration::from_secs(60), t0 + Duration::from_secs(59)), None);
        assert_eq!(
            hb.stalled(Duration::from_secs(60), t0 + Duration::from_secs(61)),
            Some(("downloading the certificate", Duration::from_secs(61)))
        );
        hb.beat(t0 + Duration::from_secs(61));
        assert_eq!(hb.stalled(Duration::from_secs(60), t0 + Duration::from_secs(62)), None, "a beat revives it");
        hb.busy = 0;
        assert_eq!(hb.stalled(Duration::ZERO, t0 + Duration::from_secs(7_200)), None, "idle again");
    }
}
