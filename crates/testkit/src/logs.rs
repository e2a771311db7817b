//! Capturing `tracing` output, to assert on what a person reading the log would see.

use std::sync::{Arc, Mutex, OnceLock};

/// Captured log text.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Logs").field(&self.text().len()).finish()
    }
}

impl Logs {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn subscriber(logs: Logs) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs)
        .with_ansi(false)
        .finish()
}

/// Records every event (debug and up) of the calling thread; keep the guard alive. For
/// tests on a current-thread runtime.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let guard = tracing::subscriber::set_default(subscriber(logs.clone()));
    (logs, guard)
}

/// Records every event of every thread of the process from now on (for code that logs on
/// runtime worker threads). The first call installs it; later calls share the same buffer.
pub fn capture_logs_everywhere() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        if tracing::subscriber::set_global_default(subscriber(logs.clone())).is_err() {
            panic!("another global tracing subscriber was installed first");
        }
        logs
    })
    .clone()
}
