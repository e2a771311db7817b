//! A pool's counts over time as an SVG line chart, computed here so that the page needs no
//! JavaScript: one polyline per count, x the sample's age, y the count.

use std::collections::VecDeque;

use holdfast::pool::PoolStatus;

use super::history::WINDOW;

/// The chart's drawing area, in SVG units.
pub const WIDTH: f64 = 600.0;
/// The chart's height.
pub const HEIGHT: f64 = 120.0;

/// One count's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// What it counts: `open`, `idle`, `in use`, `waiting`.
    pub label: &'static str,
    /// Its CSS class (its colour).
    pub class: &'static str,
    /// The SVG `points` attribute: `x,y x,y ...`.
    pub points: String,
}

/// A pool's chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The top of the y axis (at least the pool's maximum, so lines never leave the box).
    pub top: usize,
    /// The lines, in legend order.
    pub lines: Vec<Line>,
    /// How many seconds the chart spans.
    pub seconds: usize,
}

/// Reads one count of a sample.
type Count = fn(&PoolStatus) -> usize;

/// Draws `samples` (oldest first, one a second) on a window of [`WINDOW`] seconds, newest
/// at the right edge.
pub fn draw(samples: &VecDeque<PoolStatus>) -> Chart {
    let top = samples
        .iter()
        .map(|s| s.max.max(s.open).max(s.waiting))
        .max()
        .unwrap_or(1)
        .max(1);
    let counts: [(&str, &str, Count); 4] = [
        ("open", "open", |s| s.open),
        ("idle", "idle", |s| s.idle),
        ("in use", "in-use", |s| s.in_use),
        ("waiting", "waiting", |s| s.waiting),
    ];
    let step = WIDTH / (WINDOW.saturating_sub(1).max(1)) as f64;
    let first = WINDOW.saturating_sub(samples.len());
    let lines = counts
        .into_iter()
        .map(|(label, class, count)| {
            let points: Vec<String> = samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let x = (first + i) as f64 * step;
                    let y = HEIGHT - count(s) as f64 / top as f64 * HEIGHT;
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            Line {
                label,
                class,
                points: points.join(" "),
            }
        })
        .collect();
    Chart {
        top,
        lines,
        seconds: WINDOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(open: usize, in_use: usize, waiting: usize) -> PoolStatus {
        PoolStatus {
            open,
            idle: open - in_use,
            in_use,
            waiting,
            max: 4,
            ..PoolStatus::default()
        }
    }

    #[test]
    fn newest_sample_is_at_the_right_edge_and_counts_scale_to_the_top() {
        let samples: VecDeque<_> = [status(2, 1, 0), status(4, 4, 8)].into_iter().collect();
        let chart = draw(&samples);
        assert_eq!(chart.top, 8, "waiting 8 tops the pool's max of 4");
        let waiting = &chart.lines[3];
        assert_eq!(waiting.label, "waiting");
        assert!(waiting.points.ends_with("600.0,0.0"), "{}", waiting.points);
        let open = &chart.lines[0];
        assert!(
            open.points.ends_with(&format!("600.0,{:.1}", HEIGHT / 2.0)),
            "{}",
            open.points
        );
    }

    #[test]
    fn no_samples_draw_empty_lines() {
        let chart = draw(&VecDeque::new());
        assert!(chart.lines.iter().all(|l| l.points.is_empty()));
    }
}
