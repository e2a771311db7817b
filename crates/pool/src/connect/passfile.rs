//! Passwords from a password file in libpq's format (`~/.pgpass`, `PGPASSFILE`): one
//! `hostname:port:database:username:password` per line, `*` matching anything in the first
//! four fields, `\` escaping `:` and `\`, `#` starting a comment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A loaded password file. Its `Debug` shows the path and the number of entries, never a
/// password.
#[derive(Clone)]
pub(crate) struct PassFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    host: String,
    port: String,
    database: String,
    user: String,
    password: String,
}

impl fmt::Debug for PassFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassFile")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// A password file read again whenever it changes (its modification time or size), so that a
/// rotated password is used from the next connect on, without a restart. Clones share it.
#[derive(Clone)]
pub(crate) struct LivePassFile {
    path: PathBuf,
    current: Arc<Mutex<(Stamp, PassFile)>>,
}

/// When a file was last changed, as far as `stat` shows.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

/// The file's modification time and size (`None` when it cannot be read).
pub(crate) fn file_stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl LivePassFile {
    /// Reads `path` (see [`PassFile::load`]).
    pub(crate) fn load(path: &Path) -> Result<LivePassFile, String> {
        let stamped = file_stamp(path);
        let file = PassFile::load(path)?;
        Ok(LivePassFile {
            path: path.to_path_buf(),
            current: Arc::new(Mutex::new((stamped, file))),
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The password for this connect, from the file as it is now (read again if it changed;
    /// a file that became unreadable leaves the last good one in use, with a warning).
    pub(crate) fn lookup(&self, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
        let now = file_stamp(&self.path);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now != current.0 {
            match PassFile::load(&self.path) {
                Ok(file) => {
                    tracing::info!(path = %self.path.display(), "password file changed: read again");
                    *current = (now, file);
                }
                Err(reason) => {
                    tracing::warn!(%reason, "password file changed but cannot be read: keeping the last one");
                    current.0 = now;
                }
            }
        }
        current.1.lookup(host, port, database, user).map(str::to_string)
    }
}

impl fmt::Debug for LivePassFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LivePassFile").field("path", &self.path).finish()
    }
}

impl PassFile {
    /// Reads `path`. Like libpq, a file that others can read is refused: its permissions must
    /// be `u=rw` (0600) or less.
    pub(crate) fn load(path: &Path) -> Result<PassFile, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} has group or world access; its permissions must be u=rw (0600) or less",
                path.display()
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(PassFile {
            path: path.to_path_buf(),
            entries: text.lines().filter_map(parse_line).collect(),
        })
    }

    /// The password of the first entry matching the connection, as libpq picks it.
    pub(crate) fn lookup(&self, host: &str, port: u16, database: &str, user: &str) -> Option<&str> {
        let port = port.to_string();
        let fits = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        self.entries
            .iter()
            .find(|e| {
                fits(&e.host, host)
                    && fits(&e.port, &port)
                    && fits(&e.database, database)
                    && fits(&e.user, user)
            })
            .map(|e| e.password.as_str())
    }
}

fn parse_line(line: &str) -> Option<Entry> {
    if line.trim_start().starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut fields = Vec::with_capacity(5);
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    let [host, port, database, user, password]: [String; 5] = fields.try_into().ok()?;
    Some(Entry {
        host,
        port,
        database,
        user,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(text: &str, mode: u32) -> (tempfile_dir::Dir, PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.0.join("pgpass");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    /// A directory removed on drop (the pool crate has no tempfile dependency).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!("holdfast-passfile-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).expect("mkdir");
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn first_match_wins_with_wildcards_and_escapes() {
        let (_dir, path) = file(
            "# comment\n\
             db.example:5432:app:alice:first\n\
             *:*:app:alice:second\n\
             *:*:*:bob:p\\:w\\\\d\n\
             short:line\n",
            0o600,
        );
        let pf = PassFile::load(&path).expect("load");
        assert_eq!(pf.lookup("db.example", 5432, "app", "alice"), Some("first"));
        assert_eq!(pf.lookup("other", 6432, "app", "alice"), Some("second"));
        assert_eq!(pf.lookup("h", 1, "x", "bob"), Some("p:w\\d"));
        assert_eq!(pf.lookup("h", 1, "x", "carol"), None);
        let debug = format!("{pf:?}");
        assert!(!debug.contains("first") && !debug.contains("p:w"), "{debug}");
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let (_dir, path) = file("*:*:*:*:pw\n", 0o644);
        let err = PassFile::load(&path).expect_err("0644");
        assert!(err.contains("u=rw (0600)"), "{err}");
        assert!(!err.contains("pw\n"), "{err}");
        let err = PassFile::load(Path::new("/nonexistent/pgpass")).expect_err("missing");
        assert!(err.contains("/nonexistent/pgpass"), "{err}");
    }
}
