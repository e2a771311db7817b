//! Episodes and their segments: validation, and the database work behind the API.

use holdfast::tasks::{NewTask, Queue, TaskRecord};
use holdfast::{Pool, TransactionExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::types::Type;

use crate::service::api_error::ApiError;
use crate::service::budget;

/// The task kind of an assembly.
pub const ASSEMBLE: &str = "assemble";

/// Limits on what a client may send.
pub const MAX_TITLE: usize = 200;
/// Most segments per episode.
pub const MAX_SEGMENTS: usize = 500;
/// Longest segment text, in characters.
pub const MAX_SEGMENT_TEXT: usize = 10_000;
/// Longest segment, in milliseconds.
pub const MAX_SEGMENT_MS: i32 = 3_600_000;

/// `POST /api/episodes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEpisode {
    /// 1 to 200 characters.
    pub title: String,
    /// 1 to 500 segments, in order.
    pub segments: Vec<NewSegment>,
}

/// One segment of a new episode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    /// What is said.
    pub text: String,
    /// 1 ms to one hour.
    pub duration_ms: i32,
}

/// An episode as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Its id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// draft, queued, assembling, assembled or failed.
    pub status: String,
    /// 0 to 100.
    pub progress: f32,
    /// Where the assembled episode is, once assembled.
    pub output_path: Option<String>,
    /// The assembly task, once one was started.
    pub task_id: Option<i64>,
    /// Why the assembly failed.
    pub error: Option<String>,
    /// Segments.
    pub segments: i64,
    /// Transcript lines written so far.
    pub transcript_lines: i64,
}

impl NewEpisode {
    /// Checks every limit; the error names the field and what is accepted.
    pub fn validate(&self) -> Result<(), ApiError> {
        no_nul("title", &self.title)?;
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(ApiError::BadRequest(format!(
                "title: must be 1 to {MAX_TITLE} characters"
            )));
        }
        if self.segments.is_empty() || self.segments.len() > MAX_SEGMENTS {
            return Err(ApiError::BadRequest(format!(
                "segments: must hold 1 to {MAX_SEGMENTS} segments, got {}",
                self.segments.len()
            )));
        }
        for (i, s) in self.segments.iter().enumerate() {
            no_nul(&format!("segments[{i}].text"), &s.text)?;
            if s.text.trim().is_empty() || s.text.chars().count() > MAX_SEGMENT_TEXT {
                return Err(ApiError::BadRequest(format!(
                    "segments[{i}].text: must be 1 to {MAX_SEGMENT_TEXT} characters"
                )));
            }
            if !(1..=MAX_SEGMENT_MS).contains(&s.duration_ms) {
                return Err(ApiError::BadRequest(format!(
                    "segments[{i}].duration_ms: must be 1 to {MAX_SEGMENT_MS}, got {}",
                    s.duration_ms
                )));
            }
        }
        Ok(())
    }
}

/// PostgreSQL's text cannot hold U+0000: refused here, naming the field, rather than by the
/// server as an internal error.
fn no_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{field}: must not contain the NUL character (U+0000), which PostgreSQL text cannot hold"
        )));
    }
    Ok(())
}

/// `q` as a literal inside a LIKE pattern: `%`, `_` and the escape character `\` itself
/// are escaped, so that they match only themselves.
fn like_literal(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses an id from a path segment.
pub fn parse_id(what: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest(format!("{what} id: expected a positive integer, got {raw:?}")))
}

/// Creates an episode with its segments, in one transaction.
pub async fn create_episode(pool: &Pool, episode: NewEpisode) -> Result<i64, ApiError> {
    episode.validate()?;
    let id = pool
        .transaction(budget::tx_options(), move |tx| {
            let episode = episode.clone();
            Box::pin(async move {
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO episodes (title) VALUES ($1) RETURNING id",
                        &[&episode.title.trim()],
                    )
                    .await?
                    .get(0);
                let texts: Vec<&str> = episode.segments.iter().map(|s| s.text.as_str()).collect();
                let durations: Vec<i32> = episode.segments.iter().map(|s| s.duration_ms).collect();
                tx.execute(
                    "INSERT INTO segments (episode_id, position, text, duration_ms)
                     SELECT $1, ord::int, text, duration_ms
                     FROM unnest($2::text[], $3::int[]) WITH ORDINALITY AS s(text, duration_ms, ord)",
                    &[&id, &texts, &durations],
                )
                .await?;
                Ok::<_, ApiError>(id)
            })
        })
        .await?;
    Ok(id)
}

/// Reads an episode.
pub async fn get_episode(pool: &Pool, id: i64) -> Result<Episode, ApiError> {
    // One statement in autocommit: pipelined with other readers on a shared connection, so
    // reads keep being served with few connections while assemblies hold theirs. A read:
    // run again on a fresh connection if its connection dies before the answer.
    let row = pool
        .read_typed_within(
            budget::left_or(pool.config().pool_timeout),
            "SELECT e.id, e.title, e.status, e.progress, e.output_path, e.task_id, e.error,
                    (SELECT count(*) FROM segments s WHERE s.episode_id = e.id),
                    (SELECT count(*) FROM transcript_lines t WHERE t.episode_id = e.id)
             FROM episodes e WHERE e.id = $1",
            &[(&id, Type::INT8)],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("episode {id} does not exist")))?;
    Ok(Episode {
        id: row.get(0),
        title: row.get(1),
        status: row.get(2),
        progress: row.get(3),
        output_path: row.get(4),
        task_id: row.get(5),
        error: row.get(6),
        segments: row.get(7),
        transcript_lines: row.get(8),
    })
}

/// Starts an assembly: the episode is queued and its task created in one transaction, so
/// neither exists without the other. An assembly already queued or running is a conflict.
pub async fn start_assembly(pool: &Pool, queue: &Queue, id: i64) -> Result<i64, ApiError> {
    let queue = queue.clone();
    let task = pool
        .transaction(budget::tx_options(), move |tx| {
            let queue = queue.clone();
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT status, task_id FROM episodes WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("episode {id} does not exist")))?;
                let status: String = row.get(0);
                if status == "queued" || status == "assembling" {
                    let task: Option<i64> = row.get(1);
                    return Err(ApiError::Conflict(format!(
                        "episode {id} is already being assembled (task {})",
                        task.map_or("?".into(), |t| t.to_string())
                    )));
                }
                let new =
                    NewTask::new(ASSEMBLE, json!({ "episode": id })).unique_key(format!("assemble-{id}"));
                let task = queue
                    .enqueue(tx, &new)
                    .await?
                    .ok_or_else(|| ApiError::Conflict(format!("episode {id} is already being assembled")))?;
                tx.execute(
                    "UPDATE episodes SET status = 'queued', progress = 0, error = NULL, task_id = $2,
                            output_path = NULL, updated_at = now()
                     WHERE id = $1",
                    &[&id, &task],
                )
                .await?;
                Ok::<_, ApiError>(task)
            })
        })
        .await?;
    Ok(task)
}

/// A task, read in a read-only transaction so that a lost connection is retried within the
/// request's budget like any other read.
pub async fn get_task(pool: &Pool, queue: &Queue, id: i64) -> Result<Option<TaskRecord>, ApiError> {
    let task = pool
        .transaction(budget::tx_options().read_only(), move |tx| {
            let queue = queue.clone();
            Box::pin(async move { Ok::<_, ApiError>(queue.get(tx, id).await?) })
        })
        .await?;
    Ok(task)
}

/// Intent hints whose phrase contains `q` (case-insensitive).
pub async fn intent_hints(pool: &Pool, q: &str) -> Result<Vec<(String, String)>, ApiError> {
    if q.chars().count() > 200 {
        return Err(ApiError::BadRequest("q: at most 200 characters".into()));
    }
    no_nul("q", q)?;
    let pattern = like_literal(q);
    let rows = pool
        .read_typed_within(
            budget::left_or(pool.config().pool_timeout),
            "SELECT phrase, intent FROM intent_hints
             WHERE phrase ILIKE '%' || $1 || '%' ESCAPE '\\' ORDER BY id LIMIT 20",
            &[(&pattern, Type::TEXT)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
