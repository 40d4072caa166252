//! Deterministic tests on a simulated millisecond clock.

use std::time::Duration;

use crate::ring::{Bucket, RING_SECONDS};
use crate::*;

/// Simulation step: the driver "reads" every 10 ms.
const STEP_MS: u64 = 10;

struct Sim {
    h: StreamHealth,
    now: u64,
    events: Vec<HealthEvent>,
}

impl Sim {
    fn new(config: HealthConfig) -> Self {
        Self {
            h: StreamHealth::new(config, 0),
            now: 0,
            events: Vec::new(),
        }
    }

    fn connected(config: HealthConfig) -> Self {
        let mut s = Self::new(config);
        s.h.handle_connected(0);
        s.drain();
        s
    }

    fn drain(&mut self) {
        while let Some(e) = self.h.poll_event() {
            self.events.push(e);
        }
    }

    /// Advances the clock to `until`, feeding `rate(now)` bits per second as 10 ms reads and
    /// firing the timer whenever it is due, like a driver loop would.
    fn run(&mut self, until: u64, rate: impl Fn(u64) -> u64) {
        self.run_with(until, rate, |_, _| {});
    }

    fn run_with(
        &mut self,
        until: u64,
        rate: impl Fn(u64) -> u64,
        mut extra: impl FnMut(&mut StreamHealth, u64),
    ) {
        while self.now < until {
            let bytes = rate(self.now) * STEP_MS / 8000;
            if bytes > 0 {
                self.h.handle_bytes(self.now, bytes);
            }
            extra(&mut self.h, self.now);
            self.now += STEP_MS;
            if self.h.poll_timeout().is_some_and(|t| self.now >= t) {
                self.h.handle_timeout(self.now);
            }
            self.drain();
        }
    }

    /// (from, to, at_ms) of every status change so far.
    fn changes(&self) -> Vec<(Status, Status, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                HealthEvent::StatusChanged {
                    from, to, at_ms, ..
                } => Some((*from, *to, *at_ms)),
                HealthEvent::ReasonsChanged { .. } => None,
            })
            .collect()
    }

    /// Healthy ⇄ Warning changes only.
    fn flips(&self) -> Vec<(Status, Status, u64)> {
        self.changes()
            .into_iter()
            .filter(|(f, t, _)| f.is_live() && t.is_live())
            .collect()
    }
}

const MBPS3: u64 = 3_000_000;
use Status::{Healthy, Offline, Reconnecting, Warning};

fn absolute(bps: u64) -> HealthConfig {
    HealthConfig {
        min_bitrate_bps: Some(bps),
        ..HealthConfig::default()
    }
}

#[test]
fn steady_3mbps_stays_healthy_for_ten_minutes() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(600_000, |_| MBPS3);
    assert_eq!(s.h.status(), Healthy);
    assert!(s.h.reasons().is_empty());
    assert_eq!(s.changes(), vec![(Offline, Healthy, 0)]);
    assert_eq!(s.h.bitrate_bps(s.now), MBPS3);
    assert_eq!(s.h.average_bitrate_bps(s.now), MBPS3);
    assert_eq!(s.h.bytes_total(), MBPS3 / 8 * 600);
    assert_eq!(s.h.poll_timeout(), Some(601_000));
}

#[test]
fn stalled_encoder_warns_within_low_for_plus_one_tick_then_recovers() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(120_000, |_| MBPS3);
    // The encoder stalls: connection open, nothing sent.
    s.run(150_000, |_| 0);
    let flips = s.flips();
    assert_eq!(flips.len(), 1, "{flips:?}");
    let (_, to, at) = flips[0];
    assert_eq!(to, Warning);
    assert!((125_000..=126_000).contains(&at), "warned at {at}");
    // Threshold fixed when raised: a quarter of 55 s at 3 Mbps + 5 s at 0 over 60 s.
    let expected = Reason::LowBitrate {
        bps: 0,
        threshold_bps: 687_500,
    };
    assert_eq!(s.h.reasons(), std::slice::from_ref(&expected));
    match &s.events[1] {
        HealthEvent::StatusChanged { reasons, .. } => {
            assert_eq!(reasons.as_slice(), std::slice::from_ref(&expected))
        }
        e => panic!("unexpected {e:?}"),
    }
    // 25 s of stall decays the own average far below the fixed threshold's origin; the
    // warning must hold anyway.
    assert_eq!(s.h.status(), Warning);
    assert!(s.h.average_bitrate_bps(s.now) < 2_000_000);

    // The encoder comes back.
    s.run(200_000, |_| MBPS3);
    let flips = s.flips();
    assert_eq!(flips.len(), 2, "{flips:?}");
    assert_eq!(flips[1], (Warning, Healthy, 155_000));
    assert!(s.h.reasons().is_empty());
    assert_eq!(s.events.len(), 3, "{:?}", s.events);
}

#[test]
fn long_stall_keeps_its_warning_although_its_own_average_decays_to_zero() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(120_000, |_| MBPS3);
    s.run(400_000, |_| 0);
    assert_eq!(s.h.average_bitrate_bps(s.now), 0);
    assert_eq!(s.h.status(), Warning);
    assert_eq!(s.flips(), vec![(Healthy, Warning, 125_000)]);
    // Back at a third of the old rate: above the fixed threshold (687.5 kbps), recovers.
    s.run(420_000, |_| 1_000_000);
    assert_eq!(s.flips()[1], (Warning, Healthy, 405_000));
}

#[test]
fn rate_hovering_around_threshold_every_second_does_not_flap() {
    let threshold = 1_000_000;
    // Alternating just below / just above each second: never 5 low seconds in a row.
    let mut s = Sim::connected(absolute(threshold));
    s.run(600_000, |t| {
        if (t / 1000).is_multiple_of(2) {
            900_000
        } else {
            1_100_000
        }
    });
    assert_eq!(s.flips(), vec![]);

    // Once in warning (stall), the same hovering never gives 5 good seconds in a row: the
    // status stays warning instead of flapping.
    let mut s = Sim::connected(absolute(threshold));
    s.run(60_000, |_| MBPS3);
    s.run(70_000, |_| 0);
    assert_eq!(s.h.status(), Warning);
    s.run(670_000, |t| {
        if (t / 1000).is_multiple_of(2) {
            900_000
        } else {
            1_100_000
        }
    });
    assert_eq!(s.flips().len(), 1, "{:?}", s.flips());
}

#[test]
fn slow_oscillation_is_bounded_by_the_dwell() {
    let threshold = 1_000_000;
    // 5 s below, 5 s above: exactly the trigger and recovery durations.
    let pattern = |t: u64| {
        if (t / 5000).is_multiple_of(2) {
            500_000
        } else {
            2_000_000
        }
    };
    let run = |min_dwell: Duration| {
        let mut s = Sim::connected(HealthConfig {
            min_dwell,
            warmup: Duration::ZERO,
            ..absolute(threshold)
        });
        s.run(600_000, pattern);
        s.flips()
    };
    let undamped = run(Duration::ZERO);
    let damped = run(Duration::from_secs(10));
    // Without a dwell it flips every 5 s; with one, never twice within 10 s.
    assert!(undamped.len() >= 100, "{}", undamped.len());
    assert!(damped.len() <= 600 / 10 + 1, "{}", damped.len());
    assert!(damped.len() < undamped.len() / 2);
    assert!(!damped.is_empty());
    for w in damped.windows(2) {
        assert!(w[1].2 - w[0].2 >= 10_000, "{w:?}");
    }
}

#[test]
fn absolute_threshold_mode() {
    // Steady 1.5 Mbps: fine by the relative rule, low by an absolute 2 Mbps.
    let mut s = Sim::connected(HealthConfig::default());
    s.run(60_000, |_| 1_500_000);
    assert_eq!(s.h.status(), Healthy);

    let mut s = Sim::connected(absolute(2_000_000));
    s.run(60_000, |_| 1_500_000);
    assert_eq!(s.h.status(), Warning);
    // Not before the warmup, then at the first evaluation after it.
    assert_eq!(s.flips(), vec![(Healthy, Warning, 10_000)]);
    assert_eq!(
        s.h.reasons(),
        &[Reason::LowBitrate {
            bps: 1_500_000,
            threshold_bps: 2_000_000
        }]
    );
    // A tenant override of 0 selects the relative rule again.
    let merged = absolute(2_000_000).merged(&HealthOverrides {
        min_bitrate_bps: Some(0),
        ..HealthOverrides::default()
    });
    assert_eq!(merged.min_bitrate_bps, None);
}

#[test]
fn fresh_stream_is_not_flagged_in_its_first_seconds() {
    // An encoder that connects and needs 7 s to start sending is within the warmup.
    let mut s = Sim::connected(absolute(1_000_000));
    s.run(7_000, |_| 0);
    s.run(120_000, |_| MBPS3);
    assert_eq!(s.flips(), vec![]);

    // A stream that comes back at a sixth of its old rate is judged against its own new
    // history, not the previous connection's 3 Mbps average.
    let mut s = Sim::connected(HealthConfig::default());
    s.run(300_000, |_| MBPS3);
    s.h.handle_disconnected(s.now);
    s.run(310_000, |_| 0);
    s.h.handle_connected(s.now);
    s.run(330_000, |_| 500_000);
    // 20 s into the new connection: its average is over those 20 s, not 60.
    assert_eq!(s.h.average_bitrate_bps(s.now), 500_000);
    assert_eq!(s.h.bitrate_bps(s.now), 500_000);
    s.run(430_000, |_| 500_000);
    assert_eq!(s.h.status(), Healthy);
    assert_eq!(s.flips(), vec![]);
    assert_eq!(s.h.average_bitrate_bps(s.now), 500_000);

    // Nothing at all, relative rule: no average, nothing "low" (documented: an absolute
    // threshold is needed to catch it).
    let mut s = Sim::connected(HealthConfig::default());
    s.run(60_000, |_| 0);
    assert_eq!(s.h.status(), Healthy);
    // Nothing at all, absolute rule: flagged right after the warmup.
    let mut s = Sim::connected(absolute(100_000));
    s.run(60_000, |_| 0);
    assert_eq!(s.flips(), vec![(Healthy, Warning, 10_000)]);
}

#[test]
fn missing_keyframes() {
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(0);
    // A keyframe every 2 s until 30 s, then none.
    let gop = |h: &mut StreamHealth, t: u64| {
        if t.is_multiple_of(2000) && !(30_001..50_000).contains(&t) {
            h.handle_keyframe(t);
        }
    };
    s.run_with(45_000, |_| MBPS3, gop);
    assert_eq!(s.flips(), vec![(Healthy, Warning, 41_000)]);
    assert_eq!(s.events[1], {
        HealthEvent::StatusChanged {
            from: Healthy,
            to: Warning,
            reasons: vec![Reason::NoKeyframe { for_ms: 11_000 }],
            at_ms: 41_000,
        }
    });
    s.run_with(80_000, |_| MBPS3, gop);
    // Keyframes resume at 50 s; the reason clears recover-after later.
    assert_eq!(s.flips()[1], (Warning, Healthy, 55_000));

    // Video announced with its configuration, never a keyframe: flagged after the limit.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(500);
    s.h.handle_video_config(1_000);
    s.run(20_000, |_| MBPS3);
    assert_eq!(s.flips(), vec![(Healthy, Warning, 12_000)]);
    assert_eq!(s.h.reasons(), [Reason::NoKeyframe { for_ms: 19_000 }]);

    // Audio only: no keyframes ever, never flagged.
    let mut s = Sim::connected(HealthConfig::default());
    s.run(120_000, |_| 128_000);
    assert_eq!(s.flips(), vec![]);
}

/// The reasons carried by every event so far, as codes, one entry per event.
fn reason_codes(s: &Sim) -> Vec<Vec<&'static str>> {
    s.events
        .iter()
        .map(|e| match e {
            HealthEvent::StatusChanged { reasons, .. }
            | HealthEvent::ReasonsChanged { reasons, .. } => {
                reasons.iter().map(Reason::code).collect()
            }
        })
        .collect()
}

/// Video frames every 40 ms from `from_ms` (announced, never decodable), as a demuxer that
/// drops them for want of parameter sets reports them.
fn undecodable_video(from_ms: u64) -> impl FnMut(&mut StreamHealth, u64) {
    move |h, t| {
        if t >= from_ms && t % 40 == 0 {
            h.handle_video_track(t);
        }
    }
}

#[test]
fn video_without_parameter_sets_is_no_video_until_they_arrive() {
    // The srtsink case: the PMT declares H.264 at 500 ms, video frames keep arriving, none
    // carries SPS/PPS. Flagged at the first evaluation past max-keyframe-interval, as
    // `no_video` and never as `no_keyframe`, for as long as it lasts.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(500);
    s.run_with(60_000, |_| MBPS3, undecodable_video(500));
    assert_eq!(s.flips(), vec![(Healthy, Warning, 11_000)]);
    assert_eq!(
        s.events[1],
        HealthEvent::StatusChanged {
            from: Healthy,
            to: Warning,
            reasons: vec![Reason::NoVideo { for_ms: 10_500 }],
            at_ms: 11_000,
        }
    );
    assert_eq!(s.h.reasons(), [Reason::NoVideo { for_ms: 59_500 }]);
    assert!(reason_codes(&s).iter().flatten().all(|c| *c == "no_video"));

    // The encoder is fixed mid-stream: parameter sets with a keyframe every 2 s from 60 s.
    // `no_video` clears recover-after (5 s) later; no `no_keyframe` on the way.
    let gop = |h: &mut StreamHealth, t: u64| {
        if t.is_multiple_of(2000) {
            h.handle_video_config(t);
            h.handle_keyframe(t);
        }
    };
    s.run_with(120_000, |_| MBPS3, gop);
    assert_eq!(s.flips()[1], (Warning, Healthy, 65_000));
    assert_eq!(s.flips().len(), 2);
    assert!(!reason_codes(&s)
        .iter()
        .flatten()
        .any(|c| *c == "no_keyframe"));
}

#[test]
fn a_video_track_declared_but_never_sent_is_no_video() {
    // RTMP metadata or a PMT announce video; not one video frame follows.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(0);
    s.run(30_000, |_| 128_000);
    assert_eq!(s.flips(), vec![(Healthy, Warning, 11_000)]);
    assert_eq!(s.h.reasons(), [Reason::NoVideo { for_ms: 30_000 }]);
}

#[test]
fn late_parameter_sets_without_a_keyframe_turn_no_video_into_no_keyframe() {
    // Parameter sets arrive at 12 s but no keyframe ever: `no_video` first, then (counted
    // from the configuration, not from the declaration) `no_keyframe`; never both at once.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(0);
    let late_config = |h: &mut StreamHealth, t: u64| {
        if t == 12_000 {
            h.handle_video_config(t);
        }
    };
    s.run_with(60_000, |_| MBPS3, late_config);
    let codes = reason_codes(&s);
    assert!(codes.iter().all(|r| r.len() <= 1), "{codes:?}");
    let first = |code: &str| {
        s.events.iter().position(|e| {
            matches!(e, HealthEvent::StatusChanged { reasons, .. }
                if reasons.iter().any(|r| r.code() == code))
        })
    };
    let (no_video, no_keyframe) = (first("no_video"), first("no_keyframe"));
    assert!(
        no_video.is_some() && no_keyframe.is_some() && no_video < no_keyframe,
        "{:?}",
        s.events
    );
    // 11 s: no_video; it clears 5 s after the configuration (17 s) but the dwell holds the
    // warning until 21 s; no_keyframe holds from 22 s and waits for the dwell again.
    assert_eq!(
        s.flips(),
        vec![
            (Healthy, Warning, 11_000),
            (Warning, Healthy, 21_000),
            (Healthy, Warning, 31_000)
        ]
    );
    assert_eq!(s.h.reasons(), [Reason::NoKeyframe { for_ms: 48_000 }]);
}

#[test]
fn a_new_connection_starts_without_video_state() {
    // The first connection's video never became decodable; the publisher comes back with a
    // fixed encoder whose configuration and keyframes arrive at once: healthy throughout.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.handle_video_track(0);
    s.run(20_000, |_| MBPS3);
    assert_eq!(s.h.status(), Warning);
    s.h.handle_disconnected(s.now);
    s.h.handle_connected(s.now);
    s.drain();
    let start = s.now;
    let gop = move |h: &mut StreamHealth, t: u64| {
        if (t - start).is_multiple_of(2000) {
            h.handle_video_config(t);
            h.handle_keyframe(t);
        }
    };
    s.run_with(start + 60_000, |_| MBPS3, gop);
    assert_eq!(s.h.status(), Healthy);
    assert_eq!(
        s.changes().last(),
        Some(&(Reconnecting, Healthy, start)),
        "{:?}",
        s.changes()
    );
}

/// Feeds SRT counters once a second: `recv` received, plus `lost`/`dropped` per second from
/// `from_ms` on.
fn packets(recv: u64, lost: u64, dropped: u64, from_ms: u64) -> impl FnMut(&mut StreamHealth, u64) {
    move |h, t| {
        if t % 1000 == 500 {
            let bad = t >= from_ms;
            h.handle_packets(
                t,
                recv,
                if bad { lost } else { 0 },
                if bad { dropped } else { 0 },
                if bad { lost / 2 } else { 0 },
            );
        }
    }
}

#[test]
fn drop_rate_above_threshold() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run_with(60_000, |_| MBPS3, packets(1000, 0, 30, 30_000));
    // 30 dropped per 1030 delivered (2.9 %) from 30 s: the 10 s window crosses 2 % once
    // 7 such seconds are in it (210 / 10210), at the evaluation at 37 s.
    assert_eq!(s.flips(), vec![(Healthy, Warning, 37_000)]);
    match s.h.reasons() {
        [Reason::HighDropRate { rate, threshold }] => {
            assert!((rate - 300.0 / 10_300.0).abs() < 1e-12, "{rate}");
            assert_eq!(*threshold, 0.02);
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        s.h.packet_totals(),
        PacketTotals {
            received: 60_000,
            lost: 0,
            dropped: 30 * 30,
            retransmitted: 0
        }
    );

    // Below threshold (1 %): fine. Too few packets to judge (5 a second, 1 dropped): fine.
    for (recv, dropped) in [(1000, 10), (5, 1)] {
        let mut s = Sim::connected(HealthConfig::default());
        s.run_with(60_000, |_| MBPS3, packets(recv, 0, dropped, 0));
        assert_eq!(s.flips(), vec![], "{recv} {dropped}");
    }
}

#[test]
fn loss_rate_has_its_own_threshold() {
    // 5 % lost (recovered by retransmission): below max-loss-rate 10 %.
    let mut s = Sim::connected(HealthConfig::default());
    s.run_with(60_000, |_| MBPS3, packets(1000, 50, 0, 0));
    assert_eq!(s.flips(), vec![]);
    // 20 % lost: warning, and it clears recover-after the losses stop and leave the window.
    let mut s = Sim::connected(HealthConfig::default());
    s.run_with(
        90_000,
        |_| MBPS3,
        |h: &mut StreamHealth, t: u64| {
            if t % 1000 == 500 {
                let lost = if (20_000..40_000).contains(&t) {
                    250
                } else {
                    0
                };
                h.handle_packets(t, 1000, lost, 0, lost);
            }
        },
    );
    let flips = s.flips();
    assert_eq!(flips.len(), 2, "{flips:?}");
    assert_eq!(flips[0].1, Warning);
    assert_eq!(flips[1].1, Healthy);
    assert!(matches!(
        &s.events[1],
        HealthEvent::StatusChanged { reasons, .. } if reasons[0].code() == "high_loss_rate"
    ));
}

#[test]
fn lifecycle_reconnecting_offline() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(60_000, |_| MBPS3);
    s.run(70_000, |_| 0);
    assert_eq!(s.h.status(), Warning);
    s.h.handle_disconnected(s.now);
    s.drain();
    assert_eq!(s.h.status(), Reconnecting);
    assert!(s.h.reasons().is_empty());
    assert_eq!(s.h.poll_timeout(), None);
    s.h.handle_timeout(s.now + 5000); // spurious: nothing happens
    s.h.handle_disconnected(s.now); // twice: ignored
    s.drain();
    s.now += 10_000;
    s.h.handle_connected(s.now);
    s.drain();
    assert_eq!(s.h.status(), Healthy);
    assert_eq!(s.h.reconnects(), 1);
    s.run(100_000, |_| MBPS3);
    assert_eq!(s.h.status(), Healthy);
    s.h.handle_disconnected(s.now);
    s.h.handle_ended(s.now + 30_000);
    s.drain();
    assert_eq!(s.h.status(), Offline);
    assert_eq!(s.h.status_since_ms(), 130_000);
    assert_eq!(
        s.changes(),
        vec![
            (Offline, Healthy, 0),
            (Healthy, Warning, 65_000),
            (Warning, Reconnecting, 70_000),
            (Reconnecting, Healthy, 80_000),
            (Healthy, Reconnecting, 100_000),
            (Reconnecting, Offline, 130_000),
        ]
    );
    match &s.events[2] {
        HealthEvent::StatusChanged { reasons, .. } => assert!(reasons.is_empty()),
        e => panic!("{e:?}"),
    }
    // Inputs while offline change nothing.
    s.h.handle_timestamp_jump(s.now);
    s.h.handle_competing_publisher(s.now);
    assert_eq!(s.h.status(), Offline);
    assert_eq!(s.h.poll_event(), None);
    // A publisher that connects from offline is not a reconnect.
    s.h.handle_connected(200_000);
    assert_eq!(s.h.reconnects(), 1);
}

#[test]
fn instant_reasons_raise_at_once_and_clear_after_the_last_occurrence() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(20_000, |_| MBPS3);
    s.h.handle_timestamp_jump(20_000);
    s.drain();
    assert_eq!(s.h.status(), Warning);
    assert_eq!(s.h.reasons(), &[Reason::TimestampJump]);
    s.run(23_000, |_| MBPS3);
    s.h.handle_competing_publisher(23_000);
    s.h.handle_timestamp_jump(23_000);
    s.drain();
    assert_eq!(
        s.h.reasons(),
        &[Reason::TimestampJump, Reason::CompetingPublishers]
    );
    assert!(matches!(
        s.events.last(),
        Some(HealthEvent::ReasonsChanged { status: Warning, reasons, at_ms: 23_000 }) if reasons.len() == 2
    ));
    s.run(60_000, |_| MBPS3);
    // Both last seen at 23 s: cleared at 28 s, but the dwell holds warning until 30 s.
    assert_eq!(
        s.flips(),
        vec![(Healthy, Warning, 20_000), (Warning, Healthy, 30_000)]
    );
}

#[test]
fn reasons_changed_while_warning_stays() {
    let mut s = Sim::connected(HealthConfig::default());
    s.run(60_000, |_| MBPS3);
    s.run(70_000, |_| 0); // low bitrate from 65 s
    s.h.handle_timestamp_jump(70_000);
    s.drain();
    s.run(90_000, |_| 0);
    let reasons_events: Vec<_> = s
        .events
        .iter()
        .filter_map(|e| match e {
            HealthEvent::ReasonsChanged { reasons, at_ms, .. } => {
                Some((reasons.iter().map(Reason::code).collect::<Vec<_>>(), *at_ms))
            }
            HealthEvent::StatusChanged { .. } => None,
        })
        .collect();
    assert_eq!(
        reasons_events,
        vec![
            (vec!["low_bitrate", "timestamp_jump"], 70_000),
            (vec!["low_bitrate"], 75_000),
        ]
    );
    assert_eq!(s.flips(), vec![(Healthy, Warning, 65_000)]);
}

#[test]
fn history_and_pending_queue_are_bounded() {
    let mut h = StreamHealth::new(HealthConfig::default(), 0);
    let mut t = 0;
    for _ in 0..200 {
        h.handle_connected(t);
        t += 1000;
        h.handle_disconnected(t);
        t += 1000;
    }
    assert_eq!(h.history().count(), HISTORY_LEN);
    let mut pending = 0;
    while h.poll_event().is_some() {
        pending += 1;
    }
    assert_eq!(pending, MAX_PENDING_EVENTS);
    // Oldest first, and the newest is the last disconnect.
    let last = h.history().last().cloned();
    assert_eq!(
        last,
        Some(HealthEvent::StatusChanged {
            from: Healthy,
            to: Reconnecting,
            reasons: vec![],
            at_ms: t - 1000
        })
    );
    assert_eq!(h.history().next().map(HealthEvent::at_ms), Some(300_000));
}

#[test]
fn handle_bytes_uses_a_fixed_ring() {
    // The ring is inline in the state machine (no heap), and feeding bytes for hours of clock
    // grows no queue or vector.
    assert!(std::mem::size_of::<StreamHealth>() >= RING_SECONDS * std::mem::size_of::<Bucket>());
    let mut h = StreamHealth::new(HealthConfig::default(), 0);
    h.handle_connected(0);
    while h.poll_event().is_some() {}
    let before = (h.reasons().len(), h.history().count());
    for i in 0..1_000_000u64 {
        h.handle_bytes(i * 17, 1316);
    }
    assert_eq!(before, (h.reasons().len(), h.history().count()));
    assert_eq!(h.poll_event(), None);
    assert_eq!(h.bytes_total(), 1316 * 1_000_000);
}

#[test]
fn hostile_clock_values_do_not_panic() {
    let mut h = StreamHealth::new(absolute(u64::MAX), u64::MAX - 5);
    h.handle_connected(u64::MAX - 5);
    h.handle_bytes(u64::MAX, u64::MAX);
    h.handle_bytes(u64::MAX, u64::MAX);
    h.handle_packets(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
    h.handle_keyframe(0);
    h.handle_video_track(u64::MAX);
    h.handle_video_config(u64::MAX);
    h.handle_video_config(0);
    h.handle_timeout(u64::MAX);
    h.handle_timestamp_jump(3); // clock going backwards
    h.handle_timeout(u64::MAX);
    let _ = h.bitrate_bps(u64::MAX);
    let _ = h.bitrate_bps(0);
    let _ = h.average_bitrate_bps(u64::MAX);
    let _ = h.poll_timeout();
    while h.poll_event().is_some() {}
    // Absurd configuration is clamped, not trusted.
    let mut h = StreamHealth::new(
        HealthConfig {
            relative_fraction: f64::NAN,
            relative_window: Duration::MAX,
            low_bitrate_for: Duration::ZERO,
            packet_window: Duration::MAX,
            max_drop_rate: -1.0,
            max_loss_rate: f64::INFINITY,
            max_keyframe_interval: Duration::ZERO,
            recover_after: Duration::MAX,
            min_dwell: Duration::MAX,
            warmup: Duration::MAX,
            min_bitrate_bps: None,
        },
        0,
    );
    h.handle_connected(0);
    h.handle_keyframe(0);
    for t in (0..100_000).step_by(500) {
        h.handle_bytes(t, 1000);
        h.handle_packets(t, 10, 1, 1, 1);
        h.handle_timeout(t);
    }
    assert!(h.status().is_live());
}

#[test]
fn status_and_reason_json_is_stable() {
    let statuses = serde_json::to_string(&[Healthy, Warning, Reconnecting, Offline]).unwrap();
    assert_eq!(
        statuses,
        r#"["healthy","warning","reconnecting","offline"]"#
    );
    let reasons = vec![
        Reason::LowBitrate {
            bps: 0,
            threshold_bps: 750_000,
        },
        Reason::HighDropRate {
            rate: 0.05,
            threshold: 0.02,
        },
        Reason::HighLossRate {
            rate: 0.125,
            threshold: 0.1,
        },
        Reason::NoKeyframe { for_ms: 11_000 },
        Reason::TimestampJump,
        Reason::CompetingPublishers,
        Reason::NoVideo { for_ms: 10_500 },
        Reason::OverBitrateQuota {
            bps: 2_500_000,
            max_bps: 2_000_000,
        },
    ];
    let json = serde_json::to_string(&reasons).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"[{"code":"low_bitrate","bps":0,"threshold_bps":750000},"#,
            r#"{"code":"high_drop_rate","rate":0.05,"threshold":0.02},"#,
            r#"{"code":"high_loss_rate","rate":0.125,"threshold":0.1},"#,
            r#"{"code":"no_keyframe","for_ms":11000},"#,
            r#"{"code":"timestamp_jump"},"#,
            r#"{"code":"competing_publishers"},"#,
            r#"{"code":"no_video","for_ms":10500},"#,
            r#"{"code":"over_bitrate_quota","bps":2500000,"max_bps":2000000}]"#
        )
    );
    let back: Vec<Reason> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, reasons);
    let codes: Vec<&str> = reasons.iter().map(Reason::code).collect();
    assert_eq!(codes, REASON_CODES);

    let event = HealthEvent::StatusChanged {
        from: Healthy,
        to: Warning,
        reasons: vec![Reason::TimestampJump],
        at_ms: 125_000,
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"event":"status_changed","from":"healthy","to":"warning","reasons":[{"code":"timestamp_jump"}],"at_ms":125000}"#
    );
    let event = HealthEvent::ReasonsChanged {
        status: Warning,
        reasons: vec![],
        at_ms: 1,
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"event":"reasons_changed","status":"warning","reasons":[],"at_ms":1}"#
    );
    assert_eq!(Warning.to_string(), "warning");
}

#[test]
fn config_parses_merges_and_validates() {
    let server: HealthConfig = toml::from_str(
        r#"
        relative-window = "90s"
        max-drop-rate = 0.05
        recover-after = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(server.relative_window, Duration::from_secs(90));
    assert_eq!(server.low_bitrate_for, Duration::from_secs(5)); // default kept
    server.validate().unwrap();

    let tenant: HealthOverrides = toml::from_str(
        r#"
        min-bitrate-bps = 2000000
        max-keyframe-interval = "4s"
        "#,
    )
    .unwrap();
    let merged = server.merged(&tenant);
    assert_eq!(merged.min_bitrate_bps, Some(2_000_000));
    assert_eq!(merged.max_keyframe_interval, Duration::from_secs(4));
    assert_eq!(merged.max_drop_rate, 0.05); // server default kept
    assert_eq!(merged.recover_after, Duration::from_secs(3));
    assert_eq!(server.merged(&HealthOverrides::default()), server);

    assert!(toml::from_str::<HealthConfig>("no-such-field = 1").is_err());
    let bad = |c: HealthConfig| c.validate().unwrap_err().to_string();
    assert_eq!(
        bad(HealthConfig {
            max_drop_rate: 1.5,
            ..HealthConfig::default()
        }),
        "health config: max-drop-rate must be a fraction between 0 and 1"
    );
    assert_eq!(
        bad(HealthConfig {
            relative_window: Duration::from_secs(600),
            ..HealthConfig::default()
        }),
        "health config: relative-window must be between 1s and 120s"
    );
    assert_eq!(
        bad(HealthConfig {
            relative_fraction: f64::NAN,
            ..HealthConfig::default()
        }),
        "health config: relative-fraction must be a fraction between 0 and 1"
    );

    // A tenant config applied at run time takes effect at the next evaluation.
    let mut s = Sim::connected(HealthConfig::default());
    s.run(30_000, |_| 1_500_000);
    assert_eq!(s.h.status(), Healthy);
    s.h.set_config(merged);
    s.run(40_000, |_| 1_500_000);
    assert_eq!(s.h.status(), Warning);
    assert_eq!(s.h.config().min_bitrate_bps, Some(2_000_000));
}

#[test]
fn a_stream_above_its_bitrate_cap_for_the_allowed_time_is_flagged_and_recovers_under_it() {
    let mut s = Sim::connected(HealthConfig::default());
    s.h.set_bitrate_cap(Some(BitrateCap {
        max_bps: 1_000_000,
        over_for_ms: 10_000,
    }));
    // 2 Mbps: above the cap from the first complete second on; flagged only once it has
    // been above for 10 s, not before.
    s.run(9_000, |_| 2_000_000);
    assert_eq!(s.h.status(), Status::Healthy);
    assert!(!s.h.over_bitrate_quota());
    s.run(13_000, |_| 2_000_000);
    assert_eq!(s.h.status(), Status::Warning);
    assert!(s.h.over_bitrate_quota());
    match s.h.reasons() {
        [Reason::OverBitrateQuota { bps, max_bps }] => {
            assert_eq!(*max_bps, 1_000_000);
            assert!(*bps > 1_000_000, "{bps}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.h.reasons()[0].code(), "over_bitrate_quota");
    // Back under the cap: cleared after the 5 s window drains and `recover-after` passes.
    s.run(40_000, |_| 500_000);
    assert!(!s.h.over_bitrate_quota());
    assert_eq!(s.h.status(), Status::Healthy);
}

#[test]
fn a_stream_under_its_bitrate_cap_or_without_one_is_never_flagged() {
    let mut capped = Sim::connected(HealthConfig::default());
    capped.h.set_bitrate_cap(Some(BitrateCap {
        max_bps: 3_000_000,
        over_for_ms: 1_000,
    }));
    capped.run(30_000, |_| 2_000_000);
    assert_eq!(capped.h.status(), Status::Healthy);
    let mut free = Sim::connected(HealthConfig::default());
    free.run(30_000, |_| 50_000_000);
    assert_eq!(free.h.status(), Status::Healthy);
    // A cap removed while flagged clears at the next evaluation.
    let mut s = Sim::connected(HealthConfig::default());
    s.h.set_bitrate_cap(Some(BitrateCap {
        max_bps: 1_000_000,
        over_for_ms: 1_000,
    }));
    s.run(5_000, |_| 2_000_000);
    assert!(s.h.over_bitrate_quota());
    s.h.set_bitrate_cap(None);
    s.run(6_000, |_| 2_000_000);
    assert!(!s.h.over_bitrate_quota());
}
