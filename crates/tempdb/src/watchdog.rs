//! A watchdog process that removes a cluster (or a PgBouncer) if the process that made it dies
//! without cleaning up (SIGKILL, abort, a test binary that exits with a shared cluster in a
//! static).
//!
//! It is a tiny shell script reading a pipe whose write end only we hold. When we exit, for
//! whatever reason, the pipe closes, the script wakes up, quits the server whose pid is on the
//! first line of its pid file, and removes the directory. On an orderly drop the directory is
//! already gone and the script just exits.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

const SCRIPT: &str = r#"
trap '' INT TERM HUP
while read -r _; do :; done
pidfile="$2"
if [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;

/// The running watchdog of one cluster directory.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Starts a watchdog for the directory `root`, whose server writes its pid to `pidfile`.
    pub(crate) fn spawn(root: &Path, pidfile: &Path) -> Result<Watchdog> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("holdfast-tempdb-watchdog")
            .arg(root)
            .arg(pidfile)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "/bin/sh".into(),
                error: source,
            })?;
        Ok(Watchdog { child })
    }

    /// The cluster was cleaned up in order: let the watchdog exit and reap it.
    pub(crate) fn dismiss(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
