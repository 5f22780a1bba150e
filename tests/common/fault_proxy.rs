//! A small HTTP/1.1 proxy on 127.0.0.1 that sits in front of a PSP (localstripe), records
//! every request it sees and injects faults: delay the answer past the client's timeout, drop
//! the answer after the PSP processed the request, or answer by itself (500, 429, garbage)
//! without forwarding.
//!
//! One request per connection: the client must not pool connections
//! (`StripeConfig::with_max_idle_per_host(0)`), and the proxy asks the PSP to close after each
//! answer (`Connection: close`), so an answer is everything up to EOF.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward it and return the answer.
    Pass,
    /// Forward it, wait for the PSP's answer, then close the client connection without
    /// sending anything (the PSP did the effect; the client never hears of it).
    DropResponse,
    /// Forward it, then hold the answer this long before sending it.
    Delay(Duration),
    /// Forward it, wait for the PSP's answer (the effect happened), then answer the client
    /// with this status and body instead, as a gateway in front of the PSP may (a 502 after
    /// the PSP authorized).
    ReplaceResponse { status: u16, body: Vec<u8> },
    /// Do not forward; answer with this status, headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// A request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// Whether it was forwarded to the PSP.
    pub forwarded: bool,
}

#[derive(Default)]
struct Shared {
    /// `(matcher, fault)`: the first whose matcher is in `"METHOD path"` applies, once.
    faults: VecDeque<(String, Fault)>,
    seen: Vec<Seen>,
}

/// The proxy. Dropping it does not stop the listener task; the test runtime ends it.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let shared = task_shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &shared).await;
                });
            }
        });
        FaultProxy { url, shared }
    }

    /// The next request whose `"METHOD path"` contains `matcher` gets `fault`.
    pub fn inject(&self, matcher: &str, fault: Fault) {
        self.shared
            .lock()
            .expect("lock")
            .faults
            .push_back((matcher.to_owned(), fault));
    }

    /// Forgets the faults not yet used.
    pub fn clear_faults(&self) {
        self.shared.lock().expect("lock").faults.clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().expect("lock").seen.clone()
    }

    /// How many requests were seen so far.
    pub fn count(&self) -> usize {
        self.shared.lock().expect("lock").seen.len()
    }

    /// The requests seen after the first `from`, as `"METHOD path"`.
    pub fn since(&self, from: usize) -> Vec<String> {
        self.seen()
            .into_iter()
            .skip(from)
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

/// A canned answer.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Fault {
    Fault::Respond {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut client).await?;
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head_text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut idempotency_key = None;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("idempotency-key:") {
            let _ = v;
            idempotency_key = line.split_once(':').map(|(_, v)| v.trim().to_owned());
        }
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        headers.push(line.to_owned());
    }
    let fault = {
        let mut s = shared.lock().expect("lock");
        let target = format!("{method} {path}");
        let pos = s
            .faults
            .iter()
            .position(|(m, _)| target.contains(m.as_str()));
        let fault = pos
            .and_then(|p| s.faults.remove(p))
            .map(|(_, f)| f)
            .unwrap_or(Fault::Pass);
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            idempotency_key,
            forwarded: !matches!(fault, Fault::Respond { .. }),
        });
        fault
    };
    if let Fault::Respond {
        status,
        headers,
        body,
    } = &fault
    {
        let mut out = format!(
            "HTTP/1.1 {status} Canned\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        client.write_all(out.as_bytes()).await?;
        client.write_all(body).await?;
        client.flush().await?;
        return Ok(());
    }
    let mut forwarded = format!("{request_line}\r\n");
    for h in headers {
        forwarded.push_str(&h);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("connection: close\r\n\r\n");
    let mut psp = TcpStream::connect(upstream).await?;
    psp.write_all(forwarded.as_bytes()).await?;
    psp.write_all(&body).await?;
    psp.flush().await?;
    let mut answer = Vec::new();
    psp.read_to_end(&mut answer).await?;
    match fault {
        Fault::DropResponse => {
            // The PSP answered: the effect happened. The client hears nothing.
            drop(client);
            Ok(())
        }
        Fault::ReplaceResponse { status, body } => {
            let out = format!(
                "HTTP/1.1 {status} Replaced\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(out.as_bytes()).await?;
            client.write_all(&body).await?;
            client.flush().await
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            let _ = client.write_all(&answer).await;
            Ok(())
        }
        Fault::Pass | Fault::Respond { .. } => {
            client.write_all(&answer).await?;
            client.flush().await
        }
    }
}

/// Reads one request: the head (up to the blank line) and a `Content-Length` body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 || buf.len() > 1 << 20 {
            return Err(std::io::Error::other("incomplete request head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = buf[..end].to_vec();
    let mut body = buf[end + 4..].to_vec();
    let length = String::from_utf8_lossy(&head)
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}
