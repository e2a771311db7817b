//! The console's pages: what each shows, gathered from the pools, the sampled history, the
//! recent events and the task queue, and rendered by the templates in `templates/`.
//! Everything a person reads is escaped by the templates; the database being down leaves
//! the pool and event sections standing and says why the task sections are missing.

use std::time::{Duration, SystemTime};

use askama::Template;
use holdfast::tasks::{TaskFilter, TaskRecord, TaskState};

use super::chart::{self, Chart};
use super::events::{self, RecentEvent};
use super::history::COUNTERS;
use super::Console;

/// How many failed tasks the page lists (newest first), each with its attempts.
pub const FAILED_SHOWN: i64 = 20;
/// How many running tasks the page lists.
pub const RUNNING_SHOWN: i64 = 50;
/// Seconds between the page's own refreshes.
pub const REFRESH_S: u32 = 5;

/// The console's main page.
#[derive(Debug, Template)]
#[template(path = "console.html")]
pub struct ConsolePage {
    /// Seconds between refreshes.
    pub refresh_s: u32,
    /// Each pool: counts now, chart, reachability.
    pub pools: Vec<PoolView>,
    /// The fault counters: what, since start, in the chart's window (`None` without a
    /// recorder).
    pub counters: Option<Vec<(String, u64, u64)>>,
    /// The task sections, or why they are missing.
    pub tasks: Result<TasksView, String>,
    /// The recent events, newest first.
    pub events: Vec<EventView>,
    /// The anti-forgery field of the page's forms.
    pub form: String,
    /// A note on the last action (from the query string), if any.
    pub notice: Option<String>,
}

/// One pool.
#[derive(Debug)]
pub struct PoolView {
    /// Its name (`api`, `assembly`, `tasks`, `replica`).
    pub name: String,
    /// Its counts now.
    pub status: holdfast::pool::PoolStatus,
    /// Why the database is unreachable, with for how long, if it is.
    pub down: Option<String>,
    /// Its counts over the last minutes.
    pub chart: Chart,
}

/// The task sections.
#[derive(Debug, Default)]
pub struct TasksView {
    /// Tasks by state (every state, zeros included).
    pub by_state: Vec<(&'static str, i64)>,
    /// Unfinished tasks by kind: kind, available, waiting to retry, running, oldest due.
    pub by_kind: Vec<(String, i64, i64, i64, String)>,
    /// Running tasks.
    pub running: Vec<RunningView>,
    /// Failed tasks, newest first, with their attempts.
    pub failed: Vec<FailedView>,
}

/// A running task.
#[derive(Debug)]
pub struct RunningView {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// `attempt/max`.
    pub attempt: String,
    /// The worker holding it.
    pub owner: String,
    /// Its progress, `42%` and its message.
    pub progress: String,
    /// A cancel was asked for.
    pub cancel_requested: bool,
}

/// A failed task.
#[derive(Debug)]
pub struct FailedView {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// `attempt/max`.
    pub attempt: String,
    /// How long ago it failed.
    pub failed_ago: String,
    /// Its last error.
    pub error: String,
    /// Its ended attempts, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One ended attempt.
#[derive(Debug)]
pub struct AttemptView {
    /// Its number.
    pub number: i32,
    /// The worker that ran it.
    pub owner: String,
    /// How it ended.
    pub outcome: String,
    /// How long it ran.
    pub ran: String,
    /// Its error.
    pub error: String,
}

/// One recent event.
#[derive(Debug)]
pub struct EventView {
    /// How long ago.
    pub ago: String,
    /// Its level.
    pub level: &'static str,
    /// Where it was logged.
    pub target: String,
    /// What it says.
    pub text: String,
}

/// The sign-in page (also what an unauthenticated request to a page gets).
#[derive(Debug, Template)]
#[template(path = "console_login.html")]
pub struct LoginPage {
    /// Why the last attempt failed, if one did.
    pub problem: Option<String>,
}

/// A refusal or a failed action, in words.
#[derive(Debug, Template)]
#[template(path = "console_message.html")]
pub struct MessagePage {
    /// The heading.
    pub title: String,
    /// The explanation.
    pub text: String,
}

impl ConsolePage {
    /// Gathers the page.
    pub async fn gather(console: &Console, notice: Option<String>) -> ConsolePage {
        let (pools, counters) = {
            let history = console.history.lock().unwrap_or_else(|p| p.into_inner());
            let pools = console
                .pools
                .iter()
                .map(|pool| {
                    let name = pool.config().name.clone();
                    let samples = history
                        .pools()
                        .iter()
                        .find(|h| h.name == name)
                        .map(|h| &h.samples);
                    let down = pool.down().map(|d| {
                        format!(
                            "{} (unreachable for {}, {} failed attempts)",
                            d.cause,
                            ago(d.for_how_long),
                            d.failures
                        )
                    });
                    PoolView {
                        name,
                        status: pool.status(),
                        down,
                        chart: samples
                            .map(chart::draw)
                            .unwrap_or_else(|| chart::draw(&Default::default())),
                    }
                })
                .collect();
            let counters = history.counters().map(|values| {
                COUNTERS
                    .iter()
                    .zip(values)
                    .map(|(c, (total, window))| (c.what.to_string(), total as u64, window as u64))
                    .collect()
            });
            (pools, counters)
        };
        let now = SystemTime::now();
        let events = events::recent()
            .into_iter()
            .map(|e: RecentEvent| EventView {
                ago: ago(now.duration_since(e.at).unwrap_or_default()),
                level: e.level,
                target: e.target,
                text: e.text,
            })
            .collect();
        ConsolePage {
            refresh_s: REFRESH_S,
            pools,
            counters,
            tasks: tasks(console).await,
            events,
            form: console.keys.form_field().to_string(),
            notice,
        }
    }
}

/// The task sections, read through the API pool within [`super::DB_BUDGET`].
async fn tasks(console: &Console) -> Result<TasksView, String> {
    let read = async {
        let conn = console
            .data
            .get_timeout(super::DB_BUDGET)
            .await
            .map_err(|e| e.to_string())?;
        let queue = &console.queue;
        let counts = queue.counts(&conn).await.map_err(|e| e.to_string())?;
        let stats = queue.stats(&conn).await.map_err(|e| e.to_string())?;
        let running = queue
            .list(
                &conn,
                &TaskFilter::new().state(TaskState::Running).limit(RUNNING_SHOWN),
            )
            .await
            .map_err(|e| e.to_string())?;
        let failed = queue
            .list(
                &conn,
                &TaskFilter::new().state(TaskState::Failed).limit(FAILED_SHOWN),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut failed_views = Vec::with_capacity(failed.len());
        for task in failed {
            let attempts = queue.attempts(&conn, task.id).await.map_err(|e| e.to_string())?;
            failed_views.push(failed_view(task, attempts));
        }
        Ok::<_, String>(TasksView {
            by_state: TaskState::ALL
                .iter()
                .map(|st| (st.as_str(), counts.get(st).copied().unwrap_or(0)))
                .collect(),
            by_kind: stats
                .into_iter()
                .map(|k| {
                    let due = k.oldest_due.map(ago).unwrap_or_else(|| "-".into());
                    (k.kind, k.available, k.retry_wait, k.running, due)
                })
                .collect(),
            running: running.into_iter().map(running_view).collect(),
            failed: failed_views,
        })
    };
    match tokio::time::timeout(super::DB_BUDGET, read).await {
        Ok(read) => read,
        Err(_) => Err(format!(
            "the database did not answer within {} ms",
            super::DB_BUDGET.as_millis()
        )),
    }
}

fn running_view(task: TaskRecord) -> RunningView {
    let progress = match (task.progress_percent, &task.progress_message) {
        (Some(p), Some(m)) => format!("{p:.0}% {m}"),
        (Some(p), None) => format!("{p:.0}%"),
        (None, Some(m)) => m.clone(),
        (None, None) => "-".into(),
    };
    RunningView {
        id: task.id,
        kind: task.kind,
        attempt: format!("{}/{}", task.attempt, task.max_attempts),
        owner: task.lease_owner.unwrap_or_else(|| "-".into()),
        progress,
        cancel_requested: task.cancel_requested,
    }
}

fn failed_view(task: TaskRecord, attempts: Vec<holdfast::tasks::AttemptRecord>) -> FailedView {
    let failed_ago = task
        .finished_at
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map(ago)
        .unwrap_or_else(|| "-".into());
    FailedView {
        id: task.id,
        kind: task.kind,
        attempt: format!("{}/{}", task.attempt, task.max_attempts),
        failed_ago,
        error: task.last_error.unwrap_or_default(),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                number: a.attempt,
                owner: a.owner.unwrap_or_else(|| "-".into()),
                ran: a
                    .started_at
                    .and_then(|s| a.finished_at.duration_since(s).ok())
                    .map(|d| format!("{} ms", d.as_millis()))
                    .unwrap_or_else(|| "-".into()),
                outcome: a.outcome,
                error: a.error.unwrap_or_default(),
            })
            .collect(),
    }
}

/// A duration in words: `3 s`, `4 min 10 s`, `2 h 5 min`.
pub fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_words() {
        assert_eq!(ago(Duration::from_millis(900)), "0 s");
        assert_eq!(ago(Duration::from_secs(250)), "4 min 10 s");
        assert_eq!(ago(Duration::from_secs(7500)), "2 h 5 min");
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let page = MessagePage {
            title: "<b>".into(),
            text: "<script>alert(1)</script>".into(),
        };
        let html = page.render().expect("renders");
        assert!(
            html.contains("&#60;script&#62;") && !html.contains("<script>alert"),
            "{html}"
        );
    }
}
