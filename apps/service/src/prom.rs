//! Reading numbers back out of Prometheus text (what `/metrics` serves): enough for the
//! demo's and the load run's reports and the console's counters, not a general parser.

/// Sums the samples of metric `name` whose labels include every `(label, value)` in `want`
/// (any of the values, when a label is listed more than once). `_bucket`, `_sum` and
/// `_count` series of a histogram are other names, so they never match `name` itself.
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| parse_line(l))
        .filter(|(n, labels, _)| *n == name && matches(labels, want))
        .map(|(_, _, v)| v)
        .sum()
}

/// Whether `name` has any sample at all.
pub fn has(text: &str, name: &str) -> bool {
    text.lines().filter_map(parse_line).any(|(n, _, _)| n == name)
}

fn matches(labels: &str, want: &[(&str, &str)]) -> bool {
    let mut names: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    names.dedup();
    names.iter().all(|key| {
        want.iter()
            .filter(|(k, _)| k == key)
            .any(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
    })
}

/// `name{labels} value` or `name value`.
fn parse_line(line: &str) -> Option<(&str, &str, f64)> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    match series.split_once('{') {
        Some((name, labels)) => Some((name, labels.trim_end_matches('}'), value)),
        None => Some((series, "", value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE holdfast_pool_open gauge
holdfast_pool_open{pool=\"api\"} 4
holdfast_pool_open{pool=\"assembly\"} 2
holdfast_pool_connections_closed_total{pool=\"api\",reason=\"broken\"} 3
holdfast_pool_connections_closed_total{pool=\"api\",reason=\"idle\"} 7
holdfast_pool_connections_closed_total{pool=\"tasks\",reason=\"ping_failed\"} 1
holdfast_pool_held_seconds_count{pool=\"api\"} 99
holdfast_tx_retries_total{class=\"serialization\"} 2
plain_total 5
";

    #[test]
    fn sums_by_name_and_labels() {
        assert_eq!(sum(TEXT, "holdfast_pool_open", &[]), 6.0);
        assert_eq!(sum(TEXT, "holdfast_pool_open", &[("pool", "api")]), 4.0);
        let broken = [("reason", "broken"), ("reason", "ping_failed")];
        assert_eq!(sum(TEXT, "holdfast_pool_connections_closed_total", &broken), 4.0);
        let api_broken = [("pool", "api"), ("reason", "broken"), ("reason", "ping_failed")];
        assert_eq!(
            sum(TEXT, "holdfast_pool_connections_closed_total", &api_broken),
            3.0
        );
        assert_eq!(sum(TEXT, "holdfast_tx_retries_total", &[]), 2.0);
        assert_eq!(sum(TEXT, "plain_total", &[]), 5.0);
        assert_eq!(sum(TEXT, "holdfast_pool_held_seconds", &[]), 0.0);
        assert!(has(TEXT, "plain_total") && !has(TEXT, "missing"));
    }
}
