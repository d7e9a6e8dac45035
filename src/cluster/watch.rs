//! What a node of `regcert run` keeps running besides its checks: the HTTP-01 responder that
//! answers the leader's tokens, and a watch of the fleet's keys that starts a check when
//! something changes that may be this node's business.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::store::Store;
use crate::config::{Config, Http01Mode};

/// The background tasks of a fleet node; stopped when dropped.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Background {
    /// Stop the tasks and wait until they are gone (the responder's socket closed), so that a
    /// new responder can bind the same address (SIGHUP with new `[cluster]` settings).
    pub async fn stop(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Start the responder and the watch. Neither needs etcd to be up now: both keep trying.
pub async fn start(config: Arc<Config>, tick: mpsc::Sender<()>) -> Background {
    let mut tasks = Vec::new();
    let Some(cluster) = config.cluster.clone() else { return Background { tasks } };
    let store = loop_until_connected(&cluster).await;
    if let (Some(store), Http01Mode::Listen(addr)) = (&store, config.http01.mode()) {
        match super::tokens::serve(store.clone(), addr).await {
            Ok(task) => tasks.push(task),
            Err(e) => tracing::error!(error = %e, "this node cannot answer the fleet's HTTP-01 challenges"),
        }
    }
    tasks.push(tokio::spawn(watch(cluster, store, tick)));
    Background { tasks }
}

/// One attempt at connecting (the watch task retries on its own).
async fn loop_until_connected(cluster: &super::ClusterConfig) -> Option<Store> {
    match Store::connect(cluster).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::error!(error = %e, "fleet: etcd is unreachable at start-up; retrying in the background");
            None
        }
    }
}

/// Watch the prefix for ever; a relevant change (anything but HTTP-01 tokens) asks for a check,
/// at most one per 200 ms burst. A broken watch is opened again, and asks for a check then,
/// since changes may have been missed.
async fn watch(cluster: super::ClusterConfig, mut store: Option<Store>, tick: mpsc::Sender<()>) {
    let mut wait = Duration::from_secs(1);
    // Lost etcd: one check right away, so that the node reports it (logs, metrics, alerts)
    // without waiting for its schedule.
    let mut up = store.is_some();
    let lost = |up: &mut bool| {
        if std::mem::take(up) {
            let _ = tick.try_send(());
        }
    };
    loop {
        let watched = async {
            let s = match store.take() {
                Some(s) => s,
                None => Store::connect(&cluster).await?,
            };
            let stream = s.watch().await?;
            Ok::<_, String>((s, stream))
        };
        let (s, mut stream) = match watched.await {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot watch etcd; retrying");
                lost(&mut up);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        up = true;
        wait = Duration::from_secs(1);
        let _ = tick.try_send(());
        let tokens = s.key("http01/");
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    let changed: Vec<String> = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv())
                        .filter(|kv| !kv.key().starts_with(tokens.as_bytes()))
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                        .collect();
                    if !changed.is_empty() {
                        tracing::debug!(keys = ?changed, "fleet: changed in etcd; checking");
                        // Let the burst of one change (result, slot, rollout) settle: what else
                        // arrives meanwhile is covered by the same check.
                        let settle = tokio::time::sleep(Duration::from_millis(200));
                        tokio::pin!(settle);
                        loop {
                            tokio::select! {
                                () = &mut settle => break,
                                more = stream.message() => if !matches!(more, Ok(Some(_))) { break },
                            }
                        }
                        let _ = tick.try_send(());
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("fleet: the etcd watch ended; watching again");
                    break;
                }
            }
        }
    }
}
