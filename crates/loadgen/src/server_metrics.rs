//! The server's own keyframe → segment-listed latency: the growth of its
//! `tidegate_segment_latency_seconds` histogram between two scrapes of `/metrics`.

use std::collections::BTreeMap;

/// The histogram's metric name (without `_bucket`).
pub const SEGMENT_LATENCY_METRIC: &str = "tidegate_segment_latency_seconds";

/// Cumulative bucket counts by upper bound (seconds; `+Inf` as `f64::INFINITY`), summed
/// over every label set. Keys are bounds' bit patterns so they sort (bounds are >= 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: BTreeMap<u64, f64>,
}

impl Histogram {
    /// Reads the `{metric}_bucket` lines of a Prometheus/OpenMetrics text page.
    pub fn parse(text: &str, metric: &str) -> Histogram {
        let prefix = format!("{metric}_bucket");
        let mut buckets = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some(labels_end) = rest.find('}') else {
                continue;
            };
            let labels = &rest[..labels_end];
            let Some(le) = labels
                .split(',')
                .find_map(|kv| kv.trim_start_matches('{').trim().strip_prefix("le="))
            else {
                continue;
            };
            let le = le.trim_matches('"');
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(b) if b >= 0.0 => b,
                    _ => continue,
                }
            };
            let value = rest[labels_end + 1..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = value {
                *buckets.entry(bound.to_bits()).or_insert(0.0) += v;
            }
        }
        Histogram { buckets }
    }

    /// What was observed after `earlier` was scraped.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    (v - earlier.buckets.get(k).copied().unwrap_or(0.0)).max(0.0),
                )
            })
            .collect();
        Histogram { buckets }
    }

    /// Observations (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.buckets.values().copied().fold(0.0, f64::max) as u64
    }

    /// The `q` quantile in seconds, interpolated linearly within its bucket; past the
    /// largest finite bound, that bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.values().copied().fold(0.0, f64::max);
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut prev_bound, mut prev_count) = (0.0, 0.0);
        for (bits, count) in &self.buckets {
            let bound = f64::from_bits(*bits);
            if *count >= rank {
                if bound.is_infinite() {
                    return Some(prev_bound);
                }
                let width = count - prev_count;
                let frac = if width > 0.0 {
                    (rank - prev_count) / width
                } else {
                    1.0
                };
                return Some(prev_bound + (bound - prev_bound) * frac);
            }
            prev_bound = bound;
            prev_count = *count;
        }
        Some(prev_bound)
    }
}
