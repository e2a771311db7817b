//! The end checks, each a pass or a fail with what was found: nothing stuck, nothing lost or
//! doubled (the database against what the API acknowledged), no session left idle in a
//! transaction, API errors during and outside faults within their bounds, and recovery after
//! each fault.

use std::collections::HashMap;
use std::time::SystemTime;

use holdfast::Pool;

use crate::error::ServiceError;
use serde::Serialize;

use super::plan::{FaultKind, Played};
use super::traffic::{lock, Ledger, Outcome};

/// One end check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is checked, with its bound.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// The bounds the API checks hold the run to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// Most API requests failing during faults, percent.
    pub fault_error_pct: f64,
    /// Most API requests failing outside faults, percent.
    pub error_pct: f64,
    /// Longest time from a fault's end to the first success after it, seconds.
    pub recovery_s: f64,
    /// How long after recovery a fault may still fail requests (those sent before it
    /// recovered, failing by timeout): the slowest a request may take, seconds.
    pub tail_s: f64,
}

/// Fills in when the API recovered from each fault: the first success among requests sent
/// after the fault was over.
pub fn recoveries(played: &mut [Played], outcomes: &[Outcome]) {
    for fault in played.iter_mut() {
        let first = |writes_only: bool| {
            outcomes
                .iter()
                .filter(|o| o.ok && o.sent_s >= fault.end_s && (o.write || !writes_only))
                .map(|o| o.done_s)
                .min_by(f64::total_cmp)
        };
        fault.recovered_s = first(false);
        fault.write_recovered_s = first(true);
    }
}

/// Whether a request that finished at `t` finished while a fault (or its tail) was on.
fn during(played: &[Played], t: f64, tail_s: f64) -> bool {
    played.iter().any(|f| {
        let over = f.recovered_s.unwrap_or(f64::INFINITY).max(f.end_s) + tail_s;
        t >= f.start_s && t <= over
    })
}

/// Faults a service must absorb without a caller noticing: an outage of a connection or of
/// the server that is over well within a request's budget.
///
/// Not a failover or a switchover: a COMMIT in flight when the primary went away is asked
/// about on the promoted server, which may never have seen its transaction id and may have
/// given it to another transaction; holdfast-tx then reports the outcome unknown rather
/// than guess, and that caller is told so (503), which the error rates allow.
fn absorbed(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::Kill | FaultKind::Terminate | FaultKind::Restart)
}

/// No API error and no ERROR log line (`errors_at`: when each was logged, in seconds of the
/// run; `None` when the run cannot see the service's log) during a kill, terminate or
/// restart. Blackholes and latency longer than a request's budget may fail requests; they
/// are held to the rates of [`api_checks`].
pub fn absorbed_checks(
    played: &[Played],
    outcomes: &[Outcome],
    errors_at: Option<&[f64]>,
    tail_s: f64,
) -> Vec<Check> {
    let brief: Vec<Played> = played.iter().filter(|f| absorbed(f.kind)).cloned().collect();
    if brief.is_empty() {
        return Vec::new();
    }
    let (mut total, mut failed) = (0u64, 0u64);
    for o in outcomes.iter().filter(|o| during(&brief, o.done_s, tail_s)) {
        total += 1;
        failed += u64::from(!o.ok);
    }
    let mut checks = vec![Check::new(
        "no API error during kill, terminate and restart",
        failed == 0,
        format!("{failed} of {total} requests failed"),
    )];
    if let Some(errors_at) = errors_at {
        let lines = errors_at.iter().filter(|t| during(&brief, **t, tail_s)).count();
        checks.push(Check::new(
            "no ERROR line during kill, terminate and restart",
            lines == 0,
            format!(
                "{lines} ERROR lines in the log then ({} in the whole run)",
                errors_at.len()
            ),
        ));
    }
    checks
}

/// The API checks: error rates during and outside faults, recovery after each fault.
pub fn api_checks(played: &[Played], outcomes: &[Outcome], bounds: Bounds) -> Vec<Check> {
    let (mut in_total, mut in_failed, mut out_total, mut out_failed) = (0u64, 0u64, 0u64, 0u64);
    for o in outcomes {
        let (total, failed) = if during(played, o.done_s, bounds.tail_s) {
            (&mut in_total, &mut in_failed)
        } else {
            (&mut out_total, &mut out_failed)
        };
        *total += 1;
        *failed += u64::from(!o.ok);
    }
    let pct = |failed: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            failed as f64 * 100.0 / total as f64
        }
    };
    let mut checks = Vec::new();
    let during_pct = pct(in_failed, in_total);
    checks.push(Check::new(
        format!("API errors during faults at most {}%", bounds.fault_error_pct),
        during_pct <= bounds.fault_error_pct,
        if played.is_empty() {
            "no faults played".to_string()
        } else {
            format!("{in_failed} of {in_total} requests failed ({during_pct:.2}%)")
        },
    ));
    let outside_pct = pct(out_failed, out_total);
    checks.push(Check::new(
        format!("API errors outside faults at most {}%", bounds.error_pct),
        outside_pct <= bounds.error_pct && out_total > 0,
        format!("{out_failed} of {out_total} requests failed ({outside_pct:.2}%)"),
    ));
    let mut worst: f64 = 0.0;
    let mut lines = Vec::new();
    let mut all_recovered = true;
    for f in played {
        match f.recovered_s {
            Some(at) => {
                let took = (at - f.end_s).max(0.0);
                worst = worst.max(took);
                // After a promotion, the first write is the figure that matters.
                let write = match f.write_recovered_s {
                    Some(w) if f.kind.needs_standby() => {
                        format!(" (first write {:.3} s)", (w - f.end_s).max(0.0))
                    }
                    _ => String::new(),
                };
                lines.push(format!(
                    "{} at {:.1} s: {:.3} s{write}",
                    f.kind.as_str(),
                    f.start_s,
                    took
                ));
            }
            None => {
                all_recovered = false;
                lines.push(format!("{} at {:.1} s: never", f.kind.as_str(), f.start_s));
            }
        }
    }
    checks.push(Check::new(
        format!("API recovers within {} s of each fault", bounds.recovery_s),
        all_recovered && worst <= bounds.recovery_s,
        if lines.is_empty() {
            "no faults played".to_string()
        } else {
            lines.join("; ")
        },
    ));
    checks
}

/// The database checks, read directly (not through the proxy) once the run is over.
pub async fn data_checks(
    admin: &Pool,
    schema: &str,
    since: SystemTime,
    ledger: &Ledger,
) -> Result<Vec<Check>, ServiceError> {
    let conn = admin.get().await?;
    let db = ServiceError::database("end checks");
    let mut checks = Vec::new();
    let titles = format!("load {} %", ledger.tag);

    // Nothing stuck.
    let open: Vec<(String, i64)> = conn
        .query(
            &format!(
                "SELECT state::text, count(*) FROM {schema}.tasks
                 WHERE kind = 'assemble' AND created_at >= $1
                   AND state NOT IN ('succeeded', 'failed', 'cancelled')
                 GROUP BY 1 ORDER BY 1"
            ),
            &[&since],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let episodes_open: i64 = conn
        .query_one(
            "SELECT count(*) FROM episodes WHERE title LIKE $1 AND status IN ('queued', 'assembling')",
            &[&titles],
        )
        .await
        .map_err(db)?
        .get(0);
    let open_text: Vec<String> = open.iter().map(|(s, n)| format!("{n} {s}")).collect();
    checks.push(Check::new(
        "no task or episode stuck",
        open.is_empty() && episodes_open == 0,
        format!(
            "unfinished tasks: {}; episodes still queued or assembling: {episodes_open}",
            if open_text.is_empty() {
                "none".to_string()
            } else {
                open_text.join(", ")
            }
        ),
    ));

    // Nothing lost: every acknowledged episode with all its segments, every acknowledged
    // assembly with its task, every assembled episode with one transcript line per segment.
    let acked: Vec<(i64, String, i64)> = lock(&ledger.episodes)
        .iter()
        .filter_map(|e| e.id.map(|id| (id, e.title.clone(), e.segments)))
        .collect();
    let ids: Vec<i64> = acked.iter().map(|a| a.0).collect();
    let stored: HashMap<i64, (String, i64, String, i64)> = conn
        .query(
            "SELECT e.id, e.title, (SELECT count(*) FROM segments s WHERE s.episode_id = e.id),
                    e.status, (SELECT count(*) FROM transcript_lines t WHERE t.episode_id = e.id)
             FROM episodes e WHERE e.id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect();
    let mut lost = Vec::new();
    for (id, title, segments) in &acked {
        match stored.get(id) {
            None => lost.push(format!("episode {id} missing")),
            Some((t, n, _, _)) if t != title || n != segments => lost.push(format!(
                "episode {id} has {n} of {segments} segments or another title"
            )),
            Some((_, n, status, lines)) if status == "assembled" && lines < n => lost.push(format!(
                "episode {id} assembled with {lines} of {n} transcript lines"
            )),
            Some(_) => {}
        }
    }
    let started = lock(&ledger.started).clone();
    let task_ids: Vec<i64> = started.iter().filter_map(|s| s.task).collect();
    let tasks: HashMap<i64, i64> = conn
        .query(
            &format!("SELECT id, (payload->>'episode')::bigint FROM {schema}.tasks WHERE id = ANY($1)"),
            &[&task_ids],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for s in &started {
        if let Some(task) = s.task {
            if tasks.get(&task) != Some(&s.episode) {
                lost.push(format!("task {task} of episode {} missing", s.episode));
            }
        }
    }
    checks.push(Check::new(
        "nothing acknowledged is lost",
        lost.is_empty(),
        if lost.is_empty() {
            format!(
                "{} episodes and {} assemblies acknowledged, all there",
                acked.len(),
                started.len()
            )
        } else {
            lost.join("; ")
        },
    ));

    // Nothing doubled: no title twice, no episode with two assembly tasks, no episode with
    // more transcript lines than segments.
    let twice_titles: i64 = conn
        .query_one(
            "SELECT count(*) FROM (SELECT title FROM episodes WHERE title LIKE $1 GROUP BY title HAVING count(*) > 1) d",
            &[&titles],
        )
        .await
        .map_err(db)?
        .get(0);
    let twice_tasks: i64 = conn
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT payload->>'episode' FROM {schema}.tasks
                 WHERE kind = 'assemble' AND created_at >= $1 GROUP BY 1 HAVING count(*) > 1) d"
            ),
            &[&since],
        )
        .await
        .map_err(db)?
        .get(0);
    let extra_lines = stored.values().filter(|(_, n, _, lines)| lines > n).count();
    checks.push(Check::new(
        "nothing is doubled",
        twice_titles == 0 && twice_tasks == 0 && extra_lines == 0,
        format!(
            "episodes created twice: {twice_titles}; episodes with two assembly tasks: {twice_tasks}; episodes with extra transcript lines: {extra_lines}"
        ),
    ));

    // Every assembly started was completed.
    let started_ids: Vec<i64> = started.iter().map(|s| s.episode).collect();
    let by_status: Vec<(String, i64)> = conn
        .query(
            "SELECT status, count(*) FROM episodes WHERE id = ANY($1) GROUP BY 1 ORDER BY 1",
            &[&started_ids],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let assembled = by_status
        .iter()
        .find(|(s, _)| s == "assembled")
        .map_or(0, |(_, n)| *n);
    checks.push(Check::new(
        "every assembly started is completed",
        assembled == started_ids.len() as i64 && !started_ids.is_empty(),
        format!(
            "{} started: {}",
            started_ids.len(),
            by_status
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    // No session idle in a transaction.
    let idle_in_tx: Vec<String> = conn
        .query(
            "SELECT application_name, extract(epoch FROM now() - state_change)::float8, left(query, 60)
             FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let (app, idle, query): (String, f64, String) = (r.get(0), r.get(1), r.get(2));
            format!("{app:?} idle {idle:.1} s after {query:?}")
        })
        .collect();
    checks.push(Check::new(
        "no session left idle in a transaction",
        idle_in_tx.is_empty(),
        if idle_in_tx.is_empty() {
            "none".to_string()
        } else {
            format!("{}: {}", idle_in_tx.len(), idle_in_tx.join("; "))
        },
    ));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::load::plan::FaultKind;

    fn outcome(sent_s: f64, done_s: f64, ok: bool) -> Outcome {
        Outcome {
            sent_s,
            done_s,
            result: Ok(if ok { 200 } else { 503 }),
            ok,
            write: false,
        }
    }

    fn kill_at(t: f64) -> Played {
        Played {
            kind: FaultKind::Kill,
            start_s: t,
            end_s: t,
            detail: String::new(),
            recovered_s: None,
            write_recovered_s: None,
        }
    }

    const BOUNDS: Bounds = Bounds {
        fault_error_pct: 20.0,
        error_pct: 1.0,
        recovery_s: 1.0,
        tail_s: 0.5,
    };

    #[test]
    fn recovery_is_the_first_success_sent_after_the_fault() {
        let outcomes = [
            outcome(4.9, 5.1, false),
            outcome(5.0, 5.3, true), // sent before the fault was over: does not count
            outcome(5.2, 5.6, false),
            outcome(5.4, 5.7, true),
            outcome(5.5, 5.65, true),
        ];
        let mut played = [kill_at(5.0), kill_at(9.0)];
        played[0].start_s = 4.95;
        played[0].end_s = 5.05;
        recoveries(&mut played, &outcomes);
        assert_eq!(played[0].recovered_s, Some(5.65));
        assert_eq!(played[1].recovered_s, None);
        let checks = api_checks(&played, &outcomes, BOUNDS);
        assert!(
            !checks[2].passed,
            "a fault never recovered from fails: {checks:?}"
        );
        assert!(checks[2].detail.contains("never"));
    }

    #[test]
    fn errors_are_counted_in_the_fault_window_or_outside_it() {
        let mut outcomes: Vec<Outcome> = (0..100)
            .map(|i| outcome(f64::from(i) * 0.1, f64::from(i) * 0.1 + 0.01, true))
            .collect();
        outcomes.push(outcome(4.9, 5.05, false)); // during the fault
        let mut played = [kill_at(5.0)];
        recoveries(&mut played, &outcomes);
        let checks = api_checks(&played, &outcomes, BOUNDS);
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        assert!(checks[0].detail.starts_with("1 of "), "{checks:?}");
        assert!(checks[1].detail.starts_with("0 of "), "{checks:?}");
        // One failure far from any fault breaks the outside bound of 1% of ~95 requests.
        outcomes.push(outcome(8.0, 8.01, false));
        outcomes.push(outcome(8.0, 8.01, false));
        let checks = api_checks(&played, &outcomes, BOUNDS);
        assert!(!checks[1].passed, "{checks:?}");
    }

    #[test]
    fn kill_terminate_and_restart_must_cost_no_request_and_no_error_line() {
        let outcomes = vec![
            outcome(1.0, 1.01, true),
            outcome(5.0, 5.02, false), // during the kill
            outcome(5.1, 5.11, true),  // recovered
            outcome(9.0, 9.02, false), // during the blackhole: held to the rates only
            outcome(9.1, 9.11, true),
        ];
        let mut played = vec![kill_at(5.0), kill_at(9.0)];
        played[1].kind = FaultKind::Blackhole;
        recoveries(&mut played, &outcomes);
        let checks = absorbed_checks(&played, &outcomes, Some(&[9.0]), 0.5);
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert!(
            !checks[0].passed && checks[0].detail.starts_with("1 of "),
            "{checks:?}"
        );
        assert!(
            checks[1].passed,
            "an ERROR line in the blackhole does not count: {checks:?}"
        );
        let fine: Vec<Outcome> = outcomes.iter().filter(|o| o.ok).cloned().collect();
        let checks = absorbed_checks(&played, &fine, Some(&[5.01]), 0.5);
        assert!(checks[0].passed, "{checks:?}");
        assert!(
            !checks[1].passed,
            "an ERROR line during the kill fails: {checks:?}"
        );
        played.retain(|f| f.kind == FaultKind::Blackhole);
        assert!(absorbed_checks(&played, &outcomes, None, 0.5).is_empty());
    }
}
