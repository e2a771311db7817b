//! The reference service: an HTTP API and assembly workers on holdfast, with separate pools
//! for API requests and background work.

pub mod api;
pub mod api_error;
pub mod assembly;
pub mod budget;
pub mod config;
pub mod console;
pub mod domain;
pub mod schema;
pub mod serve;
