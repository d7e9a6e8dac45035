//! Around a step that cuts the registry's connections (a restart): `drain` before it, `hold`
//! across it. The step itself and where the registry is (a container, a port on this host) are
//! the caller's; the order of things is here, once for every kind of reload action.
//!
//! 1. drain: wait until no client has been connected for a second (or the limit);
//! 2. hold: new connections wait (their SYNs are dropped, see [`super::hold`]);
//! 3. count again: a client that connected between the last count and the hold is let finish
//!    (the doors open again and draining goes on) while the drain limit allows;
//! 4. the step;
//! 5. wait until the registry listens again, then let the held clients through.

use std::time::{Duration, Instant};

use super::drain::{self, Drain, Drained};
use super::hold::{self, Doors};

/// How often the registry is looked at while it comes back.
const POLL: Duration = Duration::from_millis(100);

/// The registry as the guard sees it: its connections, its doors, whether it listens.
pub(super) trait Site {
    /// For logs: "container registry", "systemctl restart registry.service".
    fn target(&self) -> &str;
    /// Client connections open now.
    fn connections(&self) -> Result<usize, String>;
    /// Where new connections arrive.
    fn doors(&self) -> Doors;
    /// After the step: does the registry listen again on every port it listened on before?
    async fn listening(&self) -> Result<bool, String>;
}

/// What to do around a disruptive step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guard {
    pub drain: Option<Drain>,
    /// Hold new connections across the step, at most this long.
    pub hold: Option<Duration>,
}

impl Guard {
    pub fn is_none(&self) -> bool {
        self.drain.is_none() && self.hold.is_none()
    }

    /// Run `step` with the registry drained before it and new connections held across it.
    /// Neither ever stops the step: what cannot be counted or held is logged, and the step runs.
    pub async fn around(&self, cert: &str, site: &impl Site, step: impl Future<Output = Result<(), String>>) -> Result<(), String> {
        let target = site.target();
        let (closed, drained) = self.quiesce(cert, site).await;
        let metrics = crate::metrics::global();
        let name = crate::metrics::Metrics::name(cert);
        if let Some(drained) = drained {
            metrics.drain_wait.get_or_create(&name).observe(drained.waited.as_secs_f64());
            if drained.cut > 0 {
                metrics.drain_limit_reached.get_or_create(&name).inc();
            }
        }
        let result = step.await;
        if let Some((closed, since, limit)) = closed {
            if result.is_ok() {
                wait_listening(cert, site, since, limit).await;
            }
            let held = since.elapsed();
            let held_ms = held.as_millis() as u64;
            metrics.hold.get_or_create(&name).observe(held.as_secs_f64());
            match closed.open().await {
                Ok(()) => tracing::info!(cert = %cert, %target, held_ms, "hold: new connections let through"),
                Err(error) => {
                    tracing::warn!(cert = %cert, %target, %error, "hold: cannot let new connections through; the kernel will at the hold's limit")
                }
            }
        }
        result
    }

    /// Steps 1–3: returns the hold in place (when there is one), since when, and its limit;
    /// and how the drain went, all its rounds together (when there is one).
    async fn quiesce(&self, cert: &str, site: &impl Site) -> (Option<(hold::Closed, Instant, Duration)>, Option<Drained>) {
        let started = Instant::now();
        let mut cut = 0;
        let closed = self.close_after_drain(cert, site, started, &mut cut).await;
        (closed, self.drain.map(|_| Drained { waited: started.elapsed(), cut }))
    }

    async fn close_after_drain(
        &self,
        cert: &str,
        site: &impl Site,
        started: Instant,
        cut: &mut usize,
    ) -> Option<(hold::Closed, Instant, Duration)> {
        let target = site.target();
        loop {
            if let Some(d) = &self.drain {
                let left = Drain { limit: d.limit.saturating_sub(started.elapsed()), ..*d };
                *cut = drain::wait(cert, target, &left, || site.connections()).await.cut;
            }
            let limit = self.hold?;
            let doors = site.doors();
            if doors.is_empty() {
                tracing::warn!(cert = %cert, %target, "hold: no address or port to hold (set [certificate.reload] port); restarting without");
                return None;
            }
            let closed = match hold::close(&doors, limit).await {
                Ok(closed) => closed,
                Err(error) => {
                    tracing::warn!(cert = %cert, %target, %error, "hold: cannot hold new connections; restarting without");
                    return None;
                }
            };
            let since = Instant::now();
            let late = site.connections().unwrap_or(0);
            let drain_left = self.drain.is_some_and(|d| started.elapsed() < d.limit);
            if late > 0 && drain_left {
                tracing::info!(cert = %cert, %target, connections = late, "hold: a client connected just before the hold; letting it finish");
                if let Err(error) = closed.open().await {
                    tracing::warn!(cert = %cert, %target, %error, "hold: cannot let new connections through");
                }
                continue;
            }
            if late > 0 {
                // No drain, or its limit has passed: this client's transfer is cut, and counted.
                *cut = late;
                tracing::warn!(cert = %cert, %target, connections = late, "hold: client connections still open; restarting anyway");
            }
            let limit_text = humantime::format_duration(limit);
            tracing::info!(cert = %cert, %target, %doors, limit = %limit_text, "hold: new connections wait while the registry restarts");
            return Some((closed, since, limit));
        }
    }
}

/// Step 5: until the registry listens again, or the hold's limit (then the kernel has let
/// clients through already, and they are refused until the registry is up).
async fn wait_listening(cert: &str, site: &impl Site, since: Instant, limit: Duration) {
    let target = site.target();
    loop {
        match site.listening().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(cert = %cert, %target, %error, "hold: cannot tell whether the registry listens again; letting clients through");
                return;
            }
        }
        if since.elapsed() >= limit {
            tracing::warn!(
                cert = %cert, %target, limit = %humantime::format_duration(limit),
                "hold: the registry does not listen again within the hold's limit; new connections are let through (and refused until it does; raise [certificate.reload] hold)"
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A site whose connections and listening follow a script (hold stays off: no nft here).
    struct Scripted {
        counts: Vec<usize>,
        calls: Cell<usize>,
    }

    impl Site for Scripted {
        fn target(&self) -> &str {
            "scripted"
        }
        fn connections(&self) -> Result<usize, String> {
            let i = self.calls.get();
            self.calls.set(i + 1);
            Ok(self.counts.get(i).copied().unwrap_or(0))
        }
        fn doors(&self) -> Doors {
            Doors::default()
        }
        async fn listening(&self) -> Result<bool, String> {
            Ok(true)
        }
    }

    #[test]
    fn the_step_runs_after_the_drain_and_its_result_is_returned() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let site = Scripted { counts: vec![1, 1, 0], calls: Cell::new(0) };
        let guard =
            Guard { drain: Some(Drain { limit: Duration::from_secs(5), port: None, quiet: Duration::from_millis(200) }), hold: None };
        let ran = Cell::new(None);
        let result = rt.block_on(guard.around("c", &site, async {
            ran.set(Some(site.calls.get()));
            Err("boom".to_owned())
        }));
        assert_eq!(result, Err("boom".to_owned()));
        assert!(ran.get().unwrap() >= 3, "the step ran after the connections ended: {:?}", ran.get());
        // A hold with nothing to hold is skipped (logged), and the step still runs.
        let guard = Guard { drain: None, hold: Some(Duration::from_secs(5)) };
        assert_eq!(rt.block_on(guard.around("c", &site, async { Ok(()) })), Ok(()));
        assert!(Guard::default().is_none() && !guard.is_none());
    }

    #[test]
    fn each_drain_is_measured_and_a_restart_at_the_limit_is_counted() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let drain = Drain { limit: Duration::from_millis(300), port: None, quiet: Duration::from_millis(100) };
        let guard = Guard { drain: Some(drain), hold: None };
        // A client that never leaves: the restart goes ahead at the limit, and is counted.
        let stays = Scripted { counts: vec![1; 100], calls: Cell::new(0) };
        assert_eq!(rt.block_on(guard.around("guard-metrics", &stays, async { Ok(()) })), Ok(()));
        let nobody = Scripted { counts: Vec::new(), calls: Cell::new(0) };
        assert_eq!(rt.block_on(guard.around("guard-metrics", &nobody, async { Ok(()) })), Ok(()));
        let text = crate::metrics::global().render();
        assert!(text.contains("regcert_reload_drain_limit_reached_total{name=\"guard-metrics\"} 1\n"), "{text}");
        assert!(text.contains("regcert_reload_drain_wait_seconds_count{name=\"guard-metrics\"} 2\n"), "{text}");
    }
}
