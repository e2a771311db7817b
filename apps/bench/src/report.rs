//! What a bench measured, kept as it prints, for `--json`: each figure with its section,
//! row, column and unit, and the run's date, commit, machine and command. `holdfast-bench
//! doc` turns such files into `docs/benchmarks.md`.

use std::sync::Mutex;

use serde_json::{json, Value};

/// One figure of a bench's output.
struct Figure {
    section: String,
    row: String,
    column: String,
    value: f64,
    unit: &'static str,
}

static FIGURES: Mutex<Vec<Figure>> = Mutex::new(Vec::new());

/// Records a figure the bench prints (`section`: the named section; `row` and `column`
/// place it in the section's table).
pub fn record(section: &str, row: &str, column: &str, value: f64, unit: &'static str) {
    FIGURES.lock().unwrap_or_else(|p| p.into_inner()).push(Figure {
        section: section.to_string(),
        row: row.to_string(),
        column: column.to_string(),
        value,
        unit,
    });
}

/// The run as JSON: the bench's name, when, on what, from which commit, with which command,
/// and every figure recorded.
pub fn to_json(bench: &str) -> Value {
    let figures: Vec<Value> = FIGURES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|f| {
            json!({
                "section": f.section, "row": f.row, "column": f.column,
                "value": f.value, "unit": f.unit,
            })
        })
        .collect();
    json!({
        "bench": bench,
        "date": command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "commit": command_output("git", &["rev-parse", "--short=12", "HEAD"]),
        "machine": machine(),
        // The program as its users call it, whatever path it was run from.
        "command": std::iter::once("holdfast-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        "figures": figures,
    })
}

/// Writes [`to_json`] to `path`.
pub fn write_json(path: &std::path::Path, bench: &str) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&to_json(bench)).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// CPUs, their model and the memory, as the kernel reports them.
fn machine() -> String {
    // Counted from /proc/cpuinfo: a bench that pins itself to one CPU would see only that
    // one through available_parallelism.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB")
}
