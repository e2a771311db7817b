//! PostgreSQL message framing, one direction at a time, across arbitrary read and write
//! boundaries.
//!
//! A [`Framer`] is fed the bytes of one direction of a connection in whatever pieces the
//! socket delivers them and reports each complete message as a [`Frame`]: its type byte, its
//! length and a short prefix of its body (at most [`PREFIX_MAX`] bytes, and only for the
//! message types whose content holdfast reads). Payloads are never buffered: a 1 GB `DataRow`
//! costs five header bytes of work.
//!
//! The framer is pure (no I/O, no clock) so that it can be tested on recorded streams split at
//! every boundary and fuzzed on arbitrary bytes. A stream that cannot be PostgreSQL (a length
//! below four, an unknown message type, an oversized start-up packet) puts the framer into a
//! permanent [`Malformed`] state instead of panicking.

use std::fmt;

/// The most body bytes a [`Frame`] carries: enough for a command tag, the start of a query
/// text after a statement name, or the leading fields of an error.
pub const PREFIX_MAX: usize = 128;

/// PostgreSQL refuses start-up packets longer than this (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_LEN: u32 = 10_000;
/// The largest message PostgreSQL sends or accepts is 1 GB; anything above is not a message.
const MAX_MESSAGE_LEN: u32 = 0x4000_0000 + 64;

/// Request code of an `SSLRequest` start-up packet.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a `GSSENCRequest` start-up packet.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// Which side of the conversation a byte stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

/// The type of a framed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// A typed message and its type byte (`b'Q'`, `b'Z'`, ...).
    Typed(u8),
    /// An untyped start-up packet from the frontend (`StartupMessage`, `SSLRequest`,
    /// `GSSENCRequest`, `CancelRequest`); the request code is the first four bytes of the
    /// prefix.
    Startup,
    /// The single byte a server answers an `SSLRequest` or `GSSENCRequest` with.
    Negotiation,
}

/// One complete message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message type.
    pub tag: Tag,
    /// Body length in bytes (excluding the type byte and the length word).
    pub len: u32,
    /// The first bytes of the body (at most [`PREFIX_MAX`]; empty for types whose content is
    /// not inspected).
    pub prefix: &'a [u8],
}

impl Frame<'_> {
    /// The message's size on the wire: type byte (if any), length word and body.
    pub fn wire_len(&self) -> usize {
        let head = match self.tag {
            Tag::Typed(_) => 5,
            Tag::Startup => 4,
            Tag::Negotiation => return 1,
        };
        head + self.len as usize
    }

    /// The request code of a start-up packet, if this is one.
    pub fn startup_code(&self) -> Option<u32> {
        match (self.tag, self.prefix) {
            (Tag::Startup, [a, b, c, d, ..]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The prefix can hold query text; show only its length, never its content.
        f.debug_struct("Frame")
            .field("tag", &self.tag)
            .field("len", &self.len)
            .field("prefix_len", &self.prefix.len())
            .finish()
    }
}

/// Why a stream is not a PostgreSQL stream. Once seen, the framer stays broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A length word below 4 or above 1 GB.
    BadLength(u32),
    /// A type byte that this direction never sends.
    UnknownTag(u8),
    /// A start-up packet shorter than 8 or longer than 10 000 bytes.
    BadStartupLength(u32),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::BadLength(n) => write!(f, "message length {n} is outside 4..=1 GB"),
            Malformed::UnknownTag(t) => write!(f, "unknown message type byte 0x{t:02x}"),
            Malformed::BadStartupLength(n) => {
                write!(f, "start-up packet length {n} is outside 8..=10000")
            }
        }
    }
}

impl std::error::Error for Malformed {}

/// Where the framer is inside the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a header: an untyped start-up header (4 bytes), a typed header (5 bytes) or
    /// a single negotiation byte.
    Header,
    /// Inside a body; `remaining` bytes still to come.
    Body { remaining: u32 },
    /// The stream was malformed; everything after is ignored.
    Broken(Malformed),
}

/// What kind of unit comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Startup,
    Negotiation,
    Typed,
}

/// Splits one direction of a PostgreSQL connection into messages.
#[derive(Clone)]
pub struct Framer {
    direction: Direction,
    expect: Expect,
    phase: Phase,
    header: [u8; 5],
    header_len: u8,
    tag: Tag,
    body_len: u32,
    keep: usize,
    prefix_len: usize,
    /// Only used for messages that arrive in pieces (the common whole-message case reads
    /// the caller's bytes in place), so it lives off the hot cache lines.
    prefix: Box<[u8; PREFIX_MAX]>,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("direction", &self.direction)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Framer {
    /// A framer for a connection from its first byte: the frontend starts with an untyped
    /// start-up packet, the backend with typed messages.
    pub fn new(direction: Direction) -> Framer {
        let expect = match direction {
            Direction::Frontend => Expect::Startup,
            Direction::Backend => Expect::Typed,
        };
        Framer {
            direction,
            expect,
            phase: Phase::Header,
            header: [0; 5],
            header_len: 0,
            tag: Tag::Startup,
            body_len: 0,
            keep: 0,
            prefix_len: 0,
            prefix: Box::new([0; PREFIX_MAX]),
        }
    }

    /// A framer that starts in the middle of an established connection, at a message
    /// boundary, with typed messages in both directions.
    pub fn established(direction: Direction) -> Framer {
        let mut framer = Framer::new(direction);
        framer.expect = Expect::Typed;
        framer
    }

    /// The direction this framer reads.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The reason the stream was judged malformed, if it was.
    pub fn malformed(&self) -> Option<Malformed> {
        match self.phase {
            Phase::Broken(why) => Some(why),
            _ => None,
        }
    }

    /// True when the framer sits exactly between two messages.
    pub fn at_boundary(&self) -> bool {
        self.phase == Phase::Header && self.header_len == 0
    }

    /// Bytes of the message being framed that were already fed (0 at a boundary).
    pub fn partial_len(&self) -> usize {
        match self.phase {
            Phase::Header => usize::from(self.header_len),
            Phase::Body { remaining } => {
                let head = if self.tag == Tag::Startup { 4 } else { 5 };
                head + (self.body_len - remaining) as usize
            }
            Phase::Broken(_) => 0,
        }
    }

    /// The type of the message being framed, if one is under way (`None` at a boundary or
    /// before its type byte arrived).
    pub fn partial_tag(&self) -> Option<Tag> {
        match self.phase {
            Phase::Body { .. } => Some(self.tag),
            Phase::Header if self.header_len > 0 && self.expect == Expect::Typed => {
                Some(Tag::Typed(self.header[0]))
            }
            _ => None,
        }
    }

    /// Backend only: the next unit is the single byte that answers an `SSLRequest` or a
    /// `GSSENCRequest` (the frontend framer reports those as start-up frames).
    pub fn expect_negotiation_byte(&mut self) {
        if self.at_boundary() {
            self.expect = Expect::Negotiation;
        }
    }

    /// Frontend only: the server refused encryption (`N`), so the next unit is another
    /// untyped start-up packet.
    pub fn expect_startup_packet(&mut self) {
        if self.at_boundary() {
            self.expect = Expect::Startup;
        }
    }

    /// Feeds the next piece of the stream, calling `on_frame` for every message it completes.
    /// Returns the malformation that broke the stream, now or earlier.
    pub fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(Frame<'_>)) -> Result<(), Malformed> {
        while !data.is_empty() {
            match self.phase {
                Phase::Broken(why) => return Err(why),
                Phase::Header if self.header_len == 0 && self.expect == Expect::Typed && data.len() >= 5 => {
                    // Fast path: a whole header in this piece, and often the whole message;
                    // then the frame's prefix is a view of the caller's bytes, not a copy.
                    let tag = data[0];
                    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
                    if let Err(why) = self.check_typed(tag, len) {
                        self.phase = Phase::Broken(why);
                        return Err(why);
                    }
                    let body_len = len - 4;
                    let end = 5 + body_len as usize;
                    if data.len() >= end {
                        let keep = prefix_wanted(self.direction, tag).min(body_len as usize);
                        on_frame(Frame {
                            tag: Tag::Typed(tag),
                            len: body_len,
                            prefix: &data[5..5 + keep],
                        });
                        data = &data[end..];
                    } else {
                        self.header[..5].copy_from_slice(&data[..5]);
                        data = &data[5..];
                        self.enter_typed_body(tag, body_len);
                    }
                }
                Phase::Header => {
                    let need = match self.expect {
                        Expect::Startup => 4,
                        Expect::Negotiation => 1,
                        Expect::Typed => 5,
                    };
                    let have = usize::from(self.header_len);
                    let take = (need - have).min(data.len());
                    self.header[have..have + take].copy_from_slice(&data[..take]);
                    self.header_len += take as u8;
                    data = &data[take..];
                    if usize::from(self.header_len) == need {
                        self.header_len = 0;
                        if let Err(why) = self.start_message(&mut on_frame) {
                            self.phase = Phase::Broken(why);
                            return Err(why);
                        }
                    }
                }
                Phase::Body { remaining } => {
                    let take = (remaining as usize).min(data.len());
                    let chunk = &data[..take];
                    if self.prefix_len < self.keep {
                        let n = (self.keep - self.prefix_len).min(chunk.len());
                        self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
                        self.prefix_len += n;
                    }
                    data = &data[take..];
                    let remaining = remaining - take as u32;
                    if remaining == 0 {
                        self.finish_message(&mut on_frame);
                    } else {
                        self.phase = Phase::Body { remaining };
                    }
                }
            }
        }
        match self.phase {
            Phase::Broken(why) => Err(why),
            _ => Ok(()),
        }
    }

    fn check_typed(&self, tag: u8, len: u32) -> Result<(), Malformed> {
        if !known_tag(self.direction, tag) {
            return Err(Malformed::UnknownTag(tag));
        }
        if !(4..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(Malformed::BadLength(len));
        }
        Ok(())
    }

    /// A typed header was read and its body does not follow in the same piece.
    fn enter_typed_body(&mut self, tag: u8, body_len: u32) {
        self.tag = Tag::Typed(tag);
        self.body_len = body_len;
        self.keep = prefix_wanted(self.direction, tag);
        self.prefix_len = 0;
        self.phase = Phase::Body { remaining: body_len };
    }

    /// A complete header is in `self.header`: validate it and enter the body.
    fn start_message(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) -> Result<(), Malformed> {
        self.prefix_len = 0;
        match self.expect {
            Expect::Negotiation => {
                // One byte, no length: S (TLS follows), N (refused), G (GSS follows) or the
                // first byte of an ErrorResponse from a server that predates encryption.
                let byte = self.header[0];
                if byte == b'E' {
                    // An old server sends a whole ErrorResponse; frame it as typed.
                    self.expect = Expect::Typed;
                    self.header_len = 1;
                    return Ok(());
                }
                self.prefix[0] = byte;
                self.prefix_len = 1;
                self.expect = Expect::Typed;
                self.phase = Phase::Header;
                on_frame(Frame {
                    tag: Tag::Negotiation,
                    len: 1,
                    prefix: &self.prefix[..1],
                });
                Ok(())
            }
            Expect::Startup => {
                let len =
                    u32::from_be_bytes([self.header[0], self.header[1], self.header[2], self.header[3]]);
                if !(8..=MAX_STARTUP_LEN).contains(&len) {
                    return Err(Malformed::BadStartupLength(len));
                }
                self.tag = Tag::Startup;
                self.body_len = len - 4;
                // The request code decides what follows; keep it and the parameters' start.
                self.keep = PREFIX_MAX;
                // After a start-up packet the frontend speaks typed messages, unless this was
                // an encryption request (the caller re-arms with `expect_startup_packet`).
                self.expect = Expect::Typed;
                self.phase = Phase::Body {
                    remaining: self.body_len,
                };
                Ok(())
            }
            Expect::Typed => {
                let tag = self.header[0];
                let len =
                    u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                if !known_tag(self.direction, tag) {
                    return Err(Malformed::UnknownTag(tag));
                }
                if !(4..=MAX_MESSAGE_LEN).contains(&len) {
                    return Err(Malformed::BadLength(len));
                }
                self.tag = Tag::Typed(tag);
                self.body_len = len - 4;
                self.keep = prefix_wanted(self.direction, tag);
                if self.body_len == 0 {
                    self.finish_message(on_frame);
                } else {
                    self.phase = Phase::Body {
                        remaining: self.body_len,
                    };
                }
                Ok(())
            }
        }
    }

    fn finish_message(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        self.phase = Phase::Header;
        on_frame(Frame {
            tag: self.tag,
            len: self.body_len,
            prefix: &self.prefix[..self.prefix_len],
        });
    }
}

/// Per type byte: bit 0 set when the frontend sends it, bit 1 when the backend does, bit 2
/// when holdfast reads the frontend's body prefix, bit 3 when it reads the backend's.
const TAGS: [u8; 256] = {
    let mut table = [0u8; 256];
    // Bind, Close, CopyData, CopyDone, Describe, Execute, CopyFail, FunctionCall, Flush,
    // Parse, Password/SASL, Query, Sync, Terminate.
    let frontend = b"BCcdDEfFHPpQSX";
    // Authentication, BackendKeyData, BindComplete, CloseComplete, CommandComplete,
    // CopyData, CopyDone, DataRow, ErrorResponse, CopyInResponse, CopyOutResponse,
    // EmptyQueryResponse, CopyBothResponse, FunctionCallResponse, NoData, NoticeResponse,
    // NotificationResponse, ParameterDescription, ParameterStatus, ParseComplete,
    // PortalSuspended, RowDescription, NegotiateProtocolVersion, ReadyForQuery.
    let backend = b"RK23CdcDEGHIWVnNAtS1sTvZ";
    // Query text, Parse (name then text), Bind (portal then statement), Close.
    let frontend_read = b"QPBC";
    // ReadyForQuery status, CommandComplete tag, ErrorResponse fields, BackendKeyData,
    // ParameterStatus (the server's role).
    let backend_read = b"ZCEKS";
    let mut i = 0;
    while i < frontend.len() {
        table[frontend[i] as usize] |= 1;
        i += 1;
    }
    i = 0;
    while i < backend.len() {
        table[backend[i] as usize] |= 2;
        i += 1;
    }
    i = 0;
    while i < frontend_read.len() {
        table[frontend_read[i] as usize] |= 4;
        i += 1;
    }
    i = 0;
    while i < backend_read.len() {
        table[backend_read[i] as usize] |= 8;
        i += 1;
    }
    table
};

/// Whether `direction` ever sends a message of type `tag` (protocol 3.0).
fn known_tag(direction: Direction, tag: u8) -> bool {
    let bit = match direction {
        Direction::Frontend => 1,
        Direction::Backend => 2,
    };
    TAGS[usize::from(tag)] & bit != 0
}

/// How many body bytes of a message holdfast reads: only the types whose content matters
/// to the observed state.
fn prefix_wanted(direction: Direction, tag: u8) -> usize {
    let bit = match direction {
        Direction::Frontend => 4,
        Direction::Backend => 8,
    };
    if TAGS[usize::from(tag)] & bit != 0 {
        PREFIX_MAX
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = Vec<(Tag, u32, Vec<u8>)>;

    fn frames(direction: Direction, data: &[u8]) -> (Frames, Result<(), Malformed>) {
        let mut framer = Framer::new(direction);
        let mut out = Vec::new();
        let result = framer.feed(data, |f| out.push((f.tag, f.len, f.prefix.to_vec())));
        (out, result)
    }

    #[test]
    fn typed_messages_and_prefix() {
        let mut data = Vec::new();
        data.extend_from_slice(b"Z\0\0\0\x05I");
        data.extend_from_slice(b"C\0\0\0\x0bCOMMIT\0");
        data.extend_from_slice(b"D\0\0\0\x06\0\0");
        let (out, result) = frames(Direction::Backend, &data);
        assert_eq!(result, Ok(()));
        assert_eq!(
            out,
            vec![
                (Tag::Typed(b'Z'), 1, b"I".to_vec()),
                (Tag::Typed(b'C'), 7, b"COMMIT\0".to_vec()),
                (Tag::Typed(b'D'), 2, vec![]),
            ]
        );
    }

    #[test]
    fn startup_then_typed() {
        let mut data = Vec::new();
        data.extend_from_slice(&[0, 0, 0, 9, 0, 3, 0, 0, 0]);
        data.extend_from_slice(b"Q\0\0\0\x0bBEGIN\0\0");
        let (out, result) = frames(Direction::Frontend, &data);
        assert_eq!(result, Ok(()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, Tag::Startup);
        assert_eq!(out[1].0, Tag::Typed(b'Q'));
    }

    #[test]
    fn bad_length_breaks_for_good() {
        let (out, result) = frames(Direction::Backend, b"Z\0\0\0\x02IZ\0\0\0\x05I");
        assert!(out.is_empty());
        assert_eq!(result, Err(Malformed::BadLength(2)));
    }

    #[test]
    fn unknown_tag_is_malformed() {
        let (_, result) = frames(Direction::Backend, b"\xff\0\0\0\x04");
        assert_eq!(result, Err(Malformed::UnknownTag(0xff)));
    }

    #[test]
    fn prefix_is_bounded() {
        let mut data = vec![b'C'];
        let body = vec![b'x'; 1000];
        data.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        data.extend_from_slice(&body);
        let (out, _) = frames(Direction::Backend, &data);
        assert_eq!(out[0].2.len(), PREFIX_MAX);
        assert_eq!(out[0].1, 1000);
    }

    #[test]
    fn negotiation_byte() {
        let mut framer = Framer::new(Direction::Backend);
        framer.expect_negotiation_byte();
        let mut out = Vec::new();
        let r = framer.feed(b"NR\0\0\0\x08\0\0\0\0", |f| out.push((f.tag, f.prefix.to_vec())));
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            vec![(Tag::Negotiation, b"N".to_vec()), (Tag::Typed(b'R'), vec![])]
        );
    }
}
