//! A listener told of each request as it is written and answered, for tracing statements
//! at the wire: whatever API sent them, in order, pipelined or not. The tap only reports
//! what it sees (never query text); what to do with it is the listener's business.

use std::sync::Arc;

/// Told of one connection's requests. Calls come from the task that drives the connection,
/// in wire order; keep them short and never block.
pub trait RequestListener: Send + Sync + 'static {
    /// Whether [`written`](Self::written) should be given the statement's text (the tap
    /// then remembers the text of named statements it sees prepared). Asked once, when the
    /// listener is attached.
    fn wants_text(&self) -> bool {
        false
    }

    /// A request (a simple `Query`, a `FunctionCall`, or an extended-protocol batch ended by
    /// `Sync`) was written; with its statement's text when the listener
    /// [wants it](Self::wants_text) and the tap saw it (a simple query's, the batch's
    /// `Parse`, or the `Parse` of the named statement the batch binds).
    fn written(&self, text: Option<QueryText<'_>>);

    /// The oldest request still unanswered got its `ReadyForQuery`. `tag` is the first word
    /// of its first `CommandComplete` tag (`SELECT`, `INSERT`, ...; empty when none came),
    /// `sqlstate` the code of its first error, if it failed.
    fn answered(&self, tag: &str, sqlstate: Option<&str>);

    /// The newest `n` requests written will get no answer (Syncs the server ignored in COPY
    /// FROM STDIN mode).
    fn withdrawn(&self, n: u64);

    /// The connection ended: requests still unanswered never will be.
    fn ended(&self);
}

/// The start of a statement's text as the tap saw it: at most
/// [`PREFIX_MAX`](crate::PREFIX_MAX) bytes of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryText<'a> {
    /// The text's bytes (UTF-8 unless the client sent otherwise).
    pub bytes: &'a [u8],
    /// False when the text was longer than what the tap keeps (cut at the end).
    pub whole: bool,
}

/// How many named statements' texts a tap remembers (the oldest is forgotten first).
pub(crate) const NAMED_TEXTS_MAX: usize = 256;

/// What a tracker keeps of statement texts, for a listener that wants them.
#[derive(Debug, Default)]
pub(crate) struct Texts {
    /// The text of the extended-protocol batch being written.
    batch: Option<Text>,
    /// Named statements' texts, oldest first.
    named: Vec<(Box<[u8]>, Text)>,
}

/// A statement's text as kept: its bytes and whether they are all of it.
pub(crate) type Text = (Box<[u8]>, bool);

impl Texts {
    /// A `Parse` of `name` (empty: unnamed) with `text`.
    pub(crate) fn parsed(&mut self, name: &[u8], text: &[u8], whole: bool) {
        self.batch = Some((text.into(), whole));
        if !name.is_empty() {
            self.named.retain(|(n, _)| &**n != name);
            if self.named.len() == NAMED_TEXTS_MAX {
                self.named.remove(0);
            }
            self.named.push((name.into(), (text.into(), whole)));
        }
    }

    /// A `Bind` of statement `name`: the batch's text is that statement's, unless the batch
    /// parsed one itself.
    pub(crate) fn bound(&mut self, name: &[u8]) {
        if self.batch.is_none() && !name.is_empty() {
            self.batch = self
                .named
                .iter()
                .find(|(n, _)| &**n == name)
                .map(|(_, text)| text.clone());
        }
    }

    /// A `Close` of statement `name`.
    pub(crate) fn closed(&mut self, name: &[u8]) {
        self.named.retain(|(n, _)| &**n != name);
    }

    /// The batch ended (`Sync`): its text, and a fresh start for the next.
    pub(crate) fn take_batch(&mut self) -> Option<Text> {
        self.batch.take()
    }
}

/// A shared listener.
pub type Listener = Arc<dyn RequestListener>;

/// The front request's outcome as it comes in.
#[derive(Debug, Default)]
pub(crate) struct Front {
    tag: [u8; 16],
    tag_len: u8,
    sqlstate: Option<[u8; 5]>,
}

impl Front {
    /// A `CommandComplete` tag: the first one's first word is kept.
    pub(crate) fn tag(&mut self, tag: &[u8]) {
        if self.tag_len == 0 {
            let word = tag.split(|b| *b == b' ').next().unwrap_or_default();
            let n = word.len().min(self.tag.len());
            self.tag[..n].copy_from_slice(&word[..n]);
            self.tag_len = n as u8;
        }
    }

    /// An error's SQLSTATE: the first one is kept.
    pub(crate) fn error(&mut self, code: &[u8]) {
        if self.sqlstate.is_none() {
            if let Ok(code) = <[u8; 5]>::try_from(code) {
                self.sqlstate = Some(code);
            }
        }
    }

    /// Tells `listener` and starts over for the next request.
    pub(crate) fn answered(&mut self, listener: &dyn RequestListener) {
        let tag = std::str::from_utf8(&self.tag[..usize::from(self.tag_len)]).unwrap_or("");
        let sqlstate = self.sqlstate.as_ref().and_then(|c| std::str::from_utf8(c).ok());
        listener.answered(tag, sqlstate);
        *self = Front::default();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::RequestListener;
    use crate::{Liveness, Observer};

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl RequestListener for Log {
        fn wants_text(&self) -> bool {
            true
        }
        fn written(&self, text: Option<super::QueryText<'_>>) {
            let text = text.map(|t| (String::from_utf8_lossy(t.bytes).into_owned(), t.whole));
            self.0.lock().expect("log").push(format!("written {text:?}"));
        }
        fn answered(&self, tag: &str, sqlstate: Option<&str>) {
            self.0
                .lock()
                .expect("log")
                .push(format!("answered {tag} {sqlstate:?}"));
        }
        fn withdrawn(&self, n: u64) {
            self.0.lock().expect("log").push(format!("withdrawn {n}"));
        }
        fn ended(&self) {
            self.0.lock().expect("log").push("ended".into());
        }
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_with_their_tag_and_error() {
        let log = Arc::new(Log::default());
        let mut o = Observer::established();
        o.listen(log.clone());
        o.backend_bytes(&msg(b'Z', b"I"));
        // Two requests written before either is answered.
        o.frontend_bytes(&msg(b'Q', b"INSERT INTO t VALUES (1)\0"));
        o.frontend_bytes(&[msg(b'P', b"\0SELECT x\0\0\0"), msg(b'S', b"")].concat());
        o.backend_bytes(&msg(b'C', b"INSERT 0 1\0"));
        o.backend_bytes(&msg(b'Z', b"I"));
        o.backend_bytes(&msg(b'E', b"SERROR\0C42703\0Mno column x\0\0"));
        o.backend_bytes(&msg(b'Z', b"I"));
        // One more, unanswered when the stream dies.
        o.frontend_bytes(&msg(b'Q', b"SELECT 1\0"));
        o.died(Liveness::IoError);
        let log = log.0.lock().expect("log").clone();
        assert_eq!(
            log,
            [
                "written Some((\"INSERT INTO t VALUES (1)\", true))",
                "written Some((\"SELECT x\", true))",
                "answered INSERT None",
                "answered  Some(\"42703\")",
                "written Some((\"SELECT 1\", true))",
                "ended"
            ]
        );
    }

    #[test]
    fn a_bound_named_statement_brings_the_text_it_was_prepared_with() {
        let log = Arc::new(Log::default());
        let mut o = Observer::established();
        o.listen(log.clone());
        o.backend_bytes(&msg(b'Z', b"I"));
        o.frontend_bytes(&[msg(b'P', b"s1\0UPDATE t SET a = $1\0\0\0"), msg(b'S', b"")].concat());
        o.backend_bytes(&[msg(b'1', b""), msg(b'Z', b"I")].concat());
        // Later batches only bind it.
        let bind = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
        o.frontend_bytes(&[bind.clone(), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat());
        // Closed: forgotten.
        o.frontend_bytes(&[msg(b'C', b"Ss1\0"), msg(b'S', b"")].concat());
        o.frontend_bytes(&[bind, msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat());
        // A text longer than the tap keeps is cut, and says so.
        let long = format!("SELECT '{}'\0", "x".repeat(300));
        o.frontend_bytes(&msg(b'Q', long.as_bytes()));
        let log: Vec<String> = log
            .0
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.starts_with("written"))
            .cloned()
            .collect();
        assert_eq!(log[0], "written Some((\"UPDATE t SET a = $1\", true))");
        assert_eq!(log[1], "written Some((\"UPDATE t SET a = $1\", true))");
        assert_eq!(log[2], "written None", "the Close's own batch");
        assert_eq!(log[3], "written None", "s1 was closed");
        assert!(
            log[4].starts_with("written Some((\"SELECT 'xxx") && log[4].ends_with(", false))"),
            "{}",
            log[4]
        );
    }
}
