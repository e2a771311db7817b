//! The wire tap: a transparent stream wrapper that frames the bytes passing through it in
//! both directions and keeps a [`WireState`] up to date.
//!
//! Given a [`Gathering`], the tap also gathers reads (see `gather`): while gathering is on,
//! from a point where both streams are at rest, the bytes go through the gatherer (copied)
//! instead of straight through, until gathering is off and nothing is held or owed.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gather::{Gatherer, Gathering};
use crate::observer::Observer;
use crate::state::{Liveness, WireState};

/// Wraps the stream a PostgreSQL client talks over (give it to
/// `tokio_postgres::Config::connect_raw`). Bytes pass through unchanged and uncopied; the
/// framing runs over them in place.
pub struct Tap<S> {
    inner: S,
    observer: Observer,
    gatherer: Option<Gatherer>,
    /// The bytes go through the gatherer.
    staged: bool,
    /// Where the server's bytes are read while staged.
    scratch: Vec<u8>,
}

/// Bytes read from the server at a time while staged.
const SCRATCH_LEN: usize = 16 * 1024;

impl<S> Tap<S> {
    /// Taps a fresh connection, before the client's first byte.
    pub fn new(inner: S) -> Tap<S> {
        Tap {
            inner,
            observer: Observer::new(),
            gatherer: None,
            staged: false,
            scratch: Vec::new(),
        }
    }

    /// Gathers reads while `gathering` is on (see the module); give it before the stream is
    /// handed to the client.
    pub fn gather(&mut self, gathering: Gathering) {
        self.observer.gather(gathering.clone());
        self.gatherer = Some(Gatherer::new(gathering));
    }

    /// Tells `listener` of every request written and answered through this tap (for
    /// tracing statements); attach it before the stream is handed to the client.
    pub fn listen(&mut self, listener: crate::Listener) {
        self.observer.listen(listener);
    }

    /// The state this tap publishes; clone it freely.
    pub fn state(&self) -> WireState {
        self.observer.state().clone()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn failed<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.observer.died(Liveness::IoError);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> Tap<S> {
    /// Goes through the gatherer from now on when gathering is on and both streams are
    /// between messages (the answers already owed pass through it unchanged); stops when it
    /// is off and the gatherer holds nothing. True while staged.
    fn stage(&mut self) -> bool {
        let Some(gatherer) = &mut self.gatherer else {
            return false;
        };
        if !self.staged && gatherer.is_on() && self.observer.at_boundaries() {
            gatherer.owe(self.observer.state().in_flight());
            self.staged = true;
        } else if self.staged && !gatherer.is_on() && gatherer.is_empty() {
            gatherer.reset();
            self.staged = false;
        }
        self.staged
    }

    /// Writes what the gatherer has for the server; ready when all of it went.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(gatherer) = &mut self.gatherer else {
            return Poll::Ready(Ok(()));
        };
        while !gatherer.unsent().is_empty() {
            let result = ready!(Pin::new(&mut self.inner).poll_write(cx, gatherer.unsent()));
            match result {
                Ok(0) => {
                    self.observer.died(Liveness::IoError);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.observer.frontend_bytes(&gatherer.unsent()[..n]);
                    gatherer.sent(n);
                }
                Err(e) => {
                    self.observer.died(Liveness::IoError);
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes the client's bytes into the gatherer (staged).
    fn poll_write_staged(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        if self
            .gatherer
            .as_ref()
            .is_some_and(|g| g.unsent().len() > crate::gather::PENDING_MAX)
        {
            ready!(self.drain(cx))?;
        }
        let mut n = 0;
        if let Some(gatherer) = &mut self.gatherer {
            for buf in bufs {
                gatherer.client_bytes(buf);
                n += buf.len();
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<S> Drop for Tap<S> {
    fn drop(&mut self) {
        self.observer.died(Liveness::Dropped);
    }
}

impl<S> fmt::Debug for Tap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("state", self.observer.state())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.staged {
            return this.poll_read_staged(cx, buf);
        }
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        let result = this.failed(result);
        if result.is_ok() {
            let filled = &buf.filled()[before..];
            if filled.is_empty() && buf.remaining() > 0 {
                this.observer.died(Liveness::Closed);
            } else {
                this.observer.backend_bytes(filled);
            }
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncRead + Unpin> Tap<S> {
    /// Reads through the gatherer: what it has for the client, else more from the server.
    fn poll_read_staged(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(gatherer) = &mut self.gatherer else {
            return Poll::Ready(Ok(()));
        };
        loop {
            let unread = gatherer.unread();
            if !unread.is_empty() {
                let n = unread.len().min(buf.remaining());
                buf.put_slice(&unread[..n]);
                gatherer.read(n);
                return Poll::Ready(Ok(()));
            }
            self.scratch.resize(SCRATCH_LEN, 0);
            let mut scratch = ReadBuf::new(&mut self.scratch);
            let result = ready!(Pin::new(&mut self.inner).poll_read(cx, &mut scratch));
            if let Err(e) = result {
                self.observer.died(Liveness::IoError);
                return Poll::Ready(Err(e));
            }
            let got = scratch.filled();
            if got.is_empty() {
                // The end of the stream: the client sees it as it would have.
                self.observer.died(Liveness::Closed);
                return Poll::Ready(Ok(()));
            }
            self.observer.backend_bytes(got);
            gatherer.server_bytes(got);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.stage() {
            return this.poll_write_staged(cx, &[buf]);
        }
        let result = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        let result = this.failed(result);
        if let Ok(n) = result {
            this.observer.frontend_bytes(&buf[..n]);
        }
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.stage() {
            let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
            return this.poll_write_staged(cx, &slices);
        }
        let result = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        let result = this.failed(result);
        if let Ok(mut n) = result {
            for slice in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(slice.len());
                this.observer.frontend_bytes(&slice[..take]);
                n -= take;
            }
        }
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.staged {
            if let Some(gatherer) = &mut this.gatherer {
                gatherer.cut();
            }
            ready!(this.drain(cx))?;
            this.stage();
        }
        let result = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        Poll::Ready(this.failed(result))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
        Poll::Ready(this.failed(result))
    }
}
