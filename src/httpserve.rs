//! The two small HTTP servers regcert runs (the HTTP-01 responder and the metrics endpoint),
//! bounded so that no client can hold them ([`Limits::DEFAULT`]): at most 64 connections at
//! once (more are closed at once), request headers within 10 s (an idle connection, new or kept
//! alive, is closed then), no connection older than 60 s, a pause after a failed accept (say,
//! out of file descriptors) instead of a busy loop, and every open connection closed when the
//! server task is aborted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; a client beyond these is disconnected right away.
    pub max_connections: usize,
    /// Time for a request's headers to arrive; also the longest a kept-alive connection may idle.
    pub header_timeout: Duration,
    /// The longest any connection is kept, busy or not.
    pub max_lifetime: Duration,
}

impl Limits {
    pub const DEFAULT: Limits =
        Limits { max_connections: 64, header_timeout: Duration::from_secs(10), max_lifetime: Duration::from_secs(60) };
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// Serve `answer` on `listener` until this future is dropped (with it, every connection).
pub async fn serve<F, Fut>(listener: TcpListener, what: &'static str, limits: Limits, answer: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Owned here: dropping (aborting) the server drops the set, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(server = what, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Debug only: a flood of these must not flood the log too.
            tracing::debug!(server = what, %peer, limit = limits.max_connections, "too many connections; closing this one");
            drop(stream);
            continue;
        };
        let answer = answer.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service_fn(move |req| answer(req, peer)));
            if tokio::time::timeout(limits.max_lifetime, conn).await.is_err() {
                tracing::debug!(server = what, %peer, "connection closed: open too long");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn hello(_: Request<Incoming>, _: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    }

    /// Is the connection closed by the server within `within`?
    async fn closed(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    async fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn idle_clients_cannot_hold_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { max_connections: 4, header_timeout: Duration::from_millis(700), max_lifetime: Duration::from_secs(2) };
        let server = tokio::spawn(serve(listener, "test", limits, hello));
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The cap holds: the two beyond it are closed at once, the first four are kept (for now).
        assert!(closed(&mut idle[4], Duration::from_millis(300)).await && closed(&mut idle[5], Duration::from_millis(300)).await);
        assert!(!closed(&mut idle[0], Duration::from_millis(100)).await);
        let refused = get(addr).await;
        assert!(refused.as_deref().is_ok_and(str::is_empty) || refused.is_err(), "{refused:?}");
        // After the header timeout every idle connection is gone, and requests work again.
        for s in &mut idle[..4] {
            assert!(closed(s, Duration::from_secs(2)).await, "an idle connection outlived the header timeout");
        }
        assert!(get(addr).await.unwrap().ends_with("hello"));
        // So is a kept-alive connection that idles after a request.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello"));
        assert!(!closed(&mut kept, Duration::from_millis(300)).await && closed(&mut kept, Duration::from_secs(2)).await);
        // A connection that sends headers slowly is closed at the timeout too.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(closed(&mut slow, Duration::from_secs(2)).await);
        // Aborting the server closes what it holds.
        let mut held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.abort();
        assert!(closed(&mut held, Duration::from_millis(300)).await);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
