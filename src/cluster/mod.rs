//! Fleet mode (`[cluster]`): several registry nodes behind a load balancer share one
//! certificate per name through etcd.
//!
//! One node, elected through an etcd lease, decides and orders for the whole fleet (one ACME
//! order per renewal), answers HTTP-01 through every node (tokens in etcd), and publishes the
//! certificate with its key sealed. Every node installs, reloads and verifies its own registry
//! in turn — at most `max_unavailable` at once, the first one alone as the canary — and a
//! failed verification halts the rollout for the whole fleet.
//!
//! [`store`] is everything kept in etcd, [`rollout`] the pure turn-taking rules, [`fleet`] one
//! pass of a node (leader's work, then its own turn), [`tokens`] HTTP-01 through etcd,
//! [`seal`] the encryption of keys, [`status`] `regcert cluster status/resume`.

pub mod config;
pub mod fleet;
pub mod rollout;
pub mod seal;
pub mod status;
pub mod store;
pub mod tokens;
pub mod watch;

pub use config::ClusterConfig;
