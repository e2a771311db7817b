//! Turns the frames of both directions into the observed [`WireState`]: transaction status,
//! requests in flight, the fate of the last COMMIT. Pure bookkeeping, no I/O.
//!
//! Requests are counted the way the server answers them: every `Query`, `Sync` and
//! `FunctionCall` gets exactly one `ReadyForQuery`, except a `Sync` that reaches the server
//! while it is in COPY FROM STDIN mode under the extended protocol, which the server ignores
//! (tokio-postgres sends one right after the COPY's `Execute`). Those are taken back when the
//! client ends the copy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::framing::{Frame, Tag, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use crate::state::{bump, now_nanos, pack_sqlstate, CommitState, Liveness, WireState};

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

/// One request awaiting its `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    /// Extended-protocol batch ended by `Sync` (as opposed to a simple `Query` or a
    /// `FunctionCall`).
    extended: bool,
    /// The number of the COMMIT this request carries, if it carries one.
    commit: Option<u64>,
}

/// Bookkeeping of one connection's conversation.
#[derive(Debug)]
pub struct Tracker {
    state: WireState,
    started: bool,
    pending: VecDeque<Request>,
    /// Names of prepared statements whose text is a COMMIT.
    commit_statements: Vec<Box<[u8]>>,
    /// The last `Bind` bound a COMMIT statement.
    bound_commit: bool,
    /// The COMMIT executed in the batch not yet ended by a `Sync`.
    batch_commit: Option<u64>,
    /// `Sync`s written since the last `Execute`.
    syncs_since_execute: usize,
    /// The server entered COPY FROM STDIN for an extended-protocol request.
    copy_in_extended: bool,
}

impl Tracker {
    /// A tracker that publishes into `state`.
    pub fn new(state: WireState) -> Tracker {
        Tracker {
            state,
            started: false,
            pending: VecDeque::new(),
            commit_statements: Vec::new(),
            bound_commit: false,
            batch_commit: None,
            syncs_since_execute: 0,
            copy_in_extended: false,
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
                let commit = is_commit(frame.prefix).then(|| self.commit_written());
                self.push(Request {
                    extended: false,
                    commit,
                });
            }
            b'F' => self.push(Request {
                extended: false,
                commit: None,
            }),
            b'P' => {
                let (name, text) = split_cstr(frame.prefix);
                self.forget_commit_statement(name);
                if is_commit(text) {
                    if self.commit_statements.len() == COMMIT_STATEMENTS_MAX {
                        self.commit_statements.remove(0);
                    }
                    self.commit_statements.push(name.into());
                }
            }
            b'B' => {
                let (_portal, rest) = split_cstr(frame.prefix);
                let (statement, _) = split_cstr(rest);
                self.bound_commit = self.commit_statements.iter().any(|s| &**s == statement);
            }
            b'E' => {
                self.syncs_since_execute = 0;
                if std::mem::take(&mut self.bound_commit) {
                    self.batch_commit = Some(self.commit_written());
                }
            }
            b'S' => {
                self.syncs_since_execute += 1;
                let commit = self.batch_commit.take();
                self.push(Request {
                    extended: true,
                    commit,
                });
            }
            b'C' => {
                if let Some((b'S', name)) = frame.prefix.split_first() {
                    let (name, _) = split_cstr(name);
                    self.forget_commit_statement(name);
                }
            }
            b'c' | b'f' => {
                if std::mem::take(&mut self.copy_in_extended) {
                    // The Syncs written between the COPY's Execute and now reached the
                    // server in copy-in mode: it ignored them, so no ReadyForQuery comes.
                    for _ in 0..self.syncs_since_execute {
                        self.pending.pop_back();
                    }
                    self.syncs_since_execute = 0;
                    self.publish_in_flight();
                }
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
                } else if let Some(done) = self.pending.pop_front() {
                    // A COMMIT whose request ended without a COMMIT or ROLLBACK tag or an
                    // error was never executed.
                    if self.is_latest_commit(done.commit) {
                        self.answer_commit(CommitState::Failed);
                    }
                    self.publish_in_flight();
                }
            }
            b'C' => {
                let (tag_text, _) = split_cstr(frame.prefix);
                cells.last_tag.write(tag_text);
                bump(&cells.command_completes, 1);
                let front = self.pending.front().and_then(|r| r.commit);
                if self.is_latest_commit(front) {
                    if tag_text.starts_with(b"COMMIT") {
                        self.answer_commit(CommitState::Committed);
                    } else if tag_text == b"ROLLBACK" {
                        self.answer_commit(CommitState::RolledBack);
                    }
                }
            }
            b'E' => {
                bump(&cells.errors, 1);
                if let Some(code) = error_field(frame.prefix, b'C') {
                    cells.last_sqlstate.store(pack_sqlstate(code), Ordering::Release);
                }
                let front = self.pending.front().and_then(|r| r.commit);
                if self.is_latest_commit(front) {
                    self.answer_commit(CommitState::Failed);
                }
                // FATAL and PANIC end the session: the server closes the stream next.
                let severity = error_field(frame.prefix, b'V').or_else(|| error_field(frame.prefix, b'S'));
                if matches!(severity, Some(b"FATAL" | b"PANIC")) {
                    self.died(Liveness::Closed);
                }
            }
            b'K' => {
                if let [a, b, c, d, ..] = frame.prefix {
                    let pid = u32::from_be_bytes([*a, *b, *c, *d]);
                    cells.backend_pid.store(pid, Ordering::Release);
                }
            }
            b'G' => {
                if self.pending.front().is_some_and(|r| r.extended) {
                    self.copy_in_extended = true;
                }
            }
            _ => {}
        }
        Hint::None
    }

    /// Bytes moved: count them and note the time.
    pub fn transferred(&mut self, sent: usize, received: usize) {
        let cells = &self.state.cells;
        if sent > 0 {
            bump(&cells.bytes_sent, sent as u64);
        }
        if received > 0 {
            bump(&cells.bytes_received, received as u64);
        }
        cells.last_activity.store(now_nanos(), Ordering::Relaxed);
    }

    /// The stream ended or failed. The first cause is kept.
    pub fn died(&mut self, how: Liveness) {
        if !self.state.liveness().is_dead() {
            self.set_liveness(how);
        }
    }

    fn set_liveness(&self, liveness: Liveness) {
        let cells = &self.state.cells;
        if liveness.is_dead() {
            cells.dead_since.store(now_nanos(), Ordering::Release);
        }
        cells.liveness.store(liveness.byte(), Ordering::Release);
    }

    fn push(&mut self, request: Request) {
        if self.started {
            self.pending.push_back(request);
            self.publish_in_flight();
        }
    }

    fn publish_in_flight(&self) {
        let n = u32::try_from(self.pending.len()).unwrap_or(u32::MAX);
        self.state.cells.in_flight.store(n, Ordering::Release);
    }

    fn commit_written(&mut self) -> u64 {
        let cells = &self.state.cells;
        let n = cells.commits_written.load(Ordering::Relaxed) + 1;
        cells.commits_written.store(n, Ordering::Release);
        cells
            .commit
            .store(CommitState::InFlight.byte(), Ordering::Release);
        n
    }

    /// True when `commit` is the most recent COMMIT written and still unanswered.
    fn is_latest_commit(&self, commit: Option<u64>) -> bool {
        let cells = &self.state.cells;
        commit.is_some_and(|n| n == cells.commits_written.load(Ordering::Relaxed))
            && cells.commit.load(Ordering::Relaxed) == CommitState::InFlight.byte()
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

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C40001\0Mcould not serialize\0\0";
        assert_eq!(error_field(body, b'C'), Some(&b"40001"[..]));
        assert_eq!(error_field(body, b'X'), None);
        assert_eq!(error_field(b"SERR", b'C'), None);
    }
}
