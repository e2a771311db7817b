//! `Pool::query` and `Pool::execute`: one statement in autocommit, pipelined with other
//! callers' statements on a connection they share, as tokio-postgres pipelines concurrent
//! requests on one client.
//!
//! A shared connection is a *lane*: a connection taken from the pool like any other (so
//! the size limit, FIFO fairness and the return path all apply), which callers join while
//! it keeps up with them (below). The last caller to leave gives
//! it back. Only statements that cannot leave anything behind for the next statement on the
//! connection run on a lane; everything else takes a connection of its own:
//! - the statement must start with SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES or
//!   TABLE (after comments): none of these can open a transaction block, so a caller can
//!   never find itself inside someone else's transaction. Each statement has its own Sync,
//!   so an error in one fails only that one; except that while two or more callers share
//!   the lane (and `gather_reads` is on), the connection's tap gathers the reads written
//!   together into read-only transactions of one Sync each (see `holdfast_wire::Gathering`).
//!   A group that failed was rolled back whole, and its callers get [`regather`] errors:
//!   `Pool::query` then runs each statement again on a connection of its own, so a caller
//!   only ever sees the error its own statement got alone.
//! - a lane takes new statements for [`LANE_TERM`], and none while anyone waits for a
//!   connection of their own, so lanes drain and go back instead of holding connections
//!   that others queue for. A lane past its term that still keeps up is renewed in place
//!   for another term when its connection passes the checks a checkout makes (not due for
//!   recycling, no disconnect since it was last verified); otherwise callers move to a new
//!   lane and it drains. Moving to a new lane every term put a second busy backend on the
//!   CPUs each second while the old lane drained: on shared CPUs at 256 callers,
//!   `pool.query`'s p999 was at or below `get()`'s in 5 of 8 runs (median 6.1 ms, worst
//!   8.7), renewed in 8 of 8 (median 5.3 ms, worst 6.1), in eight runs each of
//!   `holdfast-bench pools --sections select --only holdfast,raw --tasks 64,256`.
//! - a caller joins the busiest lane below `pipeline_depth` whose oldest unanswered
//!   statement has waited less than `pipeline_stall`, so that statements gather on as few
//!   connections as keep up with them (lanes left with few callers drain and go back) and
//!   nobody queues long behind a slow or stuck statement; when no lane qualifies, it makes
//!   a new lane while the pool has room, and otherwise joins the least busy lane anyway.
//! - one caller at a time makes a lane; callers arriving meanwhile wait for it, or keep to
//!   a lane past its term while it keeps up. When each made its own, every caller arriving
//!   in the moment a connection took made a lane (up to 16 at once at 256 callers, counted
//!   with an instrumented bench), and their backends then competed for the CPUs.
//!   Few lanes is the point: with a fixed depth of 8, 64 callers kept 8 backends always
//!   busy, the server's scheduler gave them turns of milliseconds, and a statement on a
//!   descheduled backend waited them out (p99 12 ms for `SELECT 1`, measured with
//!   `holdfast-bench pools --sections select --split`).
//! - while two or more callers are on a lane, its connection's driver gathers their
//!   statements (see `connect::driver`): [`Lane::seat`] and [`Seat`]'s drop tell it.
//! - the last lane, when its last caller leaves, is *parked*: it keeps its connection for
//!   the next statement (in its term, or renewed as above) instead of giving it back and
//!   taking it out again, which at one caller made every call pay a checkout and a return
//!   that `get()` callers pay once (pool.query's p99 was 1 to 4 µs above get()'s at one
//!   task, measured with `holdfast-bench pools --control`). A parked lane is the pool's to
//!   hand out: it counts as idle in [`PoolStatus`](crate::PoolStatus), a checkout that finds
//!   no idle connection takes it back (so it never keeps a caller of `get()` waiting),
//!   and maintenance takes it back at the end of its term; a lane is parked only when its
//!   connection is exactly as it was taken (see [`Shared::parkable`]), and joined again
//!   only while a checkout would hand it out without a ping (no disconnect since, pre-ping
//!   not due).
//! - behind a transaction-mode pooler every statement takes a connection of its own.

use std::collections::VecDeque;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use holdfast_wire::{CoarseInstant, Liveness};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::config::PrePing;
use super::pooled::PooledConnection;
use super::{Pool, Shared};
use crate::error::PoolError;

/// How long a lane takes new statements before its connection is checked again (renewed in
/// place, or drained and given back to the pool).
pub const LANE_TERM: Duration = Duration::from_secs(1);

/// Statement kinds that run on a shared connection: they cannot open a transaction block
/// or leave one open.
const SHAREABLE: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE",
];

/// The pool's lanes.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: Mutex<LaneSet>,
    /// Signalled when the lane being made is in the list (or its maker gave up).
    made: Notify,
    next_id: AtomicU64,
    /// Callers of `query`/`execute` waiting in the pool's queue for a connection to make a
    /// lane of.
    waiting: AtomicUsize,
    /// Callers waiting for the lane being made (counted in `PoolStatus::waiting` too).
    pub(crate) awaiting: AtomicUsize,
    /// Lanes parked (see [`Lane::parked`]), read without the lanes lock: by a checkout that
    /// finds no idle connection, and by the pool's status, which counts them as idle.
    parked: AtomicUsize,
}

#[derive(Debug, Default)]
struct LaneSet {
    lanes: Vec<Lane>,
    /// A caller is making a lane (see [`Opening`]).
    opening: bool,
    /// Someone waits for the lane being made: its maker wakes them when done.
    awaited: bool,
    /// The queue of a lane given back, emptied, for the next lane made: at one caller every
    /// call makes a lane and gives it back, and need not allocate its queue each time.
    spare: Option<VecDeque<(u64, Instant)>>,
}

#[derive(Debug)]
struct Lane {
    id: u64,
    conn: Arc<PooledConnection>,
    /// Callers on the lane now.
    in_flight: usize,
    taken: Instant,
    /// The statements sent on the lane and not yet known to be answered, oldest first: the
    /// caller's ticket and when it joined. Answers come in order, so a caller's answer
    /// settles every statement ahead of it too. A caller that gave up leaves its entry
    /// until then: its statement still stands in the pipeline.
    unanswered: VecDeque<(u64, Instant)>,
    next_ticket: u64,
    /// No caller is on the lane: its last one left and it was kept for the next (counted in
    /// [`Lanes::parked`]).
    parked: bool,
}

impl Lane {
    /// How long the oldest statement still unanswered on the lane has waited: about what a
    /// caller joining now will wait for its own answer.
    fn head_wait(&self, now: Instant) -> Duration {
        self.unanswered.front().map_or(Duration::ZERO, |(_, joined)| {
            now.saturating_duration_since(*joined)
        })
    }
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, LaneSet> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lanes parked now.
    pub(crate) fn parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    /// Gives every parked lane's connection back to the pool: a checkout found no idle
    /// connection, a caller began waiting for one, or the pool closes.
    pub(crate) fn unpark_all(&self) {
        let given_back = self.lock().take_parked(&self.parked, |_| true);
        // Outside the lock: each goes back through the pool's return path.
        drop(given_back);
    }

    /// Gives back the parked lanes whose term has ended by `now` (from maintenance): an
    /// unused connection returns to the idle set, where idle timeouts and keepalives apply.
    pub(crate) fn unpark_past_term(&self, now: Instant) {
        let given_back = self.lock().take_parked(&self.parked, |l| {
            now.saturating_duration_since(l.taken) >= LANE_TERM
        });
        drop(given_back);
    }
}

impl LaneSet {
    /// Takes the parked lanes `which` picks out of the list; the caller drops them outside
    /// the lock.
    fn take_parked(&mut self, count: &AtomicUsize, which: impl Fn(&Lane) -> bool) -> Vec<Lane> {
        let taken: Vec<Lane> = self.lanes.extract_if(.., |l| l.parked && which(l)).collect();
        if !taken.is_empty() {
            count.fetch_sub(taken.len(), Ordering::AcqRel);
        }
        taken
    }
}

/// A caller's place on a lane; leaving (drop) parks the lane or gives it back when it was
/// the last.
pub(super) struct Seat<'a> {
    shared: &'a Shared,
    lane: u64,
    ticket: u64,
    pub(super) conn: Arc<PooledConnection>,
    /// The caller's statement was answered (rows or an error), and with it every statement
    /// sent ahead of it. A caller that gave up (its future dropped) proves nothing about the
    /// lane: its statement stays counted as waiting.
    pub(super) answered: bool,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let lanes = &self.shared.lanes;
        let retired = {
            let mut g = lanes.lock();
            let Some(i) = g.lanes.iter().position(|l| l.id == self.lane) else {
                return;
            };
            let lane = &mut g.lanes[i];
            lane.in_flight -= 1;
            if lane.in_flight == 1 {
                lane.conn.connection().set_shared(false, false);
            }
            if self.answered {
                if let Some(settled) = lane.unanswered.iter().position(|(t, _)| *t == self.ticket) {
                    lane.unanswered.drain(..=settled);
                }
            }
            if lane.in_flight > 0 {
                return;
            }
            if g.lanes.len() == 1 && self.shared.parkable(&g.lanes[i]) {
                g.lanes[i].parked = true;
                lanes.parked.fetch_add(1, Ordering::AcqRel);
                None
            } else {
                let mut retired = g.lanes.swap_remove(i);
                retired.unanswered.clear();
                g.spare = Some(std::mem::take(&mut retired.unanswered));
                Some(retired)
            }
        };
        match retired {
            // Outside the lock: the last reference going back runs the pool's return path.
            Some(retired) => drop(retired),
            // Parked. A caller that began waiting for a connection before it was parked
            // found none to take back: it gets this one now. (One that begins after finds it
            // parked: see `checkout`.) Lanes take no statements while anyone waits.
            None => {
                if !self
                    .shared
                    .lane_outlook(lanes.waiting.load(Ordering::Relaxed))
                    .may_join
                {
                    lanes.unpark_all();
                }
            }
        }
    }
}

impl Pool {
    /// A seat on the busiest lane below `pipeline_depth` whose oldest unanswered statement
    /// has waited less than `pipeline_stall`; or a new lane, made of a connection taken like
    /// any other, while the pool has room; or, when it has none, the least busy lane even
    /// past `pipeline_depth` (deeper pipelining beats queueing). One caller at a time makes
    /// a lane: the others wait for it, or meanwhile keep to a lane past its term.
    pub(super) async fn seat(&self, deadline: tokio::time::Instant) -> Result<Seat<'_>, PoolError> {
        let shared = self.shared();
        let opening = loop {
            match self.choose_lane() {
                Choice::Join(seat) => return Ok(seat),
                Choice::Open(opening) => break opening,
                Choice::Await(made) => {
                    let _awaiting = Queued::new(&shared.lanes.awaiting);
                    // A caller starting to wait: a slow path, where the gauges are published.
                    shared.publish_gauges(&shared.lock());
                    // Past the deadline: take a connection of one's own, which answers
                    // with the pool's own timeout error when there is none.
                    if tokio::time::timeout_at(deadline, made).await.is_err() {
                        break None;
                    }
                }
            }
        };
        let conn = {
            let _queued = Queued::new(&shared.lanes.waiting);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Untraced: a lane is no caller's, and its statements are traced by
            // `Pool::query`'s own spans (its connection's wire spans stay parentless).
            Arc::new(self.acquire_untraced(Location::caller(), left).await?)
        };
        // A lane is the pool's own: it goes back with its last statement, so it is no
        // leak however long it serves (up to LANE_TERM plus its statements).
        shared.forget_lease(conn.slot_id());
        let lanes = &shared.lanes;
        let now = Instant::now();
        let seat = {
            let mut g = lanes.lock();
            let mut lane = Lane {
                id: lanes.next_id.fetch_add(1, Ordering::Relaxed),
                conn,
                in_flight: 0,
                taken: now,
                unanswered: g.spare.take().unwrap_or_default(),
                next_ticket: 0,
                parked: false,
            };
            let seat = lane.seat(self, now);
            g.lanes.push(lane);
            seat
        };
        // The lane is in the list: the callers waiting for it may join.
        drop(opening);
        Ok(seat)
    }

    /// Where a caller goes now (see [`seat`](Self::seat)).
    fn choose_lane(&self) -> Choice<'_> {
        let shared = self.shared();
        let depth = self.config().pipeline_depth;
        let stall = self.config().pipeline_stall;
        let outlook = shared.lane_outlook(shared.lanes.waiting.load(Ordering::Relaxed));
        if !outlook.may_join {
            return Choice::Open(None);
        }
        let now = Instant::now();
        // Lanes given back here: declared before the guard, so dropped after it.
        let mut given_back: Vec<Lane> = Vec::new();
        let mut g = shared.lanes.lock();
        // Open; and a parked lane only as a checkout would hand its connection out: without a
        // ping first.
        let joinable = |l: &Lane| alive(l) && (!l.parked || shared.ready_as_is(&l.conn));
        let in_term = |l: &Lane| now.duration_since(l.taken) < LANE_TERM;
        // Its statements are answered in time, and it has room for one more.
        let keeps_up = |l: &Lane| l.in_flight < depth && l.head_wait(now) < stall;
        // The busiest lane below the depth whose statements are answered in time:
        // statements gather on as few connections as they can (a lane left with few
        // callers drains and goes back; the least busy one would spread callers over
        // every lane ever made, and none would go back). Few busy connections is also
        // what the server's CPUs want: a backend that always has statements waiting
        // never sleeps, and several such backends on one CPU take turns in time slices
        // of milliseconds, which every statement on a descheduled one waits out.
        // A lane whose oldest statement has waited `pipeline_stall` holds a slow or
        // stuck statement, or is simply behind: a caller joining it would wait at
        // least as long, so nobody joins it while the pool has room.
        let fullest = |g: &[Lane], term: bool| {
            g.iter()
                .enumerate()
                .filter(|(_, l)| joinable(l) && keeps_up(l) && (!term || in_term(l)))
                .max_by_key(|(_, l)| l.in_flight)
                .map(|(i, _)| i)
        };
        if let Some(i) = fullest(&g.lanes, true) {
            return Choice::Join(g.lanes[i].seat(self, now));
        }
        // Past its term and still keeping up: renewed in place when its connection passes a
        // checkout's checks, instead of a new lane's backend starting while this one drains.
        if let Some(i) = fullest(&g.lanes, false).filter(|&i| shared.renewable(&g.lanes[i].conn)) {
            g.lanes[i].taken = now;
            return Choice::Join(g.lanes[i].seat(self, now));
        }
        // A lane still parked now is one nobody may join (dead, due for a check, past its
        // term): its connection goes back, once the lock is let go.
        given_back.append(&mut g.take_parked(&shared.lanes.parked, |_| true));
        if !outlook.has_room {
            // No room for a lane: the least busy one, however deep or slow.
            let least_busy = g
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| joinable(l) && in_term(l))
                .min_by_key(|(_, l)| l.in_flight)
                .map(|(i, _)| i);
            if let Some(i) = least_busy {
                return Choice::Join(g.lanes[i].seat(self, now));
            }
        }
        if g.opening {
            // Someone is making a lane. Meanwhile a lane past its term still takes callers
            // while it keeps up; otherwise wait for the new one. Without this, every caller
            // arriving in the moment it takes to get a connection made a lane of its own
            // (up to the pool's size at once), and their backends competed for the CPUs.
            if let Some(i) = fullest(&g.lanes, false) {
                return Choice::Join(g.lanes[i].seat(self, now));
            }
            // Made under the lock, before its maker can look at `awaited`: its notice counts.
            g.awaited = true;
            return Choice::Await(shared.lanes.made.notified());
        }
        g.opening = true;
        Choice::Open(Some(Opening(&shared.lanes)))
    }
}

/// Where a caller of `query`/`execute` goes.
enum Choice<'a> {
    /// A seat on a lane.
    Join(Seat<'a>),
    /// To make a lane; `Some` for the one caller that makes it for the others too.
    Open(Option<Opening<'a>>),
    /// To wait for the lane being made.
    Await(Notified<'a>),
}

/// The one caller making a lane; the others wait for [`Lanes::made`]. Done (or given up,
/// dropped) it lets them go.
struct Opening<'a>(&'a Lanes);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let awaited = {
            let mut g = self.0.lock();
            g.opening = false;
            std::mem::take(&mut g.awaited)
        };
        // Every `made.notified()` was created under the lock while `awaited` was set, so
        // `notify_waiters` wakes each (woken, a caller looks again: a spurious wake-up, when
        // another caller is already making the next lane, costs a look). At one caller
        // nobody waits, and the notice is skipped.
        if awaited {
            self.0.made.notify_waiters();
        }
    }
}

impl Lane {
    /// A new caller's seat on this lane, its statement counted as waiting from `now`.
    fn seat<'a>(&mut self, pool: &'a Pool, now: Instant) -> Seat<'a> {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight += 1;
        let lanes = &pool.shared().lanes;
        if std::mem::take(&mut self.parked) {
            lanes.parked.fetch_sub(1, Ordering::AcqRel);
        }
        if self.in_flight == 2 {
            self.conn
                .connection()
                .set_shared(true, pool.config().gather_reads);
        }
        self.unanswered.push_back((ticket, now));
        Seat {
            shared: pool.shared(),
            lane: self.id,
            ticket,
            conn: Arc::clone(&self.conn),
            answered: false,
        }
    }
}

/// The lane's connection is open, as far as its wire tap knows.
fn alive(lane: &Lane) -> bool {
    !lane.conn.is_closed() && lane.conn.state().liveness() == Liveness::Open
}

impl Shared {
    /// A lane whose last caller left may keep its connection for the next when the pool
    /// would hand that connection out again as it is, with nothing for the return path to
    /// look at: alive and clean, no error since it was taken, no change of the server's role
    /// that the pool cares about, no abandoned statement still in its pipeline, and neither
    /// a reset query nor a ping due between callers.
    fn parkable(&self, lane: &Lane) -> bool {
        lane.unanswered.is_empty()
            && self.config.reset_query.is_none()
            && self.config.pre_ping != PrePing::Always
            && alive(lane)
            && lane.conn.as_taken()
            && !(self.config.connect.get_target_session_attrs().needs_role()
                && lane.conn.connection().role_changed())
    }

    /// A checkout would hand this connection out without a ping: verified since the last
    /// disconnect, and the pre-ping policy does not want one now.
    fn ready_as_is(&self, conn: &PooledConnection) -> bool {
        conn.slot().generation >= self.generation.load(Ordering::Acquire)
            && !self.pre_ping_due(conn.connection())
    }

    /// A lane's connection may serve another term: not due for recycling, and verified
    /// since the last disconnect (a checkout would ping it first).
    fn renewable(&self, conn: &PooledConnection) -> bool {
        let slot = conn.slot();
        slot.expired(CoarseInstant::now()).is_none()
            && slot.generation >= self.generation.load(Ordering::Acquire)
    }

    /// What lanes may do now, given how many callers of `Pool::query` wait in the queue.
    pub(crate) fn lane_outlook(&self, lane_waiters: usize) -> Outlook {
        let g = self.lock();
        Outlook {
            may_join: !g.closed && g.waiters.len() <= lane_waiters,
            has_room: !g.idle.is_empty() || g.total() < self.config.max_size(),
        }
    }
}

/// What the pool allows lanes right now.
pub(crate) struct Outlook {
    /// Nobody but callers of `query`/`execute` waits for a connection, and the pool is
    /// open: lanes may take more statements. Otherwise they drain and go back.
    pub(crate) may_join: bool,
    /// An idle connection, or room to open one.
    pub(crate) has_room: bool,
}

/// Counts a caller of `query`/`execute` that waits (in the pool's queue, or for the lane
/// being made), for as long as it waits (cancellation included).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `error` says the statement was gathered with others into a read-only
/// transaction that failed (see `holdfast_wire::Gathering`): nothing of it took effect, and
/// it runs again on a connection of its own, where it is not gathered.
pub(crate) fn regather(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|e| {
        e.code().code() == holdfast_wire::REGATHER_SQLSTATE && e.message() == holdfast_wire::REGATHER_MESSAGE
    })
}

/// Whether `sql` is a statement that may share a connection: its first keyword, after
/// whitespace and comments, is one of [`SHAREABLE`].
pub(crate) fn shareable(sql: &str) -> bool {
    let first = holdfast_wire::first_keyword(sql.as_bytes());
    SHAREABLE.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(first))
}

#[cfg(test)]
#[path = "gather_tests.rs"]
mod gather_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolConfig;

    #[test]
    fn only_statements_that_cannot_open_a_transaction_share() {
        for sql in [
            "SELECT 1",
            "  select $1::int",
            "INSERT INTO t VALUES (1)",
            "update t set x = 1",
            "DELETE FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
            "TABLE t",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING",
            "-- a comment\nSELECT 1",
            "/* a /* nested */ comment */ SELECT 1",
            "\n\t/* x */ -- y\n insert into t default values",
            "SELECT\n1",
            "SELECT(1)",
        ] {
            assert!(shareable(sql), "{sql:?} should share");
        }
        for sql in [
            "BEGIN",
            "begin; select 1",
            "START TRANSACTION",
            "COMMIT",
            "END",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT a",
            "SET search_path = x",
            "RESET ALL",
            "LISTEN ch",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CALL p()",
            "DO $$ BEGIN END $$",
            "COPY t FROM STDIN",
            "LOCK t",
            "PREPARE TRANSACTION 'x'",
            "DISCARD ALL",
            "CREATE TEMP TABLE t (x int)",
            "/* SELECT */ BEGIN",
            "-- SELECT\nBEGIN",
            "/* unterminated SELECT 1",
            "-- only a comment",
            "",
            "   ",
            "SELECTX 1",
            "selected",
        ] {
            assert!(!shareable(sql), "{sql:?} should not share");
        }
    }

    /// A pool of two connections whose lanes never count as stalled.
    fn two_connections() -> Pool {
        lane_pool(2, |c| c)
    }

    /// A pool of `size` connections (no overflow) on the test cluster, in which a lane never
    /// counts as stalled, with `tune` applied to its settings.
    pub(super) fn lane_pool(size: usize, tune: impl FnOnce(PoolConfig) -> PoolConfig) -> Pool {
        let url = holdfast_testkit::cluster().url();
        let config = PoolConfig::from_url(&url)
            .expect("config")
            .pool_size(size)
            .max_overflow(0)
            .pipeline_stall(Duration::from_secs(60));
        Pool::new(tune(config)).expect("pool")
    }

    /// The lane's connection tells its driver when callers share it (the driver then
    /// gathers their statements, see `connect::driver`), and stops when one is left.
    #[tokio::test]
    async fn a_lane_tells_its_driver_while_callers_share_it() {
        let pool = two_connections();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let first = pool.seat(deadline).await.expect("first seat");
        assert!(!first.conn.connection().is_shared(), "one caller does not share");
        let second = pool.seat(deadline).await.expect("second seat");
        assert!(
            Arc::ptr_eq(&first.conn, &second.conn),
            "the second caller joins the lane"
        );
        assert!(first.conn.connection().is_shared(), "two callers share the lane");
        drop(second);
        assert!(!first.conn.connection().is_shared(), "one caller left");
        let again = pool.seat(deadline).await.expect("third seat");
        assert!(again.conn.connection().is_shared(), "two again");
        drop(again);
        drop(first);
        let conn = pool.get().await.expect("the lane's connection, given back");
        assert!(
            !conn.connection().is_shared(),
            "a connection given back is not shared"
        );
    }

    /// A seat whose caller sent nothing, or was answered: nothing of it stays in the pipeline.
    fn settled(mut seat: Seat<'_>) -> Seat<'_> {
        seat.answered = true;
        seat
    }

    fn parked_lanes(pool: &Pool) -> usize {
        pool.shared().lanes.parked()
    }

    fn lanes_listed(pool: &Pool) -> usize {
        pool.shared().lanes.lock().lanes.len()
    }

    /// The one lane left by its last caller keeps its connection for the next caller, who
    /// joins it without a checkout; it counts as idle, and a checkout that finds no other
    /// connection takes it back (even one that will not wait).
    #[tokio::test]
    async fn the_last_lane_is_parked_for_the_next_caller_and_a_checkout_takes_it_back() {
        let pool = lane_pool(1, |c| c);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut first = pool.seat(deadline).await.expect("first seat");
        first.conn.batch_execute("SELECT 1").await.expect("a statement");
        first.answered = true;
        let lane_conn = Arc::clone(&first.conn);
        drop(first);
        assert_eq!((parked_lanes(&pool), lanes_listed(&pool)), (1, 1), "parked");
        let status = pool.status();
        assert_eq!((status.open, status.idle, status.in_use), (1, 1, 0), "{status}");
        let second = settled(pool.seat(deadline).await.expect("second seat"));
        assert!(
            Arc::ptr_eq(&lane_conn, &second.conn),
            "the next caller joins the parked lane"
        );
        assert_eq!(parked_lanes(&pool), 0, "joined, no longer parked");
        drop((second, lane_conn));
        assert_eq!(parked_lanes(&pool), 1);
        let conn = pool
            .try_get()
            .await
            .expect("a checkout takes the parked lane's connection back");
        assert_eq!((parked_lanes(&pool), lanes_listed(&pool)), (0, 0));
        assert_eq!(pool.status().in_use, 1);
        drop(conn);
    }

    /// A lane with an error on its connection since it was taken, or with another lane
    /// beside it, goes back when its last caller leaves.
    #[tokio::test]
    async fn a_lane_is_parked_only_when_it_is_the_last_and_as_it_was_taken() {
        let pool = lane_pool(2, |c| c.pipeline_depth(2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (a1, a2) = (
            settled(pool.seat(deadline).await.expect("a1")),
            settled(pool.seat(deadline).await.expect("a2")),
        );
        let b = settled(pool.seat(deadline).await.expect("b"));
        assert!(!Arc::ptr_eq(&a1.conn, &b.conn), "the first lane is full");
        drop(b);
        assert_eq!(
            (parked_lanes(&pool), lanes_listed(&pool)),
            (0, 1),
            "another lane serves on: this one went back"
        );
        drop((a1, a2));
        assert_eq!((parked_lanes(&pool), lanes_listed(&pool)), (1, 1));
        let mut failed = pool.seat(deadline).await.expect("a seat on the parked lane");
        let error = failed.conn.batch_execute("SELECT 1/0").await;
        assert!(error.is_err(), "division by zero fails");
        failed.answered = true;
        drop(failed);
        assert_eq!(
            (parked_lanes(&pool), lanes_listed(&pool)),
            (0, 0),
            "an error since it was taken: the return path looks at it"
        );
    }

    /// A parked lane whose connection a checkout would ping first (a disconnect since it was
    /// verified) is not joined but given back; maintenance gives back one past its term.
    #[tokio::test]
    async fn a_parked_lane_goes_back_when_due_for_a_check_or_past_its_term() {
        let pool = two_connections();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let first = settled(pool.seat(deadline).await.expect("first seat"));
        let lane_conn = Arc::clone(&first.conn);
        drop(first);
        assert_eq!(parked_lanes(&pool), 1);
        pool.invalidate_all();
        let second = settled(pool.seat(deadline).await.expect("second seat"));
        assert!(
            !Arc::ptr_eq(&lane_conn, &second.conn),
            "a parked lane due for a check is not joined"
        );
        drop(lane_conn);
        assert_eq!((parked_lanes(&pool), lanes_listed(&pool)), (0, 1));
        drop(second);
        assert_eq!(parked_lanes(&pool), 1, "the new lane is parked in turn");
        pool.run_maintenance().await;
        assert_eq!(parked_lanes(&pool), 1, "still in its term");
        end_terms(&pool);
        pool.run_maintenance().await;
        assert_eq!((parked_lanes(&pool), lanes_listed(&pool)), (0, 0));
        let idle = pool.shared().lock().idle.len();
        assert_eq!(idle, pool.status().open, "every connection is in the idle set");
    }

    /// Ends the term of every lane of `pool` now.
    fn end_terms(pool: &Pool) {
        let ended = Instant::now()
            .checked_sub(LANE_TERM)
            .expect("an instant a term ago");
        for lane in &mut pool.shared().lanes.lock().lanes {
            lane.taken = ended;
        }
    }

    /// A lane past its term that keeps up serves on with the same connection while that
    /// connection passes a checkout's checks; after a disconnect generation (its connection
    /// would be pinged first) callers move to a new lane.
    #[tokio::test]
    async fn a_lane_past_its_term_is_renewed_while_its_connection_passes_the_checks() {
        let pool = two_connections();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let first = pool.seat(deadline).await.expect("first seat");
        end_terms(&pool);
        let second = pool.seat(deadline).await.expect("second seat");
        assert!(
            Arc::ptr_eq(&first.conn, &second.conn),
            "a lane past its term is renewed, not replaced"
        );
        pool.invalidate_all();
        end_terms(&pool);
        let third = pool.seat(deadline).await.expect("third seat");
        assert!(
            !Arc::ptr_eq(&first.conn, &third.conn),
            "a lane whose connection is due for a check is not renewed"
        );
        assert_eq!(
            pool.shared().lanes.lock().lanes.len(),
            2,
            "a new lane beside the old"
        );
    }
}
