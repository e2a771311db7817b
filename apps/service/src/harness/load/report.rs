//! The run's report: the same data as JSON (for machines) and as one self-contained XHTML page
//! (for people): the checks, the faults, and charts drawn as inline SVG, so it opens anywhere
//! without a network, and is well-formed XML that tests can parse.

use std::fmt::Write as _;

use serde::Serialize;

use super::checks::Check;
use super::plan::Played;
use super::samples::Sample;

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Every check passed.
    pub passed: bool,
    /// How the run was set up (the flags, with the seed that makes it repeatable).
    pub settings: serde_json::Value,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One sample a second.
    pub samples: Vec<Sample>,
    /// The faults played.
    pub faults: Vec<Played>,
    /// The end checks.
    pub checks: Vec<Check>,
    /// Totals over the run.
    pub totals: Totals,
}

/// Totals over the whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// API requests sent.
    pub requests: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Latency percentiles over the run, milliseconds.
    pub p50_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// Rate mode: requests not sent because too many were unanswered.
    pub not_sent: u64,
    /// Episodes the API acknowledged.
    pub episodes: u64,
    /// Assemblies the API acknowledged.
    pub assemblies: u64,
}

impl LoadReport {
    /// The report as text: totals, faults and one line per check.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let _ = writeln!(out, "\nholdfast load: {:.1} s", self.seconds);
        let _ = writeln!(
            out,
            "  API requests    {} sent, {} ok, p50 {:.1} ms, p99 {:.1} ms{}",
            t.requests,
            t.ok,
            t.p50_ms,
            t.p99_ms,
            if t.not_sent > 0 {
                format!(", {} not sent (client saturated)", t.not_sent)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  acknowledged    {} episodes, {} assemblies",
            t.episodes, t.assemblies
        );
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  fault           {:.1}-{:.1} s {}: {}",
                f.start_s,
                f.end_s,
                f.kind.as_str(),
                f.detail
            );
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {}  {}: {}",
                if c.passed { "pass" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            out,
            "  verdict         {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        out
    }

    /// The report as one XHTML page.
    pub fn render_html(&self) -> String {
        let mut h = String::new();
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let _ = write!(
            h,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head>
<meta charset="utf-8"/>
<title>holdfast load: {verdict}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }}
.pass {{ color: #176b2c; font-weight: bold; }}
.fail {{ color: #b00020; font-weight: bold; }}
svg {{ display: block; margin: 4px 0 20px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #444; }}
svg .grid {{ stroke: #e5e5e5; }}
svg .fault {{ fill: #d33; fill-opacity: 0.15; }}
code {{ background: #f3f3f3; padding: 1px 4px; white-space: normal; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<h1>holdfast load: <span class="{}">{verdict}</span></h1>
"#,
            if self.passed { "pass" } else { "fail" }
        );
        let t = &self.totals;
        let _ = writeln!(
            h,
            "<p>{:.1} s; {} API requests, {} ok, p50 {:.1} ms, p99 {:.1} ms; {} episodes and {} assemblies acknowledged.</p>",
            self.seconds, t.requests, t.ok, t.p50_ms, t.p99_ms, t.episodes, t.assemblies
        );
        let _ = writeln!(
            h,
            "<p>Settings: <code>{}</code></p>",
            esc(&self.settings.to_string())
        );
        h.push_str("<h2>Checks</h2>\n<table id=\"checks\">\n");
        for c in &self.checks {
            let (class, word) = if c.passed {
                ("pass", "pass")
            } else {
                ("fail", "FAIL")
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"{class}\">{word}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                esc(&c.detail)
            );
        }
        h.push_str("</table>\n<h2>Faults</h2>\n");
        if self.faults.is_empty() {
            h.push_str("<p>None played.</p>\n");
        } else {
            h.push_str("<table id=\"faults\">\n<tr><th>fault</th><th>from</th><th>to</th><th>recovered after</th><th>what was done</th></tr>\n");
            for f in &self.faults {
                let recovered = f.recovered_s.map_or("never".to_string(), |r| {
                    format!("{:.3} s", (r - f.end_s).max(0.0))
                });
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{:.1} s</td><td>{:.1} s</td><td>{recovered}</td><td>{}</td></tr>",
                    f.kind.as_str(),
                    f.start_s,
                    f.end_s,
                    esc(&f.detail)
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("<h2>Over time</h2>\n<p>Faults are the shaded bands.</p>\n");
        for chart in self.charts() {
            h.push_str(&chart.svg(&self.samples, &self.faults));
        }
        h.push_str("</body>\n</html>\n");
        h
    }

    fn charts(&self) -> Vec<Chart> {
        let pool = |name: &'static str, field: fn(&super::samples::PoolSample) -> f64| {
            move |s: &Sample| s.pools.get(name).map_or(f64::NAN, field)
        };
        let task = |states: &'static [&'static str]| {
            move |s: &Sample| {
                if s.tasks.is_empty() && !s.pools.is_empty() {
                    return f64::NAN;
                }
                states
                    .iter()
                    .map(|st| s.tasks.get(*st).copied().unwrap_or(0) as f64)
                    .sum()
            }
        };
        let mut kinds: Vec<String> = self
            .samples
            .iter()
            .flat_map(|s| s.errors.keys().cloned())
            .collect();
        kinds.sort();
        kinds.dedup();
        let palette = ["#b00020", "#e6761b", "#7b3fa0", "#1b7fe6", "#555555", "#c2a000"];
        let errors = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let k = kind.clone();
                Series::new(kind, palette[i % palette.len()], move |s: &Sample| {
                    s.errors.get(&k).copied().unwrap_or(0) as f64
                })
            })
            .collect();
        vec![
            Chart::new(
                "pool-api",
                "API pool: connections",
                vec![
                    Series::new("open", "#999999", pool("api", |p| p.open)),
                    Series::new("in use", "#1b7fe6", pool("api", |p| p.in_use)),
                    Series::new("idle", "#2ca02c", pool("api", |p| p.idle)),
                    Series::new("waiting", "#b00020", pool("api", |p| p.waiting)),
                ],
            ),
            Chart::new(
                "pool-work",
                "Assembly and task pools: connections in use",
                vec![
                    Series::new("assembly in use", "#7b3fa0", pool("assembly", |p| p.in_use)),
                    Series::new("assembly open", "#c9b3d9", pool("assembly", |p| p.open)),
                    Series::new("tasks in use", "#e6761b", pool("tasks", |p| p.in_use)),
                ],
            ),
            Chart::new(
                "throughput",
                "API requests per second",
                vec![
                    Series::new("ok", "#2ca02c", |s: &Sample| s.ok as f64),
                    Series::new("failed", "#b00020", |s: &Sample| (s.requests - s.ok) as f64),
                ],
            ),
            Chart::new(
                "latency",
                "API latency, ms",
                vec![
                    Series::new("p50", "#2ca02c", |s: &Sample| s.p50_ms),
                    Series::new("p95", "#e6761b", |s: &Sample| s.p95_ms),
                    Series::new("p99", "#b00020", |s: &Sample| s.p99_ms),
                ],
            ),
            Chart::new(
                "tasks",
                "Assembly tasks by state",
                vec![
                    Series::new("running", "#1b7fe6", task(&["running"])),
                    Series::new("waiting", "#e6761b", task(&["available", "retry_wait"])),
                    Series::new("succeeded", "#2ca02c", task(&["succeeded"])),
                    Series::new("failed", "#b00020", task(&["failed", "cancelled"])),
                ],
            ),
            Chart::new("errors", "API errors per second, by kind", errors),
            Chart::new(
                "recovery",
                "Recovery work per second",
                vec![
                    Series::new("connections reset on return", "#1b7fe6", |s: &Sample| s.resets),
                    Series::new("broken connections discarded", "#b00020", |s: &Sample| {
                        s.discarded
                    }),
                    Series::new("retries", "#e6761b", |s: &Sample| s.retries),
                ],
            ),
        ]
    }
}

type Value = Box<dyn Fn(&Sample) -> f64>;

struct Series {
    name: String,
    color: &'static str,
    value: Value,
}

impl Series {
    fn new(name: impl Into<String>, color: &'static str, value: impl Fn(&Sample) -> f64 + 'static) -> Series {
        Series {
            name: name.into(),
            color,
            value: Box::new(value),
        }
    }
}

struct Chart {
    id: &'static str,
    title: &'static str,
    series: Vec<Series>,
}

const W: f64 = 960.0;
const H: f64 = 230.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 28.0;

impl Chart {
    fn new(id: &'static str, title: &'static str, series: Vec<Series>) -> Chart {
        Chart { id, title, series }
    }

    fn svg(&self, samples: &[Sample], faults: &[Played]) -> String {
        let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
        let values: Vec<Vec<f64>> = self
            .series
            .iter()
            .map(|s| samples.iter().map(|x| (s.value)(x)).collect())
            .collect();
        let highest = values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        // Round ticks: a 1-2-5 step, the axis a whole number of steps.
        let y_step = nice(highest / 4.0);
        let y_ticks = (highest / y_step).ceil().max(1.0) as u32;
        let y_max = y_step * f64::from(y_ticks);
        let x = |t: f64| LEFT + (t / t_max) * (W - LEFT - RIGHT);
        let y = |v: f64| H - BOTTOM - (v / y_max) * (H - TOP - BOTTOM);
        let mut g = String::new();
        let _ = writeln!(
            g,
            "<h3>{}</h3>\n<svg id=\"chart-{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">",
            esc(self.title),
            self.id
        );
        for f in faults {
            let (x0, x1) = (x(f.start_s), x(f.end_s.max(f.start_s + t_max / 200.0)));
            let _ = writeln!(
                g,
                "<rect class=\"fault\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} at {:.1} s</title></rect>",
                (x1 - x0).max(2.0),
                H - TOP - BOTTOM,
                f.kind.as_str(),
                f.start_s
            );
        }
        for i in 0..=y_ticks {
            let v = y_step * f64::from(i);
            let _ = writeln!(
                g,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                y(v),
                y(v),
                LEFT - 6.0,
                y(v) + 4.0,
                label(v)
            );
        }
        let step = nice(t_max / 8.0).max(1.0);
        let mut t = 0.0;
        while t <= t_max + 1e-9 {
            let _ = writeln!(
                g,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
                x(t),
                H - 8.0,
                label(t)
            );
            t += step;
        }
        let mut legend_x = LEFT;
        for (s, vals) in self.series.iter().zip(&values) {
            let points: Vec<String> = samples
                .iter()
                .zip(vals)
                .filter(|(_, v)| v.is_finite())
                .map(|(sample, v)| format!("{:.1},{:.1}", x(sample.t_s), y(*v)))
                .collect();
            let _ = writeln!(
                g,
                "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
                esc(&s.name),
                s.color,
                points.join(" ")
            );
            let _ = writeln!(
                g,
                "<rect x=\"{legend_x:.1}\" y=\"8\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{:.1}\" y=\"14\">{}</text>",
                s.color,
                legend_x + 16.0,
                esc(&s.name)
            );
            legend_x += 30.0 + 7.0 * s.name.chars().count() as f64;
        }
        if self.series.is_empty() {
            let _ = writeln!(g, "<text x=\"{LEFT}\" y=\"14\">none</text>");
        }
        g.push_str("</svg>\n");
        g
    }
}

/// A round step for an axis: 1, 2 or 5 times a power of ten, at least `v` (1 for nothing).
fn nice(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn label(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up_to_1_2_5() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(7.2), 10.0);
        assert_eq!(nice(12.0), 20.0);
        assert_eq!(nice(0.03), 0.05);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a & 'b'>\u{1}"), "&lt;a &amp; &#39;b&#39;&gt; ");
    }
}
