//! Both directions of one connection, framed and tracked: the pure core of the tap, fed with
//! byte slices instead of sockets (tests replay recorded streams through it).

use crate::framing::{Direction, Framer};
use crate::state::{Liveness, WireState};
use crate::tracker::{Hint, Tracker};

/// Frames the bytes of both directions and keeps a [`WireState`] up to date.
#[derive(Debug)]
pub struct Observer {
    frontend: Framer,
    backend: Framer,
    tracker: Tracker,
    /// Told of every `Parse`, when the tap gathers reads.
    gathering: Option<crate::Gathering>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// An observer for a connection from its first byte.
    pub fn new() -> Observer {
        Observer {
            frontend: Framer::new(Direction::Frontend),
            backend: Framer::new(Direction::Backend),
            tracker: Tracker::new(WireState::new()),
            gathering: None,
        }
    }

    /// An observer that joins an established connection at a message boundary.
    pub fn established() -> Observer {
        Observer {
            frontend: Framer::established(Direction::Frontend),
            backend: Framer::established(Direction::Backend),
            tracker: Tracker::established(WireState::new()),
            gathering: None,
        }
    }

    /// Tells `listener` of every request from now on (see [`RequestListener`](crate::RequestListener)).
    pub fn listen(&mut self, listener: crate::Listener) {
        self.tracker.listen(listener);
    }

    /// Tells `gathering` of every `Parse` the client writes (the statements it may gather).
    pub(crate) fn gather(&mut self, gathering: crate::Gathering) {
        self.gathering = Some(gathering);
    }

    /// The state this observer publishes.
    pub fn state(&self) -> &WireState {
        self.tracker.state()
    }

    /// Bytes the client wrote (and the socket accepted).
    pub fn frontend_bytes(&mut self, data: &[u8]) {
        let tracker = &mut self.tracker;
        let gathering = &self.gathering;
        let mut hint = Hint::None;
        let result = self.frontend.feed(data, |frame| {
            if let (Some(g), crate::Tag::Typed(b'P')) = (gathering, frame.tag) {
                g.parsed(frame.prefix);
            }
            let h = tracker.frontend(&frame);
            if h != Hint::None {
                hint = h;
            }
        });
        if hint == Hint::ExpectNegotiationByte {
            self.backend.expect_negotiation_byte();
        }
        self.tracker.transferred(data.len(), 0);
        if result.is_err() {
            self.died(Liveness::Malformed);
        }
        // No wake-up here: what waiters wait for (answers, death) arrives from the server.
    }

    /// Bytes the server sent.
    pub fn backend_bytes(&mut self, data: &[u8]) {
        let tracker = &mut self.tracker;
        let mut hint = Hint::None;
        let result = self.backend.feed(data, |frame| {
            let h = tracker.backend(&frame);
            if h != Hint::None {
                hint = h;
            }
        });
        if hint == Hint::ExpectStartupPacket {
            self.frontend.expect_startup_packet();
        }
        self.tracker.transferred(0, data.len());
        if result.is_err() {
            self.tracker.died(Liveness::Malformed);
        }
        self.state().cells.wake_watchers();
    }

    /// Bytes in the given direction.
    pub fn bytes(&mut self, direction: Direction, data: &[u8]) {
        match direction {
            Direction::Frontend => self.frontend_bytes(data),
            Direction::Backend => self.backend_bytes(data),
        }
    }

    /// Both directions sit between two messages: a point where something may start reading
    /// the streams as messages.
    pub fn at_boundaries(&self) -> bool {
        self.frontend.at_boundary() && self.backend.at_boundary()
    }

    /// The stream ended or failed (the first cause is kept).
    pub fn died(&mut self, how: Liveness) {
        self.tracker.died(how);
        self.state().cells.wake_watchers();
    }
}
