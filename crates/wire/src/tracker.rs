//! Turns the frames of both directions into the observed [`WireState`]: transaction status,
//! requests in flight, the fate of the last COMMIT. Pure bookkeeping, no I/O.
//!
//! Requests are counted the way the server answers them: every `Query`, `Sync` and
//! `FunctionCall` gets exactly one `ReadyForQuery`, except a `Sync` that reaches the server
//! while it is in COPY FROM STDIN mode under the extended protocol, which the server ignores
//! (tokio-postgres sends one right after the COPY's `Execute`). Those are taken back when the
//! client ends the copy.

use std::sync::atomic::Ordering;

use crate::clock::coarse_nanos;
use crate::framing::{Frame, Tag, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use crate::requests::{Front, Listener, QueryText, Texts};
use crate::state::{bump, pack_sqlstate, CommitState, Liveness, ServerRole, WireState};
use crate::tag_cell::TAG_MAX;

/// How many prepared COMMIT statements are remembered by name.
const COMMIT_STATEMENTS_MAX: usize = 16;

/// What the framers must expect next, as decided by what the tracker just saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Nothing changes.
    None,
    /// The frontend asked for encryption: the backend answers with one unframed byte.
    ExpectNegotiationByte,
    /// The backend refused encryption: the frontend sends another start-up packet.
    ExpectStartupPacket,
}

/// Bookkeeping of one connection's conversation.
pub struct Tracker {
    state: WireState,
    started: bool,
    /// Requests written since start-up; request `n` is the `n`-th (from 1). Answers come in
    /// order, so the one being answered is `answered + 1`.
    written: u64,
    /// Requests answered with `ReadyForQuery`.
    answered: u64,
    /// Bit `n % 64` is set when request `n` is a simple `Query` or `FunctionCall` rather
    /// than an extended-protocol batch (only the COPY bookkeeping needs to know).
    simple_bits: u64,
    /// The request that carries the most recent COMMIT (0: none).
    commit_request: u64,
    /// Names of prepared statements whose text is a COMMIT.
    commit_statements: Vec<Box<[u8]>>,
    /// The last `Bind` bound a COMMIT statement.
    bound_commit: bool,
    /// A COMMIT was executed in the batch not yet ended by a `Sync`.
    batch_commit: bool,
    /// `Sync`s written since the last `Execute`.
    syncs_since_execute: usize,
    /// The server entered COPY FROM STDIN for an extended-protocol request.
    copy_in_extended: bool,
    /// The last command tag published, to skip publishing the same one again.
    last_tag: [u8; TAG_MAX],
    last_tag_len: u8,
    /// Told of each request, when one is attached (tracing).
    listener: Option<Listener>,
    /// The outcome of the request being answered, for the listener.
    front: Front,
    /// Statement texts, when the listener wants them.
    texts: Option<Texts>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("state", &self.state)
            .field("written", &self.written)
            .field("answered", &self.answered)
            .field("listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker that publishes into `state`.
    pub fn new(state: WireState) -> Tracker {
        Tracker {
            state,
            started: false,
            written: 0,
            answered: 0,
            simple_bits: 0,
            commit_request: 0,
            commit_statements: Vec::new(),
            bound_commit: false,
            batch_commit: false,
            syncs_since_execute: 0,
            copy_in_extended: false,
            last_tag: [0; TAG_MAX],
            last_tag_len: 0,
            listener: None,
            front: Front::default(),
            texts: None,
        }
    }

    /// Tells `listener` of every request from now on.
    pub fn listen(&mut self, listener: Listener) {
        self.texts = listener.wants_text().then(Texts::default);
        self.listener = Some(listener);
    }

    /// Tells the listener a request was written (only once start-up is over, as `push`
    /// counts them).
    fn tell_written(&self, text: Option<(&[u8], bool)>) {
        if let (true, Some(listener)) = (self.started, &self.listener) {
            listener.written(text.map(|(bytes, whole)| QueryText { bytes, whole }));
        }
    }

    /// A tracker for a stream that is already past start-up (for example a proxy that
    /// attaches mid-connection).
    pub fn established(state: WireState) -> Tracker {
        let mut tracker = Tracker::new(state);
        tracker.started = true;
        tracker.set_liveness(Liveness::Open);
        tracker
    }

    /// The state this tracker publishes into.
    pub fn state(&self) -> &WireState {
        &self.state
    }

    /// A message the client wrote.
    pub fn frontend(&mut self, frame: &Frame<'_>) -> Hint {
        bump(&self.state.cells.messages_sent, 1);
        let tag = match frame.tag {
            Tag::Typed(tag) => tag,
            Tag::Startup => {
                return match frame.startup_code() {
                    Some(SSL_REQUEST_CODE | GSSENC_REQUEST_CODE) => Hint::ExpectNegotiationByte,
                    _ => Hint::None,
                };
            }
            Tag::Negotiation => return Hint::None,
        };
        match tag {
            b'Q' => {
                self.syncs_since_execute = 0;
                let commit = is_commit(frame.prefix);
                if commit {
                    self.commit_written();
                }
                self.push(true, commit);
                if self.texts.is_some() {
                    let whole = frame.prefix.contains(&0);
                    let (text, _) = split_cstr(frame.prefix);
                    self.tell_written(Some((text, whole)));
                } else {
                    self.tell_written(None);
                }
            }
            b'F' => {
                self.push(true, false);
                self.tell_written(None);
            }
            b'P' => {
                let (name, text) = split_cstr(frame.prefix);
                if let Some(texts) = &mut self.texts {
                    let (query, rest) = split_cstr(text);
                    let whole = query.len() < text.len() || !rest.is_empty();
                    texts.parsed(name, query, whole);
                }
                // Pipelined behind another request the status is not known yet: not counted.
                if !name.is_empty() && self.state.is_clean() {
                    bump(&self.state.cells.named_outside_transactions, 1);
                }
                self.forget_commit_statement(name);
                if is_commit(text) {
                    if self.commit_statements.len() == COMMIT_STATEMENTS_MAX {
                        self.commit_statements.remove(0);
                    }
                    self.commit_statements.push(name.into());
                }
            }
            b'B' => {
                if let Some(texts) = &mut self.texts {
                    let (_portal, rest) = split_cstr(frame.prefix);
                    let (statement, _) = split_cstr(rest);
                    texts.bound(statement);
                }
                // Most connections never prepare a COMMIT: skip the name parsing then.
                self.bound_commit = !self.commit_statements.is_empty() && {
                    let (_portal, rest) = split_cstr(frame.prefix);
                    let (statement, _) = split_cstr(rest);
                    self.commit_statements.iter().any(|s| &**s == statement)
                };
            }
            b'E' => {
                self.syncs_since_execute = 0;
                if std::mem::take(&mut self.bound_commit) {
                    self.commit_written();
                    self.batch_commit = true;
                }
            }
            b'S' => {
                self.syncs_since_execute += 1;
                let commit = std::mem::take(&mut self.batch_commit);
                self.push(false, commit);
                let text = self.texts.as_mut().and_then(Texts::take_batch);
                self.tell_written(text.as_ref().map(|(t, whole)| (&**t, *whole)));
            }
            b'C' => {
                if let Some((b'S', name)) = frame.prefix.split_first() {
                    let (name, _) = split_cstr(name);
                    self.forget_commit_statement(name);
                    if let Some(texts) = &mut self.texts {
                        texts.closed(name);
                    }
                }
            }
            b'c' | b'f' if self.copy_in_extended => {
                self.copy_in_extended = false;
                // The Syncs written between the COPY's Execute and now reached the server in
                // copy-in mode: it ignored them, so no ReadyForQuery comes for them.
                let ignored = self.syncs_since_execute as u64;
                let before = self.written;
                self.written = self.written.saturating_sub(ignored).max(self.answered);
                if let Some(listener) = &self.listener {
                    listener.withdrawn(before - self.written);
                }
                self.syncs_since_execute = 0;
                self.publish_in_flight();
            }
            b'X' => self.set_liveness(Liveness::Terminated),
            _ => {}
        }
        Hint::None
    }

    /// A message the server sent.
    pub fn backend(&mut self, frame: &Frame<'_>) -> Hint {
        bump(&self.state.cells.messages_received, 1);
        let tag = match frame.tag {
            Tag::Typed(tag) => tag,
            Tag::Negotiation => {
                return if frame.prefix == b"N" {
                    Hint::ExpectStartupPacket
                } else {
                    Hint::None
                };
            }
            Tag::Startup => return Hint::None,
        };
        let cells = &self.state.cells;
        match tag {
            b'Z' => {
                let status = frame.prefix.first().copied().unwrap_or(0);
                cells.tx_status.store(status, Ordering::Release);
                bump(&cells.ready_for_query, 1);
                if !self.started {
                    self.started = true;
                    self.set_liveness(Liveness::Open);
                } else if self.written > self.answered {
                    // A COMMIT whose request ended without a COMMIT or ROLLBACK tag or an
                    // error was never executed.
                    if self.front_is_latest_commit() {
                        self.answer_commit(CommitState::Failed);
                    }
                    self.answered += 1;
                    self.publish_in_flight();
                    if let Some(listener) = &self.listener {
                        self.front.answered(&**listener);
                    }
                }
            }
            b'C' => {
                // The body is the tag and its NUL; only a tag cut by the prefix limit lacks it.
                let tag_text = frame.prefix.strip_suffix(&[0]).unwrap_or(frame.prefix);
                let tag_text = &tag_text[..tag_text.len().min(TAG_MAX)];
                // Publishing is a sequence-locked write; most tags repeat, so skip those.
                if tag_text != &self.last_tag[..usize::from(self.last_tag_len)] {
                    cells.last_tag.write(tag_text);
                    self.last_tag[..tag_text.len()].copy_from_slice(tag_text);
                    self.last_tag_len = tag_text.len() as u8;
                }
                bump(&cells.command_completes, 1);
                if self.listener.is_some() {
                    self.front.tag(tag_text);
                }
                if self.front_is_latest_commit() {
                    if tag_text.starts_with(b"COMMIT") {
                        self.answer_commit(CommitState::Committed);
                    } else if tag_text == b"ROLLBACK" {
                        self.answer_commit(CommitState::RolledBack);
                    }
                }
            }
            b'E' => {
                // The code first, then the count: a reader that sees the new count sees its code.
                if let Some(code) = error_field(frame.prefix, b'C') {
                    cells.last_sqlstate.store(pack_sqlstate(code), Ordering::Release);
                    if self.listener.is_some() {
                        self.front.error(code);
                    }
                }
                let errors = cells.errors.load(Ordering::Relaxed);
                cells.errors.store(errors + 1, Ordering::Release);
                if self.front_is_latest_commit() {
                    self.answer_commit(CommitState::Failed);
                }
                // FATAL and PANIC end the session: the server closes the stream next.
                let severity = error_field(frame.prefix, b'V').or_else(|| error_field(frame.prefix, b'S'));
                if matches!(severity, Some(b"FATAL" | b"PANIC")) {
                    self.died(Liveness::Closed);
                }
            }
            b'S' => {
                let (name, rest) = split_cstr(frame.prefix);
                let (value, _) = split_cstr(rest);
                let bits = cells.role.load(Ordering::Relaxed);
                if let Some(bits) = ServerRole::update(bits, name, value) {
                    cells.role.store(bits, Ordering::Release);
                }
            }
            b'K' => {
                if let [a, b, c, d, ..] = frame.prefix {
                    let pid = u32::from_be_bytes([*a, *b, *c, *d]);
                    cells.backend_pid.store(pid, Ordering::Release);
                }
            }
            b'G' => {
                // Beyond the 64-request window the kind is unknown; assuming "extended" is
                // harmless, as no Sync follows a simple query's COPY.
                let front = self.answered + 1;
                let simple =
                    self.written - self.answered <= 64 && self.simple_bits & (1 << (front % 64)) != 0;
                if self.written > self.answered && !simple {
                    self.copy_in_extended = true;
                }
            }
            _ => {}
        }
        Hint::None
    }

    /// Bytes moved: count them, and note when the server was last heard from.
    pub fn transferred(&mut self, sent: usize, received: usize) {
        let cells = &self.state.cells;
        if sent > 0 {
            bump(&cells.bytes_sent, sent as u64);
        }
        if received > 0 {
            bump(&cells.bytes_received, received as u64);
            // Only bytes from the server prove it alive; a write can succeed into a dead
            // peer's socket buffer.
            cells.last_received.store(coarse_nanos(), Ordering::Relaxed);
        }
    }

    /// The stream ended or failed. The first cause is kept.
    pub fn died(&mut self, how: Liveness) {
        if !self.state.liveness().is_dead() {
            self.set_liveness(how);
            if let Some(listener) = &self.listener {
                listener.ended();
            }
        }
    }

    fn set_liveness(&self, liveness: Liveness) {
        let cells = &self.state.cells;
        if liveness.is_dead() {
            cells.dead_since.store(coarse_nanos(), Ordering::Release);
        }
        cells.liveness.store(liveness.byte(), Ordering::Release);
    }

    /// Counts a request written; `simple` for `Query`/`FunctionCall`, `commit` when it
    /// carries the most recent COMMIT.
    fn push(&mut self, simple: bool, commit: bool) {
        if !self.started {
            return;
        }
        self.written += 1;
        let bit = 1u64 << (self.written % 64);
        if simple {
            self.simple_bits |= bit;
        } else {
            self.simple_bits &= !bit;
        }
        if commit {
            self.commit_request = self.written;
        }
        self.publish_in_flight();
    }

    fn publish_in_flight(&self) {
        let n = u32::try_from(self.written - self.answered).unwrap_or(u32::MAX);
        self.state.cells.in_flight.store(n, Ordering::Release);
    }

    fn commit_written(&mut self) {
        let cells = &self.state.cells;
        bump(&cells.commits_written, 1);
        cells
            .commit
            .store(CommitState::InFlight.byte(), Ordering::Release);
    }

    /// True when the request being answered carries the most recent COMMIT and that COMMIT
    /// has no answer yet.
    fn front_is_latest_commit(&self) -> bool {
        self.commit_request != 0
            && self.commit_request == self.answered + 1
            && self.state.cells.commit.load(Ordering::Relaxed) == CommitState::InFlight.byte()
    }

    fn answer_commit(&self, outcome: CommitState) {
        self.state.cells.commit.store(outcome.byte(), Ordering::Release);
    }

    fn forget_commit_statement(&mut self, name: &[u8]) {
        self.commit_statements.retain(|s| &**s != name);
    }
}

/// Splits a prefix at its first NUL: the C string and what follows it. A string cut by the
/// prefix limit is returned whole with nothing after it.
fn split_cstr(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == 0) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// True when a query text starts with a COMMIT (`COMMIT`, `END`, `COMMIT PREPARED`, any
/// case, after leading white space). Texts that hide the keyword behind a comment are not
/// recognised.
pub fn is_commit(text: &[u8]) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    [&b"COMMIT"[..], &b"END"[..]].iter().any(|keyword| {
        text.len() >= keyword.len()
            && text[..keyword.len()].eq_ignore_ascii_case(keyword)
            && text
                .get(keyword.len())
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
    })
}

/// The value of one field of an `ErrorResponse` or `NoticeResponse` body, if the prefix
/// holds it whole.
fn error_field(mut body: &[u8], field: u8) -> Option<&[u8]> {
    while let Some((&code, rest)) = body.split_first() {
        if code == 0 {
            return None;
        }
        let end = rest.iter().position(|b| *b == 0)?;
        if code == field {
            return Some(&rest[..end]);
        }
        body = &rest[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_recognition() {
        for yes in [
            "COMMIT",
            "commit",
            "  END",
            "COMMIT;",
            "commit work",
            "END\0",
            "COMMIT PREPARED 'x'",
        ] {
            assert!(is_commit(yes.as_bytes()), "{yes}");
        }
        for no in [
            "COMMITTED",
            "ENDING",
            "ROLLBACK",
            "",
            "SELECT 'COMMIT'",
            "end_x",
            "/* c */ COMMIT",
        ] {
            assert!(!is_commit(no.as_bytes()), "{no}");
        }
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_servers_role_follows_its_parameter_status_reports() {
        let mut o = crate::Observer::established();
        assert_eq!(o.state().server_role(), crate::ServerRole::default());
        o.backend_bytes(&msg(b'S', b"in_hot_standby\0on\0"));
        o.backend_bytes(&msg(b'S', b"TimeZone\0UTC\0"));
        o.backend_bytes(&msg(b'S', b"default_transaction_read_only\0off\0"));
        let role = o.state().server_role();
        assert_eq!(role.in_hot_standby, Some(true));
        assert_eq!(role.default_read_only, Some(false));
        // Promoted: the server reports the change before its next ReadyForQuery.
        o.backend_bytes(&msg(b'S', b"in_hot_standby\0off\0"));
        o.backend_bytes(&msg(b'Z', b"I"));
        let role = o.state().server_role();
        assert_eq!(role.in_hot_standby, Some(false));
        assert_eq!(role.default_read_only, Some(false));
    }

    #[test]
    fn named_statements_prepared_outside_a_transaction_are_counted() {
        let mut o = crate::Observer::established();
        o.backend_bytes(&msg(b'Z', b"I"));
        let parse = |name: &str| msg(b'P', format!("{name}\0SELECT 1\0\0\0").as_bytes());
        // Unnamed: fine anywhere.
        o.frontend_bytes(&parse(""));
        o.frontend_bytes(&msg(b'S', b""));
        o.backend_bytes(&msg(b'1', b""));
        o.backend_bytes(&msg(b'Z', b"I"));
        assert_eq!(o.state().named_statements_outside_transactions(), 0);
        // Named, idle outside a transaction: counted.
        o.frontend_bytes(&parse("s1"));
        o.frontend_bytes(&msg(b'S', b""));
        o.backend_bytes(&msg(b'1', b""));
        o.backend_bytes(&msg(b'Z', b"I"));
        assert_eq!(o.state().named_statements_outside_transactions(), 1);
        // Named inside a transaction: not counted.
        o.frontend_bytes(&msg(b'Q', b"BEGIN\0"));
        o.backend_bytes(&msg(b'C', b"BEGIN\0"));
        o.backend_bytes(&msg(b'Z', b"T"));
        o.frontend_bytes(&parse("s2"));
        o.frontend_bytes(&msg(b'S', b""));
        assert_eq!(o.state().named_statements_outside_transactions(), 1);
        // Pipelined behind a request still in flight: status unknown, not counted.
        o.frontend_bytes(&parse("s3"));
        assert_eq!(o.state().named_statements_outside_transactions(), 1);
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C40001\0Mcould not serialize\0\0";
        assert_eq!(error_field(body, b'C'), Some(&b"40001"[..]));
        assert_eq!(error_field(body, b'X'), None);
        assert_eq!(error_field(b"SERR", b'C'), None);
    }
}
