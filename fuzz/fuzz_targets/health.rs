//! The stream health state machine driven by an arbitrary sequence of inputs on a clock
//! that only moves forward: each 3-byte record is an input kind, a time step (ms, scaled)
//! and an amount. A panic or a failed `debug_assert!` is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_health::{HealthConfig, StreamHealth};

fuzz_target!(|data: &[u8]| {
    let mut now_ms: u64 = 1_000;
    let mut health = StreamHealth::new(HealthConfig::default(), now_ms);
    for record in data.chunks_exact(3) {
        let &[kind, step, amount] = record else {
            continue;
        };
        now_ms = now_ms.saturating_add(u64::from(step) * 37);
        let amount = u64::from(amount);
        match kind % 12 {
            0 => health.handle_connected(now_ms),
            1 => health.handle_disconnected(now_ms),
            2 => health.handle_ended(now_ms),
            3 => health.handle_bytes(now_ms, amount * 1_000),
            4 => health.handle_packets(now_ms, amount * 10, amount / 3, amount / 7, amount / 5),
            5 => health.handle_video_track(now_ms),
            6 => health.handle_video_config(now_ms),
            7 => health.handle_keyframe(now_ms),
            8 => health.handle_timestamp_jump(now_ms),
            9 => health.handle_competing_publisher(now_ms),
            10 => {
                if let Some(at) = health.poll_timeout() {
                    now_ms = now_ms.max(at);
                    health.handle_timeout(now_ms);
                }
            }
            _ => {
                let _ = health.bitrate_bps(now_ms);
                let _ = health.average_bitrate_bps(now_ms);
            }
        }
        while health.poll_event().is_some() {}
    }
});
