//! The bench's HTTP/1.1 client reading an answer head and a chunk-size line from arbitrary
//! bytes (a misbehaving server). A panic is a bug; a head or line it accepts lies within
//! the bytes given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_loadgen::http::fuzzing::{chunk_line, head};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, len))) = head(data) {
        assert!(len <= data.len());
    }
    if let Ok(Some((_, len))) = chunk_line(data) {
        assert!(len >= 2 && len <= data.len());
    }
});
