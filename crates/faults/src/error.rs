//! The one error type of holdfast-faults.

/// A fault setting that cannot work, or a proxy that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// A fault field has a value outside what is accepted.
    #[error("{field}: invalid value {value:?}; accepted: {accepted}")]
    Invalid {
        /// The field, as a dotted path (`upstream.bandwidth_bytes_per_sec`).
        field: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        accepted: String,
    },
    /// The listening socket could not be opened.
    #[error("could not listen on {addr}: {error}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The underlying error (shown in this error's text, so not its `source()`).
        error: std::io::Error,
    },
}
