//! Splitting whole FLV files into tags: header checks, extended timestamps, bodies as
//! slices of the file, and every truncation an error or a shorter file, never a panic.

use bytes::Bytes;
use tidegate_flv::file::{FileError, FileTag, FileTags, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};

/// An FLV file header (audio and video) and PreviousTagSize0.
const HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

/// Appends one tag (header, body, PreviousTagSize) to `out`.
fn tag(out: &mut Vec<u8>, tag_type: u8, ts: u32, body: &[u8]) {
    let size = body.len() as u32;
    out.push(tag_type);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&ts.to_be_bytes()[1..]);
    out.push((ts >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

fn sample() -> Vec<u8> {
    let mut f = HEADER.to_vec();
    tag(&mut f, TAG_SCRIPT, 0, b"meta");
    tag(&mut f, TAG_VIDEO, 40, &[0x17, 1, 0, 0, 0, 0xaa]);
    tag(&mut f, TAG_AUDIO, 0x0123_4567, &[0xaf, 1, 0x21]);
    tag(&mut f, 15, 7, &[]);
    f
}

fn read(data: &[u8]) -> Result<Vec<FileTag>, FileError> {
    FileTags::new(Bytes::copy_from_slice(data))?.collect()
}

#[test]
fn tags_come_out_in_order_with_extended_timestamps() {
    let data = Bytes::from(sample());
    let tags: Vec<FileTag> = FileTags::new(data.clone())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let seen: Vec<(u8, u32, usize)> = tags
        .iter()
        .map(|t| (t.tag_type, t.timestamp_ms, t.data.len()))
        .collect();
    assert_eq!(
        seen,
        [(18, 0, 4), (9, 40, 6), (8, 0x0123_4567, 3), (15, 7, 0)]
    );
    assert_eq!(tags[0].offset, 13);
    assert_eq!(&tags[1].data[..], &[0x17, 1, 0, 0, 0, 0xaa]);
    // Bodies are slices of the file, not copies.
    let base = data.as_ptr() as usize;
    let p = tags[1].data.as_ptr() as usize;
    assert!(p >= base && p + tags[1].data.len() <= base + data.len());
}

#[test]
fn bad_headers_are_refused() {
    assert_eq!(
        read(b"\x00\x00\x00\x20ftypisom").unwrap_err(),
        FileError::NotFlv
    );
    assert_eq!(read(b"FL").unwrap_err(), FileError::NotFlv);
    assert_eq!(
        read(b"FLV\x01").unwrap_err(),
        FileError::Truncated { offset: 0 }
    );
    let mut short_size = HEADER;
    short_size[8] = 3;
    assert!(matches!(
        read(&short_size),
        Err(FileError::Malformed { offset: 5, .. })
    ));
    let mut encrypted = HEADER.to_vec();
    tag(&mut encrypted, TAG_VIDEO | 0x20, 0, &[1]);
    assert!(matches!(
        read(&encrypted),
        Err(FileError::Malformed { offset: 13, .. })
    ));
    assert_eq!(read(&HEADER).unwrap(), []);
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_file() {
    let full = sample();
    let whole = read(&full).unwrap();
    let mut shorter = 0;
    for cut in 0..full.len() {
        match read(&full[..cut]) {
            Ok(tags) => {
                assert!(tags.len() < whole.len() && whole.starts_with(&tags));
                shorter += 1;
            }
            Err(FileError::Truncated { .. } | FileError::NotFlv) => {}
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
    // The cuts after the header and after each tag but the last.
    assert_eq!(shorter, whole.len());
}
