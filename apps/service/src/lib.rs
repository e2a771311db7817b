//! The `holdfast` binary's library: each subcommand is a module that does the work; `main.rs`
//! only parses the command line.
#![deny(missing_docs)]

pub mod fault_control;
pub mod logging;
