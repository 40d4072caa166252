//! FlvDemuxer fed arbitrary audio/video message bodies with arbitrary timestamps.
//!
//! The input is a sequence of messages: one byte (bit 0 selects audio or video), a 4-byte
//! timestamp, a 2-byte body length, then the body (shorter at the end of the input).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidegate_flv::FlvDemuxer;
use tidegate_media::MediaEvent;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let mut demuxer = FlvDemuxer::new();
    let mut pos = 0usize;
    while pos + 7 <= input.len() {
        let kind = input[pos];
        let ts = u32::from_be_bytes([input[pos + 1], input[pos + 2], input[pos + 3], input[pos + 4]]);
        let len = usize::from(u16::from_be_bytes([input[pos + 5], input[pos + 6]]));
        let start = pos + 7;
        let end = (start + len).min(input.len());
        let body = input.slice(start..end);
        pos = end;
        let result = if kind & 1 == 0 {
            demuxer.handle_video(ts, body)
        } else {
            demuxer.handle_audio(ts, body)
        };
        if let Err(e) = result {
            let _ = (e.kind(), e.to_string(), e.is_publisher_fault());
            if kind & 2 == 0 {
                break;
            }
        }
        while let Some(event) = demuxer.poll_event() {
            if let MediaEvent::Frame(f) = event {
                assert!(!f.data.is_empty());
            }
        }
    }
});
