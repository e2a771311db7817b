//! Gathering reads: consecutive requests that each run one eligible prepared statement
//! (`Bind`, `Execute`, `Sync`) are sent to the server as one read-only implicit transaction
//! with a single `Sync`, and the answers are cut back into one answer per request, each
//! ended by its own `ReadyForQuery`, before the client reads them.
//!
//! Why: on a connection shared by many callers (a lane of `Pool::query`) the server spends
//! most of a small statement's time on its `Sync`: ending the transaction, sending
//! `ReadyForQuery` and flushing the socket (`holdfast-bench pools --sections syncs`
//! measured 7.1 µs per statement at one per `Sync`, 4.5 at two, 3.2 at four).
//!
//! What keeps it safe:
//! - Only named statements whose text starts with `SELECT`, `WITH`, `VALUES` or `TABLE` (seen
//!   in their `Parse`, after comments) are gathered, only while gathering is on ([`Gathering::set_on`]), and only requests that
//!   are exactly one such statement's `Bind`, `Execute` (all rows) and `Sync`.
//! - The group runs read-only: its first statement sets `transaction_read_only` for the
//!   transaction, so a statement that would write fails instead of writing. It also sets a
//!   short `lock_timeout`, so that a read waiting for a lock fails its group instead of
//!   holding it (and the locks its earlier reads took).
//! - No answer of a group reaches the client before the group's `ReadyForQuery`, that is
//!   before its transaction ended. When any statement of the group failed, the whole group
//!   was rolled back, and every request of it is answered with the error
//!   [`REGATHER_SQLSTATE`]: nothing of it took effect, run it again on its own. The
//!   statement that failed is not gathered again on this connection.
//! - An error that ends the session (`FATAL`, `PANIC`) is passed on at once.
//! - Anything the gatherer does not follow (COPY, a `Flush`, a malformed stream) turns it
//!   into a plain relay for the rest of the connection.
//!
//! The gatherer is pure (no I/O): the tap feeds it the client's bytes and the server's and
//! writes out what it returns.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// SQLSTATE of the error a gathered statement is answered with when its group failed:
/// nothing of it took effect; run it again on its own.
pub const REGATHER_SQLSTATE: &str = "HF0G1";

/// The message of that error.
pub const REGATHER_MESSAGE: &str =
    "holdfast: this statement was sent with others in one read-only transaction that failed; nothing of it took effect, run it again on its own";

/// The statement that makes a group's transaction read-only, prepared once per connection.
/// It also bounds how long a statement in the group waits for a lock (`lock_timeout`, for
/// the group's transaction only): a read waiting for a lock (a migration's, an advisory
/// one) would hold back the answers of its whole group, and the locks the group's earlier
/// reads hold could close a deadlock with the session it waits for. Past the bound the group
/// fails and its statements run again on their own, under the session's own `lock_timeout`.
const READ_ONLY_NAME: &[u8] = b"holdfast_gather_read_only";
const READ_ONLY_SQL: &[u8] = b"SELECT pg_catalog.set_config('transaction_read_only', 'on', true), \
pg_catalog.set_config('lock_timeout', '10ms', true)";

/// The most statements in one group (bounds what the gatherer holds for one answer).
const GROUP_MAX: usize = 64;
/// Groups are cut so that about this many are in flight: while the server runs one, the
/// client reads the answers of another. Groups of up to 64 left the server idle while the
/// client turned one group's answers into new statements (100k statements/s at 16 callers,
/// against 172k without gathering); cut for four in flight, 262k (`holdfast-bench pools
/// --sections select --split`, one round; three in flight: 253k).
const GROUPS_IN_FLIGHT: usize = 4;
/// The most statement names registered per connection; past it the set starts afresh.
const ELIGIBLE_MAX: usize = 4096;
/// Client bytes held before requests are cut without waiting for a flush.
pub(crate) const PENDING_MAX: usize = 256 * 1024;

/// The switch and the register of one connection's gathering, shared by the client's side
/// (which turns it on and registers statements) and the tap. Clone it freely.
#[derive(Clone, Default)]
pub struct Gathering {
    inner: Arc<Control>,
}

#[derive(Default)]
struct Control {
    on: AtomicBool,
    eligible: Mutex<HashSet<Box<[u8]>>>,
    gathered: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for Gathering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gathering")
            .field("on", &self.is_on())
            .field("gathered", &self.gathered())
            .field("groups_failed", &self.groups_failed())
            .finish()
    }
}

impl Gathering {
    /// Gathering off, nothing registered.
    pub fn new() -> Gathering {
        Gathering::default()
    }

    /// Turns gathering on (several callers share the connection) or off.
    pub fn set_on(&self, on: bool) {
        self.inner.on.store(on, Ordering::Relaxed);
    }

    /// Whether gathering is on.
    pub fn is_on(&self) -> bool {
        self.inner.on.load(Ordering::Relaxed)
    }

    /// A `Parse` went by, its body starting with `prefix` (statement name, then text): a
    /// named statement that reads (by its first keyword) may be gathered. One that writes
    /// after all fails in its read-only group, and is then left out.
    pub(crate) fn parsed(&self, prefix: &[u8]) {
        let Some((name, text)) = cstr(prefix) else {
            return;
        };
        if name.is_empty() || name == READ_ONLY_NAME || !crate::keyword::gatherable(text) {
            return;
        }
        let mut eligible = self.eligible();
        if eligible.len() >= ELIGIBLE_MAX {
            eligible.clear();
        }
        eligible.insert(name.into());
    }

    /// Statements answered from groups that succeeded.
    pub fn gathered(&self) -> u64 {
        self.inner.gathered.load(Ordering::Relaxed)
    }

    /// Groups that failed (each of their statements was answered with [`REGATHER_SQLSTATE`]).
    pub fn groups_failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    fn eligible(&self) -> MutexGuard<'_, HashSet<Box<[u8]>>> {
        self.inner.eligible.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the server will answer, in the order the requests were sent.
#[derive(Debug)]
enum Plan {
    /// Requests passed on unchanged: relay until this many `ReadyForQuery`.
    Pass(u32),
    /// One group.
    Group(Group),
    /// Everything from here on is relayed unchanged.
    Relay,
}

#[derive(Debug)]
struct Group {
    /// Each request's statement name.
    names: Vec<Box<[u8]>>,
    /// Each request's answer so far.
    answers: Vec<Vec<u8>>,
    /// `None` while the read-only statement's answer is under way, then the request whose
    /// answer is.
    at: Option<usize>,
    /// Where the group failed (`None`: the read-only statement) and with which SQLSTATE.
    failed: Option<(Option<usize>, [u8; 5])>,
}

/// One connection's gathering, between the client and the server (see the module).
#[derive(Debug)]
pub(crate) struct Gatherer {
    control: Gathering,
    /// Client bytes not yet cut into requests.
    pending: Vec<u8>,
    /// Bytes for the server.
    out: Outgoing,
    /// Server bytes not yet cut into messages.
    raw: Vec<u8>,
    /// Bytes for the client.
    back: Outgoing,
    plans: VecDeque<Plan>,
    /// Requests sent and not answered yet.
    owed: usize,
    /// The read-only statement is (believed) prepared on the server.
    prepared: bool,
    /// Something went by that the gatherer does not follow: it only relays from now on.
    relaying: bool,
}

impl Gatherer {
    pub(crate) fn new(control: Gathering) -> Gatherer {
        Gatherer {
            control,
            pending: Vec::new(),
            out: Outgoing::default(),
            raw: Vec::new(),
            back: Outgoing::default(),
            plans: VecDeque::new(),
            owed: 0,
            prepared: false,
            relaying: false,
        }
    }

    /// Whether gathering is on.
    pub(crate) fn is_on(&self) -> bool {
        self.control.is_on()
    }

    /// Starts afresh after the tap stopped going through it (keeps what the server has
    /// prepared).
    pub(crate) fn reset(&mut self) {
        let prepared = self.prepared;
        *self = Gatherer::new(self.control.clone());
        self.prepared = prepared;
    }

    /// Nothing held in either direction and no answer owed (or only relaying left): the tap
    /// may stop going through the gatherer.
    pub(crate) fn is_empty(&self) -> bool {
        (self.plans.is_empty() || self.relaying && matches!(self.plans.front(), Some(Plan::Relay)))
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.raw.is_empty()
            && self.back.is_empty()
    }

    /// Bytes the client wrote.
    pub(crate) fn client_bytes(&mut self, data: &[u8]) {
        if self.relaying {
            self.out.bytes.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > PENDING_MAX {
            self.cut();
        }
    }

    /// Cuts the complete requests the client wrote into what goes to the server (the client
    /// flushed: what it wrote together is gathered together).
    pub(crate) fn cut(&mut self) {
        if self.relaying || self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let control = self.control.clone();
        let eligible = control.eligible();
        let on = self.control.is_on();
        // Requests that may join a group: (start, end of Execute, statement name).
        let mut run: Vec<(usize, usize, Box<[u8]>)> = Vec::new();
        let mut request = 0;
        let mut at = 0;
        let mut messages: Vec<(u8, usize, usize)> = Vec::new();
        let mut relay_from = None;
        let group_size = ((self.owed + requests(&pending)) / GROUPS_IN_FLIGHT).clamp(2, GROUP_MAX);
        while let Some((tag, end)) = next_message(&pending[at..]).map(|(t, n)| (t, at + n)) {
            messages.push((tag, at, end));
            at = end;
            let answers = match tag {
                b'S' | b'Q' | b'F' => 1,
                b'P' | b'B' | b'D' | b'E' | b'C' => continue,
                b'X' => 0,
                _ => {
                    relay_from = Some(request);
                    break;
                }
            };
            let name = if on {
                gatherable(&pending, &messages, &eligible)
            } else {
                None
            };
            match name {
                Some(name) => {
                    run.push((request, messages[1].2, name));
                    if run.len() == group_size {
                        self.send_run(&pending, &mut run);
                    }
                }
                None => {
                    self.send_run(&pending, &mut run);
                    self.out.bytes.extend_from_slice(&pending[request..at]);
                    if answers > 0 {
                        self.pass(answers);
                    }
                }
            }
            messages.clear();
            request = at;
        }
        drop(eligible);
        self.send_run(&pending, &mut run);
        if next_message_malformed(&pending[at..]) && relay_from.is_none() {
            relay_from = Some(request);
        }
        match relay_from {
            Some(from) => {
                self.out.bytes.extend_from_slice(&pending[from..]);
                self.plans.push_back(Plan::Relay);
                self.relaying = true;
            }
            None => self.pending = pending[request..].to_vec(),
        }
    }

    /// `answers` requests were sent before the tap went through the gatherer: their answers
    /// pass unchanged.
    pub(crate) fn owe(&mut self, answers: u32) {
        if answers > 0 {
            self.pass(answers);
        }
    }

    fn pass(&mut self, answers: u32) {
        self.owed += answers as usize;
        if let Some(Plan::Pass(n)) = self.plans.back_mut() {
            *n += answers;
        } else {
            self.plans.push_back(Plan::Pass(answers));
        }
    }

    /// Sends the requests gathered so far: as one group when there are two or more.
    fn send_run(&mut self, pending: &[u8], run: &mut Vec<(usize, usize, Box<[u8]>)>) {
        match run.len() {
            0 => return,
            1 => {
                let (start, executed, _) = &run[0];
                self.out
                    .bytes
                    .extend_from_slice(&pending[*start..executed + SYNC.len()]);
                self.pass(1);
            }
            n => {
                if !self.prepared {
                    put_message(
                        &mut self.out.bytes,
                        b'P',
                        &[READ_ONLY_NAME, b"\0", READ_ONLY_SQL, b"\0\0\0"],
                    );
                    self.prepared = true;
                }
                // Bind (unnamed portal, no parameters, default result format), Execute.
                put_message(
                    &mut self.out.bytes,
                    b'B',
                    &[b"\0", READ_ONLY_NAME, b"\0\0\0\0\0\0\0"],
                );
                put_message(&mut self.out.bytes, b'E', &[b"\0\0\0\0\0"]);
                let mut names = Vec::with_capacity(n);
                for (start, executed, name) in run.drain(..) {
                    self.out.bytes.extend_from_slice(&pending[start..executed]);
                    names.push(name);
                }
                self.out.bytes.extend_from_slice(&SYNC);
                self.owed += n;
                self.plans.push_back(Plan::Group(Group {
                    answers: vec![Vec::new(); n],
                    names,
                    at: None,
                    failed: None,
                }));
            }
        }
        run.clear();
    }

    /// What waits to go to the server.
    pub(crate) fn unsent(&self) -> &[u8] {
        self.out.waiting()
    }

    /// `n` bytes of [`unsent`](Self::unsent) went to the server.
    pub(crate) fn sent(&mut self, n: usize) {
        self.out.gone(n);
    }

    /// Bytes the server sent.
    pub(crate) fn server_bytes(&mut self, data: &[u8]) {
        if self.plans.is_empty() && self.raw.is_empty() {
            // Nothing owed (notices, a parameter change, a session's end): whole messages
            // are relayed as they come, a partial one is held below.
            if let Some(end) = whole_messages(data) {
                self.back.bytes.extend_from_slice(&data[..end]);
                self.raw.extend_from_slice(&data[end..]);
                return;
            }
        }
        self.raw.extend_from_slice(data);
        let raw = std::mem::take(&mut self.raw);
        let mut at = 0;
        while let Some((tag, n)) = next_message(&raw[at..]) {
            let message = &raw[at..at + n];
            at += n;
            self.answer(tag, message);
        }
        if matches!(self.plans.front(), Some(Plan::Relay)) || next_message_malformed(&raw[at..]) {
            // Relaying: the rest goes on unchanged, framed or not.
            self.back.bytes.extend_from_slice(&raw[at..]);
            if !matches!(self.plans.front(), Some(Plan::Relay)) {
                self.plans.push_front(Plan::Relay);
            }
            self.relaying = true;
            return;
        }
        self.raw = raw[at..].to_vec();
    }

    fn answer(&mut self, tag: u8, message: &[u8]) {
        // Asynchronous messages go on at once, wherever they come.
        if matches!(tag, b'N' | b'A' | b'S') {
            self.back.bytes.extend_from_slice(message);
            return;
        }
        let group = match self.plans.front_mut() {
            None | Some(Plan::Relay) => {
                self.back.bytes.extend_from_slice(message);
                return;
            }
            Some(Plan::Pass(n)) => {
                self.back.bytes.extend_from_slice(message);
                if tag == b'Z' {
                    self.owed = self.owed.saturating_sub(1);
                    *n -= 1;
                    if *n == 0 {
                        self.plans.pop_front();
                    }
                }
                return;
            }
            Some(Plan::Group(group)) => group,
        };
        match tag {
            b'E' if ends_session(message) => {
                // The session ends: its error goes to the client as the answer owed first.
                self.back.bytes.extend_from_slice(message);
                self.plans.clear();
                self.plans.push_back(Plan::Relay);
                self.relaying = true;
            }
            b'E' => {
                if group.failed.is_none() {
                    group.failed = Some((group.at, sqlstate(message)));
                }
            }
            b'Z' => {
                let status = message.get(5).copied().unwrap_or(b'I');
                if let Some(Plan::Group(group)) = self.plans.pop_front() {
                    self.finish(group, status);
                }
            }
            _ if group.failed.is_some() => {}
            _ => match group.at {
                None => {
                    if tag == b'C' {
                        group.at = Some(0);
                    }
                }
                Some(i) => {
                    if let Some(answer) = group.answers.get_mut(i) {
                        answer.extend_from_slice(message);
                        if matches!(tag, b'C' | b'I' | b's') {
                            group.at = Some(i + 1);
                        }
                    }
                }
            },
        }
    }

    /// The group's `ReadyForQuery` came: its answers go to the client, one per request.
    fn finish(&mut self, group: Group, status: u8) {
        let n = group.answers.len();
        self.owed = self.owed.saturating_sub(n);
        let complete = group.failed.is_none() && group.at == Some(n);
        if complete {
            for answer in &group.answers {
                self.back.bytes.extend_from_slice(answer);
                put_message(&mut self.back.bytes, b'Z', &[&[status]]);
            }
            self.control.inner.gathered.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        self.control.inner.failed.fetch_add(1, Ordering::Relaxed);
        match group.failed {
            // The read-only statement is gone (DISCARD ALL, DEALLOCATE): prepare it again.
            Some((None, code)) if &code == b"26000" => self.prepared = false,
            Some((Some(i), _)) => {
                if let Some(name) = group.names.get(i) {
                    self.control.eligible().remove(name);
                }
            }
            _ => {}
        }
        for _ in 0..n {
            put_message(
                &mut self.back.bytes,
                b'E',
                &[
                    b"SERROR\0VERROR\0C",
                    REGATHER_SQLSTATE.as_bytes(),
                    b"\0M",
                    REGATHER_MESSAGE.as_bytes(),
                    b"\0\0",
                ],
            );
            put_message(&mut self.back.bytes, b'Z', &[&[status]]);
        }
    }

    /// What waits to go to the client.
    pub(crate) fn unread(&self) -> &[u8] {
        self.back.waiting()
    }

    /// `n` bytes of [`unread`](Self::unread) went to the client.
    pub(crate) fn read(&mut self, n: usize) {
        self.back.gone(n);
    }
}

/// Bytes on their way to one side; those before `at` went.
#[derive(Debug, Default)]
struct Outgoing {
    bytes: Vec<u8>,
    at: usize,
}

impl Outgoing {
    fn waiting(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    fn gone(&mut self, n: usize) {
        self.at += n;
        if self.at == self.bytes.len() {
            self.bytes.clear();
            self.at = 0;
        }
    }

    fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }
}

const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// The statement name of a request that may join a group: exactly `Bind` (unnamed portal, a
/// registered statement), `Execute` (unnamed portal, all rows) and `Sync`.
fn gatherable(
    pending: &[u8],
    messages: &[(u8, usize, usize)],
    eligible: &HashSet<Box<[u8]>>,
) -> Option<Box<[u8]>> {
    let [(b'B', bind, bind_end), (b'E', execute, execute_end), (b'S', ..)] = messages else {
        return None;
    };
    let bind = &pending[bind + 5..*bind_end];
    let (portal, rest) = cstr(bind)?;
    let (statement, _) = cstr(rest)?;
    let execute = &pending[execute + 5..*execute_end];
    if !portal.is_empty() || execute != [0, 0, 0, 0, 0] || !eligible.contains(statement) {
        return None;
    }
    Some(statement.into())
}

/// A NUL-terminated string at the start of `bytes`, and what follows it.
fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| *b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// The type byte and size of the complete message at the start of `bytes`, if it is there.
fn next_message(bytes: &[u8]) -> Option<(u8, usize)> {
    let header = bytes.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return None;
    }
    let size = 1 + len as usize;
    (bytes.len() >= size).then_some((header[0], size))
}

/// How many requests (`Sync`, `Query`, `FunctionCall`) the complete messages in `bytes` hold.
fn requests(bytes: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some((tag, size)) = next_message(&bytes[at..]) {
        n += usize::from(matches!(tag, b'S' | b'Q' | b'F'));
        at += size;
    }
    n
}

/// Whether the bytes at the start of `bytes` cannot begin a message (a length below four).
fn next_message_malformed(bytes: &[u8]) -> bool {
    bytes
        .get(..5)
        .is_some_and(|h| u32::from_be_bytes([h[1], h[2], h[3], h[4]]) < 4)
}

/// The end of the last whole message in `bytes` when they start with one, or `None`.
fn whole_messages(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some((_, n)) = next_message(&bytes[at..]) {
        at += n;
    }
    (at > 0).then_some(at)
}

/// Appends a message of type `tag` whose body is `parts` joined.
fn put_message(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    out.push(tag);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// The fields of an `ErrorResponse`: (code, value) pairs.
fn error_fields(message: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut body = message.get(5..).unwrap_or_default();
    std::iter::from_fn(move || {
        let (&code, rest) = body.split_first()?;
        if code == 0 {
            return None;
        }
        let (value, rest) = cstr(rest)?;
        body = rest;
        Some((code, value))
    })
}

/// Whether an `ErrorResponse` ends the session (`FATAL` or `PANIC`).
fn ends_session(message: &[u8]) -> bool {
    let mut severity = None;
    for (code, value) in error_fields(message) {
        match code {
            b'V' => return matches!(value, b"FATAL" | b"PANIC"),
            b'S' => severity = Some(value),
            _ => {}
        }
    }
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

/// An `ErrorResponse`'s SQLSTATE (`00000` when it has none).
fn sqlstate(message: &[u8]) -> [u8; 5] {
    error_fields(message)
        .find(|(code, _)| *code == b'C')
        .and_then(|(_, value)| value.try_into().ok())
        .unwrap_or(*b"00000")
}

#[cfg(test)]
#[path = "gather_tests.rs"]
mod tests;
