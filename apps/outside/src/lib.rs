//! Compiles what a new user copies, in a crate that depends on holdfast alone (as theirs
//! does): the repository README's and the facade README's snippets as doctests, and the
//! examples. In holdfast's own crate they would also see its private dependencies
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
