//! Credentials that change while the service runs: a provider called before every connect
//! (short-lived tokens: AWS RDS IAM, Azure AD, Vault dynamic secrets; rotated passwords).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// An error a provider returns: anything that can be shown.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The text of an error a provider or hook returned: a server error with its message and
/// SQLSTATE (tokio-postgres's own text is a bare "db error"), anything else as it shows itself.
pub(crate) fn box_error_text(error: &BoxError) -> String {
    match error.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => crate::error::pg_error_text(pg),
        None => error.to_string(),
    }
}

/// The user and the password (or token) for one connect. Its `Debug` never shows the
/// password.
#[derive(Clone, Default)]
pub struct Credentials {
    user: Option<String>,
    password: Option<Vec<u8>>,
}

impl Credentials {
    /// A password (or token) for the configured user.
    pub fn password(password: impl AsRef<[u8]>) -> Credentials {
        Credentials {
            user: None,
            password: Some(password.as_ref().to_vec()),
        }
    }

    /// A user and their password (or token).
    pub fn user_and_password(user: impl Into<String>, password: impl AsRef<[u8]>) -> Credentials {
        Credentials {
            user: Some(user.into()),
            password: Some(password.as_ref().to_vec()),
        }
    }

    pub(crate) fn get_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub(crate) fn get_password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Called before every connect for the credentials to use.
type ProviderFn = dyn Fn() -> BoxFuture<'static, Result<Credentials, BoxError>> + Send + Sync;

/// A credentials provider (see [`ConnectConfig::credentials`](crate::ConnectConfig::credentials)).
#[derive(Clone)]
pub(crate) struct Provider(Arc<ProviderFn>);

impl Provider {
    pub(crate) fn new<F, Fut>(provider: F) -> Provider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Credentials, BoxError>> + Send + 'static,
    {
        Provider(Arc::new(move || Box::pin(provider())))
    }

    pub(crate) async fn fetch(&self) -> Result<Credentials, BoxError> {
        (self.0)().await
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Provider(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password_and_server_errors_keep_their_cause() {
        let shown = format!(
            "{:?} {:?}",
            Credentials::password("tok-3n8q"),
            Credentials::user_and_password("app", "pw-5v2x")
        );
        assert!(
            !shown.contains("tok-3n8q") && !shown.contains("pw-5v2x"),
            "{shown}"
        );
        assert!(shown.contains("app"), "{shown}");
        let plain: BoxError = "the token service is down".into();
        assert_eq!(box_error_text(&plain), "the token service is down");
    }
}
