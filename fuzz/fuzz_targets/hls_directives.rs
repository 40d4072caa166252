//! The LL-HLS Delivery Directives parser and the blocking reload decision on arbitrary
//! query strings, and the part-name parser on arbitrary names. A panic is a bug; a parsed
//! `_HLS_part` always comes with an `_HLS_msn`; a part name made by `part_uri` parses back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_packager::{
    decide_blocking, parse_delivery_directives, parse_part_uri, part_uri, BlockingDecision,
    LiveEdge,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(directives) = parse_delivery_directives(Some(text)) {
        assert!(directives.part.is_none() || directives.msn.is_some());
        let edge = LiveEdge {
            next_msn: data.len() as u64,
            last_segment_parts: u32::from(data.first().copied().unwrap_or(0) % 8),
            open_parts: u32::from(data.last().copied().unwrap_or(0) % 8),
            oldest_msn: 0,
            part_target_secs: Some(1.0 / 3.0),
            target_duration_secs: 2,
            ended: false,
        };
        if let BlockingDecision::Wait { msn, .. } = decide_blocking(&edge, &directives) {
            // Never waits for a segment more than two past the last one.
            assert!(msn <= edge.next_msn + 1);
        }
    }
    if let Some((segment, index)) = parse_part_uri(text) {
        assert_eq!(parse_part_uri(&part_uri(&segment, index)), Some((segment, index)));
    }
});
