#![no_main]
//! AMF0 decoding of arbitrary bytes; whatever decodes must re-encode and decode again.
use libfuzzer_sys::fuzz_target;
use tidegate_rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf0::decode_all(data) {
        let bytes = amf0::encode_all(&values);
        let again = amf0::decode_all(&bytes);
        assert!(again.is_ok(), "re-encoded AMF0 failed to decode");
    }
});
