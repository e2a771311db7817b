//! Small process helpers: the server processes we supervise, signals, and the tail of a
//! program's output.

use std::process::{Child, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a starting or stopping process is checked on.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// A server process we started (PostgreSQL, PgBouncer), or none, under a lock.
#[derive(Debug, Default)]
pub(crate) struct Supervised {
    child: Mutex<Option<Child>>,
}

impl Supervised {
    /// The process slot (a poisoned lock is still usable: it only holds a `Child`).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while the process runs; forgets one that has exited.
    pub(crate) fn is_running(&self) -> bool {
        let mut child = self.lock();
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Sends `sig` and waits up to `timeout` until the process has exited.
    pub(crate) fn stop(&self, sig: Signal, timeout: Duration) -> Result<()> {
        let mut slot = self.lock();
        let Some(mut child) = slot.take() else {
            return Err(Error::NotRunning);
        };
        signal(child.id(), sig);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return Ok(()),
                Ok(None) if Instant::now() >= deadline => {
                    *slot = Some(child);
                    return Err(Error::StopTimeout {
                        seconds: timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
            }
        }
    }
}

/// The signals sent to the servers we run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    /// Smart shutdown.
    Term,
    /// Fast shutdown.
    Int,
    /// Immediate shutdown.
    Quit,
    /// No shutdown at all.
    Kill,
}

/// Sends `sig` to process `pid`; a process that is already gone is not an error.
#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, sig: Signal) {
    let sig = match sig {
        Signal::Term => libc::SIGTERM,
        Signal::Int => libc::SIGINT,
        Signal::Quit => libc::SIGQUIT,
        Signal::Kill => libc::SIGKILL,
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid is a child we
    // spawned and have not reaped, so it cannot have been reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub(crate) fn file_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last lines of a program's stderr and stdout, for error messages.
pub(crate) fn output_tail(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
