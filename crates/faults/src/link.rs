//! One proxied connection: two pumps (client to server, server to client) that apply the
//! current faults chunk by chunk, and a kill switch for resets and closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::fault::{DirectionFaults, Faults};
use crate::inspect::Inspector;
use crate::proxy::Shared;

/// How a connection is ended by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Abortive close: both peers get a reset (RST).
    Reset,
    /// Orderly close: both peers see end of stream (FIN).
    Close,
}

/// A live proxied connection.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) client: SocketAddr,
    pub(crate) opened: SystemTime,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) kill: watch::Sender<Option<Kill>>,
    inspector: Mutex<Inspector>,
}

impl Link {
    pub(crate) fn new(id: u64, client: SocketAddr) -> Link {
        Link {
            id,
            client,
            opened: SystemTime::now(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            kill: watch::channel(None).0,
            inspector: Mutex::new(Inspector::new()),
        }
    }

    fn inspector(&self) -> MutexGuard<'_, Inspector> {
        self.inspector.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn total_bytes(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed) + self.bytes_down.load(Ordering::Relaxed)
    }
}

/// Relays `client` to `server` until either side ends or the link is killed.
pub(crate) async fn run(shared: Arc<Shared>, link: Arc<Link>, client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(
        Arc::clone(&shared),
        Arc::clone(&link),
        Side::Up,
        client_r,
        server_w,
    );
    let down = pump(
        Arc::clone(&shared),
        Arc::clone(&link),
        Side::Down,
        server_r,
        client_w,
    );
    tokio::join!(up, down);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

async fn pump(
    shared: Arc<Shared>,
    link: Arc<Link>,
    side: Side,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
) {
    let mut faults = shared.faults.subscribe();
    let mut kill = link.kill.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    // Client bytes held back while a rule might still cut before the message they start.
    let mut held: Vec<u8> = Vec::new();
    // A SwallowFrom rule fired: the client's bytes are dropped from here on.
    let mut swallowing = false;
    loop {
        if let Some(how) = wait_while_paused(&mut faults, &mut kill).await {
            return end(to, how).await;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = kill.changed() => {
                let how = (*kill.borrow()).unwrap_or(Kill::Close);
                return end(to, how).await;
            }
        };
        let n = match n {
            Ok(0) | Err(_) => {
                if side == Side::Up {
                    // A hung network loses the client's FIN like any other byte: the server
                    // must not learn that the client left while its bytes are swallowed.
                    if let Some(how) = hold_while_swallowed(&mut faults, &mut kill, swallowing).await {
                        return end(to, how).await;
                    }
                } else {
                    // The server is gone: nothing more can reach it, so the client's half
                    // ends too (it may be holding on above).
                    link.kill.send_if_modified(|k| {
                        let first = k.is_none();
                        if first {
                            *k = Some(Kill::Close);
                        }
                        first
                    });
                }
                if !held.is_empty() {
                    let _ = to.write_all(&held).await;
                }
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let now: Faults = faults.borrow().clone();
        let dir = match side {
            Side::Up => now.upstream,
            Side::Down => now.downstream,
        };
        if dir.blackhole || swallowing {
            continue;
        }
        // What the protocol rules make of this chunk.
        let (mut out, mut after) = match side {
            Side::Up => {
                held.extend_from_slice(&buf[..n]);
                let rule = now.rule.as_ref().filter(|r| !(r.once && shared.rule_spent()));
                let decision = link.inspector().upstream(&held, n, rule);
                if decision.fired {
                    shared.rule_fired();
                }
                let out: Vec<u8> = held.drain(..decision.forward).collect();
                if decision.swallow {
                    held.clear();
                    swallowing = true;
                    shared.count_fault();
                }
                (out, decision.cut.then_some(Kill::Close))
            }
            Side::Down => {
                let decision = link.inspector().downstream(&buf[..n]);
                if decision.encrypted {
                    shared.counters.encrypted.fetch_add(1, Ordering::Relaxed);
                }
                (
                    buf[..decision.forward].to_vec(),
                    decision.close.then_some(Kill::Close),
                )
            }
        };
        if let Some(limit) = now.cut_after_bytes {
            let room = limit.saturating_sub(link.total_bytes()) as usize;
            if out.len() >= room {
                out.truncate(room);
                after = Some(Kill::Close);
            }
        }
        if let Some(how) = deliver(&shared, &link, side, &dir, &mut to, &out, &mut kill).await {
            return end(to, how).await;
        }
        if let Some(how) = after {
            shared.count_fault();
            let _ = link.kill.send(Some(how));
            return end(to, how).await;
        }
    }
}

/// Writes `out` with the direction's latency and bandwidth applied. Returns a kill that
/// arrived meanwhile.
async fn deliver(
    shared: &Shared,
    link: &Link,
    side: Side,
    dir: &DirectionFaults,
    to: &mut OwnedWriteHalf,
    out: &[u8],
    kill: &mut watch::Receiver<Option<Kill>>,
) -> Option<Kill> {
    if out.is_empty() {
        return None;
    }
    if let Some(latency) = dir.latency {
        tokio::select! {
            _ = tokio::time::sleep(latency.sample()) => {}
            _ = kill.changed() => return Some((*kill.borrow()).unwrap_or(Kill::Close)),
        }
    }
    if to.write_all(out).await.is_err() {
        return Some(Kill::Close);
    }
    let n = out.len() as u64;
    let (link_bytes, total) = match side {
        Side::Up => (&link.bytes_up, &shared.counters.bytes_up),
        Side::Down => (&link.bytes_down, &shared.counters.bytes_down),
    };
    link_bytes.fetch_add(n, Ordering::Relaxed);
    total.fetch_add(n, Ordering::Relaxed);
    if let Some(rate) = dir.bandwidth_bytes_per_sec {
        let pause = Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = kill.changed() => return Some((*kill.borrow()).unwrap_or(Kill::Close)),
        }
    }
    None
}

/// Blocks while the proxy is paused; returns a kill that arrives meanwhile.
async fn wait_while_paused(
    faults: &mut watch::Receiver<Faults>,
    kill: &mut watch::Receiver<Option<Kill>>,
) -> Option<Kill> {
    let killed = *kill.borrow();
    if killed.is_some() {
        return killed;
    }
    while faults.borrow().paused {
        tokio::select! {
            changed = faults.changed() => if changed.is_err() { return Some(Kill::Close) },
            _ = kill.changed() => return Some((*kill.borrow()).unwrap_or(Kill::Close)),
        }
    }
    None
}

/// The client closed its side while its bytes are being swallowed (a `SwallowFrom` rule
/// fired on this connection, or the upstream is a blackhole): waits, keeping the server's side
/// open, until the link is killed, the server closes, or (a blackhole only) the fault is
/// cleared. Returns the kill, if that is what ended the wait.
async fn hold_while_swallowed(
    faults: &mut watch::Receiver<Faults>,
    kill: &mut watch::Receiver<Option<Kill>>,
    swallowing: bool,
) -> Option<Kill> {
    loop {
        if let Some(how) = *kill.borrow() {
            return Some(how);
        }
        if !swallowing && !faults.borrow().upstream.blackhole {
            return None;
        }
        tokio::select! {
            changed = faults.changed() => if changed.is_err() { return Some(Kill::Close) },
            changed = kill.changed() => if changed.is_err() { return Some(Kill::Close) },
        }
    }
}

/// Ends this pump's outgoing half. A reset sets SO_LINGER to zero and drops the half without
/// the FIN tokio would send, so the socket closes with RST once the read half goes too; a
/// close sends FIN.
async fn end(mut to: OwnedWriteHalf, how: Kill) {
    match how {
        Kill::Reset => {
            let _ = SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
            to.forget();
        }
        Kill::Close => {
            let _ = to.shutdown().await;
        }
    }
}
