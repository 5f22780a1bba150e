//! A TCP proxy between a PostgreSQL pool and the real server that counts round trips on the
//! wire, so the adapter under test cannot misreport them.
//!
//! A **flight** is what the client sends between two answers of the server: the first bytes
//! the client sends after the server has sent anything (or on a new connection) open a flight,
//! and every further send before the server's next bytes belongs to the same flight. A
//! pipelined batch (several statements written before any answer is read) is one flight; a
//! statement sent after the answer to the previous one is another. Flights are counted over
//! every connection through the proxy.
//!
//! Run the test on a current-thread runtime: the connection task of `tokio_postgres` and the
//! code that queues the statements then share one thread, so every statement queued before
//! the code awaits is written before the connection task can read an answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The counters of a [`RoundTripProxy`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Client flights so far (see the module docs).
    pub flights: AtomicU64,
    /// Bytes the client sent.
    pub client_bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// A listening proxy to one upstream server.
#[derive(Debug, Clone)]
pub struct RoundTripProxy {
    /// `127.0.0.1:port` the proxy listens on.
    pub addr: std::net::SocketAddr,
    /// What it counted.
    pub counters: Arc<Counters>,
}

impl RoundTripProxy {
    /// Starts a proxy to `upstream` (`host:port`) on a task of the current runtime.
    pub async fn start(upstream: String) -> RoundTripProxy {
        RoundTripProxy::start_slow(upstream, std::time::Duration::ZERO).await
    }

    /// As [`RoundTripProxy::start`], holding every chunk the server sends for `delay` before
    /// passing it on (a slow server or a long network path).
    pub async fn start_slow(upstream: String, delay: std::time::Duration) -> RoundTripProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, server, shared.clone(), delay));
            }
        });
        RoundTripProxy { addr, counters }
    }

    /// Client flights so far.
    pub fn flights(&self) -> u64 {
        self.counters.flights.load(Ordering::SeqCst)
    }

    /// `url` (a `postgres://user@host:port/db` URL) pointed at the proxy.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (auth, after) = match rest.split_once('@') {
            Some((auth, after)) => (format!("{auth}@"), after),
            None => (String::new(), rest),
        };
        let path = after.find('/').map(|i| &after[i..]).unwrap_or("");
        format!("{scheme}://{auth}{}{path}", self.addr)
    }

    /// The `host:port` a URL names.
    pub fn upstream_of(url: &str) -> String {
        let rest = url.split_once("://").expect("a URL").1;
        let after = rest.split_once('@').map(|(_, a)| a).unwrap_or(rest);
        let end = after.find(['/', '?']).unwrap_or(after.len());
        after[..end].to_string()
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    counters: Arc<Counters>,
    delay: std::time::Duration,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Whether the server has sent anything since the client's last flight began: a new
    // connection starts with the client's turn.
    let server_spoke = Arc::new(AtomicBool::new(true));
    let spoke = server_spoke.clone();
    let up_counters = counters.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if spoke.swap(false, Ordering::SeqCst) {
                up_counters.flights.fetch_add(1, Ordering::SeqCst);
            }
            up_counters
                .client_bytes
                .fetch_add(n as u64, Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            server_spoke.store(true, Ordering::SeqCst);
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
