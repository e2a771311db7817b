#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod counters;
mod error;
mod fault;
mod inspect;
mod link;
mod proxy;

pub use counters::CounterSnapshot;
pub use error::FaultError;
pub use fault::{Action, DirectionFaults, Faults, Latency, MessageRule, Trigger};
pub use proxy::{ConnectionInfo, FaultProxy, ProxyHandle};
