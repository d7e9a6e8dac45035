//! The fleet's shared state in etcd: what lives under which key, and the few operations the
//! fleet needs — each one request (or one transaction), each bounded by `[cluster] timeout`.
//!
//! Keys, under `[cluster] prefix`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `leader` | the leader's node name | the leader's session |
//! | `nodes/NODE` | [`NodeInfo`] | the node's session |
//! | `certs/NAME/current` | [`SharedCert`]: the certificate, its key sealed | — |
//! | `certs/NAME/rollout` | [`Rollout`]: which certificate rolls out, rolling or halted | — |
//! | `certs/NAME/nodes/NODE` | [`NodeResult`]: what the node installed and how it went | — |
//! | `certs/NAME/slots/I` | the node reloading in slot I | the node's session |
//! | `certs/NAME/renew` | the node that asked for a renewal now (`regcert cluster renew`) | — |
//! | `http01/TOKEN` | the key authorization | the leader's session |
//! | `accounts/HASH` | the ACME account of a CA directory, sealed | — |
//!
//! Writes the leader makes for the fleet are fenced: they happen only while the `leader` key
//! is still the one this node created ([`Leader::revision`]), so a leader whose lease ran out
//! (paused, cut off) cannot overwrite what its successor published.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use super::config::ClusterConfig;
use super::seal::SecretKey;
use crate::state::{Issued, IssuedMeta};

/// A connection to the fleet's etcd, as one node.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    node: String,
    timeout: Duration,
    secret: Arc<SecretKey>,
    endpoints: String,
    /// The node's `[cluster]`: an error that points at a setting names it (and its file).
    settings: Arc<ClusterConfig>,
}

/// What the leader published for a certificate: the chain in clear, the key sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedCert {
    pub meta: IssuedMeta,
    pub leaf_pem: String,
    pub chain_pem: String,
    /// The private key, sealed with the fleet's secret key for this key path (base64).
    pub key_sealed: String,
    /// The node that ordered it, and when (its clock).
    pub by: String,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Nodes take their turns.
    Rolling,
    /// A node's verification failed: no node starts a turn until `regcert cluster resume`.
    Halted,
}

/// The rollout of the certificate in `current`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub sha256: String,
    pub serial: String,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOutcome {
    /// Installed, reloaded, and the registry proven to serve it.
    Verified,
    /// Installed and reloaded; no verification is configured.
    Installed,
    /// Installed; the restart waits for the node's reload window.
    ReloadPending,
    /// Verification failed and the previous pair was put back.
    RolledBack,
    /// Could not be installed or delivered (the node keeps what it had).
    Failed,
}

/// What one node did with a certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResult {
    pub sha256: String,
    pub serial: String,
    pub outcome: NodeOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: u64,
}

/// A live node (its key goes with its session).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub version: String,
    pub started_at: u64,
    /// The fingerprint of the node's secret key: nodes with different key files are named.
    pub secret_key: String,
}

/// This node's lease, kept alive in the background; the node's presence, its leadership and
/// its rollout slot all go with it.
pub struct Session {
    pub lease: i64,
    lost: Arc<AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Has the lease expired (etcd cut off for longer than the TTL)? A new session is needed.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed) || self.keeper.is_finished()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Proof of leadership: the revision at which this node created the `leader` key.
#[derive(Debug, Clone, Copy)]
pub struct Leader {
    pub revision: i64,
}

impl Store {
    /// Connect to the fleet's etcd; the secret key file is read first, so a node that could not
    /// open what the fleet stores never joins it.
    pub async fn connect(config: &ClusterConfig) -> Result<Store, String> {
        let secret = SecretKey::load(&config.secret_key_file)?;
        let endpoints = config.endpoints.join(", ");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            // The lease keep-alive (every lease_ttl / 3) already shows a dead connection; HTTP/2
            // PINGs every few seconds only cost an idle node bytes (bench/fleet.sh).
            .with_keep_alive(HTTP2_KEEP_ALIVE.max(config.timeout), config.timeout)
            // etcd forgets a token left unused for --auth-token-ttl (5 min by default), each
            // member on its own: a long-running node would otherwise be refused for good after
            // an idle spell. A refused token is renewed once and the request sent again.
            .with_auto_token_refresh(true);
        if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
            let password = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                format!("cannot read [cluster] password_file {}: {e}; it holds the etcd password of user `{user}`", file.display())
            })?);
            options = options.with_user(user.clone(), password.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let Some(ca) = &config.ca_bundle {
            let read = |what: &str, path: &std::path::Path, holds: &str| {
                std::fs::read(path).map_err(|e| format!("cannot read [cluster] {what} {}: {e}; it should hold {holds}", path.display()))
            };
            let ca = read("ca_bundle", ca, "the PEM certificate of the CA that signed the etcd members' certificates")?;
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
            if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
                let key = Zeroizing::new(read("client_key", key, "the PEM private key of [cluster] client_cert")?);
                let cert = read("client_cert", cert, "the PEM client certificate that etcd's --trusted-ca-file accepts")?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key.as_slice()));
            }
            options = options.with_tls(tls);
        }
        // With a user, connecting authenticates: a wrong password or a TLS failure shows here.
        let connect = Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(config.timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(failure(config, &endpoints, "connecting", &describe(&e))),
            Err(_) => {
                let error = format!("no answer within {}", humantime::format_duration(config.timeout));
                return Err(failure(config, &endpoints, "connecting", &error));
            }
        };
        Ok(Store {
            client,
            prefix: config.key_prefix(),
            node: config.node_name(),
            timeout: config.timeout,
            secret: Arc::new(secret),
            endpoints,
            settings: Arc::new(config.clone()),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full etcd key of `rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// One etcd request, bounded; its error names the endpoints and what was being done. A
    /// request that could not reach its member is tried again (at most once per endpoint): the
    /// client spreads requests over the members and does not skip a stopped one by itself.
    async fn call<T, Fut>(&self, what: &str, mut request: impl FnMut(Client) -> Fut) -> Result<T, String>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = self.endpoints.split(", ").count().max(1) + 1;
        let mut last = String::new();
        for _ in 0..attempts {
            match tokio::time::timeout(self.timeout, request(self.client.clone())).await {
                Ok(Ok(v)) => {
                    crate::metrics::etcd_request(true);
                    return Ok(v);
                }
                Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() as i32 == GRPC_UNAVAILABLE => {
                    crate::metrics::etcd_request(false);
                    last = s.message().to_owned();
                }
                Ok(Err(etcd_client::Error::TransportError(e))) => {
                    crate::metrics::etcd_request(false);
                    last = e.to_string();
                }
                Ok(Err(e)) => {
                    crate::metrics::etcd_request(false);
                    return Err(failure(&self.settings, &self.endpoints, what, &describe(&e)));
                }
                Err(_) => {
                    crate::metrics::etcd_request(false);
                    last = format!("no answer within {} ([cluster] timeout)", humantime::format_duration(self.timeout));
                }
            }
        }
        Err(failure(&self.settings, &self.endpoints, what, &last))
    }

    async fn get_raw(&self, rest: &str) -> Result<Option<etcd_client::KeyValue>, String> {
        let key = self.key(rest);
        let resp = self
            .call(&format!("reading {key}"), |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().cloned())
    }

    async fn get_json<T: DeserializeOwned>(&self, rest: &str) -> Result<Option<(T, i64)>, String> {
        let Some(kv) = self.get_raw(rest).await? else { return Ok(None) };
        let value =
            serde_json::from_slice(kv.value()).map_err(|e| format!("etcd key {} holds something unreadable: {e}", self.key(rest)))?;
        Ok(Some((value, kv.mod_revision())))
    }

    /// Every key under `rest` (a directory), with its name after `rest` and its value.
    async fn list(&self, rest: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let full = self.key(rest);
        let resp = self
            .call(&format!("listing {full}"), |mut c| {
                let key = full.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).trim_start_matches(full.as_str()).to_owned(), kv.value().to_vec()))
            .collect())
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<etcd_client::TxnResponse, String> {
        self.call(what, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// A new session: a lease of `ttl` kept alive in the background, and this node's presence.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session, String> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(2);
        let granted = self.call("granting this node's lease", |mut c| async move { c.lease_grant(secs, None).await }).await?;
        let lease = granted.id();
        let store = self.clone();
        let keep_alive = move || {
            let store = store.clone();
            async move { store.call("keeping the lease alive", |mut c| async move { c.lease_keep_alive(lease).await }).await }
        };
        let (mut keeper, mut answers) = keep_alive().await?;
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let node = self.node.clone();
        let keep = async move {
            // A third of the TTL: two renewals may be lost before the lease expires.
            let every = Duration::from_secs(u64::try_from(secs).unwrap_or(2)) / 3;
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let renewed = async {
                    keeper.keep_alive().await.ok()?;
                    answers.message().await.ok().flatten()
                };
                match tokio::time::timeout(every, renewed).await {
                    Ok(Some(answer)) if answer.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                    Ok(Some(_)) => {
                        tracing::warn!(node = %node, "etcd says this node's lease has expired: leaving the fleet until a new session");
                        break;
                    }
                    _ if last_ok.elapsed() > every * 3 => {
                        tracing::warn!(node = %node, "this node's lease could not be renewed for a whole TTL: it has expired");
                        break;
                    }
                    _ => {
                        // The member the stream went to may be gone: a new stream, to any member.
                        tracing::warn!(node = %node, "renewing this node's etcd lease failed; retrying");
                        if let Ok((k, a)) = keep_alive().await {
                            (keeper, answers) = (k, a);
                        }
                    }
                }
            }
            flag.store(true, Ordering::Relaxed);
        };
        let session = Session { lease, lost, keeper: tokio::spawn(keep) };
        let info = NodeInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: crate::certinfo::unix(std::time::SystemTime::now()),
            secret_key: self.secret.fingerprint(),
        };
        self.put_json(&format!("nodes/{}", self.node), &info, Some(lease)).await?;
        Ok(session)
    }

    /// Give the session's lease back at once (a one-shot run that is done): its leadership and
    /// slot go to the others now, not after the TTL.
    pub async fn close_session(&self, session: Session) {
        let lease = session.lease;
        if let Err(e) = self.call("revoking this node's lease", |mut c| async move { c.lease_revoke(lease).await }).await {
            tracing::warn!(node = %self.node, error = %e, "the lease runs out on its own");
        }
    }

    async fn put_json<T: Serialize>(&self, rest: &str, value: &T, lease: Option<i64>) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let key = self.key(rest);
        self.call(&format!("writing {key}"), |mut c| {
            let (key, bytes) = (key.clone(), bytes.clone());
            async move { c.put(key, bytes, lease.map(|l| PutOptions::new().with_lease(l))).await }
        })
        .await?;
        Ok(())
    }

    /// Become the leader unless another live node is: `Ok(Err(name))` names the leader.
    pub async fn campaign(&self, session: &Session) -> Result<Result<Leader, String>, String> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), self.node.clone(), Some(PutOptions::new().with_lease(session.lease)))])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn("campaigning for leadership", txn).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(Ok(Leader { revision }));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        match current {
            Some(kv) if kv.value() == self.node.as_bytes() && kv.lease() == session.lease => {
                Ok(Ok(Leader { revision: kv.create_revision() }))
            }
            Some(kv) => Ok(Err(String::from_utf8_lossy(kv.value()).into_owned())),
            // Gone between the compare and the get: the next pass campaigns again.
            None => Ok(Err("nobody (the leader just left)".into())),
        }
    }

    /// The current leader's name, if any.
    pub async fn leader(&self) -> Result<Option<String>, String> {
        Ok(self.get_raw("leader").await?.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// A fenced transaction of the leader: `ops` happen only while it still is the leader.
    async fn as_leader(&self, leader: Leader, what: &str, ops: Vec<TxnOp>) -> Result<(), String> {
        let txn = Txn::new().when([Compare::create_revision(self.key("leader"), CompareOp::Equal, leader.revision)]).and_then(ops);
        if self.txn(what, txn).await?.succeeded() {
            Ok(())
        } else {
            Err(format!("{what}: this node is no longer the fleet's leader (its lease ran out); the new leader takes over"))
        }
    }

    /// Publish a new certificate for the fleet and start its rollout, as the leader.
    pub async fn publish(&self, leader: Leader, issued: &Issued) -> Result<(), String> {
        let name = &issued.meta.name;
        let current = self.key(&format!("certs/{name}/current"));
        let shared = SharedCert {
            meta: issued.meta.clone(),
            leaf_pem: issued.leaf_pem.clone(),
            chain_pem: issued.chain_pem.clone(),
            key_sealed: base64_encode(&self.secret.seal(issued.key_pem.as_bytes(), &current)),
            by: self.node.clone(),
            at: now(),
        };
        let rollout = Rollout {
            sha256: issued.meta.sha256.clone(),
            serial: issued.meta.serial.clone(),
            state: RolloutState::Rolling,
            halted_by: None,
            error: None,
            at: now(),
        };
        let json = |e: serde_json::Error| e.to_string();
        let ops = vec![
            TxnOp::put(current, serde_json::to_vec(&shared).map_err(json)?, None),
            TxnOp::put(self.key(&format!("certs/{name}/rollout")), serde_json::to_vec(&rollout).map_err(json)?, None),
            // A renewal someone asked for is done.
            TxnOp::delete(self.key(&format!("certs/{name}/renew")), None),
        ];
        self.as_leader(leader, &format!("publishing certificate `{name}`"), ops).await
    }

    /// Ask the leader to renew `name` now (`regcert cluster renew`), whatever the policy says.
    pub async fn request_renewal(&self, name: &str) -> Result<(), String> {
        let by = self.node.clone();
        self.put_json(&format!("certs/{name}/renew"), &by, None).await
    }

    /// Who asked for a renewal of `name` that is not done yet.
    pub async fn renewal_requested(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.get_json::<String>(&format!("certs/{name}/renew")).await?.map(|(by, _)| by))
    }

    /// The certificate the fleet shares under `name`, with its key opened.
    pub async fn shared(&self, name: &str) -> Result<Option<(SharedCert, Issued)>, String> {
        let Some((shared, _)) = self.get_json::<SharedCert>(&format!("certs/{name}/current")).await? else { return Ok(None) };
        let context = self.key(&format!("certs/{name}/current"));
        let sealed = base64_decode(&shared.key_sealed).map_err(|e| format!("etcd key {context}: the sealed key is not base64: {e}"))?;
        let key = self.secret.open(&sealed, &context).map_err(|e| {
            format!(
                "cannot open the key of certificate `{name}` stored in etcd by node `{}`: {e}; every node needs the same [cluster] secret_key_file",
                shared.by
            )
        })?;
        let key_pem = Zeroizing::new(String::from_utf8(key.to_vec()).map_err(|_| format!("etcd key {context}: the key is not PEM"))?);
        let issued = Issued { leaf_pem: shared.leaf_pem.clone(), chain_pem: shared.chain_pem.clone(), key_pem, meta: shared.meta.clone() };
        Ok(Some((shared, issued)))
    }

    /// The rollout of `name`, with its revision (for [`Store::set_rollout_state`]).
    pub async fn rollout(&self, name: &str) -> Result<Option<(Rollout, i64)>, String> {
        self.get_json(&format!("certs/{name}/rollout")).await
    }

    /// Halt or resume the rollout read at `revision`; false when it changed meanwhile (another
    /// node halted it first, or a new certificate started a new rollout).
    pub async fn set_rollout_state(&self, name: &str, rollout: &Rollout, revision: i64) -> Result<bool, String> {
        let key = self.key(&format!("certs/{name}/rollout"));
        let bytes = serde_json::to_vec(rollout).map_err(|e| e.to_string())?;
        let txn =
            Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)]).and_then([TxnOp::put(key, bytes, None)]);
        Ok(self.txn(&format!("changing the rollout of `{name}`"), txn).await?.succeeded())
    }

    pub async fn put_result(&self, name: &str, result: &NodeResult) -> Result<(), String> {
        self.put_json(&format!("certs/{name}/nodes/{}", self.node), result, None).await
    }

    /// Every node's result for `name`, by node name.
    pub async fn results(&self, name: &str) -> Result<Vec<(String, NodeResult)>, String> {
        let listed = self.list(&format!("certs/{name}/nodes/")).await?;
        Ok(listed.into_iter().filter_map(|(node, v)| Some((node, serde_json::from_slice(&v).ok()?))).collect())
    }

    /// The live nodes.
    pub async fn nodes(&self) -> Result<Vec<(String, NodeInfo)>, String> {
        let listed = self.list("nodes/").await?;
        Ok(listed.into_iter().filter_map(|(node, v)| Some((node, serde_json::from_slice(&v).ok()?))).collect())
    }

    /// Who holds the reload slots of `name` (slot, node).
    pub async fn slots(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let listed = self.list(&format!("certs/{name}/slots/")).await?;
        Ok(listed.into_iter().map(|(slot, v)| (slot, String::from_utf8_lossy(&v).into_owned())).collect())
    }

    /// Take one of the first `open` reload slots of `name` for this node (or keep the one it
    /// holds); `None` when all are taken.
    pub async fn take_slot(&self, name: &str, open: usize, session: &Session) -> Result<Option<String>, String> {
        for (slot, holder) in self.slots(name).await? {
            if holder == self.node {
                return Ok(Some(slot));
            }
        }
        for i in 0..open {
            let key = self.key(&format!("certs/{name}/slots/{i}"));
            let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
                key,
                self.node.clone(),
                Some(PutOptions::new().with_lease(session.lease)),
            )]);
            if self.txn(&format!("taking a reload slot of `{name}`"), txn).await?.succeeded() {
                return Ok(Some(i.to_string()));
            }
        }
        Ok(None)
    }

    pub async fn release_slot(&self, name: &str, slot: &str) -> Result<(), String> {
        let key = self.key(&format!("certs/{name}/slots/{slot}"));
        let txn = Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, self.node.clone())]).and_then([TxnOp::delete(key, None)]);
        self.txn(&format!("giving back the reload slot of `{name}`"), txn).await.map(|_| ())
    }

    /// Publish an HTTP-01 answer for every node's responder, as the leader, for as long as
    /// its session lives.
    pub async fn put_token(&self, leader: Leader, lease: i64, token: &str, key_authorization: &str) -> Result<(), String> {
        let op = TxnOp::put(self.key(&format!("http01/{token}")), key_authorization, Some(PutOptions::new().with_lease(lease)));
        self.as_leader(leader, "publishing an HTTP-01 token", vec![op]).await
    }

    pub async fn delete_token(&self, token: &str) -> Result<(), String> {
        let key = self.key(&format!("http01/{token}"));
        self.call("removing an HTTP-01 token", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await
        .map(|_| ())
    }

    /// The key authorization for `token`, if the leader published one.
    pub async fn token(&self, token: &str) -> Result<Option<String>, String> {
        Ok(self.get_raw(&format!("http01/{token}")).await?.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The fleet's ACME account for a CA directory (its credentials JSON), opened.
    pub async fn account(&self, directory: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let rest = account_key(directory);
        let Some(kv) = self.get_raw(&rest).await? else { return Ok(None) };
        let sealed =
            base64_decode(&String::from_utf8_lossy(kv.value())).map_err(|e| format!("etcd key {}: not base64: {e}", self.key(&rest)))?;
        self.secret.open(&sealed, &self.key(&rest)).map(Some).map_err(|e| {
            format!("cannot open the fleet's ACME account for {directory}: {e}; every node needs the same [cluster] secret_key_file")
        })
    }

    /// Share this node's ACME account for `directory`, unless the fleet has one already.
    pub async fn share_account(&self, leader: Leader, directory: &str, credentials: &[u8]) -> Result<(), String> {
        let key = self.key(&account_key(directory));
        let sealed = base64_encode(&self.secret.seal(credentials, &key));
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.key("leader"), CompareOp::Equal, leader.revision),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, sealed, None)]);
        self.txn("sharing the ACME account", txn).await.map(|_| ())
    }

    /// A watch of everything under the prefix: the daemon acts on what changes.
    pub async fn watch(&self) -> Result<etcd_client::WatchStream, String> {
        self.call("watching the fleet's keys", |mut c| {
            let prefix = self.prefix.clone();
            async move { c.watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix())).await }
        })
        .await
    }
}

/// How often an idle connection to etcd is PINGed.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// gRPC's UNAVAILABLE: the member could not be reached (or has no leader).
const GRPC_UNAVAILABLE: i32 = 14;

/// The key of a CA directory's account: a hash, since URLs hold slashes.
fn account_key(directory: &str) -> String {
    use sha2::Digest;
    format!("accounts/{}", hex::encode(&sha2::Sha256::digest(directory.as_bytes())[..16]))
}

/// The error text of an etcd request: a gRPC status's message alone (its code and source
/// repeat it at length).
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }
}

/// What the failure of `what` (an etcd request) tells the operator: the `[cluster]` setting to
/// fix when the error points at one, else that etcd could not be reached and what to check.
fn failure(settings: &ClusterConfig, endpoints: &str, what: &str, error: &str) -> String {
    match setting_at_fault(settings, error) {
        Some(fix) => format!("etcd at {endpoints}, {what}: {error}; {fix}"),
        None => format!(
            "cannot reach etcd at {endpoints}, {what}: {error}; check [cluster] endpoints, that the members run, and the TLS/auth settings ([cluster] ca_bundle, client_cert, user){}",
            closed_over_tls(settings, error)
        ),
    }
}

/// Which `[cluster]` setting an etcd error points at, and what to do about it.
fn setting_at_fault(settings: &ClusterConfig, error: &str) -> Option<String> {
    let error = error.to_ascii_lowercase();
    let file = |path: &Option<std::path::PathBuf>| path.as_ref().map_or_else(|| "not set".to_owned(), |p| p.display().to_string());
    let user = settings.user.as_deref().unwrap_or_default();
    if error.contains("authentication failed") {
        return Some(format!(
            "etcd refused [cluster] user `{user}`: check the user name and the password in [cluster] password_file ({})",
            file(&settings.password_file)
        ));
    }
    if error.contains("user name is empty") || (settings.user.is_none() && error.contains("invalid auth token")) {
        return Some("etcd has authentication enabled: set [cluster] user and password_file (a file holding that user's password)".into());
    }
    if error.contains("permission denied") {
        let prefix = settings.key_prefix();
        return Some(format!(
            "etcd user `{user}` has no permission under [cluster] prefix {prefix}: grant one of its roles that prefix \
             (etcdctl role grant-permission --prefix=true ROLE readwrite {prefix})"
        ));
    }
    if error.contains("certificate") || error.contains("handshake") || error.contains("tls") {
        return Some(format!(
            "TLS with etcd failed: check that [cluster] ca_bundle ({}) holds the CA that signed the etcd members' certificates, \
             that those certificates name the host of each endpoint, and that [cluster] client_cert ({}) is one etcd trusts",
            file(&settings.ca_bundle),
            file(&settings.client_cert)
        ));
    }
    None
}

/// etcd with `--client-cert-auth` closes the connection of a client whose certificate it does
/// not accept, after the handshake: all the client sees is a closed connection.
fn closed_over_tls(settings: &ClusterConfig, error: &str) -> String {
    let https = settings.endpoints.iter().any(|e| e.starts_with("https://"));
    let closed = ["connection closed", "canceled", "connection reset", "broken pipe", "transport error"].iter().any(|c| error.contains(c));
    match (&settings.client_cert, https && closed) {
        (_, false) => String::new(),
        (None, true) => "; etcd closed the TLS connection: if it requires client certificates (--client-cert-auth), \
             set [cluster] client_cert and client_key"
            .into(),
        (Some(cert), true) => format!(
            "; etcd closed the TLS connection: check that its --trusted-ca-file holds the CA of [cluster] client_cert ({})",
            cert.display()
        ),
    }
}

fn now() -> u64 {
    crate::certinfo::unix(std::time::SystemTime::now())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> ClusterConfig {
        toml::from_str(&format!("endpoints = [\"https://10.0.0.1:2379\"]\nsecret_key_file = \"/k\"\nprefix = \"/fleet/\"\n{extra}"))
            .unwrap()
    }

    #[test]
    fn a_refused_password_names_the_user_and_the_password_file() {
        let s = settings("user = \"reg\"\npassword_file = \"/etc/regcert/etcd.pw\"\nca_bundle = \"/ca.pem\"");
        let fix = setting_at_fault(&s, "etcdserver: authentication failed, invalid user ID or password").unwrap();
        assert!(fix.contains("[cluster] user `reg`") && fix.contains("password_file (/etc/regcert/etcd.pw)"), "{fix}");
    }

    #[test]
    fn a_denied_request_names_the_prefix_to_grant() {
        let fix = setting_at_fault(&settings("user = \"reg\""), "etcdserver: permission denied").unwrap();
        assert!(fix.contains("`reg`") && fix.contains("readwrite /fleet/"), "{fix}");
    }

    #[test]
    fn an_unknown_issuer_names_ca_bundle_and_a_closed_connection_the_client_certificate() {
        let s = settings("ca_bundle = \"/ca.pem\"");
        let fix = setting_at_fault(&s, "invalid peer certificate: UnknownIssuer").unwrap();
        assert!(fix.starts_with("TLS with etcd failed") && fix.contains("ca_bundle (/ca.pem)"), "{fix}");
        assert_eq!(setting_at_fault(&s, "operation was canceled"), None);
        let failed = failure(&s, "https://10.0.0.1:2379", "connecting", "operation was canceled");
        assert!(failed.contains("cannot reach etcd") && failed.contains("set [cluster] client_cert and client_key"), "{failed}");
    }

    #[test]
    fn what_was_being_done_never_reads_as_the_cause() {
        let s = settings("");
        let failed = failure(&s, "http://10.0.0.1:2379", "publishing certificate `registry`", "no answer within 5s");
        assert!(
            failed.starts_with("cannot reach etcd at http://10.0.0.1:2379, publishing certificate") && !failed.contains("TLS with"),
            "{failed}"
        );
    }
}
