//! Fault plans: which faults a load run plays and when. The schedule comes from a seed, so a
//! run can be played again exactly: the same faults at the same moments.

use serde::Serialize;

/// A fault a load run can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// No fault: a clean run.
    None,
    /// Kill every database connection through the proxy (TCP reset).
    Kill,
    /// Restart the database (fast shutdown, then start). Only the run's own database.
    Restart,
    /// `pg_terminate_backend` every session of the service's database.
    Terminate,
    /// The proxy swallows every byte both ways for `--fault-length-s`: connections stay
    /// open, nothing arrives (a hung network or server).
    Blackhole,
    /// The proxy delays every chunk both ways by `--latency-ms` for `--fault-length-s`.
    Latency,
    /// Kill the primary and promote its synchronous standby; the old primary rejoins as the
    /// new one's standby. Only the run's own database (started with a standby then).
    Failover,
    /// Stop the primary (fast shutdown) and promote its synchronous standby; the old
    /// primary rejoins as the new one's standby. Only the run's own database.
    Switchover,
}

impl FaultKind {
    /// Its name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::Terminate => "terminate",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Latency => "latency",
            FaultKind::Failover => "failover",
            FaultKind::Switchover => "switchover",
        }
    }

    /// Whether the fault lasts a while (and is lifted at its end) rather than happening at
    /// an instant.
    pub fn lasts(self) -> bool {
        matches!(self, FaultKind::Blackhole | FaultKind::Latency)
    }

    /// Whether the fault needs a primary with a standby.
    pub fn needs_standby(self) -> bool {
        matches!(self, FaultKind::Failover | FaultKind::Switchover)
    }

    /// Whether the fault acts through the fault proxy.
    pub fn needs_proxy(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Blackhole | FaultKind::Latency)
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Planned {
    /// What.
    pub kind: FaultKind,
    /// When, in seconds from the start of the run.
    pub at_s: f64,
    /// For how long (0 for an instant fault).
    pub length_s: f64,
}

/// How a schedule is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing {
    /// The run's length, seconds.
    pub duration_s: f64,
    /// About how often a fault starts.
    pub every_s: f64,
    /// How long a lasting fault lasts.
    pub length_s: f64,
    /// Quiet time after each fault before the next may start (time to recover, and to see
    /// it).
    pub quiet_s: f64,
}

/// Faults for a run: one about every `every_s` seconds (each moment jittered by up to a
/// quarter of that, from `seed`), the kind picked from `kinds` (also from `seed`), never
/// within `quiet_s` of the previous one's end. No fault in the first tenth of the run, and
/// every fault over before the last quarter, so that recovery is seen. `None` in `kinds` is
/// ignored.
pub fn schedule(kinds: &[FaultKind], seed: u64, spacing: Spacing) -> Vec<Planned> {
    let Spacing {
        duration_s,
        every_s,
        length_s,
        quiet_s,
    } = spacing;
    let kinds: Vec<FaultKind> = kinds.iter().copied().filter(|k| *k != FaultKind::None).collect();
    if kinds.is_empty() || every_s <= 0.0 {
        return Vec::new();
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let first = (duration_s * 0.1).max(1.0);
    let last_end = duration_s * 0.75;
    let mut plan = Vec::new();
    let mut slot = first + every_s * 0.5;
    let mut free_from = first;
    loop {
        let jitter = (rng.f64() - 0.5) * 0.5 * every_s;
        // Never while the previous fault lasts, nor before its quiet time is over.
        let at = (slot + jitter).max(free_from);
        let kind = kinds[rng.usize(..kinds.len())];
        let length = if kind.lasts() { length_s } else { 0.0 };
        if at + length > last_end {
            break;
        }
        free_from = at + length + quiet_s.max(0.5);
        plan.push(Planned {
            kind,
            at_s: round_ms(at),
            length_s: length,
        });
        slot += every_s;
    }
    plan
}

/// Each fault of `kinds` once, in that order: the part of the run where faults may fall
/// (after the first tenth, over before the last quarter, as in [`schedule`]) is cut into
/// equal slots, one per fault, each fault in the middle of its slot. `None` is ignored.
pub fn in_order(kinds: &[FaultKind], spacing: Spacing) -> Vec<Planned> {
    let kinds: Vec<FaultKind> = kinds.iter().copied().filter(|k| *k != FaultKind::None).collect();
    if kinds.is_empty() {
        return Vec::new();
    }
    let first = (spacing.duration_s * 0.1).max(1.0);
    let last_end = spacing.duration_s * 0.75;
    let slot = (last_end - first).max(0.0) / kinds.len() as f64;
    kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let length = if kind.lasts() {
                spacing.length_s.min(slot)
            } else {
                0.0
            };
            Planned {
                kind,
                at_s: round_ms(first + slot * (i as f64 + 0.5) - length / 2.0),
                length_s: length,
            }
        })
        .collect()
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A fault as it was played.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Played {
    /// What.
    pub kind: FaultKind,
    /// When it started, in seconds from the start of the run.
    pub start_s: f64,
    /// When it was over (lifted, or the restart done).
    pub end_s: f64,
    /// What was done, or why it could not be.
    pub detail: String,
    /// When the first API request sent after the fault ended succeeded (filled in at the end).
    pub recovered_s: Option<f64>,
    /// The same for the first write (a POST): after a failover, the first write the
    /// promoted server took.
    pub write_recovered_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spacing(duration_s: f64, every_s: f64, length_s: f64, quiet_s: f64) -> Spacing {
        Spacing {
            duration_s,
            every_s,
            length_s,
            quiet_s,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let kinds = [FaultKind::Kill, FaultKind::Terminate, FaultKind::Blackhole];
        let a = schedule(&kinds, 7, spacing(60.0, 6.0, 2.0, 1.0));
        assert_eq!(a, schedule(&kinds, 7, spacing(60.0, 6.0, 2.0, 1.0)));
        assert_ne!(a, schedule(&kinds, 8, spacing(60.0, 6.0, 2.0, 1.0)));
        assert!(a.len() >= 5, "{a:?}");
    }

    #[test]
    fn faults_keep_clear_of_the_start_and_the_last_quarter_and_are_in_order() {
        for seed in 0..200 {
            let plan = schedule(
                &[FaultKind::Blackhole, FaultKind::Kill],
                seed,
                spacing(20.0, 4.0, 2.0, 1.5),
            );
            assert!(!plan.is_empty(), "seed {seed}");
            for (i, f) in plan.iter().enumerate() {
                assert!(f.at_s >= 2.0 && f.at_s + f.length_s <= 15.0, "seed {seed}: {f:?}");
                assert_eq!(f.length_s, if f.kind == FaultKind::Blackhole { 2.0 } else { 0.0 });
                if i > 0 {
                    let before = plan[i - 1];
                    let quiet_from = before.at_s + before.length_s + 1.5 - 0.001;
                    assert!(f.at_s >= quiet_from, "seed {seed}: {plan:?}");
                }
            }
        }
    }

    #[test]
    fn in_order_plays_each_fault_once_in_the_order_given() {
        let kinds = [
            FaultKind::Kill,
            FaultKind::None,
            FaultKind::Blackhole,
            FaultKind::Restart,
        ];
        let plan = in_order(&kinds, spacing(20.0, 5.0, 2.0, 1.0));
        let played: Vec<FaultKind> = plan.iter().map(|p| p.kind).collect();
        assert_eq!(
            played,
            [FaultKind::Kill, FaultKind::Blackhole, FaultKind::Restart]
        );
        for pair in plan.windows(2) {
            assert!(pair[0].at_s + pair[0].length_s < pair[1].at_s, "{plan:?}");
        }
        assert!(
            plan[0].at_s >= 2.0 && plan[2].at_s + plan[2].length_s <= 15.0,
            "{plan:?}"
        );
        assert_eq!(plan[1].length_s, 2.0);
        assert!(in_order(&[FaultKind::None], spacing(20.0, 5.0, 2.0, 1.0)).is_empty());
    }

    #[test]
    fn no_fault_kinds_means_no_faults() {
        assert!(schedule(&[FaultKind::None], 1, spacing(60.0, 5.0, 2.0, 1.0)).is_empty());
        assert!(schedule(&[], 1, spacing(60.0, 5.0, 2.0, 1.0)).is_empty());
    }
}
