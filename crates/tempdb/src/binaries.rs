//! Finding the PostgreSQL server programs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory holding `initdb`, `postgres` and `psql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Looks in `PG_BIN`, then every directory of `PATH`, then the newest
    /// `/usr/lib/postgresql/*/bin` (Debian's layout).
    pub fn find() -> Result<PgBin> {
        let mut looked = Vec::new();
        if let Some(dir) = std::env::var_os("PG_BIN") {
            let dir = PathBuf::from(dir);
            if has_server(&dir) {
                return Ok(PgBin { dir });
            }
            looked.push(format!("PG_BIN={}", dir.display()));
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_server(&dir) {
                    // Resolve symlinks (/usr/local/bin/initdb -> .../15/bin/initdb) so that the
                    // sibling programs come from the same installation.
                    let dir = std::fs::canonicalize(dir.join("initdb"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .filter(|d| has_server(d))
                        .unwrap_or(dir);
                    return Ok(PgBin { dir });
                }
            }
            looked.push("PATH".to_string());
        }
        let debian = Path::new("/usr/lib/postgresql");
        if let Some(dir) = newest_version_dir(debian) {
            return Ok(PgBin { dir });
        }
        looked.push(format!("{}/*/bin", debian.display()));
        Err(Error::BinariesNotFound {
            looked: looked.join(", "),
        })
    }

    /// Uses the programs in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Result<PgBin> {
        let dir = dir.into();
        if has_server(&dir) {
            Ok(PgBin { dir })
        } else {
            Err(Error::BinariesNotFound {
                looked: dir.display().to_string(),
            })
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one program in the directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|p| dir.join(p).is_file())
}

fn newest_version_dir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["9.6", "15", "13", "notaversion"] {
            let bin = root.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).expect("mkdir");
            for p in ["initdb", "postgres"] {
                std::fs::write(bin.join(p), "").expect("write");
            }
        }
        assert_eq!(
            newest_version_dir(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let err = PgBin::at("/nonexistent/holdfast").expect_err("no binaries there");
        assert!(err.to_string().contains("apt-get install -y postgresql"), "{err}");
    }
}
