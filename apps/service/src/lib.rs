//! The `holdfast` binary's library, in two parts that do not depend on each other's insides:
//! [`service`], the reference service (`holdfast serve`: the API and the assembly workers),
//! and [`harness`], what drives and checks a service from outside (`holdfast load`, its
//! `demo` preset, and the `holdfast faults` proxy); [`tasks_cli`] is `holdfast tasks`. `main.rs` only parses the command line.
#![deny(missing_docs)]

pub mod error;
pub mod harness;
pub mod logging;
pub mod prom;
pub mod service;
pub mod tasks_cli;
pub mod telemetry;
