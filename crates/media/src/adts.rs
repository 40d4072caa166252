//! ADTS headers (ISO/IEC 13818-7 / 14496-3): building the 7-byte header an MPEG-TS muxer puts
//! before every raw AAC frame, and parsing one for an MPEG-TS demuxer.

use bytes::Bytes;

use crate::codec::{aac_asc, parse_aac_asc, parse_asc_info, CodecError, AAC_SAMPLE_RATES};
use crate::AudioConfig;

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

/// Length of an ADTS header with CRC.
pub const ADTS_HEADER_LEN_WITH_CRC: usize = 9;

/// Largest ADTS frame (header + payload): the 13-bit `aac_frame_length` field.
pub const MAX_ADTS_FRAME_LEN: usize = 0x1fff;

/// A parsed ADTS header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// The MPEG-4 audioObjectType (ADTS `profile` + 1): 2 for AAC-LC.
    pub object_type: u8,
    /// `sampling_frequency_index` (0..=12).
    pub frequency_index: u8,
    /// The sampling rate in Hz.
    pub sample_rate: u32,
    /// `channel_configuration` (1..=7; 0 means a PCE in the payload).
    pub channel_config: u8,
    /// Header length: 7, or 9 with CRC.
    pub header_len: usize,
    /// `aac_frame_length`: header plus payload, in bytes.
    pub frame_len: usize,
    /// Raw data blocks in the frame (`number_of_raw_data_blocks_in_frame` + 1).
    pub raw_data_blocks: u8,
}

impl AdtsHeader {
    /// The payload length (frame minus header).
    pub fn payload_len(&self) -> usize {
        self.frame_len.saturating_sub(self.header_len)
    }

    /// The audio configuration this header describes (a 2-byte AudioSpecificConfig).
    pub fn audio_config(&self) -> Result<AudioConfig, CodecError> {
        parse_aac_asc(aac_asc(
            self.object_type,
            self.frequency_index,
            self.channel_config,
        ))
    }
}

/// Builds the 7-byte ADTS header (no CRC) for one raw AAC frame of `payload_len` bytes.
/// Only object types 1..=4 (ADTS can signal no others; HE-AAC uses its core AAC-LC type),
/// table sampling rates and channel configurations 1..=7 can be expressed.
pub fn build_header(config: &AudioConfig, payload_len: usize) -> Result<[u8; 7], CodecError> {
    let info = parse_asc_info(&config.asc)?;
    if !(1..=4).contains(&info.core_object_type) {
        return Err(CodecError::Unsupported {
            what: "AAC object type in ADTS",
        });
    }
    let freq = info.frequency_index.ok_or(CodecError::Unsupported {
        what: "AAC sampling rate in ADTS",
    })?;
    if !(1..=7).contains(&info.channel_config) {
        return Err(CodecError::Unsupported {
            what: "AAC channel configuration in ADTS",
        });
    }
    let frame_len = payload_len
        .checked_add(ADTS_HEADER_LEN)
        .filter(|l| *l <= MAX_ADTS_FRAME_LEN)
        .ok_or(CodecError::LimitExceeded {
            what: "ADTS frame length",
            limit: MAX_ADTS_FRAME_LEN,
        })?;
    let profile = info.core_object_type - 1;
    let ch = info.channel_config;
    let len = frame_len as u32;
    Ok([
        0xff,
        0xf1, // sync, MPEG-4, layer 0, protection absent
        (profile << 6) | (freq << 2) | (ch >> 2),
        ((ch & 3) << 6) | ((len >> 11) & 0x03) as u8,
        ((len >> 3) & 0xff) as u8,
        (((len & 0x07) << 5) as u8) | 0x1f, // buffer fullness 0x7ff (VBR), high bits
        0xfc,                               // fullness low bits, 1 raw data block
    ])
}

/// Parses the ADTS header at the start of `data` (which must hold at least the header).
pub fn parse_header(data: &[u8]) -> Result<AdtsHeader, CodecError> {
    const WHAT: &str = "ADTS header";
    let (&[b0, b1, b2, b3, b4, b5, b6], _) = data
        .split_first_chunk::<ADTS_HEADER_LEN>()
        .ok_or(CodecError::Truncated { what: WHAT })?;
    if b0 != 0xff || b1 & 0xf0 != 0xf0 {
        return Err(CodecError::Malformed {
            what: WHAT,
            reason: "no syncword",
        });
    }
    if b1 & 0x06 != 0 {
        return Err(CodecError::Malformed {
            what: WHAT,
            reason: "layer is not 0",
        });
    }
    let protection_absent = b1 & 0x01 != 0;
    let object_type = (b2 >> 6) + 1;
    let frequency_index = (b2 >> 2) & 0x0f;
    let sample_rate =
        *AAC_SAMPLE_RATES
            .get(usize::from(frequency_index))
            .ok_or(CodecError::Malformed {
                what: WHAT,
                reason: "reserved sampling_frequency_index",
            })?;
    let channel_config = ((b2 & 0x01) << 2) | (b3 >> 6);
    let frame_len = (usize::from(b3 & 0x03) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5);
    let header_len = if protection_absent {
        ADTS_HEADER_LEN
    } else {
        ADTS_HEADER_LEN_WITH_CRC
    };
    if frame_len < header_len {
        return Err(CodecError::Malformed {
            what: WHAT,
            reason: "aac_frame_length shorter than the header",
        });
    }
    Ok(AdtsHeader {
        object_type,
        frequency_index,
        sample_rate,
        channel_config,
        header_len,
        frame_len,
        raw_data_blocks: (b6 & 0x03) + 1,
    })
}

/// Convenience: a 2-byte AudioSpecificConfig from an ADTS header.
pub fn asc_from_header(header: &AdtsHeader) -> Bytes {
    aac_asc(
        header.object_type,
        header.frequency_index,
        header.channel_config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc_44100_stereo() -> AudioConfig {
        parse_aac_asc(Bytes::from_static(&[0x12, 0x10])).unwrap()
    }

    #[test]
    fn build_known_header() {
        // First header of `ffmpeg -f lavfi -i sine=sample_rate=44100 -ac 2 -c:a aac a.aac`
        // (Debian ffmpeg 5.1): a 345-byte AAC-LC frame.
        let real = [0xff, 0xf1, 0x50, 0x80, 0x2b, 0x3f, 0xfc];
        let h = build_header(&lc_44100_stereo(), 345 - 7).unwrap();
        assert_eq!(h, real);
        let p = parse_header(&real).unwrap();
        assert_eq!((p.frame_len, p.header_len, p.raw_data_blocks), (345, 7, 1));
    }

    #[test]
    fn round_trip() {
        let cfg = lc_44100_stereo();
        for len in [0usize, 1, 200, 8184] {
            let h = build_header(&cfg, len).unwrap();
            let p = parse_header(&h).unwrap();
            assert_eq!(p.object_type, 2);
            assert_eq!(p.sample_rate, 44100);
            assert_eq!(p.channel_config, 2);
            assert_eq!(p.payload_len(), len);
            assert_eq!(p.audio_config().unwrap().asc, cfg.asc);
        }
        assert!(build_header(&cfg, 8185).is_err());
        assert!(build_header(&cfg, usize::MAX).is_err());
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(parse_header(&[0xff, 0xf1, 0x50, 0x80]).is_err());
        assert!(parse_header(&[0xff, 0x01, 0x50, 0x80, 0x2e, 0x7f, 0xfc]).is_err());
        // reserved frequency index 13
        assert!(parse_header(&[0xff, 0xf1, 0x74, 0x80, 0x2e, 0x7f, 0xfc]).is_err());
        // frame length 0
        assert!(parse_header(&[0xff, 0xf1, 0x50, 0x80, 0x00, 0x1f, 0xfc]).is_err());
    }
}
