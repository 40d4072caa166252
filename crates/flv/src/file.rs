//! The tags of a whole FLV file (what `ffmpeg -f flv` writes), held in memory: the file
//! header is checked, then [`FileTags`] hands out each tag's type, timestamp and body, the
//! body a zero-copy slice of the file. What a body means is [`crate::tag`]'s business.

use bytes::Bytes;

/// Size of the FLV file header as written by every muxer (signature, version, flags,
/// header size).
pub const FILE_HEADER_LEN: usize = 9;
/// Size of a tag header (type, data size, timestamp, timestamp extension, stream id).
const TAG_HEADER_LEN: usize = 11;
/// Size of each PreviousTagSize field.
const PREV_TAG_SIZE_LEN: usize = 4;
/// Largest header size field accepted (the spec's is 9; anything past a few KiB is junk).
const MAX_HEADER_LEN: u32 = 4096;
/// The tag type bit of encrypted ("filtered") tags.
const FILTER_BIT: u8 = 0x20;

/// FLV tag type: audio.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type: video.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type: script data (AMF0, e.g. `onMetaData`).
pub const TAG_SCRIPT: u8 = 18;

/// Why an FLV file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The data does not start with an FLV header.
    #[error("not an FLV file")]
    NotFlv,
    /// The file ends in the middle of a header or tag.
    #[error("FLV file truncated at byte {offset}")]
    Truncated {
        /// Where the incomplete piece starts.
        offset: usize,
    },
    /// A header field is out of range, or a tag is encrypted.
    #[error("malformed FLV at byte {offset}: {what}")]
    Malformed {
        /// Where the bad field is.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// One tag of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    /// [`TAG_AUDIO`], [`TAG_VIDEO`], [`TAG_SCRIPT`] or another (unknown) type.
    pub tag_type: u8,
    /// The 32-bit timestamp in milliseconds (the extension byte is its top byte).
    pub timestamp_ms: u32,
    /// Where the tag header starts in the file.
    pub offset: usize,
    /// The tag body (a slice of the file).
    pub data: Bytes,
}

/// The tags of a file in file order. An `Err` ends the iteration.
#[derive(Debug, Clone)]
pub struct FileTags {
    data: Bytes,
    pos: usize,
}

impl FileTags {
    /// Checks the file header of `data` and positions after it (and PreviousTagSize0).
    pub fn new(data: Bytes) -> Result<FileTags, FileError> {
        let Some(&[f, l, v, _, _, s0, s1, s2, s3]) = data.first_chunk::<FILE_HEADER_LEN>() else {
            return Err(if data.starts_with(b"FLV") {
                FileError::Truncated { offset: 0 }
            } else {
                FileError::NotFlv
            });
        };
        if [f, l, v] != *b"FLV" {
            return Err(FileError::NotFlv);
        }
        let header_len = u32::from_be_bytes([s0, s1, s2, s3]);
        if !(FILE_HEADER_LEN as u32..=MAX_HEADER_LEN).contains(&header_len) {
            return Err(FileError::Malformed {
                offset: 5,
                what: "header size",
            });
        }
        let pos = header_len as usize + PREV_TAG_SIZE_LEN;
        if pos > data.len() {
            return Err(FileError::Truncated { offset: 0 });
        }
        Ok(FileTags { data, pos })
    }

    fn read_tag(&self, start: usize) -> Result<FileTag, FileError> {
        let truncated = FileError::Truncated { offset: start };
        let Some(&[kind, s0, s1, s2, t0, t1, t2, t3, ..]) = self
            .data
            .get(start..)
            .and_then(|rest| rest.first_chunk::<TAG_HEADER_LEN>())
        else {
            return Err(truncated);
        };
        if kind & FILTER_BIT != 0 {
            return Err(FileError::Malformed {
                offset: start,
                what: "encrypted (filtered) tags are not supported",
            });
        }
        let body_start = start + TAG_HEADER_LEN;
        let body_end = body_start + u32::from_be_bytes([0, s0, s1, s2]) as usize;
        if body_end + PREV_TAG_SIZE_LEN > self.data.len() {
            return Err(truncated);
        }
        Ok(FileTag {
            tag_type: kind & 0x1f,
            timestamp_ms: u32::from_be_bytes([t3, t0, t1, t2]),
            offset: start,
            data: self.data.slice(body_start..body_end),
        })
    }
}

impl Iterator for FileTags {
    type Item = Result<FileTag, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let tag = self.read_tag(self.pos);
        self.pos = match &tag {
            Ok(t) => t.offset + TAG_HEADER_LEN + t.data.len() + PREV_TAG_SIZE_LEN,
            Err(_) => self.data.len(),
        };
        Some(tag)
    }
}
