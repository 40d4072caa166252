//! Whole FLV files (what `ffmpeg -f flv` writes) as publishers send them: the file is read
//! into memory once and split by `tidegate_flv::file`, every tag body a zero-copy
//! [`Bytes`] slice of it, shared by every publisher.
//!
//! Tags before the first media frame that carry codec configuration (AVC/HEVC/AV1 sequence
//! headers, AAC AudioSpecificConfig, Enhanced RTMP `SequenceStart`) become
//! [`FlvFile::headers`], sent once per connection; `onMetaData` becomes
//! [`FlvFile::metadata`]; everything else is [`FlvFile::tags`], paced and looped.

use bytes::Bytes;
use tidegate_flv::file::{FileTag, FileTags, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use tidegate_flv::{parse_audio_tag, parse_video_tag, AudioTag, VideoTag};
use tidegate_rtmp::Amf0Value;

use crate::error::LoadgenError;

/// Largest input accepted: the file is held in memory for the whole run.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Frame interval assumed for the last frame of a track that has a single frame.
const DEFAULT_FRAME_MS: u32 = 33;
/// GOP assumed when the file has fewer than two keyframes (or no video).
const DEFAULT_GOP_MS: u32 = 2000;

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
        let mut metadata = None;
        let mut headers = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        for tag in FileTags::new(data)? {
            let FileTag {
                tag_type,
                timestamp_ms,
                data,
                ..
            } = tag?;
            let kind = match tag_type {
                TAG_SCRIPT if metadata.is_none() => {
                    metadata = parse_metadata(&data);
                    continue;
                }
                TAG_AUDIO => TagKind::Audio,
                TAG_VIDEO => TagKind::Video,
                _ => continue,
            };
            // Empty media tags (like unknown types) carry nothing to send.
            if data.is_empty() {
                continue;
            }
            let (config, keyframe) = classify(kind, &data);
            let tag = Tag {
                kind,
                timestamp_ms,
                keyframe: keyframe && !config,
                data,
            };
            if config && tags.is_empty() {
                headers.push(Tag {
                    timestamp_ms: 0,
                    ..tag
                });
            } else {
                tags.push(tag);
            }
        }
        let first = tags.iter().map(|t| t.timestamp_ms).min();
        let first = first.ok_or(LoadgenError::NoMedia)?;
        for t in &mut tags {
            t.timestamp_ms -= first;
        }
        let media_bytes = tags.iter().map(|t| t.data.len() as u64).sum();
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
