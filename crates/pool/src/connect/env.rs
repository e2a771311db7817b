//! The connection settings read from the environment besides `DATABASE_URL`: TLS
//! (`DB_SSLMODE`, `DB_SSLROOTCERT`, `DB_SSLCERT`, `DB_SSLKEY`, `DB_SSLSNI`) and passwords
//! (`DB_PASSWORD`, `DB_PASSFILE` / `PGPASSFILE` / `~/.pgpass`).

use super::config::ConnectConfig;
use super::passfile::PassFile;
use super::tls::config::TlsOptions;
use crate::error::ConfigError;
use crate::settings::Source;

/// TLS from `DB_SSLMODE`, `DB_SSLROOTCERT`, `DB_SSLCERT`, `DB_SSLKEY` and `DB_SSLSNI`, for
/// what the URL leaves unset (its own parameters win, as libpq's do over `PGSSLMODE`).
pub(crate) fn with_env_tls(
    connect: ConnectConfig,
    source: &dyn Source,
) -> Result<ConnectConfig, ConfigError> {
    const VARS: [(&str, &str); 5] = [
        ("DB_SSLMODE", "sslmode"),
        ("DB_SSLROOTCERT", "sslrootcert"),
        ("DB_SSLCERT", "sslcert"),
        ("DB_SSLKEY", "sslkey"),
        ("DB_SSLSNI", "sslsni"),
    ];
    let mut from_env = TlsOptions::default();
    for (var, key) in VARS {
        if let Some(value) = source.get(var).filter(|v| !v.trim().is_empty()) {
            from_env.set(var, key, value.trim())?;
        }
    }
    if from_env == TlsOptions::default() {
        return Ok(connect);
    }
    let from_url = connect.get_tls().options().clone();
    let name = |key: &str| {
        if from_url.is_set(key) {
            format!("DATABASE_URL {key}")
        } else {
            format!("DB_{}", key.to_ascii_uppercase())
        }
    };
    let tls = from_url.clone().or(from_env).build_named(&name)?;
    Ok(connect.tls(tls))
}

/// The password from `DB_PASSWORD` when the URL has none, and the password file from
/// `DB_PASSFILE` (or `PGPASSFILE`, or `~/.pgpass` when it exists) when the URL names none.
pub(crate) fn with_env_password(
    mut connect: ConnectConfig,
    source: &dyn Source,
) -> Result<ConnectConfig, ConfigError> {
    if !connect.has_password() {
        if let Some(password) = source.get("DB_PASSWORD").filter(|p| !p.is_empty()) {
            connect = connect.password(password);
        }
    }
    if connect.has_passfile() {
        return Ok(connect);
    }
    let named = ["DB_PASSFILE", "PGPASSFILE"].iter().find_map(|var| {
        source
            .get(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*var, v))
    });
    if let Some((var, path)) = named {
        let file = PassFile::load(std::path::Path::new(path.trim())).map_err(|accepted| {
            ConfigError::InvalidValue {
                setting: var.to_string(),
                value: path.clone(),
                accepted: format!("a readable password file: {accepted}"),
            }
        })?;
        connect.set_passfile(file);
    } else if let Some(home) = source.get("HOME").filter(|h| !h.is_empty()) {
        let default = std::path::Path::new(&home).join(".pgpass");
        if default.is_file() {
            match PassFile::load(&default) {
                Ok(file) => connect.set_passfile(file),
                // libpq ignores it too, with a warning.
                Err(reason) => tracing::warn!(%reason, "ignoring the password file"),
            }
        }
    }
    Ok(connect)
}

impl ConnectConfig {
    /// Applies the TLS and password variables of `source` (`DB_SSLMODE`, `DB_SSLROOTCERT`,
    /// `DB_SSLCERT`, `DB_SSLKEY`, `DB_SSLSNI`, `DB_PASSWORD`, `DB_PASSFILE`, `PGPASSFILE`) to
    /// what the URL left unset, as [`PoolConfig::from_env`](crate::PoolConfig::from_env) does.
    pub fn apply_env(self, source: &dyn Source) -> Result<ConnectConfig, ConfigError> {
        let config = with_env_tls(self, source)?;
        with_env_password(config, source)
    }
}
