//! Drives a service from outside and checks what it did: the load and failure run
//! (`holdfast load`), the demo (a preset of it), the fault proxy with its control port
//! (`holdfast faults`), and the small HTTP reader they use (the Prometheus reader, [`prom`], is shared
//! with the service's console).

pub mod db_target;
pub mod demo;
pub mod fault_control;
pub mod http_client;
pub mod load;
pub use crate::prom;
