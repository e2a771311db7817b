#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod classify;
mod error;
mod options;
mod outcome;
mod run;
mod tx;

pub use classify::{class_of_sqlstate, classify, is_retryable, ClassifyError, ErrorClass};
pub use error::TxError;
pub use options::{Isolation, RetryPolicy, TxOptions};
pub use run::{DoneCheck, TransactionExt};
pub use tx::{BeginExt, Tx};
