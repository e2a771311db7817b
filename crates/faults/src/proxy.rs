//! The proxy: accept clients on a loopback port, relay each to the upstream server through
//! the current faults, and a handle to change faults, reset or close connections, and read
//! counters while it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::counters::{CounterSnapshot, Counters};
use crate::error::FaultError;
use crate::fault::Faults;
use crate::link::{self, Kill, Link};

/// State shared by the accept loop, the links and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    upstream: SocketAddr,
    pub(crate) faults: watch::Sender<Faults>,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    pub(crate) counters: Counters,
    next_id: AtomicU64,
    /// A `once` rule has fired; cleared whenever faults are set.
    spent: AtomicBool,
    /// The handle was dropped: the accept loop ends.
    stopping: AtomicBool,
}

impl Shared {
    fn links(&self) -> MutexGuard<'_, HashMap<u64, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn rule_spent(&self) -> bool {
        self.spent.load(Ordering::Acquire)
    }

    pub(crate) fn rule_fired(&self) {
        self.spent.store(true, Ordering::Release);
    }

    pub(crate) fn count_fault(&self) {
        self.counters.faults_fired.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts fault-injection proxies.
#[derive(Debug)]
pub struct FaultProxy;

impl FaultProxy {
    /// Listens on `listen` (port 0 picks a free one) and relays every client to `upstream`.
    /// Must be called inside a tokio runtime.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<ProxyHandle, FaultError> {
        let listen_error = |source| FaultError::Listen {
            addr: listen.to_string(),
            error: source,
        };
        // Bound through std so that the handle keeps a second handle on the socket: dropping
        // the handle shuts the listener down at once (the accept task's end is asynchronous).
        let bound = std::net::TcpListener::bind(listen).map_err(listen_error)?;
        bound.set_nonblocking(true).map_err(listen_error)?;
        let closer = socket2::Socket::from(bound.try_clone().map_err(listen_error)?);
        let listener = TcpListener::from_std(bound).map_err(listen_error)?;
        let addr = listener.local_addr().map_err(|source| FaultError::Listen {
            addr: listen.to_string(),
            error: source,
        })?;
        let shared = Arc::new(Shared {
            upstream,
            faults: watch::channel(Faults::none()).0,
            links: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            next_id: AtomicU64::new(0),
            spent: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, %upstream, "fault proxy listening");
        Ok(ProxyHandle {
            addr,
            shared,
            accept,
            closer,
        })
    }

    /// Listens on a free port of 127.0.0.1.
    pub async fn start_local(upstream: SocketAddr) -> Result<ProxyHandle, FaultError> {
        FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the link tasks here means aborting this task (the handle dropped) ends them all.
    let mut links = JoinSet::new();
    loop {
        while links.try_join_next().is_some() {}
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) if shared.stopping.load(Ordering::Acquire) => return,
            Err(error) => {
                // Out of file descriptors, say: pause rather than spin.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.faults.borrow().refuse {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let shared = Arc::clone(&shared);
        links.spawn(async move {
            let server = match TcpStream::connect(shared.upstream).await {
                Ok(server) => server,
                Err(error) => {
                    // Upstream refused: the client sees its connection closed.
                    tracing::debug!(%error, "upstream connect failed");
                    return;
                }
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let link = Arc::new(Link::new(id, peer));
            shared.links().insert(id, Arc::clone(&link));
            shared.counters.opened.fetch_add(1, Ordering::Relaxed);
            link::run(Arc::clone(&shared), link, client, server).await;
            shared.links().remove(&id);
            shared.counters.closed.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// One live connection, as listed by [`ProxyHandle::connections`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The proxy's number for it.
    pub id: u64,
    /// The client's address.
    pub client: String,
    /// Seconds since the Unix epoch when it was accepted.
    pub opened_unix_s: u64,
    /// Bytes forwarded client to server.
    pub bytes_up: u64,
    /// Bytes forwarded server to client.
    pub bytes_down: u64,
}

/// A running proxy. Dropping it stops accepting and ends every relayed connection.
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    /// The listening socket, shut down when the handle is dropped.
    closer: socket2::Socket,
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The faults applied now.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Replaces the faults; live connections apply them from their next chunk. A `once`
    /// rule is re-armed.
    pub fn set(&self, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        self.shared.spent.store(false, Ordering::Release);
        self.shared.faults.send_replace(faults);
        Ok(())
    }

    /// Changes part of the faults.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) -> Result<(), FaultError> {
        let mut faults = self.faults();
        change(&mut faults);
        self.set(faults)
    }

    /// Passes everything through again (and resumes if paused).
    pub fn clear(&self) {
        self.shared.faults.send_replace(Faults::none());
    }

    /// Resets (RST) every open connection; returns how many.
    pub fn reset_all(&self) -> usize {
        self.kill_all(Kill::Reset)
    }

    /// Closes (FIN) every open connection; returns how many.
    pub fn close_all(&self) -> usize {
        self.kill_all(Kill::Close)
    }

    fn kill_all(&self, how: Kill) -> usize {
        let links: Vec<Arc<Link>> = self.shared.links().values().cloned().collect();
        for link in &links {
            link.kill.send_replace(Some(how));
            self.shared.count_fault();
        }
        links.len()
    }

    /// The connections relayed right now.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .shared
            .links()
            .values()
            .map(|l| ConnectionInfo {
                id: l.id,
                client: l.client.to_string(),
                opened_unix_s: l
                    .opened
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                bytes_up: l.bytes_up.load(Ordering::Relaxed),
                bytes_down: l.bytes_down.load(Ordering::Relaxed),
            })
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Not listening from here on, whenever the aborted accept task is dropped.
        let _ = self.closer.shutdown(std::net::Shutdown::Both);
        self.kill_all(Kill::Close);
        self.accept.abort();
    }
}
