//! The built-in HTTP-01 responder.
//!
//! It listens only while at least one token is published and answers only those tokens, so
//! port 80 is not held open between renewals and nothing else is ever served.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::HTTP01_PREFIX;

type Tokens = Arc<StdMutex<HashMap<String, String>>>;

pub struct Responder {
    addr: SocketAddr,
    tokens: Tokens,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Responder {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, tokens: Arc::default(), server: Mutex::new(None) }
    }

    pub async fn present(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let listener = TcpListener::bind(self.addr).await.map_err(|e| self.bind_error(e))?;
            tracing::info!(listen = %self.addr, "HTTP-01 responder started");
            let tokens = self.tokens.clone();
            let serve = crate::httpserve::serve(listener, "HTTP-01", crate::httpserve::Limits::DEFAULT, move |req, peer| {
                answer(req, tokens.clone(), peer)
            });
            *server = Some(tokio::spawn(serve));
        }
        lock(&self.tokens).insert(token.to_owned(), key_authorization.to_owned());
        Ok(())
    }

    pub async fn cleanup(&self, token: &str) {
        let mut server = self.server.lock().await;
        let now_empty = {
            let mut tokens = lock(&self.tokens);
            tokens.remove(token);
            tokens.is_empty()
        };
        if now_empty && let Some(task) = server.take() {
            // Aborting the server closes the listener and every connection it holds.
            task.abort();
            let _ = task.await;
            tracing::info!(listen = %self.addr, "HTTP-01 responder stopped");
        }
    }

    fn bind_error(&self, e: std::io::Error) -> String {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; or set [http01] webroot to use your web server"
            }
            std::io::ErrorKind::AddrInUse => {
                "another server (nginx?) already listens there: set [http01] webroot to its document root instead"
            }
            _ => "check [http01] listen",
        };
        format!("cannot listen on {} for HTTP-01: {e}; {hint}", self.addr)
    }
}

fn lock(tokens: &Tokens) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    // A poisoned map only means a panic elsewhere; the data is still a plain map.
    tokens.lock().unwrap_or_else(|p| p.into_inner())
}

async fn answer(req: Request<Incoming>, tokens: Tokens, peer: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = req.uri().path().strip_prefix(HTTP01_PREFIX).and_then(|token| lock(&tokens).get(token).cloned());
    tracing::debug!(%peer, path = req.uri().path(), found = found.is_some(), "HTTP-01 request");
    let rsp = match found {
        Some(body) => Response::builder().header("content-type", "application/octet-stream").body(Full::new(Bytes::from(body))),
        None => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"not found\n"))),
    };
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn serves_only_published_tokens_and_only_while_needed() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = Responder::new(addr);
        assert!(get(addr, "/").await.is_err(), "must not listen before a token is out");
        r.present("tok1", "tok1.thumb").await.unwrap();
        let hit = get(addr, "/.well-known/acme-challenge/tok1").await.unwrap();
        assert!(hit.starts_with("HTTP/1.1 200") && hit.ends_with("tok1.thumb"), "{hit}");
        let miss = get(addr, "/.well-known/acme-challenge/other").await.unwrap();
        assert!(miss.starts_with("HTTP/1.1 404"), "{miss}");
        r.cleanup("tok1").await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(get(addr, "/").await.is_err(), "must stop when no token is out");
    }

    #[tokio::test]
    async fn stopping_closes_open_connections() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = Responder::new(addr);
        r.present("tok", "tok.thumb").await.unwrap();
        // One idle connection, one kept alive after a request.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("tok.thumb"));
        r.cleanup("tok").await;
        for s in [&mut idle, &mut kept] {
            let read = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "a connection outlived the responder: {read:?}");
        }
    }
}
