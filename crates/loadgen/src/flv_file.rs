//! A small reader for whole FLV files (what `ffmpeg -f flv` writes): the file is read into
//! memory once and every tag body becomes a zero-copy [`Bytes`] slice of it, shared by
//! every publisher.
//!
//! Tags before the first media frame that carry codec configuration (AVC/HEVC/AV1 sequence
//! headers, AAC AudioSpecificConfig, Enhanced RTMP `SequenceStart`) become
//! [`FlvFile::headers`], sent once per connection; `onMetaData` becomes
//! [`FlvFile::metadata`]; everything else is [`FlvFile::tags`], paced and looped.

use bytes::Bytes;
use tidegate_flv::{parse_audio_tag, parse_video_tag, AudioTag, VideoTag};
use tidegate_rtmp::Amf0Value;

use crate::error::LoadgenError;

/// Largest input accepted: the file is held in memory for the whole run.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Size of the FLV file header as written by every muxer (signature, version, flags,
/// header size).
const FLV_HEADER_LEN: usize = 9;
/// Size of a tag header (type, data size, timestamp, timestamp extension, stream id).
const TAG_HEADER_LEN: usize = 11;
/// Size of each PreviousTagSize field.
const PREV_TAG_SIZE_LEN: usize = 4;
/// Largest header size field accepted (the spec's is 9; anything past a few KiB is junk).
const MAX_HEADER_LEN: u32 = 4096;
/// Frame interval assumed for the last frame of a track that has a single frame.
const DEFAULT_FRAME_MS: u32 = 33;
/// GOP assumed when the file has fewer than two keyframes (or no video).
const DEFAULT_GOP_MS: u32 = 2000;

/// FLV tag type: audio.
const TAG_AUDIO: u8 = 8;
/// FLV tag type: video.
const TAG_VIDEO: u8 = 9;
/// FLV tag type: script data (AMF0 `onMetaData`).
const TAG_SCRIPT: u8 = 18;

/// Video frame type "keyframe" (the low 3 bits of the high nibble of the first byte).
const FRAME_TYPE_KEY: u8 = 1;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TagKind {
    /// An FLV audio tag body (RTMP message type 8).
    Audio,
    /// An FLV video tag body (RTMP message type 9).
    Video,
}

/// One media tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Audio or video.
    pub kind: TagKind,
    /// Milliseconds from the file's first media tag.
    pub timestamp_ms: u32,
    /// A video keyframe.
    pub keyframe: bool,
    /// The tag body, as sent in an RTMP message (a slice of the file).
    pub data: Bytes,
}

/// A whole FLV file, parsed.
#[derive(Debug, Clone)]
pub struct FlvFile {
    /// The first `onMetaData` object, if any.
    pub metadata: Option<Amf0Value>,
    /// Codec configuration tags found before the first media frame, in file order.
    pub headers: Vec<Tag>,
    /// Media tags in file order (timestamps relative to the first media tag).
    pub tags: Vec<Tag>,
    /// Length of one pass over the file: the last timestamp of each track plus its frame
    /// interval, the larger of audio and video.
    /// Loop `k` adds `k * duration_ms` to every timestamp.
    pub duration_ms: u32,
    /// Typical distance between video keyframes (the median), or 2000 ms without video.
    pub gop_ms: u32,
    /// Payload bytes of [`FlvFile::tags`] (one pass).
    pub media_bytes: u64,
}

impl FlvFile {
    /// Parses a whole file held in `data`. Every tag body is a slice of `data`.
    pub fn parse(data: Bytes) -> Result<FlvFile, LoadgenError> {
        let len = data.len() as u64;
        if len > MAX_FILE_BYTES {
            return Err(LoadgenError::TooLarge {
                len,
                max: MAX_FILE_BYTES,
            });
        }
        let head = data.get(..FLV_HEADER_LEN).ok_or(if data.len() >= 3 {
            if data.get(..3) == Some(b"FLV") {
                LoadgenError::Truncated { offset: 0 }
            } else {
                LoadgenError::NotFlv
            }
        } else {
            LoadgenError::NotFlv
        })?;
        if head.get(..3) != Some(b"FLV") {
            return Err(LoadgenError::NotFlv);
        }
        let header_len = be_u32(&head[5..9]);
        if !(FLV_HEADER_LEN as u32..=MAX_HEADER_LEN).contains(&header_len) {
            return Err(LoadgenError::Malformed {
                offset: 5,
                what: "header size",
            });
        }
        // Skip the header and PreviousTagSize0.
        let mut pos = header_len as usize + PREV_TAG_SIZE_LEN;
        if pos > data.len() {
            return Err(LoadgenError::Truncated { offset: 0 });
        }
        let mut metadata = None;
        let mut headers = Vec::new();
        let mut raw: Vec<(TagKind, i64, bool, Bytes)> = Vec::new();
        while pos < data.len() {
            let start = pos;
            let h = data
                .get(pos..pos + TAG_HEADER_LEN)
                .ok_or(LoadgenError::Truncated { offset: start })?;
            let tag_type = h[0] & 0x1f;
            if h[0] & 0x20 != 0 {
                return Err(LoadgenError::Malformed {
                    offset: start,
                    what: "encrypted (filtered) tags are not supported",
                });
            }
            let size = be_u24(&h[1..4]) as usize;
            let ts = i64::from(be_u24(&h[4..7]) | (u32::from(h[7]) << 24));
            let body_start = pos + TAG_HEADER_LEN;
            let body_end = body_start + size;
            if body_end + PREV_TAG_SIZE_LEN > data.len() {
                return Err(LoadgenError::Truncated { offset: start });
            }
            let body = data.slice(body_start..body_end);
            pos = body_end + PREV_TAG_SIZE_LEN;
            match tag_type {
                TAG_SCRIPT if metadata.is_none() => metadata = parse_metadata(&body),
                TAG_AUDIO | TAG_VIDEO if !body.is_empty() => {
                    let kind = if tag_type == TAG_AUDIO {
                        TagKind::Audio
                    } else {
                        TagKind::Video
                    };
                    let (config, keyframe) = classify(kind, &body);
                    if config && raw.is_empty() {
                        headers.push(Tag {
                            kind,
                            timestamp_ms: 0,
                            keyframe: false,
                            data: body,
                        });
                    } else {
                        raw.push((kind, ts, keyframe && !config, body));
                    }
                }
                // Empty media tags and unknown types carry nothing to send.
                _ => {}
            }
        }
        let first = raw.iter().map(|r| r.1).min().ok_or(LoadgenError::NoMedia)?;
        let mut media_bytes = 0u64;
        let tags: Vec<Tag> = raw
            .into_iter()
            .map(|(kind, ts, keyframe, data)| {
                media_bytes += data.len() as u64;
                Tag {
                    kind,
                    // first <= ts <= first + 2^32, so the difference fits.
                    timestamp_ms: u32::try_from(ts - first).unwrap_or(u32::MAX),
                    keyframe,
                    data,
                }
            })
            .collect();
        let duration_ms = pass_duration(&tags);
        Ok(FlvFile {
            metadata,
            headers,
            duration_ms,
            gop_ms: median_gop(&tags),
            media_bytes,
            tags,
        })
    }

    /// Average media bitrate of one pass, in bits per second.
    pub fn bitrate_bps(&self) -> u64 {
        if self.duration_ms == 0 {
            return 0;
        }
        self.media_bytes.saturating_mul(8_000) / u64::from(self.duration_ms)
    }
}

fn be_u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// `(is codec configuration, is a video keyframe)`: configuration is what
/// `tidegate-flv` parses as a sequence start; the keyframe flag is the frame type of the
/// first byte (legacy and Enhanced RTMP alike), whatever the codec.
fn classify(kind: TagKind, body: &Bytes) -> (bool, bool) {
    let b0 = body.first().copied().unwrap_or(0);
    match kind {
        TagKind::Video => (
            matches!(
                parse_video_tag(body.clone()),
                Ok(VideoTag::SequenceStart { .. })
            ),
            (b0 >> 4) & 0x07 == FRAME_TYPE_KEY,
        ),
        TagKind::Audio => (
            matches!(
                parse_audio_tag(body.clone()),
                Ok(AudioTag::SequenceStart { .. })
            ),
            false,
        ),
    }
}

/// The AMF0 object following `onMetaData` in a script tag.
fn parse_metadata(body: &[u8]) -> Option<Amf0Value> {
    let values = tidegate_rtmp::amf0::decode_all(body).ok()?;
    let mut it = values.into_iter();
    let name = it.next()?;
    if name.as_str() != Some("onMetaData") {
        return None;
    }
    it.next()
        .filter(|v| matches!(v, Amf0Value::Object(_) | Amf0Value::EcmaArray(_)))
}

/// Length of one pass: for each of audio and video, its last timestamp plus its typical
/// frame interval (the median positive delta); the larger of the two.
fn pass_duration(tags: &[Tag]) -> u32 {
    [TagKind::Video, TagKind::Audio]
        .iter()
        .filter_map(|kind| {
            let ts: Vec<u32> = tags
                .iter()
                .filter(|t| t.kind == *kind)
                .map(|t| t.timestamp_ms)
                .collect();
            let last = ts.iter().copied().max()?;
            let interval = median_positive_delta(&ts).unwrap_or(DEFAULT_FRAME_MS);
            Some(last.saturating_add(interval))
        })
        .max()
        .unwrap_or(DEFAULT_FRAME_MS)
}

fn median_gop(tags: &[Tag]) -> u32 {
    let keys: Vec<u32> = tags
        .iter()
        .filter(|t| t.kind == TagKind::Video && t.keyframe)
        .map(|t| t.timestamp_ms)
        .collect();
    median_positive_delta(&keys).unwrap_or(DEFAULT_GOP_MS)
}

fn median_positive_delta(ts: &[u32]) -> Option<u32> {
    let mut deltas: Vec<u32> = ts
        .windows(2)
        .filter_map(|w| w[1].checked_sub(w[0]))
        .filter(|d| *d > 0)
        .collect();
    deltas.sort_unstable();
    deltas.get(deltas.len() / 2).copied()
}
