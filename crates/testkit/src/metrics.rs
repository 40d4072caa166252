//! Reading values out of the Prometheus text the server's `/metrics` answers.

/// Sum of the values of every sample line whose name starts with `tidegate_`, mentions
/// `connection`, and has a `reason` label: the rejected/failed connection counters.
pub fn rejected_connections(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("tidegate_") && l.contains("connection") && l.contains("reason="))
        .filter_map(|l| {
            let after_labels = &l[l.rfind('}')? + 1..];
            after_labels.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Value of an unlabelled counter or gauge in Prometheus text (`name` with or without the
/// `_total` suffix); 0 when absent.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name || n == format!("{name}_total")).then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}
