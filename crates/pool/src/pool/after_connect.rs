//! The `after_connect` hook: code the application runs on each new connection before the
//! pool hands it out (`SET search_path`, `SET ROLE`, loading types). A hook that fails
//! discards the connection: the connect counts as failed, with the hook's error as its cause.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::connect::{BoxError, Connection};

type HookFn = dyn for<'c> Fn(&'c Connection) -> BoxFuture<'c, Result<(), BoxError>> + Send + Sync;

/// A hook run on each new connection (see
/// [`PoolConfig::after_connect`](crate::PoolConfig::after_connect)).
#[derive(Clone)]
pub struct AfterConnect(Arc<HookFn>);

impl AfterConnect {
    pub(crate) fn new<F>(hook: F) -> AfterConnect
    where
        F: for<'c> Fn(&'c Connection) -> BoxFuture<'c, Result<(), BoxError>> + Send + Sync + 'static,
    {
        AfterConnect(Arc::new(hook))
    }

    pub(crate) async fn run(&self, conn: &Connection) -> Result<(), BoxError> {
        (self.0)(conn).await
    }
}

impl fmt::Debug for AfterConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AfterConnect(..)")
    }
}
