//! What a connection needs: where to connect, as whom, and the socket and server settings
//! that make a dead peer visible quickly.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::credentials::{BoxError, Credentials, Provider};
use super::passfile::LivePassFile;
use super::pooler::Pooler;
use super::target::TargetSessionAttrs;
use super::tls::config::{SslMode, Tls, TlsOptions};
use super::url_params::{extract, OWN_KEYS};
use crate::error::ConfigError;
use crate::settings::table;

/// TCP keepalive probing: how soon a silent peer is probed and given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub retries: u32,
}

impl Default for Keepalive {
    /// 10 s idle, 5 s between probes, 3 probes: a vanished peer is noticed in about 25 s
    /// instead of the operating system's default of over two hours.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(5),
            retries: 3,
        }
    }
}

/// Default bound on the whole connect (TCP, start-up, authentication). Generous for a
/// healthy server (connects take milliseconds), short enough that connects started into a
/// hung network do not hold the pool's opener slots long after it healed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = table::CONNECT_TIMEOUT.default_duration();
/// Default `TCP_USER_TIMEOUT`: unacknowledged writes fail after this long.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `application_name`, so holdfast's sessions are easy to find in
/// `pg_stat_activity`.
pub const DEFAULT_APPLICATION_NAME: &str = table::APPLICATION_NAME.default;

/// How to open one connection. Build it from a URL (`postgres://user:pw@host:port/db?...`) or
/// a key=value string, then adjust.
///
/// Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct ConnectConfig {
    pg: tokio_postgres::Config,
    connect_timeout: Duration,
    keepalive: Option<Keepalive>,
    tcp_user_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    idle_in_transaction_session_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    pooler: Pooler,
    tls: Tls,
    passfile: Option<LivePassFile>,
    credentials: Option<Provider>,
    target_session_attrs: TargetSessionAttrs,
    load_balance_hosts: bool,
    max_standby_lag: Option<Duration>,
    trace_statement_text: bool,
}

impl ConnectConfig {
    /// Parses a `postgres://` URL or a libpq key=value string. Parameters in it
    /// (`connect_timeout`, `keepalives_idle`, `keepalives_interval`, `keepalives_retries`,
    /// `tcp_user_timeout`, `application_name`) override holdfast's defaults; the TLS
    /// parameters (`sslmode` with all five libpq modes, `sslrootcert`, `sslcert`, `sslkey`,
    /// `sslsni`), `passfile`, `target_session_attrs` (all six libpq values) and
    /// `load_balance_hosts` (`disable`, `random`) are read by holdfast, and the files they
    /// name are read now. Several hosts are given as libpq takes them
    /// (`host=a,b port=5432,5433`, or `postgres://a:5432,b:5433/db`).
    pub fn from_url(url: &str) -> Result<ConnectConfig, ConfigError> {
        ConnectConfig::parse_setting("url", url)
    }

    /// Like [`from_url`](Self::from_url), naming `setting` (say `DATABASE_URL`) in errors.
    pub fn parse_setting(setting: &str, url: &str) -> Result<ConnectConfig, ConfigError> {
        let invalid_url = |reason: String| ConfigError::InvalidUrl {
            setting: setting.to_string(),
            url: redact_url(url),
            reason,
        };
        let (rest, own) = extract(url, OWN_KEYS).map_err(invalid_url)?;
        let pg = tokio_postgres::Config::from_str(&rest).map_err(|e| invalid_url(e.to_string()))?;
        if pg.get_hosts().is_empty() {
            return Err(invalid_url("no host given".to_string()));
        }
        let mut config = ConnectConfig::from_pg(pg);
        let mut tls = TlsOptions::default();
        for (key, value) in own {
            let named = format!("{setting} {key}");
            if key == "target_session_attrs" {
                config.target_session_attrs =
                    value.parse().map_err(|accepted| ConfigError::InvalidValue {
                        setting: named,
                        value: value.clone(),
                        accepted,
                    })?;
            } else if key == "load_balance_hosts" {
                config.load_balance_hosts = match value.as_str() {
                    "disable" => false,
                    "random" => true,
                    _ => {
                        return Err(ConfigError::InvalidValue {
                            setting: named,
                            value: value.clone(),
                            accepted: "disable or random".into(),
                        })
                    }
                };
            } else if key == "passfile" {
                let file = LivePassFile::load(std::path::Path::new(&value)).map_err(|accepted| {
                    ConfigError::InvalidValue {
                        setting: named,
                        value: value.clone(),
                        accepted: format!("a readable password file: {accepted}"),
                    }
                })?;
                config.passfile = Some(file);
            } else {
                tls.set(&named, &key, &value)?;
            }
        }
        config.tls = tls.build_named(&|key| format!("{setting} {key}"))?;
        Ok(config)
    }

    /// Wraps a tokio-postgres configuration, keeping what it sets explicitly.
    pub fn from_pg(mut pg: tokio_postgres::Config) -> ConnectConfig {
        let mut keepalive = Keepalive::default();
        // tokio-postgres' own default idle is two hours; anything else was asked for.
        if pg.get_keepalives_idle() != Duration::from_secs(2 * 60 * 60) {
            keepalive.idle = pg.get_keepalives_idle();
        }
        if let Some(interval) = pg.get_keepalives_interval() {
            keepalive.interval = interval;
        }
        if let Some(retries) = pg.get_keepalives_retries() {
            keepalive.retries = retries;
        }
        if pg.get_application_name().is_none() {
            pg.application_name(DEFAULT_APPLICATION_NAME);
        }
        ConnectConfig {
            connect_timeout: pg
                .get_connect_timeout()
                .copied()
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            keepalive: pg.get_keepalives().then_some(keepalive),
            // libpq reads `tcp_user_timeout` in milliseconds; tokio-postgres parses the same
            // number as seconds. Keep libpq's meaning, which is what URLs are written for.
            tcp_user_timeout: Some(
                pg.get_tcp_user_timeout()
                    .map(|d| Duration::from_millis(d.as_secs()))
                    .unwrap_or(DEFAULT_TCP_USER_TIMEOUT),
            ),
            statement_timeout: table::STATEMENT_TIMEOUT.default_value(),
            idle_in_transaction_session_timeout: table::IDLE_IN_TRANSACTION_TIMEOUT.default_value(),
            lock_timeout: table::LOCK_TIMEOUT.default_value(),
            pooler: Pooler::None,
            tls: tls_from_pg(&pg),
            passfile: None,
            credentials: None,
            // tokio-postgres knows three of the six targets; holdfast enforces them.
            target_session_attrs: match pg.get_target_session_attrs() {
                tokio_postgres::config::TargetSessionAttrs::ReadWrite => TargetSessionAttrs::ReadWrite,
                tokio_postgres::config::TargetSessionAttrs::ReadOnly => TargetSessionAttrs::ReadOnly,
                _ => TargetSessionAttrs::Any,
            },
            load_balance_hosts: pg.get_load_balance_hosts()
                == tokio_postgres::config::LoadBalanceHosts::Random,
            max_standby_lag: None,
            trace_statement_text: false,
            pg,
        }
    }

    /// Bounds each host's connect: TCP, start-up and authentication (as libpq, a host that
    /// does not answer in time leaves the next one its full time). Defaults to 10 s (or the
    /// URL's `connect_timeout`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// TCP keepalive settings, or `None` to leave keepalive off. Defaults to
    /// [`Keepalive::default`] (or the URL's `keepalives_*`).
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// `TCP_USER_TIMEOUT`, or `None` for the operating system's default. Defaults to 30 s
    /// (or the URL's `tcp_user_timeout`, in milliseconds as in libpq).
    pub fn tcp_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tcp_user_timeout = timeout;
        self
    }

    /// `statement_timeout` sent at start-up (`None`: the server's setting). Defaults to
    /// 300000 ms.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// `idle_in_transaction_session_timeout` sent at start-up (`None`: the server's
    /// setting). Defaults to none.
    pub fn idle_in_transaction_session_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_in_transaction_session_timeout = timeout;
        self
    }

    /// `lock_timeout` sent at start-up (`None`: the server's setting). Defaults to none.
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// TLS settings (build them with [`TlsOptions::build`]). Defaults to `sslmode=prefer`
    /// (or the URL's TLS parameters).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS settings.
    pub fn get_tls(&self) -> &Tls {
        &self.tls
    }

    /// Reads passwords from a password file in libpq's format (`~/.pgpass`), used when no
    /// password is set otherwise. The file must not be readable by others. It is read again
    /// whenever it changes, so a rotated password is used from the next connect on.
    /// Defaults to none (the URL's `passfile`, `DB_PASSFILE`, `PGPASSFILE` or `~/.pgpass` when
    /// read from the environment).
    pub fn passfile(mut self, path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = LivePassFile::load(path).map_err(|accepted| ConfigError::InvalidValue {
            setting: "passfile".into(),
            value: path.display().to_string(),
            accepted: format!("a readable password file: {accepted}"),
        })?;
        self.passfile = Some(file);
        Ok(self)
    }

    pub(crate) fn set_passfile(&mut self, file: LivePassFile) {
        self.passfile = Some(file);
    }

    /// Calls `provider` before every connect for the user and password (or token) to use, in
    /// place of the configured ones: short-lived tokens (AWS RDS IAM tokens live 15 minutes;
    /// Azure AD tokens and Vault dynamic secrets likewise) and rotated passwords, without a
    /// restart. Connections already open keep working; new ones use what the provider gives.
    /// A provider that fails makes that connect fail with its error
    /// ([`ConnectError::Credentials`](crate::ConnectError::Credentials)); the pool keeps
    /// trying, with backoff. Cache a token in the provider and renew it before it expires:
    /// it runs on every connect.
    ///
    /// ```no_run
    /// # use holdfast::pool::{ConnectConfig, Credentials};
    /// # fn fetch_token() -> Result<String, std::io::Error> { Ok(String::new()) }
    /// let config = ConnectConfig::from_url("postgres://app@db.example.com/app")?
    ///     .credentials(|| async {
    ///         let token = fetch_token()?; // an IAM auth token, a Vault lease, ...
    ///         Ok(Credentials::password(token))
    ///     });
    /// # Ok::<(), holdfast::ConfigError>(())
    /// ```
    pub fn credentials<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Credentials, BoxError>> + Send + 'static,
    {
        self.credentials = Some(Provider::new(provider));
        self
    }

    /// The credentials provider, if any.
    pub(crate) fn get_credentials(&self) -> Option<&Provider> {
        self.credentials.as_ref()
    }

    /// True when a password file is in use.
    pub fn has_passfile(&self) -> bool {
        self.passfile.is_some()
    }

    /// True when a password is set (in the URL or with [`password`](Self::password)).
    pub fn has_password(&self) -> bool {
        self.pg.get_password().is_some()
    }

    /// What sits between us and PostgreSQL (see [`Pooler`]). Defaults to [`Pooler::None`].
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// Which servers a connection may be made to (see [`TargetSessionAttrs`]). Defaults to
    /// `any` (or the URL's `target_session_attrs`).
    pub fn target_session_attrs(mut self, target: TargetSessionAttrs) -> Self {
        self.target_session_attrs = target;
        self
    }

    /// Which servers a connection may be made to.
    pub fn get_target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// Try the hosts in a random order on each connect (`true`, libpq's
    /// `load_balance_hosts=random`) instead of as listed. Defaults to `false` (or the URL's
    /// `load_balance_hosts`).
    pub fn load_balance_hosts(mut self, random: bool) -> Self {
        self.load_balance_hosts = random;
        self
    }

    /// A standby further behind its primary than this does not qualify at connect (see
    /// `DB_MAX_STANDBY_LAG_MS`). Defaults to none.
    pub fn max_standby_lag(mut self, lag: Option<Duration>) -> Self {
        self.max_standby_lag = lag;
        self
    }

    /// The bound on a standby's lag, if any.
    pub fn get_max_standby_lag(&self) -> Option<Duration> {
        self.max_standby_lag
    }

    /// Whether statement spans carry the statement's text (`DB_TRACE_STATEMENT_TEXT`).
    /// Defaults to off: the text can hold literals.
    pub fn trace_statement_text(mut self, on: bool) -> Self {
        self.trace_statement_text = on;
        self
    }

    /// Whether statement spans carry the statement's text.
    pub fn get_trace_statement_text(&self) -> bool {
        self.trace_statement_text
    }

    /// Whether hosts are tried in a random order.
    pub fn get_load_balance_hosts(&self) -> bool {
        self.load_balance_hosts
    }

    /// The `application_name` the server shows in `pg_stat_activity`. Defaults to
    /// `holdfast` (or the URL's).
    pub fn application_name(mut self, name: &str) -> Self {
        self.pg.application_name(name);
        self
    }

    /// Sets the password (kept out of every `Debug` and error). Defaults to the URL's, if
    /// any.
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.pg.password(password);
        self
    }

    /// Sets the user name. Defaults to the URL's.
    pub fn user(mut self, user: &str) -> Self {
        self.pg.user(user);
        self
    }

    /// Sets the database name. Defaults to the URL's, else the user name.
    pub fn dbname(mut self, dbname: &str) -> Self {
        self.pg.dbname(dbname);
        self
    }

    /// The bound on each host's connect.
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// TCP keepalive settings, if on.
    pub fn get_keepalive(&self) -> Option<Keepalive> {
        self.keepalive
    }

    /// `TCP_USER_TIMEOUT`, if set.
    pub fn get_tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }

    /// `statement_timeout` sent at start-up, if any.
    pub fn get_statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// What sits between us and PostgreSQL.
    pub fn get_pooler(&self) -> Pooler {
        self.pooler
    }

    /// The server settings (`statement_timeout`, `idle_in_transaction_session_timeout`,
    /// `lock_timeout`) as `SET LOCAL` statements, for a transaction to run right after BEGIN.
    /// `None` when there is nothing to set, or when they were already sent at start-up (no
    /// transaction-mode pooler in between).
    pub fn local_settings_sql(&self) -> Option<String> {
        if !self.pooler.is_transaction() {
            return None;
        }
        let sql: Vec<String> = self
            .server_settings()
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("SET LOCAL {name} = {}", v.as_millis())))
            .collect();
        (!sql.is_empty()).then(|| sql.join("; "))
    }

    fn server_settings(&self) -> [(&'static str, Option<Duration>); 3] {
        [
            ("statement_timeout", self.statement_timeout),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_session_timeout,
            ),
            ("lock_timeout", self.lock_timeout),
        ]
    }

    /// The application name.
    pub fn get_application_name(&self) -> &str {
        self.pg.get_application_name().unwrap_or(DEFAULT_APPLICATION_NAME)
    }

    /// The underlying tokio-postgres configuration (hosts, ports, user, database).
    pub fn pg(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The tokio-postgres configuration used for start-up: the server settings are added to
    /// the `options` start-up parameter, except behind a transaction-mode pooler, which
    /// rejects it (they are then set per transaction, see
    /// [`local_settings_sql`](Self::local_settings_sql)).
    /// `host` and `port` are where this connect goes: without a password, the password file
    /// is looked up for them.
    pub(crate) fn startup_config(
        &self,
        host: &str,
        port: u16,
        credentials: Option<&Credentials>,
    ) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        if let Some(credentials) = credentials {
            if let Some(user) = credentials.get_user() {
                pg.user(user);
            }
            if let Some(password) = credentials.get_password() {
                pg.password(password);
            }
        }
        if pg.get_password().is_none() {
            if let Some(file) = &self.passfile {
                let user = pg.get_user().unwrap_or("");
                let dbname = pg.get_dbname().unwrap_or(user);
                if let Some(password) = file.lookup(host, port, dbname, user) {
                    pg.password(password);
                }
            }
        }
        if self.pooler.is_transaction() {
            return pg;
        }
        let mut options = pg.get_options().unwrap_or("").to_string();
        for (name, value) in self.server_settings() {
            if let Some(value) = value {
                if !options.is_empty() {
                    options.push(' ');
                }
                options.push_str(&format!("-c {name}={}", value.as_millis()));
            }
        }
        if !options.is_empty() {
            pg.options(&options);
        }
        pg
    }
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug already shows the password as `_`.
        f.debug_struct("ConnectConfig")
            .field("pg", &self.pg)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_session_timeout",
                &self.idle_in_transaction_session_timeout,
            )
            .field("lock_timeout", &self.lock_timeout)
            .field("pooler", &self.pooler)
            .field("tls", &self.tls)
            .field("passfile", &self.passfile.as_ref().map(|f| f.path()))
            .field("credentials", &self.credentials)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("load_balance_hosts", &self.load_balance_hosts)
            .field("max_standby_lag", &self.max_standby_lag)
            .field("trace_statement_text", &self.trace_statement_text)
            .finish()
    }
}

/// The sslmode a tokio-postgres configuration asks for (disable, prefer or require), as
/// holdfast's TLS settings without certificate checks.
fn tls_from_pg(pg: &tokio_postgres::Config) -> Tls {
    use tokio_postgres::config::SslMode as Pg;
    let mode = match pg.get_ssl_mode() {
        Pg::Disable => SslMode::Disable,
        Pg::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    let options = TlsOptions {
        mode: Some(mode),
        ..TlsOptions::default()
    };
    // Without files to read this cannot fail; stay on the default if it somehow does.
    options.build().unwrap_or_default()
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    // key=value form: quoting and spacing rules make partial masking fragile; hide it all
    // when it carries a password.
    if url.to_ascii_lowercase().contains("password") {
        "<key=value string with a password, not shown>".to_string()
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_override_defaults() {
        let c = ConnectConfig::from_url(
            "postgres://u@h:5/d?connect_timeout=7&keepalives_idle=3&keepalives_interval=2&keepalives_retries=9&tcp_user_timeout=11000&application_name=api",
        )
        .expect("parse");
        assert_eq!(c.get_connect_timeout(), Duration::from_secs(7));
        assert_eq!(
            c.get_keepalive(),
            Some(Keepalive {
                idle: Duration::from_secs(3),
                interval: Duration::from_secs(2),
                retries: 9
            })
        );
        assert_eq!(c.get_tcp_user_timeout(), Some(Duration::from_millis(11000)));
        assert_eq!(c.get_application_name(), "api");
    }

    #[test]
    fn every_connection_setting_has_a_setter_that_states_its_default() {
        // The TLS settings are set together, through `TlsOptions` and `tls()`.
        let settings: Vec<&dyn crate::settings::Describe> = table::CONNECT
            .iter()
            .copied()
            .filter(|s| !s.name().starts_with("ssl") && s.name() != "url")
            .collect();
        if let Err(e) = crate::settings::check_setter_docs(include_str!("config.rs"), &settings) {
            panic!("{e}");
        }
    }

    #[test]
    fn tight_defaults() {
        let c = ConnectConfig::from_url("postgres://u@h/d").expect("parse");
        assert_eq!(c.get_connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.get_keepalive(), Some(Keepalive::default()));
        assert_eq!(c.get_tcp_user_timeout(), Some(DEFAULT_TCP_USER_TIMEOUT));
        assert_eq!(c.get_application_name(), DEFAULT_APPLICATION_NAME);
    }

    #[test]
    fn startup_options_carry_server_settings() {
        let c = ConnectConfig::from_url("postgres://u@h/d?options=-c%20search_path%3Dx")
            .expect("parse")
            .statement_timeout(Some(Duration::from_secs(300)))
            .lock_timeout(Some(Duration::from_millis(1500)));
        let pg = c.startup_config("h", 5432, None);
        assert_eq!(
            pg.get_options(),
            Some("-c search_path=x -c statement_timeout=300000 -c lock_timeout=1500")
        );
    }

    #[test]
    fn behind_a_transaction_pooler_settings_move_from_start_up_to_set_local() {
        let c = ConnectConfig::from_url("postgres://u@h/d")
            .expect("parse")
            .statement_timeout(Some(Duration::from_secs(300)))
            .lock_timeout(Some(Duration::from_millis(1500)));
        assert_eq!(c.local_settings_sql(), None, "direct: sent at start-up");
        let c = c.pooler(Pooler::Transaction);
        assert_eq!(c.startup_config("h", 5432, None).get_options(), None);
        assert_eq!(
            c.local_settings_sql().as_deref(),
            Some("SET LOCAL statement_timeout = 300000; SET LOCAL lock_timeout = 1500")
        );
        let none = ConnectConfig::from_url("postgres://u@h/d")
            .expect("parse")
            .statement_timeout(None)
            .pooler(Pooler::Transaction);
        assert_eq!(none.local_settings_sql(), None);
    }

    #[test]
    fn a_tokio_postgres_sslmode_is_kept() {
        let mut pg = tokio_postgres::Config::new();
        pg.host("h").ssl_mode(tokio_postgres::config::SslMode::Require);
        assert_eq!(ConnectConfig::from_pg(pg).get_tls().mode(), SslMode::Require);
        let mut pg = tokio_postgres::Config::new();
        pg.host("h").ssl_mode(tokio_postgres::config::SslMode::Disable);
        assert_eq!(ConnectConfig::from_pg(pg).get_tls().mode(), SslMode::Disable);
        let c = ConnectConfig::from_url("postgres://u@h/d?sslmode=require").expect("url");
        assert_eq!(c.get_tls().mode(), SslMode::Require);
        let err = ConnectConfig::from_url("postgres://u@h/d?sslmode=verify-ca&sslrootcert=system")
            .expect_err("system roots need verify-full")
            .to_string();
        assert!(
            err.starts_with("url sslmode: invalid value \"verify-ca\""),
            "{err}"
        );
    }

    #[test]
    fn bad_urls_name_the_setting_and_hide_the_password() {
        let err = ConnectConfig::parse_setting("DATABASE_URL", "postgres://u:hunter2@h:notaport/d")
            .expect_err("bad port");
        let text = err.to_string();
        assert!(text.starts_with("DATABASE_URL: invalid connection URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("u:***@h:notaport/d"), "{text}");
        let err = ConnectConfig::from_url("postgres:///d").expect_err("no host");
        assert!(err.to_string().contains("no host"), "{err}");
    }

    #[test]
    fn password_never_in_debug() {
        let c = ConnectConfig::from_url("postgres://u:hunter2@h/d")
            .expect("parse")
            .password("s3cr3t-pw");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cr3t-pw"),
            "{debug}"
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://a:b@h/d"), "postgres://a:***@h/d");
        assert_eq!(redact_url("postgres://a@h/d"), "postgres://a@h/d");
        assert_eq!(
            redact_url("postgresql://a:b:c@h:1/d?x=@"),
            "postgresql://a:***@h:1/d?x=@"
        );
        assert!(!redact_url("host=h password='p w' user=u").contains("p w"));
        assert_eq!(redact_url("host=h user=u"), "host=h user=u");
    }

    #[test]
    fn every_connection_parameter_is_honoured_or_refused_naming_it() {
        // Honoured: the ones holdfast reads itself, and the ones the connect passes on.
        let c = ConnectConfig::parse_setting(
            "DATABASE_URL",
            "host=a,b port=5432,5433 user=u dbname=d target_session_attrs=prefer-standby \
             load_balance_hosts=random connect_timeout=3 application_name=x",
        )
        .expect("parse");
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::PreferStandby);
        assert!(c.get_load_balance_hosts());
        assert_eq!(c.get_connect_timeout(), Duration::from_secs(3));
        assert_eq!(c.pg().get_hosts().len(), 2);
        let c = ConnectConfig::from_url("postgres://u@a:1,b:2/d?target_session_attrs=standby").expect("url");
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::Standby);
        // Refused: libpq parameters holdfast does not implement, and bad values, naming them.
        for (url, named) in [
            ("host=a gssencmode=disable", "gssencmode"),
            ("postgres://a/d?sslcompression=1", "sslcompression"),
            ("host=a target_session_attrs=primary-ish", "target_session_attrs"),
            ("host=a load_balance_hosts=always", "load_balance_hosts"),
        ] {
            let error = ConnectConfig::parse_setting("DATABASE_URL", url)
                .expect_err(url)
                .to_string();
            assert!(
                error.contains("DATABASE_URL") && error.contains(named),
                "{url}: {error}"
            );
        }
    }
}
