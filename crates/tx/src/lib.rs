// The README's snippets use the facade's paths (`holdfast::...`, what a user has), so they
// are compiled as doctests in `apps/outside`, which depends on holdfast alone, not here.
#![cfg_attr(not(doctest), doc = include_str!("../README.md"))]
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
