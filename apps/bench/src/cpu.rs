//! CPU time for "where the time goes": this process's, its waited-for children's (pgbench),
//! and the whole machine's busy time, so a benchmark can print CPU per operation.

use std::time::Duration;

/// CPU time used so far.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    /// This process (user + system).
    pub own: Duration,
    /// This process in user space only: its own code, libraries and runtime, without the
    /// kernel's share of sockets and scheduling.
    pub own_user: Duration,
    /// Children that have been waited for (user + system).
    pub children: Duration,
    /// Children in user space only.
    pub children_user: Duration,
    /// The whole machine, all CPUs, not idle (from /proc/stat; zero if unreadable).
    pub machine: Duration,
}

impl Cpu {
    /// The counters now.
    pub fn now() -> Cpu {
        let (own_user, own_system) = rusage(libc::RUSAGE_SELF);
        let (children_user, children_system) = rusage(libc::RUSAGE_CHILDREN);
        Cpu {
            own: own_user + own_system,
            own_user,
            children: children_user + children_system,
            children_user,
            machine: machine_busy(),
        }
    }

    /// What was used since `earlier`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            own: self.own.saturating_sub(earlier.own),
            own_user: self.own_user.saturating_sub(earlier.own_user),
            children: self.children.saturating_sub(earlier.children),
            children_user: self.children_user.saturating_sub(earlier.children_user),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }
}

#[allow(unsafe_code)]
/// User and system time.
fn rusage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: rusage is plain data, zeroed is a valid value, and getrusage only writes it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// Busy time of all CPUs: the first line of /proc/stat less idle and iowait, in clock ticks
/// (USER_HZ, 100 on Linux).
fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().next() else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: steal is time the
    // host ran others, guest time is already counted in user and nice.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 7 | 8 | 9))
        .map(|(_, v)| v)
        .sum();
    Duration::from_millis(busy * 10)
}
