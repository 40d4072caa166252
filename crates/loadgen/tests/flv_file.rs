//! FLV file reading (`FlvFile::parse`): headers, metadata and media tags apart, timestamps
//! relative, bodies as slices of the input, and every malformed or truncated input an
//! error, never a panic.

mod common;

use bytes::Bytes;
use common::{tag, FLV_HEADER};
use tidegate_flv::file::FileError;
use tidegate_loadgen::flv_file::TagKind;
use tidegate_loadgen::{FlvFile, LoadgenError};
use tidegate_rtmp::Amf0Value;

/// A small file: metadata, AVC + AAC sequence headers, then 2 s of 25 fps video with
/// a keyframe every 1 s, and audio every 20 ms... abbreviated to a few frames.
fn sample() -> Vec<u8> {
    let mut f = FLV_HEADER.to_vec();
    // onMetaData { duration: 2.0 }: string "onMetaData", ECMA array with one number.
    let meta = hex("02000a6f6e4d65746144617461\
         0800000001\
         00086475726174696f6e004000000000000000\
         000009");
    tag(&mut f, 18, 0, &meta);
    tag(&mut f, 9, 0, &hex("1700000000014d401fffe1"));
    tag(&mut f, 8, 0, &hex("af001190"));
    for i in 0..50u32 {
        let ts = 1000 + i * 40; // starts at 1000: timestamps become relative
        let key = i % 25 == 0;
        let b0 = if key { 0x17 } else { 0x27 };
        tag(&mut f, 9, ts, &[b0, 1, 0, 0, 0, 0xAA, i as u8]);
        tag(&mut f, 8, ts + 5, &[0xaf, 1, 0x21, i as u8]);
    }
    f
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn parses_headers_metadata_and_tags() {
    let f = FlvFile::parse(Bytes::from(sample())).unwrap();
    assert_eq!(f.headers.len(), 2);
    assert_eq!(f.headers[0].kind, TagKind::Video);
    assert_eq!(f.headers[1].kind, TagKind::Audio);
    assert_eq!(f.headers[1].data.as_ref(), &hex("af001190")[..]);
    let meta = f.metadata.as_ref().unwrap();
    assert_eq!(
        meta.get("duration").and_then(Amf0Value::as_number),
        Some(2.0)
    );
    assert_eq!(f.tags.len(), 100);
    assert_eq!(f.tags[0].timestamp_ms, 0);
    assert!(f.tags[0].keyframe);
    assert_eq!(f.tags[1].timestamp_ms, 5);
    assert!(!f.tags[2].keyframe);
    assert_eq!(f.tags[98].timestamp_ms, 49 * 40);
    // Last audio at 49*40+5 plus its 40 ms interval (video ends 5 ms earlier).
    assert_eq!(f.duration_ms, 49 * 40 + 5 + 40);
    assert_eq!(f.gop_ms, 1000);
    assert_eq!(f.media_bytes, 50 * 7 + 50 * 4);
}

#[test]
fn bodies_are_slices_of_the_input() {
    let data = Bytes::from(sample());
    let f = FlvFile::parse(data.clone()).unwrap();
    let base = data.as_ptr() as usize;
    for t in &f.tags {
        let p = t.data.as_ptr() as usize;
        assert!(p >= base && p + t.data.len() <= base + data.len());
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = sample();
    // Cuts that end exactly on a tag boundary parse as a shorter file; all others fail.
    let mut ok = 0;
    for cut in 0..full.len() {
        match FlvFile::parse(Bytes::copy_from_slice(&full[..cut])) {
            Ok(f) => {
                ok += 1;
                assert!(!f.tags.is_empty());
            }
            Err(e) => assert!(e.is_input_error(), "cut {cut}: {e}"),
        }
    }
    // One boundary per media tag but the last (the whole file is not a cut).
    assert_eq!(ok, 99);
}

#[test]
fn rejects_non_flv_and_bad_header_size() {
    assert!(matches!(
        FlvFile::parse(Bytes::from_static(b"\x00\x00\x00\x20ftypisom")),
        Err(LoadgenError::NotFlv)
    ));
    assert!(matches!(
        FlvFile::parse(Bytes::from(hex("464c5601050000000300000000"))),
        Err(LoadgenError::Flv(FileError::Malformed { offset: 5, .. }))
    ));
    assert!(matches!(
        FlvFile::parse(Bytes::from(hex("464c5601050000000900000000"))),
        Err(LoadgenError::NoMedia)
    ));
}

#[test]
fn enhanced_rtmp_sequence_start_is_a_header() {
    let mut f = hex("464c5601010000000900000000");
    // IsExHeader | keyframe<<4 | SequenceStart, FourCC hvc1, then a coded frame.
    tag(&mut f, 9, 0, &hex("9068766331010203"));
    tag(&mut f, 9, 0, &hex("916876633100aabb"));
    tag(&mut f, 9, 33, &hex("a16876633100ccdd"));
    let f = FlvFile::parse(Bytes::from(f)).unwrap();
    assert_eq!(f.headers.len(), 1);
    assert_eq!(f.tags.len(), 2);
    assert!(f.tags[0].keyframe);
    assert!(!f.tags[1].keyframe);
    assert_eq!(f.duration_ms, 66);
}

#[test]
fn random_bytes_after_header_never_panic() {
    let mut seed = 0x1234_5678_u64;
    for _ in 0..2000 {
        let mut f = FLV_HEADER.to_vec();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed % 64) as usize;
        for k in 0..n {
            f.push((seed >> (k % 56)) as u8);
        }
        let _ = FlvFile::parse(Bytes::from(f));
    }
}
