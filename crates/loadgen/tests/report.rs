//! The report's totals, quantiles, JSON and text, through the public API.

use tidegate_loadgen::report::*;

fn publisher(index: usize, outcome: Outcome, connected: bool, lag: u64) -> PublisherOutcome {
    PublisherOutcome {
        index,
        outcome,
        detail: None,
        connect_ms: connected.then_some(12.5),
        bytes_sent: 1000,
        tags_sent: 10,
        max_lag_ms: lag,
        final_lag_ms: 0,
        media_seconds: 1.0,
        srt: None,
    }
}

#[test]
fn quantiles_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    let q = Quantiles::of(&v);
    assert_eq!(
        (q.count, q.p50, q.p99, q.max),
        (100, Some(50.0), Some(99.0), Some(100.0))
    );
    let q = Quantiles::of(&[7.0]);
    assert_eq!((q.p50, q.p99), (Some(7.0), Some(7.0)));
    assert_eq!(Quantiles::of(&[]).p50, None);
    assert_eq!(Quantiles::of(&[f64::NAN, 1.0]).count, 1);
}

#[test]
fn summary_counts_outcomes() {
    let s = PublisherSummary::from_outcomes(
        vec![
            publisher(2, Outcome::Dropped, true, 30),
            publisher(0, Outcome::Finished, true, 10),
            publisher(1, Outcome::Refused, false, 0),
            publisher(3, Outcome::Failed, false, 0),
        ],
        2.0,
    );
    assert_eq!(
        (s.requested, s.connected, s.refused, s.failed, s.dropped),
        (4, 2, 1, 1, 1)
    );
    assert_eq!(s.bytes_sent, 4000);
    assert!((s.mbps_avg - 0.016).abs() < 1e-9);
    assert_eq!(s.max_lag_ms.max, Some(30.0));
    assert_eq!(s.per_publisher[0].index, 0);
}

#[test]
fn json_shape() {
    let mut v = ViewerOutcome {
        index: 0,
        started: true,
        segments: 3,
        pdt_to_listed_ms: vec![100.0, 300.0],
        ..Default::default()
    };
    v.error("segment_status");
    let r = Report {
        input: InputSummary {
            duration_ms: 10_000,
            gop_ms: 2000,
            bitrate_kbps: 3000,
            tags: 770,
            ts_payloads: None,
        },
        wall_seconds: 2.0,
        publishers: PublisherSummary::from_outcomes(
            vec![publisher(0, Outcome::Finished, true, 5)],
            2.0,
        ),
        viewers: Some(ViewerSummary::from_outcomes(vec![v])),
        server_segment_latency: None,
        generator: GeneratorCost {
            threads: 1,
            cpu_seconds: Some(0.5),
            cpu_percent: Some(25.0),
            cpu_seconds_per_gbit: None,
        },
    };
    let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(j["publishers"]["connected"], 1);
    assert_eq!(j["publishers"]["dropped"], 0);
    assert_eq!(j["publishers"]["bytes_sent"], 1000);
    assert_eq!(j["publishers"]["per_publisher"][0]["outcome"], "finished");
    assert_eq!(j["publishers"]["max_lag_ms"]["p99"], 5.0);
    assert_eq!(j["viewers"]["errors"], 1);
    assert_eq!(j["viewers"]["errors_by_kind"]["segment_status"], 1);
    assert_eq!(j["viewers"]["pdt_to_listed_ms"]["p50"], 100.0);
    assert_eq!(j["viewers"]["pdt_to_listed_ms"]["max"], 300.0);
    assert!(j["server_segment_latency"].is_null());
    assert_eq!(j["generator"]["cpu_percent"], 25.0);
    let text = r.to_text();
    assert!(text.contains("1 connected"), "{text}");
    assert!(text.contains("errors: 1"), "{text}");
    assert!(j["publishers"].get("srt").is_none());
    assert!(!text.contains("SRT"), "{text}");
}

#[test]
fn srt_totals() {
    let mut a = publisher(0, Outcome::Finished, true, 5);
    a.srt = Some(SrtCounters {
        packets_sent: 1000,
        packets_retransmitted: 12,
        packets_reported_lost: 10,
        packets_send_dropped: 0,
        naks_received: 4,
        rtt_ms: 0.5,
    });
    let mut b = a.clone();
    b.index = 1;
    if let Some(c) = b.srt.as_mut() {
        c.packets_reported_lost = 0;
        c.rtt_ms = 1.5;
    }
    let s =
        PublisherSummary::from_outcomes(vec![a, b, publisher(2, Outcome::Failed, false, 0)], 1.0);
    let srt = s.srt.as_ref().unwrap();
    assert_eq!(
        (
            srt.packets_sent,
            srt.packets_retransmitted,
            srt.packets_reported_lost
        ),
        (2000, 24, 10)
    );
    assert!((srt.loss_percent - 0.5).abs() < 1e-9);
    assert_eq!(srt.rtt_ms.max, Some(1.5));
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["srt"]["packets_reported_lost"], 10);
    assert_eq!(j["per_publisher"][0]["srt"]["naks_received"], 4);
}
