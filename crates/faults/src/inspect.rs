//! Reading one proxied conversation as PostgreSQL messages, to decide where a message rule
//! cuts: per direction a framer (for message boundaries) and one observer for both (for
//! requests in flight, answers and COMMITs).

use holdfast_wire::{Direction, Framer, Observer, Tag, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};

use crate::fault::{Action, MessageRule, Trigger};

/// A rule that fired on a request whose answer decides when to act.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Armed {
    pub(crate) action: Action,
    /// The `ReadyForQuery` count at which the triggering request is answered; known once the
    /// request's end (its `Query`, or the `Sync` after it) went through.
    pub(crate) answered_at: Option<u64>,
}

/// What to do with a chunk from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// Forward this many bytes of the held-back bytes plus the chunk.
    pub(crate) forward: usize,
    /// Then close the connection (the rule cut before a message).
    pub(crate) cut: bool,
    /// Then swallow everything the client sends on this connection from now on.
    pub(crate) swallow: bool,
    /// A rule fired.
    pub(crate) fired: bool,
}

/// What to do with a chunk from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Downstream {
    /// Forward the first this many bytes (the rest is dropped).
    pub(crate) forward: usize,
    /// Then close the connection.
    pub(crate) close: bool,
    /// The session switched to TLS with this chunk.
    pub(crate) encrypted: bool,
}

#[derive(Debug)]
pub(crate) struct Inspector {
    frontend: Framer,
    backend: Framer,
    observer: Observer,
    pub(crate) armed: Option<Armed>,
    statements: Statements,
    /// The session switched to TLS (or GSS) encryption: nothing more can be read, bytes are
    /// relayed as they come and message rules no longer apply.
    opaque: bool,
}

/// A prepared statement's name and the first bytes of its text.
type Prepared = (Box<[u8]>, Box<[u8]>);

/// Prepared statements' texts by name (their first bytes), to know what an `Execute` runs.
#[derive(Debug, Default)]
struct Statements {
    by_name: Vec<Prepared>,
    /// The text of the statement the last `Bind` bound.
    bound: Option<Box<[u8]>>,
}

/// Statements remembered per connection (oldest forgotten first).
const STATEMENTS_MAX: usize = 256;

impl Statements {
    fn parsed(&mut self, name: &[u8], text: &[u8]) {
        self.by_name.retain(|(n, _)| &**n != name);
        if self.by_name.len() == STATEMENTS_MAX {
            self.by_name.remove(0);
        }
        self.by_name.push((name.into(), text.into()));
    }

    fn bound(&mut self, name: &[u8]) {
        self.bound = self
            .by_name
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, t)| t.clone());
    }

    fn closed(&mut self, name: &[u8]) {
        self.by_name.retain(|(n, _)| &**n != name);
    }

    /// Follows one client message.
    fn follow(&mut self, frame: &holdfast_wire::Frame<'_>) {
        match frame.tag {
            Tag::Typed(b'P') => {
                let (name, text) = cstr(frame.prefix);
                let (text, _) = cstr(text);
                self.parsed(name, text);
            }
            Tag::Typed(b'B') => {
                let (_portal, rest) = cstr(frame.prefix);
                let (statement, _) = cstr(rest);
                self.bound(statement);
            }
            Tag::Typed(b'C') => {
                if let Some((b'S', name)) = frame.prefix.split_first() {
                    self.closed(cstr(name).0);
                }
            }
            _ => {}
        }
    }
}

/// A C string and what follows it.
fn cstr(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == 0) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

impl Inspector {
    pub(crate) fn new() -> Inspector {
        Inspector {
            frontend: Framer::new(Direction::Frontend),
            backend: Framer::new(Direction::Backend),
            observer: Observer::new(),
            armed: None,
            statements: Statements::default(),
            opaque: false,
        }
    }

    /// Bytes of the client's message under way that must not be forwarded yet, because a
    /// rule that cuts before a message might still match it.
    pub(crate) fn hold_back(&self, rule: Option<&MessageRule>) -> usize {
        let cutting = rule.is_some_and(|r| matches!(r.action, Action::CutBefore | Action::SwallowFrom));
        match self.frontend.partial_tag() {
            Some(Tag::Typed(b'Q' | b'P' | b'E')) if cutting => self.frontend.partial_len(),
            _ => 0,
        }
    }

    /// Reads a chunk from the client. `data` is the held-back bytes followed by the new
    /// chunk, of which the last `new` bytes are new. `rule` is `None` when no rule applies
    /// (none set, or a once-rule already fired).
    pub(crate) fn upstream(&mut self, data: &[u8], new: usize, rule: Option<&MessageRule>) -> Upstream {
        if self.opaque {
            return Upstream {
                forward: data.len(),
                cut: false,
                swallow: false,
                fired: false,
            };
        }
        let Inspector {
            frontend,
            backend,
            observer,
            armed,
            statements,
            ..
        } = self;
        let held = data.len() - new;
        // Where the first message completed in this chunk starts, within `data`.
        let mut start = held as isize - frontend.partial_len() as isize;
        let mut fed = held;
        let mut cut_at = None;
        let mut swallow = false;
        let mut fired = false;
        let _ = frontend.feed(&data[held..], |frame| {
            let end = start + frame.wire_len() as isize;
            let frame_start = start;
            start = end;
            if cut_at.is_some() {
                return;
            }
            let end = end.max(0) as usize;
            let commits_before = observer.state().commits_written();
            observer.frontend_bytes(&data[fed..end]);
            fed = end;
            if let Some(SSL_REQUEST_CODE | GSSENC_REQUEST_CODE) = frame.startup_code() {
                // The server answers with one byte, not a message.
                backend.expect_negotiation_byte();
            }
            statements.follow(&frame);
            let matched =
                rule.is_some_and(|r| matches(&r.trigger, &frame, observer, commits_before, statements));
            if let (true, Some(r)) = (matched && armed.is_none(), rule) {
                fired = true;
                match r.action {
                    Action::CutBefore => cut_at = Some(frame_start.max(0) as usize),
                    Action::SwallowFrom => {
                        cut_at = Some(frame_start.max(0) as usize);
                        swallow = true;
                    }
                    action => {
                        *armed = Some(Armed {
                            action,
                            answered_at: None,
                        })
                    }
                }
            }
            if let Some(a) = armed.as_mut().filter(|a| a.answered_at.is_none()) {
                if matches!(frame.tag, Tag::Typed(b'Q' | b'S')) {
                    let s = observer.state();
                    a.answered_at = Some(s.snapshot().ready_for_query + u64::from(s.in_flight()));
                }
            }
        });
        if cut_at.is_none() && fed < data.len() {
            observer.frontend_bytes(&data[fed..]);
        }
        match cut_at {
            Some(at) => Upstream {
                forward: at,
                cut: !swallow,
                swallow,
                fired,
            },
            None => Upstream {
                forward: data.len() - self.hold_back(rule),
                cut: false,
                swallow: false,
                fired,
            },
        }
    }

    /// Reads a chunk from the server.
    pub(crate) fn downstream(&mut self, data: &[u8]) -> Downstream {
        if self.opaque {
            return Downstream {
                forward: data.len(),
                close: false,
                encrypted: false,
            };
        }
        let Inspector {
            frontend,
            backend,
            observer,
            armed,
            opaque,
            ..
        } = self;
        let mut start = -(backend.partial_len() as isize);
        let mut fed = 0usize;
        let mut done_at = None;
        let _ = backend.feed(data, |frame| {
            let end = (start + frame.wire_len() as isize).max(0) as usize;
            start += frame.wire_len() as isize;
            if done_at.is_some() {
                return;
            }
            observer.backend_bytes(&data[fed..end]);
            fed = end;
            if frame.tag == Tag::Negotiation {
                // Refused: the client sends its start-up packet next, in the clear. Accepted:
                // everything after this byte is encrypted.
                match frame.prefix.first() {
                    Some(b'N') => frontend.expect_startup_packet(),
                    _ => *opaque = true,
                }
            }
            if let Some(Armed {
                answered_at: Some(target),
                ..
            }) = armed
            {
                if observer.state().snapshot().ready_for_query >= *target {
                    done_at = Some(end);
                }
            }
        });
        if done_at.is_none() && fed < data.len() {
            observer.backend_bytes(&data[fed..]);
        }
        let encrypted = *opaque;
        match (*armed, done_at) {
            (None, _) => Downstream {
                forward: data.len(),
                close: false,
                encrypted,
            },
            (Some(a), done) => {
                let forward = match a.action {
                    Action::DropReply => 0,
                    _ => done.unwrap_or(data.len()),
                };
                Downstream {
                    forward,
                    close: done.is_some(),
                    encrypted,
                }
            }
        }
    }
}

fn matches(
    trigger: &Trigger,
    frame: &holdfast_wire::Frame<'_>,
    observer: &Observer,
    commits_before: u64,
    statements: &Statements,
) -> bool {
    match trigger {
        Trigger::Execute { prefix } => match frame.tag {
            Tag::Typed(b'Q') => starts_with(frame.prefix, prefix),
            Tag::Typed(b'E') => statements
                .bound
                .as_deref()
                .is_some_and(|text| starts_with(text, prefix)),
            _ => false,
        },
        Trigger::Commit => observer.state().commits_written() > commits_before,
        Trigger::Query { prefix } => frame.tag == Tag::Typed(b'Q') && starts_with(frame.prefix, prefix),
        Trigger::Parse { prefix } => {
            frame.tag == Tag::Typed(b'P') && {
                let text = frame
                    .prefix
                    .iter()
                    .position(|b| *b == 0)
                    .map_or(&[][..], |i| &frame.prefix[i + 1..]);
                starts_with(text, prefix)
            }
        }
    }
}

/// Case-insensitive prefix match after leading white space.
fn starts_with(text: &[u8], prefix: &str) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    let prefix = prefix.trim().as_bytes();
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn established() -> Inspector {
        let mut i = Inspector::new();
        // Start-up packet and the server's first ReadyForQuery.
        let startup = [0, 0, 0, 8, 0, 3, 0, 0];
        i.upstream(&startup, startup.len(), None);
        i.downstream(&msg(b'Z', b"I"));
        i
    }

    fn rule(action: Action) -> MessageRule {
        MessageRule {
            trigger: Trigger::Commit,
            action,
            once: true,
        }
    }

    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    #[test]
    fn a_refused_ssl_request_is_followed_by_a_readable_session() {
        let mut i = Inspector::new();
        i.upstream(&SSL_REQUEST, SSL_REQUEST.len(), None);
        let refused = i.downstream(b"N");
        assert_eq!(
            (refused.forward, refused.encrypted),
            (1, false),
            "the one-byte answer goes through"
        );
        let startup = [0, 0, 0, 8, 0, 3, 0, 0];
        i.upstream(&startup, startup.len(), None);
        i.downstream(&msg(b'Z', b"I"));
        let commit = msg(b'Q', b"COMMIT\0");
        let r = rule(Action::CutBefore);
        let d = i.upstream(&commit, commit.len(), Some(&r));
        assert!(d.cut && d.fired, "rules still match after the refusal: {d:?}");
    }

    #[test]
    fn an_accepted_ssl_request_makes_the_session_opaque() {
        let mut i = Inspector::new();
        i.upstream(&SSL_REQUEST, SSL_REQUEST.len(), None);
        let accepted = i.downstream(b"S");
        assert_eq!(
            (accepted.forward, accepted.encrypted),
            (1, true),
            "counted once, when it happens"
        );
        // TLS records: not PostgreSQL messages, relayed untouched, no rule fires.
        let client_hello = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
        let r = rule(Action::CutBefore);
        let d = i.upstream(&client_hello, client_hello.len(), Some(&r));
        assert_eq!(
            d,
            Upstream {
                forward: client_hello.len(),
                cut: false,
                swallow: false,
                fired: false
            }
        );
        let server_hello = [0x16, 0x03, 0x03, 0x00, 0x02, 9, 9];
        let later = i.downstream(&server_hello);
        assert_eq!((later.forward, later.encrypted), (server_hello.len(), false));
    }

    #[test]
    fn cut_before_stops_at_the_commit() {
        let mut i = established();
        let mut data = msg(b'Q', b"BEGIN\0");
        let begin_len = data.len();
        data.extend(msg(b'Q', b"COMMIT\0"));
        let r = rule(Action::CutBefore);
        let d = i.upstream(&data, data.len(), Some(&r));
        assert_eq!(
            d,
            Upstream {
                forward: begin_len,
                cut: true,
                swallow: false,
                fired: true
            }
        );
    }

    #[test]
    fn swallow_from_forwards_what_came_before_and_keeps_the_connection() {
        let mut i = established();
        let mut data = msg(b'Q', b"BEGIN\0");
        let begin_len = data.len();
        data.extend(msg(b'Q', b"COMMIT\0"));
        let r = rule(Action::SwallowFrom);
        let d = i.upstream(&data, data.len(), Some(&r));
        assert_eq!(
            d,
            Upstream {
                forward: begin_len,
                cut: false,
                swallow: true,
                fired: true
            }
        );
    }

    #[test]
    fn a_split_commit_is_held_back_until_it_is_whole() {
        let mut i = established();
        let data = msg(b'Q', b"COMMIT\0");
        let r = rule(Action::CutBefore);
        let first = i.upstream(&data[..3], 3, Some(&r));
        assert_eq!(first.forward, 0, "the partial Query is held");
        let second = i.upstream(&data, data.len() - 3, Some(&r));
        assert_eq!(
            second,
            Upstream {
                forward: 0,
                cut: true,
                swallow: false,
                fired: true
            }
        );
    }

    #[test]
    fn drop_reply_drops_until_the_commit_is_answered() {
        let mut i = established();
        let r = rule(Action::DropReply);
        let commit = msg(b'Q', b"COMMIT\0");
        let up = i.upstream(&commit, commit.len(), Some(&r));
        assert_eq!(
            up,
            Upstream {
                forward: commit.len(),
                cut: false,
                swallow: false,
                fired: true
            }
        );
        let mut reply = msg(b'C', b"COMMIT\0");
        let d = i.downstream(&reply);
        assert_eq!(
            d,
            Downstream {
                forward: 0,
                close: false,
                encrypted: false,
            }
        );
        reply = msg(b'Z', b"I");
        assert_eq!(
            i.downstream(&reply),
            Downstream {
                forward: 0,
                close: true,
                encrypted: false,
            }
        );
    }

    #[test]
    fn execute_rules_follow_prepared_statements_by_name() {
        let mut i = established();
        let r = MessageRule {
            trigger: Trigger::Execute {
                prefix: "update tasks".into(),
            },
            action: Action::CutBefore,
            once: true,
        };
        // Prepared in one round trip: a Parse alone never fires an Execute rule.
        let mut prepare = msg(b'P', b"s1\0UPDATE tasks SET x = 1\0\0\0");
        prepare.extend(msg(b'S', b""));
        assert!(!i.upstream(&prepare, prepare.len(), Some(&r)).cut);
        i.downstream(&msg(b'Z', b"I"));
        // Executed later by name: that fires, before the Bind/Execute reach the server.
        let mut run = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
        let bind_len = run.len();
        run.extend(msg(b'E', b"\0\0\0\0\0"));
        run.extend(msg(b'S', b""));
        let d = i.upstream(&run, run.len(), Some(&r));
        assert_eq!(
            d,
            Upstream {
                forward: bind_len,
                cut: true,
                swallow: false,
                fired: true
            }
        );
    }

    #[test]
    fn cut_after_reply_forwards_the_answer_then_closes() {
        let mut i = established();
        let r = MessageRule {
            trigger: Trigger::Query {
                prefix: "insert".into(),
            },
            action: Action::CutAfterReply,
            once: true,
        };
        let q = msg(b'Q', b"  INSERT INTO t VALUES (1)\0");
        i.upstream(&q, q.len(), Some(&r));
        let mut reply = msg(b'C', b"INSERT 0 1\0");
        let tag_len = reply.len();
        reply.extend(msg(b'Z', b"I"));
        reply.extend(msg(b'N', b"SNOTICE\0\0"));
        let d = i.downstream(&reply);
        assert_eq!(
            d,
            Downstream {
                forward: tag_len + 6,
                close: true,
                encrypted: false,
            }
        );
    }
}
