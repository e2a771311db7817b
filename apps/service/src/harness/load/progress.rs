//! The progress line while a load run goes: redrawn in place on a terminal, a line every five
//! seconds otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::samples::Sample;

/// Draws progress.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last_line: Option<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            tty: std::io::stdout().is_terminal(),
            last_line: None,
        }
    }
}

impl Progress {
    /// Shows where the run is: `t_s` of `total_s` seconds, and the latest sample.
    pub fn show(&mut self, phase: &str, t_s: f64, total_s: f64, s: &Sample) {
        let filled = ((t_s / total_s.max(1.0)).clamp(0.0, 1.0) * 24.0) as usize;
        let api = s.pools.get("api");
        let running = s.tasks.get("running").copied().unwrap_or(0);
        let done = s.tasks.get("succeeded").copied().unwrap_or(0);
        let line = format!(
            "[{}{}] {t_s:>5.1}/{total_s:.0} s {phase:<8} api {} req/s p99 {:.1} ms errors {}  pool {}/{}  tasks running {running} done {done}{}",
            "#".repeat(filled),
            ".".repeat(24 - filled),
            s.requests,
            s.p99_ms,
            s.requests - s.ok,
            api.map_or(0.0, |p| p.in_use),
            api.map_or(0.0, |p| p.open),
            s.fault.as_ref().map_or(String::new(), |f| format!("  fault: {f}"))
        );
        if self.tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last_line = Some(Instant::now());
            println!("{line}");
        }
    }

    /// Ends the progress line.
    pub fn finish(&mut self) {
        if self.tty {
            println!();
        }
    }
}
