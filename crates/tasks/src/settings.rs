//! The settings of holdfast-tasks: each constant knows its environment variable, setter,
//! default, range, unit and meaning. [`WorkerConfig`](crate::WorkerConfig) takes its
//! defaults from here, reads the environment through these constants and checks values set
//! in code against them; the README's table is generated from [`SETTINGS`].

use holdfast_pool::settings::{AutoSpan, Choice, Count, Describe, Span, Text, Unit};

const DAY_MS: u64 = 86_400_000;

/// `TASK_CONCURRENCY`.
pub const CONCURRENCY: Count = Count {
    env: "TASK_CONCURRENCY",
    name: "concurrency",
    default: 4,
    min: 1,
    max: 4096,
    doc: "tasks a worker runs at once",
};

/// `TASK_CLAIM_BATCH`.
pub const CLAIM_BATCH: Count = Count {
    env: "TASK_CLAIM_BATCH",
    name: "claim_batch",
    default: 100,
    min: 1,
    max: 1000,
    doc: "most tasks one claim takes and one statement marks succeeded; a worker fetches ahead only what its slots start within about 20 ms at their recent pace, so long tasks are never hoarded; `1`: one task per claim and per write, nothing fetched ahead",
};

/// `TASK_LEASE_MS`.
pub const LEASE: Span = Span {
    env: "TASK_LEASE_MS",
    name: "lease",
    unit: Unit::Milliseconds,
    default: 30_000,
    min: 100,
    max: DAY_MS,
    zero_is_off: false,
    doc: "how long a claim or a heartbeat holds a task; a task whose lease runs out is rescued",
};

/// `TASK_HEARTBEAT_MS`.
pub const HEARTBEAT: AutoSpan = AutoSpan {
    env: "TASK_HEARTBEAT_MS",
    name: "heartbeat",
    unit: Unit::Milliseconds,
    max: DAY_MS,
    zero_is_off: false,
    doc: "time between heartbeats, below the lease; `auto`: a third of the lease",
};

/// `TASK_POLL_MS`.
pub const POLL_INTERVAL: Span = Span {
    env: "TASK_POLL_MS",
    name: "poll_interval",
    unit: Unit::Milliseconds,
    default: 1000,
    min: 10,
    max: 3_600_000,
    zero_is_off: false,
    doc: "how often an idle worker looks for work when no notification wakes it",
};

/// `TASK_LISTEN`.
pub const LISTEN: Choice = Choice {
    env: "TASK_LISTEN",
    name: "listen",
    default: "auto",
    choices: &["auto", "off"],
    doc: "`auto`: LISTEN for enqueues on a connection made like the control pool's (polling only behind a transaction pooler); `off`: poll only",
};

/// `TASK_SHUTDOWN_GRACE_MS`.
pub const SHUTDOWN_GRACE: Span = Span {
    env: "TASK_SHUTDOWN_GRACE_MS",
    name: "shutdown_grace",
    unit: Unit::Milliseconds,
    default: 30_000,
    min: 0,
    max: DAY_MS,
    zero_is_off: false,
    doc: "how long shutdown lets running tasks finish before stopping them and releasing their leases",
};

/// `TASK_RUN_TIMEOUT_MS`.
pub const RUN_TIMEOUT: Span = Span {
    env: "TASK_RUN_TIMEOUT_MS",
    name: "run_timeout",
    unit: Unit::Milliseconds,
    default: 3_600_000,
    min: 1,
    max: 7 * DAY_MS,
    zero_is_off: true,
    doc: "an attempt's body running longer is stopped, and the attempt fails and is retried",
};

/// `TASK_RETRY_BASE_MS`.
pub const RETRY_BASE: Span = Span {
    env: "TASK_RETRY_BASE_MS",
    name: "retry_base",
    unit: Unit::Milliseconds,
    default: 1000,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "first retry delay of a failed task; it doubles each attempt, with jitter",
};

/// `TASK_RETRY_MAX_MS`.
pub const RETRY_MAX: Span = Span {
    env: "TASK_RETRY_MAX_MS",
    name: "retry_max",
    unit: Unit::Milliseconds,
    default: 600_000,
    min: 1,
    max: 7 * DAY_MS,
    zero_is_off: false,
    doc: "longest retry delay",
};

/// `TASK_RESCUE`.
pub const RESCUE: Choice = Choice {
    env: "TASK_RESCUE",
    name: "rescue",
    default: "1",
    choices: &["1", "0"],
    doc: "`1`: this worker also rescues tasks whose lease expired (any number of workers may)",
};

/// `TASK_RESCUE_INTERVAL_MS`.
pub const RESCUE_INTERVAL: Span = Span {
    env: "TASK_RESCUE_INTERVAL_MS",
    name: "rescue_interval",
    unit: Unit::Milliseconds,
    default: 1000,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "how often the rescuer looks for expired leases",
};

/// `TASK_RETAIN_SUCCEEDED_S`.
pub const RETAIN_SUCCEEDED: Span = Span {
    env: "TASK_RETAIN_SUCCEEDED_S",
    name: "retain_succeeded",
    unit: Unit::Seconds,
    default: 86_400,
    min: 1,
    max: 10 * 365 * 86_400,
    zero_is_off: true,
    doc: "succeeded tasks are deleted this long after they finished (0: kept forever); the rescuer deletes them in pages, one worker at a time",
};

/// `TASK_RETAIN_FAILED_S`.
pub const RETAIN_FAILED: Span = Span {
    env: "TASK_RETAIN_FAILED_S",
    name: "retain_failed",
    unit: Unit::Seconds,
    default: 604_800,
    min: 1,
    max: 10 * 365 * 86_400,
    zero_is_off: true,
    doc: "failed and cancelled tasks are deleted this long after they finished (0: kept forever)",
};

/// `TASK_OWNER`.
pub const OWNER: Text = Text {
    env: "TASK_OWNER",
    name: "owner",
    default: "(`<host>-<pid>-<n>`)",
    accepted: "any name",
    secret: false,
    doc: "the worker's name in leases and logs",
};

/// `TASK_SCHEMA`.
pub const SCHEMA: Text = Text {
    env: "TASK_SCHEMA",
    name: "schema",
    default: "holdfast",
    accepted: "1 to 63 characters from a-z, 0-9 and _, not starting with a digit",
    secret: false,
    doc: "the schema of the queue's tables (`Queue::from_env`)",
};

/// Every setting of holdfast-tasks.
pub static SETTINGS: &[&dyn Describe] = &[
    &SCHEMA,
    &CONCURRENCY,
    &CLAIM_BATCH,
    &LEASE,
    &HEARTBEAT,
    &POLL_INTERVAL,
    &LISTEN,
    &SHUTDOWN_GRACE,
    &RUN_TIMEOUT,
    &RETRY_BASE,
    &RETRY_MAX,
    &RESCUE,
    &RESCUE_INTERVAL,
    &RETAIN_SUCCEEDED,
    &RETAIN_FAILED,
    &OWNER,
];
