//! Small statistics for benchmark reports.

/// The median of `values` (which it sorts); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `q` quantile (0..=1) of `values` (which it sorts), nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The median and the 10th and 90th percentiles of a sample; shown as a ratio line's
/// "median 0.9834 (p10 0.9747, p90 0.9915)".
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The 10th percentile.
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
}

impl Spread {
    /// The spread of `values` (which it sorts).
    pub fn of(values: &mut [f64]) -> Spread {
        Spread {
            median: median(values),
            p10: quantile(values, 0.1),
            p90: quantile(values, 0.9),
        }
    }

    /// What the contender costs over its baseline when this is a ratio of throughputs, in
    /// percent (positive: slower).
    pub fn cost_percent(&self) -> f64 {
        (1.0 - self.median) * 100.0
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.4} (p10 {:.4}, p90 {:.4})",
            self.median, self.p10, self.p90
        )
    }
}
