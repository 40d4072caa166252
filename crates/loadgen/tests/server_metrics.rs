//! The server's segment latency from two scrapes of its `/metrics` histogram.

use tidegate_loadgen::server_metrics::*;

const PAGE: &str = "# TYPE tidegate_segment_latency_seconds histogram\n\
tidegate_segment_latency_seconds_sum 1.5\n\
tidegate_segment_latency_seconds_count 10\n\
tidegate_segment_latency_seconds_bucket{le=\"0.001\"} 0\n\
tidegate_segment_latency_seconds_bucket{le=\"0.002\"} 4\n\
tidegate_segment_latency_seconds_bucket{le=\"0.005\"} 8\n\
tidegate_segment_latency_seconds_bucket{le=\"0.01\"} 10\n\
tidegate_segment_latency_seconds_bucket{le=\"+Inf\"} 10\n\
other_bucket{le=\"1\"} 99\n";

#[test]
fn quantiles_interpolate_within_buckets() {
    let h = Histogram::parse(PAGE, SEGMENT_LATENCY_METRIC);
    assert_eq!(h.count(), 10);
    // Rank 5 of 10 lies 1/4 into the (0.002, 0.005] bucket.
    assert!((h.quantile(0.5).unwrap() - 0.00275).abs() < 1e-9);
    // Rank 9.9 lies 95% into (0.005, 0.01].
    assert!((h.quantile(0.99).unwrap() - 0.00975).abs() < 1e-9);
    assert_eq!(Histogram::default().quantile(0.5), None);
}

#[test]
fn difference_between_scrapes() {
    let before = Histogram::parse(PAGE, SEGMENT_LATENCY_METRIC);
    let after = Histogram::parse(&PAGE.replace("} 10\n", "} 14\n"), SEGMENT_LATENCY_METRIC);
    let d = after.since(&before);
    assert_eq!(d.count(), 4);
    // All four new ones are in (0.005, 0.01].
    assert!(d.quantile(0.5).unwrap() > 0.005);
}

#[test]
fn past_the_last_bound_reports_that_bound() {
    let h = Histogram::parse("m_bucket{le=\"1.0\"} 1\nm_bucket{le=\"+Inf\"} 3\n", "m");
    assert_eq!(h.quantile(0.99), Some(1.0));
}
