//! Every setting of a connection and a pool: its environment variable, builder name,
//! default, accepted values, unit and meaning. [`ConnectConfig`](crate::ConnectConfig) and
//! [`PoolConfig`](crate::PoolConfig) take their defaults from here, read the environment
//! through these constants and check values set in code against them; the README's tables
//! are generated from [`CONNECT`] and [`POOL`] (a test fails when they differ).

use super::{AutoSpan, Choice, Count, Describe, Span, Text, Unit};

const DAY_S: u64 = 86_400;
const DAY_MS: u64 = 86_400_000;

/// `DATABASE_URL`.
pub const DATABASE_URL: Text = Text {
    env: "DATABASE_URL",
    name: "url",
    default: "(required)",
    accepted: "postgres://user[:password]@host[:port]/dbname[?param=value...] or libpq key=value pairs",
    secret: true,
    doc: "where to connect; the URL's own parameters win over the variables below, as libpq's do",
};

/// `DB_CONNECT_TIMEOUT`.
pub const CONNECT_TIMEOUT: Span = Span {
    env: "DB_CONNECT_TIMEOUT",
    name: "connect_timeout",
    unit: Unit::Seconds,
    default: 10,
    min: 1,
    max: 3600,
    zero_is_off: false,
    doc: "bound on each host's connect: TCP, start-up and authentication (the URL's `connect_timeout` wins)",
};

/// `DB_STATEMENT_TIMEOUT_MS`.
pub const STATEMENT_TIMEOUT: Span = Span {
    env: "DB_STATEMENT_TIMEOUT_MS",
    name: "statement_timeout",
    unit: Unit::Milliseconds,
    default: 300_000,
    min: 1,
    max: DAY_MS,
    zero_is_off: true,
    doc: "`statement_timeout` sent at start-up, or with `SET LOCAL` in each holdfast-tx transaction behind a transaction pooler (0: the server's)",
};

/// `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Span = Span {
    env: "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    name: "idle_in_transaction_session_timeout",
    unit: Unit::Milliseconds,
    default: 0,
    min: 1,
    max: DAY_MS,
    zero_is_off: true,
    doc: "`idle_in_transaction_session_timeout` sent like the statement timeout (0: the server's)",
};

/// `DB_LOCK_TIMEOUT_MS`.
pub const LOCK_TIMEOUT: Span = Span {
    env: "DB_LOCK_TIMEOUT_MS",
    name: "lock_timeout",
    unit: Unit::Milliseconds,
    default: 0,
    min: 1,
    max: DAY_MS,
    zero_is_off: true,
    doc: "`lock_timeout` sent like the statement timeout (0: the server's)",
};

/// `DB_APPLICATION_NAME`.
pub const APPLICATION_NAME: Text = Text {
    env: "DB_APPLICATION_NAME",
    name: "application_name",
    default: "holdfast",
    accepted: "any name (the URL's `application_name` wins)",
    secret: false,
    doc: "`application_name`, shown in `pg_stat_activity`",
};

/// `DB_POOLER`.
pub const POOLER: Choice = Choice {
    env: "DB_POOLER",
    name: "pooler",
    default: "none",
    choices: &["none", "transaction"],
    doc: "`transaction` when `DATABASE_URL` is a transaction-mode pooler such as PgBouncer (see below)",
};

/// `DB_TARGET_SESSION_ATTRS`.
pub const TARGET_SESSION_ATTRS: Choice = Choice {
    env: "DB_TARGET_SESSION_ATTRS",
    name: "target_session_attrs",
    default: "any",
    choices: &["any", "read-write", "read-only", "primary", "standby", "prefer-standby"],
    doc: "which servers of a multi-host `DATABASE_URL` qualify, as libpq's (the URL's `target_session_attrs` wins); a connection whose server stops qualifying (a standby promoted, a read-only error on a writing pool) is closed, and the next connect walks the hosts again",
};

/// `DB_LOAD_BALANCE_HOSTS`.
pub const LOAD_BALANCE_HOSTS: Choice = Choice {
    env: "DB_LOAD_BALANCE_HOSTS",
    name: "load_balance_hosts",
    default: "disable",
    choices: &["disable", "random"],
    doc: "`random`: try the hosts of a multi-host `DATABASE_URL` in a random order on each connect, as libpq's (the URL's `load_balance_hosts` wins)",
};

/// `DB_MAX_STANDBY_LAG_MS`.
pub const MAX_STANDBY_LAG: Span = Span {
    env: "DB_MAX_STANDBY_LAG_MS",
    name: "max_standby_lag",
    unit: Unit::Milliseconds,
    default: 0,
    min: 0,
    max: DAY_MS,
    zero_is_off: true,
    doc: "a standby further behind its primary than this (time since its last replayed commit, while WAL it received waits to be replayed) does not qualify at connect, for the `standby`, `prefer-standby` and `read-only` targets; costs a query per connect to a standby",
};

/// `DB_TRACE_STATEMENT_TEXT`.
pub const TRACE_STATEMENT_TEXT: Choice = Choice {
    env: "DB_TRACE_STATEMENT_TEXT",
    name: "trace_statement_text",
    default: "off",
    choices: &["off", "on"],
    doc: "`on`: statement spans carry the statement's text as `db.query.text` (as the wire saw it, at most its first 120 or so bytes; `Pool::query` spans the whole text); never the parameters. Off by default: text can hold literals",
};

/// `DB_SSLMODE`.
pub const SSLMODE: Choice = Choice {
    env: "DB_SSLMODE",
    name: "sslmode",
    default: "prefer",
    choices: &["disable", "prefer", "require", "verify-ca", "verify-full"],
    doc: "whether TLS is used and what is verified, with libpq's meanings (see TLS below)",
};

/// `DB_SSLROOTCERT`.
pub const SSLROOTCERT: Text = Text {
    env: "DB_SSLROOTCERT",
    name: "sslrootcert",
    default: "(`~/.postgresql/root.crt` if it exists)",
    accepted: "a PEM file, or `system` for the platform's roots",
    secret: false,
    doc: "trusted root certificates",
};

/// `DB_SSLCERT`.
pub const SSLCERT: Text = Text {
    env: "DB_SSLCERT",
    name: "sslcert",
    default: "(none)",
    accepted: "a PEM file",
    secret: false,
    doc: "client certificate",
};

/// `DB_SSLKEY`.
pub const SSLKEY: Text = Text {
    env: "DB_SSLKEY",
    name: "sslkey",
    default: "(none)",
    accepted: "an unencrypted PEM key, mode 0600 or less",
    secret: false,
    doc: "the client certificate's key",
};

/// `DB_SSLSNI`.
pub const SSLSNI: Choice = Choice {
    env: "DB_SSLSNI",
    name: "sslsni",
    default: "1",
    choices: &["1", "0"],
    doc: "`0` to not send the host name in the TLS handshake",
};

/// `DB_PASSWORD`.
pub const PASSWORD: Text = Text {
    env: "DB_PASSWORD",
    name: "password",
    default: "(none)",
    accepted: "the password",
    secret: true,
    doc: "the password, when the URL has none; never shown in logs, errors or `Debug`",
};

/// `DB_PASSFILE`.
pub const PASSFILE: Text = Text {
    env: "DB_PASSFILE",
    name: "passfile",
    default: "(`PGPASSFILE`, else `~/.pgpass`)",
    accepted: "a password file in libpq's format, mode 0600 or less",
    secret: false,
    doc: "where passwords are looked up when none is given",
};

/// `DB_POOL_SIZE`.
pub const POOL_SIZE: Count = Count {
    env: "DB_POOL_SIZE",
    name: "pool_size",
    default: 5,
    min: 1,
    max: MAX_CONNECTIONS,
    doc: "connections kept open when idle",
};

/// `DB_MAX_OVERFLOW`.
pub const MAX_OVERFLOW: Count = Count {
    env: "DB_MAX_OVERFLOW",
    name: "max_overflow",
    default: 10,
    min: 0,
    max: MAX_CONNECTIONS,
    doc: "extra connections under load, closed when they come back to a full idle set",
};

/// Largest accepted `DB_POOL_SIZE` and `DB_MAX_OVERFLOW`: beyond what any PostgreSQL server
/// accepts as `max_connections`, so larger values are mistakes.
pub const MAX_CONNECTIONS: u64 = 10_000;

/// `DB_POOL_RECYCLE`.
pub const RECYCLE: Span = Span {
    env: "DB_POOL_RECYCLE",
    name: "recycle",
    unit: Unit::Seconds,
    default: 300,
    min: 1,
    max: 7 * DAY_S,
    zero_is_off: true,
    doc: "connections older than this (plus 0 to 5% jitter) are replaced",
};

/// `DB_POOL_TIMEOUT`.
pub const POOL_TIMEOUT: Span = Span {
    env: "DB_POOL_TIMEOUT",
    name: "pool_timeout",
    unit: Unit::Seconds,
    default: 30,
    min: 1,
    max: DAY_S,
    zero_is_off: false,
    doc: "how long `get()` waits for a connection, also while the database is down (it is served as soon as one opens again)",
};

/// `DB_MAX_WAITING`.
pub const MAX_WAITING: Count = Count {
    env: "DB_MAX_WAITING",
    name: "max_waiting",
    default: 0,
    min: 0,
    max: 1_000_000,
    doc: "callers allowed to wait for a connection at once; past that a new caller fails at once with `Overloaded` (load shedding); 0: no limit",
};

/// `DB_PRE_PING`.
pub const PRE_PING: Choice = Choice {
    env: "DB_PRE_PING",
    name: "pre_ping",
    default: "auto",
    choices: &["auto", "always", "never"],
    doc: "when a connection is pinged before it is handed out: `auto` when the server was silent on it longer than the pre-ping window",
};

/// `DB_PRE_PING_WINDOW_MS`.
pub const PRE_PING_WINDOW: Span = Span {
    env: "DB_PRE_PING_WINDOW_MS",
    name: "pre_ping_window",
    unit: Unit::Milliseconds,
    default: 500,
    min: 0,
    max: DAY_MS,
    zero_is_off: false,
    doc: "`auto` pings connections the server was silent on longer than this",
};

/// `DB_PING_TIMEOUT_MS`.
pub const PING_TIMEOUT: Span = Span {
    env: "DB_PING_TIMEOUT_MS",
    name: "ping_timeout",
    unit: Unit::Milliseconds,
    default: 2000,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "bound on one ping",
};

/// `DB_IDLE_TIMEOUT`.
pub const IDLE_TIMEOUT: Span = Span {
    env: "DB_IDLE_TIMEOUT",
    name: "idle_timeout",
    unit: Unit::Seconds,
    default: 600,
    min: 1,
    max: 7 * DAY_S,
    zero_is_off: true,
    doc: "idle connections above `min_idle` are closed after this long unused",
};

/// `DB_MIN_IDLE`.
pub const MIN_IDLE: Count = Count {
    env: "DB_MIN_IDLE",
    name: "min_idle",
    default: 0,
    min: 0,
    max: MAX_CONNECTIONS,
    doc: "warm idle connections, at most the pool size (the warm-up never opens overflow connections)",
};

/// `DB_MAX_CONNECTING`.
pub const MAX_CONNECTING: Count = Count {
    env: "DB_MAX_CONNECTING",
    name: "max_connecting",
    default: 2,
    min: 1,
    max: 1000,
    doc: "connects in progress at once",
};

/// `DB_RESET_TIMEOUT_MS`.
pub const RESET_TIMEOUT: Span = Span {
    env: "DB_RESET_TIMEOUT_MS",
    name: "reset_timeout",
    unit: Unit::Milliseconds,
    default: 5000,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "bound on the rollback, drain or reset query of a connection returned dirty; past it the connection is closed and its backend terminated (not behind a pooler)",
};

/// `DB_RESET_QUERY`.
pub const RESET_QUERY: Text = Text {
    env: "DB_RESET_QUERY",
    name: "reset_query",
    default: "(none)",
    accepted: "SQL, for example `DISCARD ALL`",
    secret: false,
    doc: "run on every returned connection outside a transaction",
};

/// `DB_LEAK_THRESHOLD_MS`.
pub const LEAK_THRESHOLD: Span = Span {
    env: "DB_LEAK_THRESHOLD_MS",
    name: "leak_threshold",
    unit: Unit::Milliseconds,
    default: 0,
    min: 1,
    max: DAY_MS,
    zero_is_off: true,
    doc: "a connection held longer is logged as a possible leak, with where it was taken; connections serving `pool.query` are the pool's own and never reported",
};

/// `DB_KEEPALIVE_INTERVAL`.
pub const KEEPALIVE_INTERVAL: Span = Span {
    env: "DB_KEEPALIVE_INTERVAL",
    name: "keepalive_interval",
    unit: Unit::Seconds,
    default: 120,
    min: 1,
    max: DAY_S,
    zero_is_off: true,
    doc: "idle connections the server has been silent on this long are pinged (jittered)",
};

/// `DB_RECONNECT_BACKOFF_MAX_MS`.
pub const RECONNECT_BACKOFF_MAX: Span = Span {
    env: "DB_RECONNECT_BACKOFF_MAX_MS",
    name: "reconnect_backoff_max",
    unit: Unit::Milliseconds,
    default: 2000,
    min: 1,
    max: 3_600_000,
    zero_is_off: false,
    doc: "longest pause between reconnect attempts while the database is down",
};

/// `DB_CLOSE_TIMEOUT_MS`.
pub const CLOSE_TIMEOUT: Span = Span {
    env: "DB_CLOSE_TIMEOUT_MS",
    name: "close_timeout",
    unit: Unit::Milliseconds,
    default: 10_000,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "how long `close()` waits for connections in use",
};

/// `DB_PIPELINE_DEPTH`.
pub const PIPELINE_DEPTH: Count = Count {
    env: "DB_PIPELINE_DEPTH",
    name: "pipeline_depth",
    default: 256,
    min: 1,
    max: 1024,
    doc: "statements in flight at once on one connection shared by `pool.query` and `pool.execute` (1: no sharing)",
};

/// `DB_STATEMENT_CACHE_SIZE`.
pub const STATEMENT_CACHE_SIZE: Count = Count {
    env: "DB_STATEMENT_CACHE_SIZE",
    name: "statement_cache_size",
    default: 256,
    min: 1,
    max: 100_000,
    doc: "statements kept prepared per connection (`query_cached`, `pool.query`, `prepare_cached`); past it the least recently used one is closed on the server",
};

/// `DB_PIPELINE_STALL_MS`.
pub const PIPELINE_STALL: Span = Span {
    env: "DB_PIPELINE_STALL_MS",
    name: "pipeline_stall",
    unit: Unit::Milliseconds,
    default: 5,
    min: 1,
    max: DAY_MS,
    zero_is_off: false,
    doc: "a shared connection whose oldest unanswered statement has waited this long takes no more callers while the pool has room for another",
};

/// `DB_GATHER_READS`.
pub const GATHER_READS: Choice = Choice {
    env: "DB_GATHER_READS",
    name: "gather_reads",
    default: "on",
    choices: &["on", "off"],
    doc: "`pool.query` reads (SELECT, WITH, VALUES, TABLE) written together on a shared connection go to the server as one read-only transaction with one Sync; a group that fails is rolled back and its statements run again, each on a connection of its own. `off` when a read has effects outside its transaction (dblink, session advisory locks) that must not happen twice",
};

/// `DB_UNANSWERED_TIMEOUT_MS`.
pub const UNANSWERED_TIMEOUT: AutoSpan = AutoSpan {
    env: "DB_UNANSWERED_TIMEOUT_MS",
    name: "unanswered_timeout",
    unit: Unit::Milliseconds,
    max: DAY_MS,
    zero_is_off: true,
    doc: "close a connection with requests in flight that has heard nothing from the server for this long (its backend terminated, not behind a pooler); `auto`: the start-up statement timeout + 30 s (off without one, or behind a transaction pooler); a number must exceed the statement timeout",
};

/// `DB_PROBE_AFTER_MS`.
pub const PROBE_AFTER: Span = Span {
    env: "DB_PROBE_AFTER_MS",
    name: "probe_after",
    unit: Unit::Milliseconds,
    default: 2000,
    min: 1,
    max: DAY_MS,
    zero_is_off: true,
    doc: "a request unanswered this long makes the pool ask the server, on a connection of its own, what that backend is doing: running it, the pool keeps waiting; idle or gone, the request or its answer was lost and the connection is closed (its backend terminated); off behind a pooler (found by the probe: the backend pid it was given is not the server's)",
};

/// `DB_POOL_NAME`.
pub const POOL_NAME: Text = Text {
    env: "DB_POOL_NAME",
    name: "name",
    default: "default",
    accepted: "any name",
    secret: false,
    doc: "the pool's name in logs and metric labels",
};

/// How to connect: [`ConnectConfig::from_source`](crate::ConnectConfig::from_source) reads
/// these.
pub static CONNECT: &[&dyn Describe] = &[
    &DATABASE_URL,
    &CONNECT_TIMEOUT,
    &STATEMENT_TIMEOUT,
    &IDLE_IN_TRANSACTION_TIMEOUT,
    &LOCK_TIMEOUT,
    &APPLICATION_NAME,
    &POOLER,
    &TARGET_SESSION_ATTRS,
    &LOAD_BALANCE_HOSTS,
    &MAX_STANDBY_LAG,
    &TRACE_STATEMENT_TEXT,
    &SSLMODE,
    &SSLROOTCERT,
    &SSLCERT,
    &SSLKEY,
    &SSLSNI,
    &PASSWORD,
    &PASSFILE,
];

/// The pool: [`PoolConfig::from_source`](crate::PoolConfig::from_source) reads these (and
/// [`CONNECT`]).
pub static POOL: &[&dyn Describe] = &[
    &POOL_SIZE,
    &MAX_OVERFLOW,
    &RECYCLE,
    &POOL_TIMEOUT,
    &MAX_WAITING,
    &PRE_PING,
    &PRE_PING_WINDOW,
    &PING_TIMEOUT,
    &IDLE_TIMEOUT,
    &MIN_IDLE,
    &MAX_CONNECTING,
    &RESET_TIMEOUT,
    &RESET_QUERY,
    &LEAK_THRESHOLD,
    &KEEPALIVE_INTERVAL,
    &RECONNECT_BACKOFF_MAX,
    &CLOSE_TIMEOUT,
    &PIPELINE_DEPTH,
    &STATEMENT_CACHE_SIZE,
    &PIPELINE_STALL,
    &GATHER_READS,
    &UNANSWERED_TIMEOUT,
    &PROBE_AFTER,
    &POOL_NAME,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{check_readme_table, markdown_table};

    #[test]
    fn the_readme_tables_are_the_settings() {
        let readme = include_str!("../../README.md");
        for (name, table) in [("connect", CONNECT), ("pool", POOL)] {
            if let Err(e) = check_readme_table(readme, name, &markdown_table(table)) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn each_variable_and_name_is_used_once() {
        let all: Vec<&dyn Describe> = CONNECT.iter().chain(POOL).copied().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.env(), b.env());
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
