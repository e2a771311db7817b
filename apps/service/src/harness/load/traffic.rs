//! The load itself: API clients (a fixed number, or a fixed rate) and a keeper that holds a
//! number of assemblies running. Everything sent and everything acknowledged goes into the
//! ledger, which the end checks compare with the database.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast::Pool;
use serde_json::{json, Value};

use crate::harness::http_client::{fetch, Failure};

/// One API request as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Sent, in seconds from the start of the run.
    pub sent_s: f64,
    /// Answered (or given up on).
    pub done_s: f64,
    /// The HTTP status, or why there was none.
    pub result: Result<u16, Failure>,
    /// The answer was a success: 2xx, or the 409 that says a start sent again had landed.
    pub ok: bool,
    /// The request writes (anything but GET).
    pub write: bool,
}

impl Outcome {
    /// What went wrong, as a short label (`http 503`, `timeout`, ...).
    pub fn error_kind(&self) -> Option<String> {
        match self.result {
            _ if self.ok => None,
            Ok(status) => Some(format!("http {status}")),
            Err(failure) => Some(failure.as_str().to_string()),
        }
    }

    /// Milliseconds from sent to answered.
    pub fn ms(&self) -> f64 {
        (self.done_s - self.sent_s) * 1000.0
    }
}

/// An episode the run sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEpisode {
    /// Its title, unique to this request.
    pub title: String,
    /// Segments sent.
    pub segments: i64,
    /// The id the API acknowledged, if it did.
    pub id: Option<i64>,
}

/// An assembly the API acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The episode.
    pub episode: i64,
    /// The task the API named (none when the acknowledgement was a 409 after a retry).
    pub task: Option<i64>,
}

/// What the run sent and what it was told.
#[derive(Debug)]
pub struct Ledger {
    /// When the run started.
    pub origin: Instant,
    /// A tag in every title, unique to the run.
    pub tag: String,
    /// Every API request, in the order they finished.
    pub outcomes: Mutex<Vec<Outcome>>,
    /// Every episode sent.
    pub episodes: Mutex<Vec<SentEpisode>>,
    /// Every assembly acknowledged.
    pub started: Mutex<Vec<Started>>,
    /// Requests rate mode could not send because `MAX_IN_FLIGHT` were unanswered.
    pub not_sent: AtomicU64,
}

impl Ledger {
    /// An empty ledger starting now.
    pub fn new(tag: String) -> Ledger {
        Ledger {
            origin: Instant::now(),
            tag,
            outcomes: Mutex::new(Vec::new()),
            episodes: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
            not_sent: AtomicU64::new(0),
        }
    }

    /// Seconds since the start.
    pub fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Sends one request and records it; `also_ok` is a status that counts as success here.
    async fn call(
        &self,
        addr: SocketAddr,
        request: (&str, &str, Option<&Value>),
        also_ok: Option<u16>,
        timeout: Duration,
    ) -> Result<(u16, Value), Failure> {
        let (method, path, body) = request;
        let sent_s = self.now_s();
        let reply = fetch(addr, method, path, body, timeout).await;
        let result = reply.as_ref().map(|r| r.status).map_err(|f| *f);
        let outcome = Outcome {
            sent_s,
            done_s: self.now_s(),
            result,
            ok: matches!(result, Ok(200..=299)) || (also_ok.is_some() && result.ok() == also_ok),
            write: method != "GET",
        };
        lock(&self.outcomes).push(outcome);
        reply.map(|r| (r.status, serde_json::from_str(&r.text).unwrap_or(Value::Null)))
    }

    /// Creates an episode through the API; its id if acknowledged.
    async fn create_episode(
        &self,
        addr: SocketAddr,
        who: &str,
        segments: u32,
        timeout: Duration,
    ) -> Option<i64> {
        // Numbered and recorded under one lock: every title is sent once.
        let (index, title) = {
            let mut episodes = lock(&self.episodes);
            let title = format!("load {} {who} {}", self.tag, episodes.len() + 1);
            episodes.push(SentEpisode {
                title: title.clone(),
                segments: i64::from(segments),
                id: None,
            });
            (episodes.len() - 1, title)
        };
        let body = json!({
            "title": title,
            "segments": (0..segments).map(|i| json!({"text": format!("line {i} of {title}"), "duration_ms": 1000 + i})).collect::<Vec<_>>(),
        });
        let reply = self
            .call(addr, ("POST", "/api/episodes", Some(&body)), None, timeout)
            .await;
        let id = match reply {
            Ok((201, body)) => body["id"].as_i64(),
            _ => None,
        };
        if let Some(id) = id {
            lock(&self.episodes)[index].id = Some(id);
        }
        id
    }

    /// An acknowledged episode picked at random, if the pick is one.
    fn some_episode(&self, rng: &mut fastrand::Rng) -> Option<i64> {
        let episodes = lock(&self.episodes);
        if episodes.is_empty() {
            return None;
        }
        episodes[rng.usize(..episodes.len())].id
    }
}

/// Locks a ledger list; a panic elsewhere must not stop the run from reporting.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the API clients send.
#[derive(Debug, Clone, Copy)]
pub enum ApiLoad {
    /// This many clients, each sending its next request when the last one is answered.
    Concurrency(u32),
    /// This many requests a second, whatever the answers (at most `MAX_IN_FLIGHT` at once).
    Rate(u32),
}

/// Requests in flight at most in rate mode; past it, the client itself is the bottleneck.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Sends API traffic until `stop`: light reads, episode reads and a few writes, in a mix
/// drawn from `seed`.
pub async fn api_clients(
    addr: SocketAddr,
    ledger: Arc<Ledger>,
    load: ApiLoad,
    seed: u64,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) {
    match load {
        ApiLoad::Concurrency(n) => {
            let clients: Vec<_> = (0..n)
                .map(|c| {
                    let (ledger, stop) = (Arc::clone(&ledger), Arc::clone(&stop));
                    tokio::spawn(async move {
                        let mut rng =
                            fastrand::Rng::with_seed(seed ^ (u64::from(c) + 1).wrapping_mul(0x9e37_79b9));
                        while !stop.load(Ordering::Relaxed) {
                            one_request(addr, &ledger, &mut rng, timeout).await;
                        }
                    })
                })
                .collect();
            for c in clients {
                let _ = c.await;
            }
        }
        ApiLoad::Rate(per_second) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                while in_flight.try_join_next().is_some() {}
                if in_flight.len() >= MAX_IN_FLIGHT {
                    ledger.not_sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (ledger, mut rng) = (Arc::clone(&ledger), rng.fork());
                in_flight.spawn(async move { one_request(addr, &ledger, &mut rng, timeout).await });
            }
            while in_flight.join_next().await.is_some() {}
        }
    }
}

const HINTS: [&str; 5] = ["mu", "lou", "pub", "start", "sh"];

async fn one_request(addr: SocketAddr, ledger: &Ledger, rng: &mut fastrand::Rng, timeout: Duration) {
    let roll = rng.u32(0..100);
    if roll < 10 {
        ledger.create_episode(addr, "api", 3, timeout).await;
        return;
    }
    let episode = if roll < 40 { ledger.some_episode(rng) } else { None };
    let path = match episode {
        Some(id) => format!("/api/episodes/{id}"),
        None => format!("/api/ai/intent-hints?q={}", HINTS[rng.usize(..HINTS.len())]),
    };
    let _ = ledger.call(addr, ("GET", &path, None), None, timeout).await;
}

/// Keeps `n` assemblies running until `until`: creates an episode and starts its assembly
/// whenever fewer are running. A start whose answer was lost is sent again; a 409 then says
/// the first one landed.
pub async fn keep_assemblies(
    addr: SocketAddr,
    admin: Pool,
    ledger: Arc<Ledger>,
    n: usize,
    segments: u32,
    timeout: Duration,
    until: Instant,
) {
    let mut running: Vec<i64> = Vec::new();
    // Episodes whose start got no clear answer: sent again, where a 409 means it landed.
    let mut not_started: Vec<i64> = Vec::new();
    while Instant::now() < until {
        if !running.is_empty() {
            match finished(&admin, &running).await {
                Some(done) => running.retain(|id| !done.contains(id)),
                None => {
                    // The database is away: look again shortly.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        while running.len() < n && Instant::now() < until {
            let (episode, again) = match not_started.pop() {
                Some(id) => (id, true),
                None => match ledger.create_episode(addr, "assembly", segments, timeout).await {
                    Some(id) => (id, false),
                    None => break,
                },
            };
            let path = format!("/api/episodes/{episode}/assemble");
            let conflict_ok = again.then_some(409);
            match ledger
                .call(addr, ("POST", &path, None), conflict_ok, timeout)
                .await
            {
                Ok((202, body)) => {
                    lock(&ledger.started).push(Started {
                        episode,
                        task: body["task_id"].as_i64(),
                    });
                    running.push(episode);
                }
                Ok((409, _)) if again => {
                    lock(&ledger.started).push(Started { episode, task: None });
                    running.push(episode);
                }
                _ => {
                    not_started.push(episode);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which of `episodes` are assembled or failed; `None` if the database did not answer.
async fn finished(admin: &Pool, episodes: &[i64]) -> Option<Vec<i64>> {
    let query = async {
        let conn = admin.get().await.ok()?;
        let rows = conn
            .query(
                "SELECT id FROM episodes WHERE id = ANY($1) AND status IN ('assembled', 'failed')",
                &[&episodes],
            )
            .await
            .ok()?;
        Some(rows.iter().map(|r| r.get(0)).collect())
    };
    tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .ok()
        .flatten()
}
