//! A cheap monotonic clock for stamping activity on the data path.
//!
//! `CLOCK_MONOTONIC_COARSE` is read from the vDSO without touching the time-stamp counter: a
//! few nanoseconds instead of the tens that `Instant::now()` costs, at a resolution of one
//! scheduler tick (1 to 4 ms), which is plenty for "when did the server last speak".

use std::time::{Duration, Instant};

/// Nanoseconds on the coarse monotonic clock (never 0, so 0 can mean "never").
#[allow(unsafe_code)]
pub(crate) fn coarse_nanos() -> u64 {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

#[allow(unsafe_code)]
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 1;
    }
    let nanos = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    nanos.max(1)
}

/// A moment on the coarse monotonic clock: a few nanoseconds to read, where
/// `Instant::now()` costs tens, at a resolution of one scheduler tick (1 to 4 ms). For
/// bookkeeping on hot paths (how long a connection was held or idle), not for timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoarseInstant(u64);

impl CoarseInstant {
    /// Now.
    pub fn now() -> CoarseInstant {
        CoarseInstant(coarse_nanos())
    }

    /// Time since this moment (zero if the clock has not moved).
    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(coarse_nanos().saturating_sub(self.0))
    }

    /// Time from `earlier` to this moment (zero if `earlier` is later).
    pub fn saturating_duration_since(self, earlier: CoarseInstant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This moment plus `d`.
    pub fn after(self, d: Duration) -> CoarseInstant {
        CoarseInstant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// How long ago a stamp from [`coarse_nanos`] was taken (`None` for 0, never stamped).
pub(crate) fn since(stamp: u64) -> Option<Duration> {
    (stamp != 0).then(|| Duration::from_nanos(coarse_nanos().saturating_sub(stamp)))
}

/// The [`Instant`] a stamp corresponds to, within the clock's resolution.
pub(crate) fn instant_of(stamp: u64) -> Option<Instant> {
    since(stamp).map(|ago| Instant::now().checked_sub(ago).unwrap_or_else(Instant::now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_monotonic_and_convert() {
        let a = coarse_nanos();
        let b = coarse_nanos();
        assert!(b >= a && a > 0);
        assert_eq!(since(0), None);
        let ago = since(a).expect("stamped");
        assert!(ago < Duration::from_secs(5));
        assert!(instant_of(a).expect("stamped") <= Instant::now());
    }
}
