//! Credentials that expire: a provider the pool calls before every connect, handing out a
//! token renewed before it runs out (AWS RDS IAM tokens live 15 minutes; Azure AD tokens and
//! Vault dynamic secrets likewise), and an `after_connect` hook that sets up each new
//! connection. Open connections keep working when the token changes; new ones use the new one.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example rotating_credentials
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast::pool::{BoxError, Credentials};
use holdfast::prelude::*;

/// A token and when it stops being valid.
struct Token {
    secret: String,
    expires: Instant,
}

/// Stands in for the token service (the AWS SDK's RDS auth token, Azure identity, Vault):
/// here the token is the password from `DB_PASSWORD`, valid 15 minutes.
async fn fetch_token() -> Result<Token, BoxError> {
    let secret = std::env::var("DB_PASSWORD").unwrap_or_default();
    Ok(Token {
        secret,
        expires: Instant::now() + Duration::from_secs(15 * 60),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cached: Arc<Mutex<Option<Token>>> = Arc::new(Mutex::new(None));
    let mut config = PoolConfig::from_env()?.after_connect(|conn| {
        Box::pin(async move {
            conn.batch_execute("SET search_path TO public").await?;
            Ok(())
        })
    });
    config.connect = config.connect.credentials(move || {
        let cached = Arc::clone(&cached);
        async move {
            // Renew a minute before expiry: the provider runs on every connect, so it must
            // be cheap when the token is still good.
            let fresh = {
                let token = cached.lock().map_err(|_| "token cache poisoned")?;
                token
                    .as_ref()
                    .filter(|t| t.expires > Instant::now() + Duration::from_secs(60))
                    .map(|t| t.secret.clone())
            };
            let secret = match fresh {
                Some(secret) => secret,
                None => {
                    let token = fetch_token().await?;
                    let secret = token.secret.clone();
                    *cached.lock().map_err(|_| "token cache poisoned")? = Some(token);
                    secret
                }
            };
            Ok(Credentials::password(secret))
        }
    });
    let pool = Pool::new(config)?;
    let conn = pool.get().await?;
    let row = conn
        .query_one("SELECT current_user, current_setting('search_path')", &[])
        .await?;
    let (user, path): (String, String) = (row.get(0), row.get(1));
    println!("connected as {user}, search_path {path}");
    drop(conn);
    pool.close().await;
    Ok(())
}
