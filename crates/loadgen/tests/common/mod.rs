//! What the RTMP and SRT publisher tests share: writing the FLV clips they publish.

/// An FLV file header (audio and video) and PreviousTagSize0.
pub const FLV_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

/// Appends one FLV tag (header, body, PreviousTagSize) to `out`.
pub fn tag(out: &mut Vec<u8>, tag_type: u8, ts: u32, body: &[u8]) {
    let size = body.len() as u32;
    out.push(tag_type);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&ts.to_be_bytes()[1..]);
    out.push((ts >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}
