//! Small process helpers: signals and the tail of a program's output.

use std::process::Output;

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

/// The last lines of a program's stderr and stdout, for error messages.
pub(crate) fn output_tail(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
