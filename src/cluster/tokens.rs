//! HTTP-01 behind a load balancer: the leader publishes each token in etcd (on its lease, so
//! a dead leader's tokens vanish with it) and every node's responder answers from there, so
//! the CA may reach any node.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use tokio::net::TcpListener;

use super::store::{Leader, Store};
use crate::challenge::HTTP01_PREFIX;

/// The leader's side: the HTTP-01 solver of the fleet ([`crate::challenge::Solver::Fleet`]).
pub enum Publisher {
    /// Tokens in etcd, for every node's responder.
    Fleet { store: Box<Store>, leader: Leader, lease: i64 },
    /// etcd is down and this node renews alone (`issue_alone_within`): its own responder answers.
    Alone,
}

/// Tokens of a renewal this node makes alone, answered by its responder before it asks etcd.
fn alone() -> &'static Mutex<HashMap<String, String>> {
    static TOKENS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    TOKENS.get_or_init(Mutex::default)
}

fn alone_tokens() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    // A poisoned map only means a panic elsewhere; the data is still a plain map.
    alone().lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    pub fn new(store: Store, leader: Leader, lease: i64) -> Self {
        Publisher::Fleet { store: Box::new(store), leader, lease }
    }

    pub fn alone() -> Self {
        Publisher::Alone
    }

    pub async fn present(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        match self {
            Publisher::Fleet { store, leader, lease } => store.put_token(*leader, *lease, token, key_authorization).await,
            Publisher::Alone => {
                alone_tokens().insert(token.to_owned(), key_authorization.to_owned());
                Ok(())
            }
        }
    }

    pub async fn cleanup(&self, token: &str) {
        match self {
            Publisher::Fleet { store, .. } => {
                if let Err(e) = store.delete_token(token).await {
                    // It goes with the leader's lease at the latest.
                    tracing::warn!(error = %e, "cannot remove an HTTP-01 token from etcd");
                }
            }
            Publisher::Alone => {
                alone_tokens().remove(token);
            }
        }
    }
}

/// Every node's side: answer `/.well-known/acme-challenge/TOKEN` with what the leader put in
/// etcd, on `addr`, for as long as the node runs (the CA may come at any moment of an order
/// another node placed).
pub async fn serve(store: Store, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} for the fleet's HTTP-01 answers: {e}; every node must answer HTTP-01 on [http01] listen")
    })?;
    tracing::info!(listen = %addr, "HTTP-01 responder for the fleet started");
    let serve =
        crate::httpserve::serve(listener, "HTTP-01", crate::httpserve::Limits::DEFAULT, move |req, peer| answer(req, store.clone(), peer));
    Ok(tokio::spawn(serve))
}

async fn answer(req: Request<Incoming>, store: Store, peer: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let token = req.uri().path().strip_prefix(HTTP01_PREFIX).filter(|t| !t.is_empty() && !t.contains('/'));
    let mine = token.and_then(|t| alone_tokens().get(t).cloned());
    let found = match token {
        _ if mine.is_some() => mine,
        Some(token) => match store.token(token).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%peer, %error, "HTTP-01 request: cannot read the token from etcd");
                None
            }
        },
        None => None,
    };
    tracing::info!(%peer, path = req.uri().path(), found = found.is_some(), node = %store.node(), "HTTP-01 request");
    let rsp = match found {
        Some(body) => Response::builder().header("content-type", "application/octet-stream").body(Full::new(Bytes::from(body))),
        None => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"not found\n"))),
    };
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
