//! `[cluster]`: how a node reaches the fleet's etcd, who it is, and how the rollout is paced.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{duration, opt_duration};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs ("http://10.0.0.1:2379", "https://…"); any member will do.
    pub endpoints: Vec<String>,
    /// Every key regcert writes lives under this prefix; one fleet per prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This node's name in the fleet; default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// 32 random bytes (base64, one line, 0600), the same on every node: private keys and the
    /// ACME account are sealed with it before they go into etcd.
    pub secret_key_file: PathBuf,
    /// The CA that signed the etcd members' certificates (https endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// A client certificate and key for etcd's `--client-cert-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// etcd user (auth enabled) and the file holding its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// How many nodes may be reloading (their registry restarting) at once; the first node of a
    /// rollout, the canary, always goes alone.
    #[serde(default = "one")]
    pub max_unavailable: usize,
    /// A node that stops renewing its lease for this long is gone: its leadership and its
    /// rollout slot pass to the others.
    #[serde(default = "default_lease_ttl", with = "duration")]
    pub lease_ttl: Duration,
    /// The most one etcd request may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Opt-in: while etcd cannot be reached, a node whose installed certificate has less than
    /// this left renews it on its own (as without a fleet) rather than let it expire.
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub issue_alone_within: Option<Duration>,
}

fn default_prefix() -> String {
    "/regcert/".into()
}

fn one() -> usize {
    1
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ClusterConfig {
    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }

    /// The prefix with exactly one trailing slash, so keys never run into each other.
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }

    /// What is wrong with the table itself (files are checked when connecting).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.endpoints.is_empty() {
            problems.push("[cluster] endpoints is empty: list the etcd client URLs, e.g. [\"http://10.0.0.1:2379\"]".to_owned());
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                problems.push(format!("[cluster] endpoints: `{e}` is not an http:// or https:// URL of an etcd member"));
            }
        }
        if self.endpoints.iter().any(|e| e.starts_with("https://")) && self.ca_bundle.is_none() {
            problems.push("[cluster] endpoints use https: set ca_bundle to the CA that signed the etcd members' certificates".to_owned());
        }
        // etcd's client refuses TLS settings with an http:// member: say which one, before connecting.
        if self.ca_bundle.is_some() || self.client_cert.is_some() {
            for e in self.endpoints.iter().filter(|e| e.starts_with("http://")) {
                problems.push(format!(
                    "[cluster] endpoints: `{e}` is plain http, but ca_bundle or client_cert is set: list every member as https://, or remove the TLS settings"
                ));
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            problems.push("[cluster] client_cert and client_key go together: set both or neither".to_owned());
        }
        if self.user.is_some() != self.password_file.is_some() {
            problems.push("[cluster] user and password_file go together: set both or neither".to_owned());
        }
        if !self.prefix.starts_with('/') || self.prefix.trim_matches('/').is_empty() {
            problems.push(format!("[cluster] prefix = \"{}\": use a path like \"/regcert/\" (one per fleet)", self.prefix));
        }
        let node = self.node_name();
        if node.is_empty() || !node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            problems.push(format!("[cluster] node = \"{node}\": use letters, digits, '-', '_' and '.' only (it is part of etcd keys)"));
        }
        if self.max_unavailable == 0 {
            problems.push("[cluster] max_unavailable = 0 would never reload a node: use 1 or more".to_owned());
        }
        if self.lease_ttl < Duration::from_secs(2) {
            problems.push("[cluster] lease_ttl must be at least 2s (default \"15s\")".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("[cluster] timeout must be longer than 0 (default \"5s\")".to_owned());
        }
        problems
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_with_a_plain_http_member_name_that_member() {
        let c: ClusterConfig = toml::from_str(
            "endpoints = [\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\nsecret_key_file = \"/k\"\nca_bundle = \"/ca.pem\"",
        )
        .unwrap();
        let problems = c.problems().join("\n");
        assert!(problems.contains("`http://10.0.0.2:2379` is plain http") && !problems.contains("10.0.0.1"), "{problems}");
    }
}
