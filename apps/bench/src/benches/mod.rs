//! One module per subcommand, named after it.

pub mod api;
pub mod enqueue;
pub mod pooler;
pub mod pools;
pub mod proxy;
pub mod tap;
pub mod task_counts;
pub mod task_peers;
pub mod tasks;
pub mod tls;
pub mod tx;
