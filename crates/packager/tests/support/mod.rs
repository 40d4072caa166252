//! What the ffmpeg round trip test and the ingest benchmark share: an ffmpeg-made FLV
//! clip and its tags. Included by both (`mod support;`, and `#[path]` from the bench).

use std::path::Path;
use std::process::Command;

use bytes::Bytes;

/// What a helper, a test or the benchmark's setup fails with.
pub type Error = Box<dyn std::error::Error>;

/// Size of the FLV file header (9) plus PreviousTagSize0 (4).
const FILE_HEADER_LEN: usize = 13;
/// Size of a tag header: type, data size, timestamp, timestamp extension, stream id.
const TAG_HEADER_LEN: usize = 11;
/// Size of the PreviousTagSize field after each tag.
const PREV_TAG_SIZE_LEN: usize = 4;

/// One FLV tag: type (5 bits: 8 audio, 9 video, 18 script), timestamp (ms), body.
pub type Tag = (u8, u32, Bytes);

/// Writes `seconds` of testsrc2 video of `size` at 30 fps (libx264, 2 s GOPs with no scene
/// cut keyframes) and a 440 Hz 48 kHz sine (AAC) as FLV to `out`; `encode` adds the
/// caller's encoder options (preset, bitrates).
pub fn ffmpeg_testsrc_flv(
    out: &Path,
    size: &str,
    seconds: &str,
    encode: &[&str],
) -> Result<(), Error> {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", seconds, "-c:v", "libx264", "-c:a", "aac"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(encode)
        .args(["-f", "flv"])
        .arg(out)
        .status()
        .map_err(|e| format!("run ffmpeg (apt-get install -y ffmpeg): {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed: {status}").into());
    }
    Ok(())
}

/// The tags of an FLV file, as slices of one copy of it; a truncated last tag is left out.
pub fn flv_tags(flv: &[u8]) -> Vec<Tag> {
    let flv = Bytes::copy_from_slice(flv);
    let mut tags = Vec::new();
    let mut pos = FILE_HEADER_LEN;
    while let Some(&[kind, s0, s1, s2, t0, t1, t2, t3, ..]) = flv.get(pos..pos + TAG_HEADER_LEN) {
        let size = u32::from_be_bytes([0, s0, s1, s2]) as usize;
        let ts = u32::from_be_bytes([t3, t0, t1, t2]);
        let body = pos + TAG_HEADER_LEN..pos + TAG_HEADER_LEN + size;
        if body.end > flv.len() {
            break;
        }
        tags.push((kind & 0x1f, ts, flv.slice(body)));
        pos += TAG_HEADER_LEN + size + PREV_TAG_SIZE_LEN;
    }
    tags
}
