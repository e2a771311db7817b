//! `holdfast tasks`: look at and act on a task queue from a shell, on `DATABASE_URL` (and
//! the `DB_*` settings) and `TASK_SCHEMA`, as a service running the queue sees them.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use holdfast::tasks::{Queue, TaskFilter, TaskId, TaskRecord, TaskState};
use holdfast::{Pool, PoolConfig};

use crate::error::ServiceError;

/// What to do with the queue.
#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TasksCommand {
    /// Tasks, newest first, filtered and paged.
    List {
        /// Only tasks in this state (may be given several times).
        #[arg(long, value_parser = parse_state)]
        state: Vec<TaskState>,
        /// Only tasks of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// The page after the one that ended with this id.
        #[arg(long)]
        before: Option<TaskId>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One task, with its attempt history.
    Show {
        /// The task's id.
        id: TaskId,
    },
    /// Run a failed, cancelled or waiting task again now (one more attempt if it used
    /// them all); with --failed instead of an id, every failed task (of --kind).
    Retry {
        /// The task's id.
        #[arg(required_unless_present = "failed")]
        id: Option<TaskId>,
        /// Redrive every failed task.
        #[arg(long, conflicts_with = "id")]
        failed: bool,
        /// With --failed: only tasks of this kind.
        #[arg(long, requires = "failed")]
        kind: Option<String>,
    },
    /// Cancel a task: a waiting one at once, a running one at its next heartbeat.
    Cancel {
        /// The task's id.
        id: TaskId,
    },
    /// Delete a task that is not running, with its history.
    Delete {
        /// The task's id.
        id: TaskId,
    },
    /// Delete tasks finished in a final state more than --older-than-s seconds ago.
    Prune {
        /// succeeded, failed or cancelled.
        #[arg(long, value_parser = parse_state)]
        state: TaskState,
        /// Age in seconds.
        #[arg(long)]
        older_than_s: u64,
    },
    /// Unfinished tasks by kind, and how long the oldest due one has waited.
    Stats,
}

fn parse_state(text: &str) -> Result<TaskState, String> {
    text.parse().map_err(|_| {
        let accepted: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown task state {text:?}; accepted: {}", accepted.join(", "))
    })
}

/// Runs one `holdfast tasks` command; returns what to print.
pub async fn run(args: TasksArgs) -> Result<String, ServiceError> {
    let pool = Pool::new(PoolConfig::from_env()?.pool_size(1))?;
    let queue = Queue::from_env()?;
    let conn = pool.get().await?;
    let mut out = String::new();
    match args.command {
        TasksCommand::List {
            state,
            kind,
            before,
            limit,
        } => {
            let filter = TaskFilter {
                states: state,
                kind,
                before,
                limit,
            };
            let tasks = queue.list(&conn, &filter).await?;
            let _ = writeln!(
                out,
                "{:>10}  {:<20} {:<10} {:>7}  {:<20} last error",
                "id", "kind", "state", "attempt", "run at"
            );
            for t in &tasks {
                let _ = writeln!(
                    out,
                    "{:>10}  {:<20} {:<10} {:>3}/{:<3}  {:<20} {}",
                    t.id,
                    t.kind,
                    t.state,
                    t.attempt,
                    t.max_attempts,
                    ago(t.run_at),
                    t.last_error.as_deref().unwrap_or("")
                );
            }
            if tasks.len() as i64 == filter.limit {
                if let Some(last) = tasks.last() {
                    let _ = writeln!(out, "more: --before {}", last.id);
                }
            }
        }
        TasksCommand::Show { id } => {
            let Some(task) = queue.get(&conn, id).await? else {
                return Err(not_found(id));
            };
            show(&mut out, &task);
            let _ = writeln!(out, "attempts:");
            for a in queue.attempts(&conn, id).await? {
                let _ = writeln!(
                    out,
                    "  #{} {:<14} by {} ended {}{}",
                    a.attempt,
                    a.outcome,
                    a.owner.as_deref().unwrap_or("?"),
                    ago(a.finished_at),
                    a.error.map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
        }
        TasksCommand::Retry { id, failed, kind } => {
            if failed {
                let n = queue.retry_failed(&conn, kind.as_deref()).await?;
                let _ = writeln!(out, "{n} failed tasks queued again");
            } else if let Some(id) = id {
                if !queue.retry(&conn, id).await? {
                    return Err(ServiceError::Usage(format!(
                        "task {id} was not queued again: it is unknown, running or succeeded"
                    )));
                }
                let _ = writeln!(out, "task {id} queued again");
            }
        }
        TasksCommand::Cancel { id } => {
            if !queue.cancel(&conn, id).await? {
                return Err(ServiceError::Usage(format!(
                    "task {id} was not cancelled: it is unknown or already finished"
                )));
            }
            let _ = writeln!(
                out,
                "task {id} cancelled (a running one stops at its next heartbeat)"
            );
        }
        TasksCommand::Delete { id } => {
            if !queue.delete(&conn, id).await? {
                return Err(ServiceError::Usage(format!(
                    "task {id} was not deleted: it is unknown or running (cancel it first)"
                )));
            }
            let _ = writeln!(out, "task {id} deleted");
        }
        TasksCommand::Prune { state, older_than_s } => {
            let n = queue
                .prune(&conn, state, Duration::from_secs(older_than_s))
                .await?;
            let _ = writeln!(out, "{n} {state} tasks deleted");
        }
        TasksCommand::Stats => {
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>10} {:>10}  oldest due",
                "kind", "available", "retry_wait", "running"
            );
            for k in queue.stats(&conn).await? {
                let _ = writeln!(
                    out,
                    "{:<24} {:>10} {:>10} {:>10}  {}",
                    k.kind,
                    k.available,
                    k.retry_wait,
                    k.running,
                    k.oldest_due
                        .map(|d| format!("{:.1} s", d.as_secs_f64()))
                        .unwrap_or_default()
                );
            }
        }
    }
    drop(conn);
    pool.close().await;
    Ok(out)
}

fn show(out: &mut String, t: &TaskRecord) {
    let _ = writeln!(out, "task {} ({}): {}", t.id, t.kind, t.state);
    let _ = writeln!(
        out,
        "attempt {} of {}, priority {}",
        t.attempt, t.max_attempts, t.priority
    );
    let _ = writeln!(out, "payload: {}", t.payload);
    if let Some(key) = &t.unique_key {
        let _ = writeln!(out, "unique key: {key}");
    }
    let _ = writeln!(out, "created {}, run at {}", ago(t.created_at), ago(t.run_at));
    if let Some(finished) = t.finished_at {
        let _ = writeln!(out, "finished {}", ago(finished));
    }
    if let Some(owner) = &t.lease_owner {
        let _ = writeln!(out, "held by {owner}");
    }
    if let (Some(p), m) = (t.progress_percent, &t.progress_message) {
        let _ = writeln!(out, "progress {p:.0}% {}", m.as_deref().unwrap_or(""));
    }
    if let Some(e) = &t.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    if t.cancel_requested {
        let _ = writeln!(out, "cancel requested");
    }
}

/// "12.3 s ago" or "in 4.0 s".
fn ago(at: SystemTime) -> String {
    match SystemTime::now().duration_since(at) {
        Ok(past) => format!("{:.1} s ago", past.as_secs_f64()),
        Err(future) => format!("in {:.1} s", future.duration().as_secs_f64()),
    }
}

fn not_found(id: TaskId) -> ServiceError {
    ServiceError::Usage(format!("no task {id} in this queue (TASK_SCHEMA)"))
}
