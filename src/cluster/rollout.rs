//! The rollout rules, apart from etcd: whether a node's turn may start, how many nodes may
//! reload at once, and how far a rollout has come. Pure functions of what the store holds.

use super::store::{NodeOutcome, NodeResult, Rollout, RolloutState};

/// What a node should do about a certificate of the fleet now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// The fleet has published nothing under this name yet.
    NothingPublished,
    /// This node already has the certificate that rolls out.
    UpToDate,
    /// A node's verification failed; nobody starts until `regcert cluster resume`.
    Halted { by: String, error: String },
    /// Install it, in one of the first `slots` reload slots (one while no node has proven the
    /// certificate yet: the first node is the canary).
    Go { slots: usize },
}

/// Has `result` proven `sha256` on its node (served, or installed where nothing checks)?
fn proven(result: &NodeResult, sha256: &str) -> bool {
    result.sha256 == sha256 && matches!(result.outcome, NodeOutcome::Verified | NodeOutcome::Installed)
}

/// The turn of a node that has `installed` (the SHA-256 of its installed leaf).
pub fn turn(rollout: Option<&Rollout>, installed: Option<&str>, results: &[(String, NodeResult)], max_unavailable: usize) -> Turn {
    let Some(rollout) = rollout else { return Turn::NothingPublished };
    if installed == Some(rollout.sha256.as_str()) {
        return Turn::UpToDate;
    }
    if rollout.state == RolloutState::Halted {
        return Turn::Halted {
            by: rollout.halted_by.clone().unwrap_or_else(|| "a node".into()),
            error: rollout.error.clone().unwrap_or_default(),
        };
    }
    let canary_passed = results.iter().any(|(_, r)| proven(r, &rollout.sha256));
    Turn::Go { slots: if canary_passed { max_unavailable.max(1) } else { 1 } }
}

/// How far the rollout of a certificate has come over the live nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Live nodes that have proven the certificate.
    pub done: Vec<String>,
    /// Live nodes still to go (or waiting for their reload window).
    pub waiting: Vec<String>,
    /// Nodes whose turn failed for this certificate.
    pub failed: Vec<String>,
    pub state: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every live node has it.
    Complete,
    Rolling,
    Halted,
}

impl Phase {
    /// For the metric regcert_cluster_rollout_state.
    pub fn gauge(self) -> i64 {
        match self {
            Phase::Complete => 0,
            Phase::Rolling => 1,
            Phase::Halted => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Complete => "complete",
            Phase::Rolling => "rolling",
            Phase::Halted => "halted",
        }
    }
}

/// The progress of `rollout` over `live` nodes, from their `results`.
pub fn progress(rollout: &Rollout, live: &[String], results: &[(String, NodeResult)]) -> Progress {
    let result_of = |node: &str| results.iter().find(|(n, _)| n == node).map(|(_, r)| r);
    let (mut done, mut waiting, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for node in live {
        match result_of(node) {
            Some(r) if proven(r, &rollout.sha256) => done.push(node.clone()),
            Some(r) if r.sha256 == rollout.sha256 && matches!(r.outcome, NodeOutcome::RolledBack | NodeOutcome::Failed) => {
                failed.push(node.clone())
            }
            _ => waiting.push(node.clone()),
        }
    }
    let state = match rollout.state {
        RolloutState::Halted => Phase::Halted,
        RolloutState::Rolling if waiting.is_empty() && failed.is_empty() => Phase::Complete,
        RolloutState::Rolling => Phase::Rolling,
    };
    Progress { done, waiting, failed, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(state: RolloutState) -> Rollout {
        Rollout { sha256: "new".into(), serial: "01".into(), state, halted_by: Some("b".into()), error: Some("not served".into()), at: 0 }
    }

    fn result(node: &str, sha: &str, outcome: NodeOutcome) -> (String, NodeResult) {
        (node.into(), NodeResult { sha256: sha.into(), serial: "01".into(), outcome, error: None, at: 0 })
    }

    #[test]
    fn the_first_node_goes_alone_and_the_rest_go_max_unavailable_at_a_time_once_it_proved_the_certificate() {
        let r = rollout(RolloutState::Rolling);
        assert_eq!(turn(Some(&r), Some("old"), &[], 3), Turn::Go { slots: 1 });
        let before = [result("a", "old", NodeOutcome::Verified)];
        assert_eq!(turn(Some(&r), Some("old"), &before, 3), Turn::Go { slots: 1 }, "an old certificate's success proves nothing");
        let canary = [result("a", "new", NodeOutcome::Verified)];
        assert_eq!(turn(Some(&r), Some("old"), &canary, 3), Turn::Go { slots: 3 });
    }

    #[test]
    fn a_halted_rollout_stops_every_node_that_does_not_have_it_yet() {
        let r = rollout(RolloutState::Halted);
        assert_eq!(turn(Some(&r), Some("old"), &[], 1), Turn::Halted { by: "b".into(), error: "not served".into() });
        assert_eq!(turn(Some(&r), Some("new"), &[], 1), Turn::UpToDate);
        assert_eq!(turn(None, Some("old"), &[], 1), Turn::NothingPublished);
    }

    #[test]
    fn progress_counts_live_nodes_only_and_is_complete_when_each_has_proven_it() {
        let r = rollout(RolloutState::Rolling);
        let live = ["a".to_owned(), "b".to_owned()];
        let results = [result("a", "new", NodeOutcome::Verified), result("gone", "new", NodeOutcome::RolledBack)];
        let p = progress(&r, &live, &results);
        assert_eq!((p.done, p.waiting, p.failed, p.state), (vec!["a".to_owned()], vec!["b".to_owned()], vec![], Phase::Rolling));
        let all = [result("a", "new", NodeOutcome::Verified), result("b", "new", NodeOutcome::Installed)];
        assert_eq!(progress(&r, &live, &all).state, Phase::Complete);
        let failed = [result("a", "new", NodeOutcome::Verified), result("b", "new", NodeOutcome::RolledBack)];
        let p = progress(&rollout(RolloutState::Halted), &live, &failed);
        assert_eq!((p.failed, p.state), (vec!["b".to_owned()], Phase::Halted));
    }
}
