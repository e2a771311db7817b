//! Periodic tasks: a cron expression and a task template; every slot of the schedule
//! enqueues the task once, however many workers run the schedule, through a row per
//! schedule (`<schema>.periodic`, its next slot) that a transaction locks and advances
//! together with the enqueue.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use croner::Cron;
use holdfast_pool::Pool;
use holdfast_tx::{TransactionExt, TxOptions};
use tokio_postgres::types::Type;

use crate::error::TaskError;
use crate::queue::Queue;
use crate::task::{NewTask, TaskId};

/// What a schedule does about slots that passed while no worker ran it (a deploy, an
/// outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// Enqueue one task for the latest passed slot, however many passed (the default).
    #[default]
    RunLatest,
    /// Enqueue nothing for them; wait for the next slot. A slot that has just come is
    /// still run.
    Skip,
}

/// A task enqueued on a cron schedule, given to [`Worker::periodic`](crate::Worker::periodic)
/// (or run by hand with [`Queue::enqueue_due`]).
#[derive(Clone)]
pub struct Periodic {
    name: String,
    expression: String,
    schedule: Cron,
    task: NewTask,
    missed: Missed,
}

impl fmt::Debug for Periodic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("expression", &self.expression)
            .field("kind", &self.task.kind)
            .field("missed", &self.missed)
            .finish()
    }
}

impl Periodic {
    /// The schedule `name` (its identity across workers and deploys): `task` at every slot of
    /// `expression`, a cron expression in UTC (`minute hour day-of-month month day-of-week`,
    /// or with a seconds field first). Each task is enqueued with `run_at` its slot.
    ///
    /// ```
    /// use holdfast::tasks::{NewTask, Periodic};
    /// let nightly = Periodic::new("nightly-report", "0 3 * * *", NewTask::new("report", serde_json::json!({})))?;
    /// # Ok::<(), holdfast::TaskError>(())
    /// ```
    pub fn new(name: &str, expression: &str, task: NewTask) -> Result<Periodic, TaskError> {
        let schedule = Cron::from_str(expression).map_err(|e| {
            TaskError::invalid(
                format!("the schedule of periodic task {name:?}"),
                format!("{expression:?} ({e})"),
                "a cron expression: minute hour day-of-month month day-of-week, \
                 optionally with a seconds field first, such as \"0 3 * * *\"",
            )
        })?;
        if name.is_empty() {
            return Err(TaskError::invalid(
                "Periodic name",
                "an empty name",
                "a name that identifies the schedule",
            ));
        }
        Ok(Periodic {
            name: name.to_string(),
            expression: expression.to_string(),
            schedule,
            task,
            missed: Missed::default(),
        })
    }

    /// What to do about slots that passed while no worker ran the schedule.
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first slot strictly after `at`.
    fn next_after(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>, TaskError> {
        self.schedule
            .find_next_occurrence(&at, false)
            .map_err(|e| self.no_slot(e))
    }

    /// The latest slot at or before `at`.
    fn latest_at(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>, TaskError> {
        self.schedule
            .find_previous_occurrence(&at, true)
            .map_err(|e| self.no_slot(e))
    }

    fn no_slot(&self, e: croner::errors::CronError) -> TaskError {
        TaskError::invalid(
            format!("the schedule of periodic task {:?}", self.name),
            format!("{:?} (no slot: {e})", self.expression),
            "a cron expression that has slots",
        )
    }
}

impl Queue {
    /// Enqueues each of `periodic` whose slot has come at `now`, once across every worker
    /// that calls this (each schedule's row is locked and advanced in the transaction that
    /// enqueues). A schedule seen for the first time starts at its first slot after `now`.
    /// Workers call it on their own; tests call it with a clock of their own. Returns the
    /// ids enqueued.
    pub async fn enqueue_due(
        &self,
        pool: &Pool,
        periodic: &[Periodic],
        now: SystemTime,
    ) -> Result<Vec<TaskId>, TaskError> {
        let now: DateTime<Utc> = now.into();
        let mut enqueued = Vec::new();
        for p in periodic {
            let first: SystemTime = p.next_after(now)?.into();
            let s = self.schema();
            let (queue, first) = (self, &first);
            let id = pool
                .transaction(TxOptions::new(), move |tx| {
                    Box::pin(async move {
                        tx.execute_typed(
                            &format!(
                                "INSERT INTO {s}.periodic (name, next_slot) VALUES ($1, $2)
                                 ON CONFLICT (name) DO NOTHING"
                            ),
                            &[(&p.name, Type::TEXT), (first, Type::TIMESTAMPTZ)],
                        )
                        .await?;
                        let row = tx
                            .query_typed(
                                &format!("SELECT next_slot FROM {s}.periodic WHERE name = $1 FOR UPDATE"),
                                &[(&p.name, Type::TEXT)],
                            )
                            .await?;
                        let Some(next) = row.first().map(|r| r.get::<_, SystemTime>(0)) else {
                            return Ok(None);
                        };
                        let next: DateTime<Utc> = next.into();
                        if next > now {
                            return Ok(None);
                        }
                        let latest = p.latest_at(now)?;
                        let missed = latest > next;
                        let id = if missed && p.missed == Missed::Skip {
                            tracing::info!(schedule = %p.name, "slots missed while no worker ran the schedule: skipped");
                            None
                        } else {
                            let task = p.task.clone().run_at(latest.into());
                            queue.enqueue(tx, &task).await?
                        };
                        let after: SystemTime = p.next_after(now)?.into();
                        tx.execute_typed(
                            &format!("UPDATE {s}.periodic SET next_slot = $2, updated_at = now() WHERE name = $1"),
                            &[(&p.name, Type::TEXT), (&after, Type::TIMESTAMPTZ)],
                        )
                        .await?;
                        Ok::<_, TaskError>(id)
                    })
                })
                .await
                .map_err(|e| match e.into_closure() {
                    Ok(inner) => inner,
                    Err(tx) => TaskError::Transaction(tx.widen()),
                })?;
            enqueued.extend(id);
        }
        Ok(enqueued)
    }
}
