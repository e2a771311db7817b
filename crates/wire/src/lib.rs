#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod clock;
mod framing;
mod gather;
mod keyword;
mod observer;
mod requests;
mod state;
mod tag_cell;
mod tap;
mod tracker;

pub use clock::CoarseInstant;
pub use framing::{
    Direction, Frame, Framer, Malformed, Tag, GSSENC_REQUEST_CODE, PREFIX_MAX, SSL_REQUEST_CODE,
};
pub use gather::{Gathering, REGATHER_MESSAGE, REGATHER_SQLSTATE};
pub use keyword::first_keyword;
pub use observer::Observer;
pub use requests::{Listener, QueryText, RequestListener};
pub use state::{CommitState, Liveness, ServerRole, Snapshot, TxStatus, WireState};
pub use tap::Tap;
pub use tracker::{is_commit, Hint, Tracker};
