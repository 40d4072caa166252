//! The MPEG-TS demuxer (SRT payloads) fed arbitrary bytes in arbitrary chunks: the first
//! byte picks the chunk size. It may refuse input; it must never panic or grow unbounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_mpegts::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1) * 7;
    let mut d = TsDemuxer::new();
    for c in rest.chunks(chunk) {
        if d.handle_input(c).is_err() {
            break;
        }
        while d.poll_event().is_some() {}
    }
});
