//! A throwaway PostgreSQL cluster: initdb into a temporary directory, a server on a free
//! loopback port, stop/kill/restart, removal on drop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::account::{server_account, Account};
use crate::binaries::PgBin;
use crate::error::{Error, Result};
use crate::options::{ClusterOptions, Purpose, StopMode};
use crate::process::{file_tail, output_tail, signal, Signal, Supervised, POLL};
use crate::watchdog::Watchdog;

/// The superuser role of every throwaway cluster (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";

/// How many ports are tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// A database made by [`TempCluster::create_database`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// Its name.
    pub name: String,
    /// A `postgres://` URL for it (superuser, loopback TCP).
    pub url: String,
}

/// A PostgreSQL server of its own, in a temporary directory, listening on 127.0.0.1 and on a
/// unix socket in that directory. Dropping it stops the server and removes the directory,
/// also when a test panics; if the whole process dies, a watchdog does the same.
#[derive(Debug)]
pub struct TempCluster {
    pub(crate) bin: PgBin,
    pub(crate) root: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) port: u16,
    pub(crate) account: Option<Account>,
    pub(crate) options: ClusterOptions,
    pub(crate) server: Supervised,
    next_database: AtomicU32,
    watchdog: Option<Watchdog>,
}

impl TempCluster {
    /// Creates a cluster (initdb: trust authentication, UTF8, C locale) and starts its server.
    pub fn start(options: ClusterOptions) -> Result<TempCluster> {
        let bin = PgBin::find()?;
        TempCluster::start_with(bin, options)
    }

    /// Like [`start`](Self::start), with the server programs of `bin`.
    pub fn start_with(bin: PgBin, options: ClusterOptions) -> Result<TempCluster> {
        let mut cluster = TempCluster::prepare(bin, options)?;
        cluster.initdb()?;
        cluster.configure()?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// A cluster with its directory (owned by the server account, watched by the watchdog)
    /// and nothing in it yet.
    pub(crate) fn prepare(bin: PgBin, options: ClusterOptions) -> Result<TempCluster> {
        let account = server_account()?;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg-")
            .tempdir()
            .map_err(|source| io_error("create temporary directory in", std::env::temp_dir(), source))?;
        // From here on the directory is ours to remove (Drop, or the watchdog).
        let root = dir.keep();
        let mut cluster = TempCluster {
            data: root.join("data"),
            log: root.join("server.log"),
            watchdog: None,
            bin,
            root,
            port: 0,
            account,
            options,
            server: Supervised::default(),
            next_database: AtomicU32::new(1),
        };
        cluster.watchdog = Some(Watchdog::spawn(
            &cluster.root,
            &cluster.data.join("postmaster.pid"),
        )?);
        if let Some(account) = account {
            std::os::unix::fs::chown(&cluster.root, Some(account.uid), Some(account.gid)).map_err(
                |source| {
                    io_error(
                        "give the cluster directory to the server account:",
                        &cluster.root,
                        source,
                    )
                },
            )?;
        }
        Ok(cluster)
    }

    /// A `postgres://` URL for the `postgres` database, as superuser over loopback TCP.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A `postgres://` URL for database `name`.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The server programs this cluster runs.
    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }

    /// True while the server process is running.
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Stops the server with a fast shutdown (sessions end, transactions roll back).
    pub fn stop(&self) -> Result<()> {
        self.stop_with(StopMode::Fast)
    }

    /// Stops the server abruptly, like a crash (immediate shutdown, no checkpoint).
    pub fn kill(&self) -> Result<()> {
        self.stop_with(StopMode::Immediate)
    }

    /// Stops the server in the given mode and waits until it has exited.
    pub fn stop_with(&self, mode: StopMode) -> Result<()> {
        let sig = match mode {
            StopMode::Smart => Signal::Term,
            StopMode::Fast => Signal::Int,
            StopMode::Immediate => Signal::Quit,
        };
        self.server.stop(sig, self.options.stop_timeout)
    }

    /// Starts the server again after a stop or kill, on the same port.
    pub fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Err(Error::AlreadyRunning);
        }
        self.start_server()
    }

    /// Stops the server in the given mode and starts it again on the same port.
    pub fn restart(&self, mode: StopMode) -> Result<()> {
        self.stop_with(mode)?;
        self.start_server()
    }

    /// Runs SQL as the superuser in database `db` with `psql` and returns what it printed
    /// (unaligned, tuples only, trimmed). Stops at the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let psql = self.bin.program("psql");
        let output = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db, "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: psql.clone(),
                error: source,
            })?;
        if !output.status.success() {
            return Err(Error::Command {
                program: "psql".to_string(),
                status: output.status.to_string(),
                output: output_tail(&output),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Creates a fresh, empty database (a copy of `template1`).
    pub fn create_database(&self) -> Result<Database> {
        self.create_database_from("template1")
    }

    /// Creates a fresh database as a copy of `template` (which nobody may be connected to).
    /// Use it to set a schema up once and give every test its own copy.
    pub fn create_database_from(&self, template: &str) -> Result<Database> {
        check_identifier("template name", template)?;
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("holdfast_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE {template}"))?;
        Ok(Database {
            url: self.url_for(&name),
            name,
        })
    }

    /// Creates a database named `name` (a copy of `template1`).
    pub fn create_named_database(&self, name: &str) -> Result<Database> {
        check_identifier("database name", name)?;
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(Database {
            url: self.url_for(name),
            name: name.to_string(),
        })
    }

    /// A command for a server program, run as the server account when we are root.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.program(program));
        command
            .current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some(account) = self.account {
            command.uid(account.uid).gid(account.gid);
        }
        command
    }

    fn initdb(&self) -> Result<()> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args([
                "--auth=trust",
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: self.bin.program("initdb"),
                error: source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                program: "initdb".to_string(),
                status: output.status.to_string(),
                output: output_tail(&output),
            })
        }
    }

    pub(crate) fn configure(&self) -> Result<()> {
        let mut conf = String::from("\n# holdfast-tempdb\n");
        let mut set = |name: &str, value: &str| conf.push_str(&format!("{name} = {value}\n"));
        set("listen_addresses", "'127.0.0.1'");
        set("unix_socket_directories", &quote(&self.root.to_string_lossy()));
        set("max_connections", &self.options.max_connections.to_string());
        set("shared_buffers", "'64MB'");
        set("lc_messages", "'C'");
        set("timezone", "'UTC'");
        set("log_line_prefix", "'%m [%p] %q%a '");
        if self.options.purpose == Purpose::Test {
            set("fsync", "off");
            // synchronous_commit stays on: with fsync off it costs nothing, and a killed
            // server (a process crash, not an OS crash) then loses no acknowledged commit.
            set("full_page_writes", "off");
        }
        for (name, value) in &self.options.settings {
            set(name, value);
        }
        append(&self.data.join("postgresql.conf"), &conf)?;
        for (name, contents, mode) in &self.options.files {
            self.write_server_file(name, contents, *mode)?;
        }

        let mut hba = String::new();
        for line in &self.options.hba_lines {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n");
        // Streaming standbys (see `standby`) connect for replication over the socket.
        hba.push_str("local replication all trust\nhost replication all 127.0.0.1/32 trust\n");
        let path = self.data.join("pg_hba.conf");
        // Truncating the existing file keeps its owner (the server account).
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| io_error("open", &path, source))?;
        file.write_all(hba.as_bytes())
            .map_err(|source| io_error("write", &path, source))
    }

    /// Writes `contents` to `name` in the data directory with permissions `mode`, owned by
    /// the account that runs the server (which checks the owner and mode of key files).
    pub(crate) fn write_server_file(&self, name: &str, contents: &[u8], mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let relative = Path::new(name);
        if name.is_empty()
            || relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::InvalidFileName {
                value: name.to_string(),
            });
        }
        let path = self.data.join(relative);
        std::fs::write(&path, contents).map_err(|source| io_error("write", &path, source))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|source| io_error("set the permissions of", &path, source))?;
        if let Some(account) = self.account {
            std::os::unix::fs::chown(&path, Some(account.uid), Some(account.gid))
                .map_err(|source| io_error("give the server account", &path, source))?;
        }
        Ok(())
    }

    pub(crate) fn start_on_free_port(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            match self.start_server() {
                Ok(()) => return Ok(()),
                // Another process may have taken the port between our probe and the bind.
                Err(e @ Error::ExitedDuringStart { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotRunning))
    }

    pub(crate) fn start_server(&self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| io_error("open", &self.log, source))?;
        let log_err = log
            .try_clone()
            .map_err(|source| io_error("open", &self.log, source))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for the test or demo does not reach the
            // server; the owner stops it in order.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: self.bin.program("postgres"),
                error: source,
            })?;
        let pid = child.id();
        let mut server = self.server.lock();
        *server = Some(child);
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if let Some(child) = server.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    *server = None;
                    return Err(Error::ExitedDuringStart {
                        status: status.to_string(),
                        log: self.log_tail(20),
                    });
                }
            }
            if ready(&self.data, pid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(child) = server.take() {
                    signal(child.id(), Signal::Quit);
                }
                return Err(Error::StartTimeout {
                    seconds: self.options.start_timeout.as_secs(),
                    log: self.log_tail(20),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop_with(StopMode::Immediate);
            if let Some(mut child) = self.server.lock().take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }
}

/// The server writes "ready" on line 8 of postmaster.pid once it accepts connections (this
/// is what `pg_ctl -w` waits for); line 1 must be our child, not a stale file.
fn ready(data: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| io_error("bind a probe socket on", "127.0.0.1:0", source))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| io_error("read the address of", "127.0.0.1:0", source))
}

pub(crate) fn append(path: &Path, text: &str) -> Result<()> {
    let mut file: File = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| io_error("open", path, source))?;
    file.write_all(text.as_bytes())
        .map_err(|source| io_error("write", path, source))
}

pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn check_identifier(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !value.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

pub(crate) fn io_error(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.into(),
        error: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("x", "holdfast_1").is_ok());
        for bad in ["", "1abc", "a-b", "A", "a;drop", &"x".repeat(64)] {
            assert!(check_identifier("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readiness_needs_our_pid_and_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("postmaster.pid");
        assert!(!ready(dir.path(), 42));
        std::fs::write(&pidfile, "42\n/d\n1\n5432\n/tmp\n127.0.0.1\n  1 2\nstarting\n").expect("write");
        assert!(!ready(dir.path(), 42));
        std::fs::write(&pidfile, "42\n/d\n1\n5432\n/tmp\n127.0.0.1\n  1 2\nready   \n").expect("write");
        assert!(ready(dir.path(), 42));
        assert!(!ready(dir.path(), 43), "a stale pid file is not ready");
    }
}
