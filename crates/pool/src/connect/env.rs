//! A connection's settings from the environment: `DATABASE_URL`, and the `DB_*` variables of
//! [`settings::table::CONNECT`](crate::settings::table::CONNECT) for what the URL leaves
//! unset (the URL's own parameters win, as libpq's do over `PGSSLMODE` and friends).

use super::config::{ConnectConfig, DEFAULT_APPLICATION_NAME};
use super::passfile::LivePassFile;
use super::pooler::Pooler;
use super::target::TargetSessionAttrs;
use super::tls::config::TlsOptions;
use crate::error::ConfigError;
use crate::settings::{table, Describe, ProcessEnv, Source};

impl ConnectConfig {
    /// Reads `DATABASE_URL` and the connection variables from the process environment.
    pub fn from_env() -> Result<ConnectConfig, ConfigError> {
        ConnectConfig::from_source(&ProcessEnv)
    }

    /// Reads `DATABASE_URL` and the connection variables from `source`.
    pub fn from_source(source: &dyn Source) -> Result<ConnectConfig, ConfigError> {
        let url = table::DATABASE_URL
            .read(source)
            .ok_or_else(|| ConfigError::InvalidValue {
                setting: table::DATABASE_URL.env.into(),
                value: String::new(),
                accepted: format!("{}; the variable is not set", table::DATABASE_URL.accepted),
            })?;
        ConnectConfig::from_url_and_source(table::DATABASE_URL.env, &url, source)
    }

    /// `url` (named `setting` in errors, say `TASKS_DATABASE_URL`) with the connection
    /// variables of `source` (`DB_CONNECT_TIMEOUT`, `DB_STATEMENT_TIMEOUT_MS`, `DB_SSLMODE`,
    /// `DB_PASSWORD`, ...) for what it leaves unset.
    pub fn from_url_and_source(
        setting: &str,
        url: &str,
        source: &dyn Source,
    ) -> Result<ConnectConfig, ConfigError> {
        let mut connect = ConnectConfig::parse_setting(setting, url)?;
        if connect.pg().get_connect_timeout().is_none() {
            connect = connect.connect_timeout(table::CONNECT_TIMEOUT.read_duration(source)?);
        }
        connect = connect
            .statement_timeout(table::STATEMENT_TIMEOUT.read(source)?)
            .idle_in_transaction_session_timeout(table::IDLE_IN_TRANSACTION_TIMEOUT.read(source)?)
            .lock_timeout(table::LOCK_TIMEOUT.read(source)?)
            .pooler(match table::POOLER.read(source)? {
                "transaction" => Pooler::Transaction,
                _ => Pooler::None,
            });
        if connect.get_target_session_attrs() == TargetSessionAttrs::Any {
            let target = table::TARGET_SESSION_ATTRS.read(source)?;
            connect = connect.target_session_attrs(target.parse().unwrap_or_default());
        }
        if !connect.get_load_balance_hosts() {
            connect = connect.load_balance_hosts(table::LOAD_BALANCE_HOSTS.read(source)? == "random");
        }
        connect = connect
            .max_standby_lag(table::MAX_STANDBY_LAG.read(source)?)
            .trace_statement_text(table::TRACE_STATEMENT_TEXT.read(source)? == "on");
        if connect.get_application_name() == DEFAULT_APPLICATION_NAME {
            if let Some(name) = table::APPLICATION_NAME.read(source) {
                connect = connect.application_name(&name);
            }
        }
        connect.apply_env(source)
    }

    /// Applies the TLS and password variables of `source` (`DB_SSLMODE`, `DB_SSLROOTCERT`,
    /// `DB_SSLCERT`, `DB_SSLKEY`, `DB_SSLSNI`, `DB_PASSWORD`, `DB_PASSFILE`, `PGPASSFILE`) to
    /// what the URL left unset, as [`from_source`](Self::from_source) does.
    pub fn apply_env(self, source: &dyn Source) -> Result<ConnectConfig, ConfigError> {
        let config = with_env_tls(self, source)?;
        with_env_password(config, source)
    }
}

/// TLS from `DB_SSLMODE`, `DB_SSLROOTCERT`, `DB_SSLCERT`, `DB_SSLKEY` and `DB_SSLSNI`, for
/// what the URL leaves unset.
fn with_env_tls(connect: ConnectConfig, source: &dyn Source) -> Result<ConnectConfig, ConfigError> {
    let vars: [(&dyn Describe, &str); 5] = [
        (&table::SSLMODE, "sslmode"),
        (&table::SSLROOTCERT, "sslrootcert"),
        (&table::SSLCERT, "sslcert"),
        (&table::SSLKEY, "sslkey"),
        (&table::SSLSNI, "sslsni"),
    ];
    let mut from_env = TlsOptions::default();
    for (setting, key) in vars {
        if let Some(value) = source.get(setting.env()).filter(|v| !v.trim().is_empty()) {
            from_env.set(setting.env(), key, value.trim())?;
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
            vars.iter()
                .find(|(_, k)| *k == key)
                .map_or_else(|| key.to_string(), |(s, _)| s.env().to_string())
        }
    };
    let tls = from_url.clone().or(from_env).build_named(&name)?;
    Ok(connect.tls(tls))
}

/// The password from `DB_PASSWORD` when the URL has none, and the password file from
/// `DB_PASSFILE` (or `PGPASSFILE`, or `~/.pgpass` when it exists) when the URL names none.
fn with_env_password(mut connect: ConnectConfig, source: &dyn Source) -> Result<ConnectConfig, ConfigError> {
    if !connect.has_password() {
        if let Some(password) = source.get(table::PASSWORD.env).filter(|p| !p.is_empty()) {
            connect = connect.password(password);
        }
    }
    if connect.has_passfile() {
        return Ok(connect);
    }
    let named = [table::PASSFILE.env, "PGPASSFILE"]
        .into_iter()
        .find_map(|var| source.get(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)));
    if let Some((var, path)) = named {
        let file = LivePassFile::load(std::path::Path::new(path.trim())).map_err(|accepted| {
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
            match LivePassFile::load(&default) {
                Ok(file) => connect.set_passfile(file),
                // libpq ignores it too, with a warning.
                Err(reason) => tracing::warn!(%reason, "ignoring the password file"),
            }
        }
    }
    Ok(connect)
}
