//! A throwaway PgBouncer in front of a throwaway cluster: its own config, auth file, log and
//! pid file in a temporary directory, a free loopback port, stop/kill/restart, removal on drop.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::account::{server_account, Account};
use crate::cluster::{free_port, io_error, TempCluster, SUPERUSER};
use crate::error::{Error, Result};
use crate::process::{file_tail, output_tail, Signal, Supervised, POLL};
use crate::watchdog::Watchdog;

/// How many ports are tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// PgBouncer's `pool_mode`: when a server connection goes back to PgBouncer's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// When the client disconnects (session state works as on a direct connection).
    Session,
    /// At the end of every transaction (and after every statement outside one): the mode
    /// that lets many clients share few server connections, and the one that takes session
    /// state, named prepared statements and LISTEN away from clients.
    #[default]
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// Settings for [`TempPgBouncer::start`].
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// `pool_mode` (default transaction).
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per database and user (default 10).
    pub default_pool_size: u32,
    /// `max_client_conn` (default 500).
    pub max_client_conn: u32,
    /// Extra `[pgbouncer]` settings, written after holdfast's own (so they win).
    pub settings: Vec<(String, String)>,
    /// How long to wait for PgBouncer to accept connections.
    pub start_timeout: Duration,
    /// How long to wait for it to stop.
    pub stop_timeout: Duration,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions {
            pool_mode: PoolMode::Transaction,
            default_pool_size: 10,
            max_client_conn: 500,
            settings: Vec::new(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

impl PgBouncerOptions {
    /// Adds a `[pgbouncer]` setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets `default_pool_size`.
    pub fn default_pool_size(mut self, n: u32) -> Self {
        self.default_pool_size = n;
        self
    }

    /// Sets `pool_mode`.
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }
}

/// A PgBouncer of its own on 127.0.0.1, forwarding every database to one
/// [`TempCluster`] as the cluster's superuser (trust authentication on both sides).
/// Dropping it stops PgBouncer and removes its directory; if the whole process dies, a
/// watchdog does the same.
#[derive(Debug)]
pub struct TempPgBouncer {
    program: PathBuf,
    psql: PathBuf,
    root: PathBuf,
    port: u16,
    account: Option<Account>,
    options: PgBouncerOptions,
    process: Supervised,
    watchdog: Option<Watchdog>,
}

impl TempPgBouncer {
    /// Writes a configuration forwarding to `cluster` and starts PgBouncer on a free port.
    pub fn start(cluster: &TempCluster, options: PgBouncerOptions) -> Result<TempPgBouncer> {
        let program = find_program()?;
        let account = server_account()?;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pgbouncer-")
            .tempdir()
            .map_err(|source| io_error("create temporary directory in", std::env::temp_dir(), source))?;
        let root = dir.keep();
        let mut bouncer = TempPgBouncer {
            psql: cluster.bin().program("psql"),
            program,
            root,
            port: 0,
            account,
            options,
            process: Supervised::default(),
            watchdog: None,
        };
        bouncer.watchdog = Some(Watchdog::spawn(&bouncer.root, &bouncer.pid_file())?);
        if let Some(account) = account {
            std::os::unix::fs::chown(&bouncer.root, Some(account.uid), Some(account.gid))
                .map_err(|source| io_error("give the PgBouncer directory to", &bouncer.root, source))?;
        }
        write(
            &bouncer.root.join("userlist.txt"),
            &format!("\"{SUPERUSER}\" \"\"\n"),
        )?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            bouncer.port = free_port()?;
            bouncer.configure(cluster.port())?;
            match bouncer.start_process() {
                Ok(()) => return Ok(bouncer),
                // Another process may have taken the port between our probe and the bind.
                Err(e @ Error::ExitedDuringStart { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotRunning))
    }

    /// A `postgres://` URL for database `name` through PgBouncer (superuser, loopback TCP).
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding PgBouncer's configuration, log and pid file.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The last `lines` lines of PgBouncer's log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.root.join("pgbouncer.log"), lines)
    }

    /// True while the PgBouncer process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Stops PgBouncer at once (SIGTERM, its immediate shutdown: every client and server
    /// connection is closed) and waits until it has exited.
    pub fn stop(&self) -> Result<()> {
        self.stop_with(Signal::Term)
    }

    /// Kills PgBouncer (SIGKILL), like a crash, and waits until it has exited.
    pub fn kill(&self) -> Result<()> {
        self.stop_with(Signal::Kill)
    }

    /// Starts PgBouncer again after a stop or kill, on the same port.
    pub fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Err(Error::AlreadyRunning);
        }
        self.start_process()
    }

    /// Stops PgBouncer (immediate shutdown) and starts it again on the same port.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_process()
    }

    /// Runs a command on PgBouncer's admin console (`SHOW POOLS`, `SHOW CLIENTS`, ...) with
    /// `psql` and returns what it printed (unaligned, `|`-separated, tuples only).
    pub fn admin(&self, command: &str) -> Result<String> {
        self.run_admin(command, &["-t"])
    }

    fn run_admin(&self, command: &str, extra: &[&str]) -> Result<String> {
        let output = Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-h", "127.0.0.1"])
            .args(extra)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "pgbouncer",
                "-c",
                command,
            ])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: self.psql.clone(),
                error: source,
            })?;
        if !output.status.success() {
            return Err(Error::Command {
                program: "psql (PgBouncer admin console)".to_string(),
                status: output.status.to_string(),
                output: output_tail(&output),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Like [`admin`](Self::admin), with each row as column name and value pairs (for
    /// `SHOW POOLS`, whose columns change between PgBouncer versions).
    pub fn admin_rows(&self, command: &str) -> Result<Vec<Vec<(String, String)>>> {
        let text = self.run_admin(command, &["-P", "footer=off"])?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().map(|h| h.split('|').collect()).unwrap_or_default();
        Ok(lines
            .map(|line| {
                header
                    .iter()
                    .zip(line.split('|'))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect())
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("pgbouncer.pid")
    }

    fn configure(&self, server_port: u16) -> Result<()> {
        let root = self.root.display();
        let o = &self.options;
        let mut conf = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {root}/userlist.txt\n\
             admin_users = {SUPERUSER}\nstats_users = {SUPERUSER}\n\
             pool_mode = {mode}\ndefault_pool_size = {size}\nmax_client_conn = {clients}\n\
             logfile = {root}/pgbouncer.log\npidfile = {root}/pgbouncer.pid\n\
             ; tests restart servers: do not wait the default 15 s before logging in again\n\
             server_login_retry = 1\n",
            port = self.port,
            mode = o.pool_mode.as_str(),
            size = o.default_pool_size,
            clients = o.max_client_conn,
        );
        for (name, value) in &o.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        write(&self.root.join("pgbouncer.ini"), &conf)
    }

    fn start_process(&self) -> Result<()> {
        let mut command = Command::new(&self.program);
        command
            .arg(self.root.join("pgbouncer.ini"))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for the test does not reach it.
            .process_group(0);
        if let Some(account) = self.account {
            // PgBouncer refuses to run as root.
            command.uid(account.uid).gid(account.gid);
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            program: self.program.clone(),
            error: source,
        })?;
        let mut process = self.process.lock();
        *process = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if let Some(child) = process.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    *process = None;
                    return Err(Error::ExitedDuringStart {
                        status: status.to_string(),
                        log: self.log_tail(20),
                    });
                }
            }
            // PgBouncer listens only once its configuration loaded and its pid file is
            // written.
            if self.pid_file().exists() && TcpStream::connect_timeout(&address, POLL * 20).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = process.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(Error::StartTimeout {
                    seconds: self.options.start_timeout.as_secs(),
                    log: self.log_tail(20),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn stop_with(&self, sig: Signal) -> Result<()> {
        self.process.stop(sig, self.options.stop_timeout)?;
        // A killed PgBouncer leaves its pid file behind; the next start would refuse it.
        let _ = std::fs::remove_file(self.pid_file());
        Ok(())
    }
}

impl Drop for TempPgBouncer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop_with(Signal::Kill);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }
}

/// `PGBOUNCER` (the program), then every directory of `PATH`, then `/usr/sbin` (Debian puts
/// it there, outside most users' `PATH`).
fn find_program() -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(program) = std::env::var_os("PGBOUNCER") {
        let program = PathBuf::from(program);
        if program.is_file() {
            return Ok(program);
        }
        looked.push(format!("PGBOUNCER={}", program.display()));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
        let program = dir.join("pgbouncer");
        if program.is_file() {
            return Ok(program);
        }
    }
    looked.push("PATH".to_string());
    looked.push("/usr/sbin".to_string());
    Err(Error::PgBouncerNotFound {
        looked: looked.join(", "),
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| io_error("write", path, source))
}
