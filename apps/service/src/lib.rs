//! The `holdfast` binary's library: each subcommand is a module that does the work; `main.rs`
//! only parses the command line.
#![deny(missing_docs)]

pub mod api;
pub mod api_error;
pub mod assembly;
pub mod config;
pub mod db_target;
pub mod demo;
pub mod domain;
pub mod error;
pub mod fault_control;
pub mod http_client;
pub mod load;
pub mod logging;
pub mod prom;
pub mod schema;
pub mod serve;
