//! Compiles what a new user copies, in a crate that depends on holdfast alone (as theirs
//! does): the snippets of the repository README and of every README a facade user reads
//! (the facade's, and those of the crates it re-exports as `holdfast::pool`, `tx`, `tasks`,
//! `wire`) as doctests, and the examples. In holdfast's own crate they would also see its private dependencies
//! (`holdfast_pool`, ...), so a snippet using those paths would pass there and fail for the
//! user.

/// The repository README.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct RepositoryReadme;

/// The facade's README (holdfast's rustdoc front page).
#[cfg(doctest)]
#[doc = include_str!("../../../crates/holdfast/README.md")]
pub struct FacadeReadme;

/// The README of `holdfast::pool` (that module's rustdoc page).
#[cfg(doctest)]
#[doc = include_str!("../../../crates/pool/README.md")]
pub struct PoolReadme;

/// The README of `holdfast::tx` (that module's rustdoc page).
#[cfg(doctest)]
#[doc = include_str!("../../../crates/tx/README.md")]
pub struct TxReadme;

/// The README of `holdfast::tasks` (that module's rustdoc page).
#[cfg(doctest)]
#[doc = include_str!("../../../crates/tasks/README.md")]
pub struct TasksReadme;

/// The README of `holdfast::wire` (that module's rustdoc page).
#[cfg(doctest)]
#[doc = include_str!("../../../crates/wire/README.md")]
pub struct WireReadme;

/// The examples in the doc comments of those crates, collected by `build.rs`.
#[cfg(doctest)]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/doc-examples.md"))]
pub struct DocExamples;
