//! The task tests' helpers come from holdfast-testkit; this names them as the tests use them.
#![allow(dead_code, unused_imports)]

pub use holdfast_testkit::{
    counts, eventually, fast_worker as fast, pool, queue_database as database, settled, start_worker,
    state_of, worker_pools, BOUND,
};
