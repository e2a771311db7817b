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
    /// The database server: the postmaster, its live children and those it has reaped (zero
    /// when no server was given or /proc is unreadable).
    pub server: Duration,
}

impl Cpu {
    /// The counters now, the server's included: `postmaster` is its process id.
    pub fn now_with_server(postmaster: u32) -> Cpu {
        Cpu {
            server: process_tree_busy(postmaster),
            ..Cpu::now()
        }
    }

    /// The counters now (no server).
    pub fn now() -> Cpu {
        let (own_user, own_system) = rusage(libc::RUSAGE_SELF);
        let (children_user, children_system) = rusage(libc::RUSAGE_CHILDREN);
        Cpu {
            own: own_user + own_system,
            own_user,
            children: children_user + children_system,
            children_user,
            machine: machine_busy(),
            server: Duration::ZERO,
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
            server: self.server.saturating_sub(earlier.server),
        }
    }
}

/// The server's process id, from the first line of its `postmaster.pid`.
pub fn postmaster_pid(cluster: &holdfast_tempdb::TempCluster) -> Result<u32, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("postmaster.pid does not start with a process id: {text:?}").into())
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

/// CPU time (user + system, in clock ticks of 10 ms) of `root` and its children, live or
/// reaped: a child that exits is counted in its parent's waited-for children's time.
fn process_tree_busy(root: u32) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command may hold spaces and parentheses: fields are counted after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if pid == root {
            ticks += field(11) + field(12) + field(13) + field(14);
        } else if field(1) == u64::from(root) {
            ticks += field(11) + field(12);
        }
    }
    Duration::from_millis(ticks * 10)
}
