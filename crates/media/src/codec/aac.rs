//! MPEG-4 AAC: the AudioSpecificConfig (including explicit HE-AAC and program config
//! elements) and the two-byte config an ADTS header describes.

use bytes::Bytes;

use super::{malformed, CodecError};
use crate::bits::BitReader;
use crate::{AudioCodec, AudioConfig};

/// Sampling rates by MPEG-4 `samplingFrequencyIndex` (0..=12).
pub const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The decoded fields of an AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AscInfo {
    /// The signalled audioObjectType (5 or 29 for explicit HE-AAC).
    pub(crate) object_type: u8,
    /// The core codec's object type (2 for HE-AAC over AAC-LC).
    pub(crate) core_object_type: u8,
    /// The core sampling frequency index, if the rate is one of the table's.
    pub(crate) frequency_index: Option<u8>,
    /// The core sampling rate.
    pub(crate) sample_rate: u32,
    /// channelConfiguration.
    pub(crate) channel_config: u8,
    /// Output channels.
    pub(crate) channels: u8,
    /// The GASpecificConfig frameLengthFlag (960-sample frames).
    pub(crate) frame_length_flag: bool,
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let aot = r.bits32(5)? as u8;
    if aot == 31 {
        Ok(32 + r.bits32(6)? as u8)
    } else {
        Ok(aot)
    }
}

fn read_frequency(r: &mut BitReader<'_>) -> Result<(Option<u8>, u32), CodecError> {
    let index = r.bits32(4)? as u8;
    if index == 15 {
        let rate = r.bits32(24)?;
        let idx = AAC_SAMPLE_RATES.iter().position(|&x| x == rate);
        Ok((idx.map(|i| i as u8), rate))
    } else {
        let rate = *AAC_SAMPLE_RATES.get(usize::from(index)).ok_or(malformed(
            "AudioSpecificConfig",
            "reserved samplingFrequencyIndex",
        ))?;
        Ok((Some(index), rate))
    }
}

/// Output channels of a program config element (ISO 14496-3 4.4.1.1).
fn pce_channels(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    r.skip(4 + 2 + 4)?; // element_instance_tag, object_type, sampling_frequency_index
    let front = r.bits32(4)?;
    let side = r.bits32(4)?;
    let back = r.bits32(4)?;
    let lfe = r.bits32(2)?;
    let assoc = r.bits32(3)?;
    let cc = r.bits32(4)?;
    for _ in 0..3 {
        // mono_mixdown (4), stereo_mixdown (4), matrix_mixdown (2 + 1)
        if r.bit()? {
            r.skip(4)?;
        }
    }
    let mut channels = lfe;
    for _ in 0..(front + side + back) {
        channels += if r.bit()? { 2 } else { 1 };
        r.skip(4)?;
    }
    r.skip((lfe * 4 + assoc * 4 + cc * 5) as usize)?;
    u8::try_from(channels).map_err(|_| malformed("AAC program config element", "too many channels"))
}

pub(crate) fn parse_asc_info(asc: &[u8]) -> Result<AscInfo, CodecError> {
    const WHAT: &str = "AudioSpecificConfig";
    let mut r = BitReader::new(asc, WHAT);
    let object_type = read_object_type(&mut r)?;
    if object_type == 0 {
        return Err(malformed(WHAT, "audioObjectType 0"));
    }
    let (mut frequency_index, sample_rate) = read_frequency(&mut r)?;
    let channel_config = r.bits32(4)? as u8;
    let mut core_object_type = object_type;
    if object_type == 5 || object_type == 29 {
        // Explicit SBR/PS: the extension rate, then the core object type.
        let _extension_rate = read_frequency(&mut r)?;
        core_object_type = read_object_type(&mut r)?;
        if core_object_type == 22 {
            let _extension_channel_config = r.bits32(4)?;
        }
    }
    let frame_length_flag;
    let mut channels = match channel_config {
        1..=6 => channel_config,
        7 => 8,
        11 => 7,
        12 | 14 => 8,
        13 => 24,
        _ => 0,
    };
    match core_object_type {
        1 | 2 | 3 | 4 | 6 | 7 | 17 | 19 | 20 | 21 | 22 | 23 => {
            frame_length_flag = r.bit()?;
            if r.bit()? {
                r.skip(14)?; // coreCoderDelay
            }
            let _extension_flag = r.bit()?;
            if channel_config == 0 {
                channels = pce_channels(&mut r)?;
            }
        }
        _ => {
            return Err(CodecError::Unsupported {
                what: "AAC audio object type",
            })
        }
    }
    if channels == 0 {
        return Err(CodecError::Unsupported {
            what: "AAC channel configuration",
        });
    }
    if sample_rate == 0 {
        return Err(malformed(WHAT, "sampling rate 0"));
    }
    if frequency_index.is_none() {
        frequency_index = AAC_SAMPLE_RATES
            .iter()
            .position(|&x| x == sample_rate)
            .map(|i| i as u8);
    }
    Ok(AscInfo {
        object_type,
        core_object_type,
        frequency_index,
        sample_rate,
        channel_config,
        channels,
        frame_length_flag,
    })
}

/// Parses an MPEG-4 AudioSpecificConfig (as an FLV/RTMP AAC sequence header carries it).
/// For explicit HE-AAC (object type 5/29) `sample_rate` is the core AAC rate, so 1024
/// `samples_per_frame` at that rate give the right frame duration; `codec_string` keeps the
/// signalled type (`mp4a.40.5`).
pub fn parse_aac_asc(asc: Bytes) -> Result<AudioConfig, CodecError> {
    let info = parse_asc_info(&asc)?;
    Ok(AudioConfig {
        codec: AudioCodec::Aac,
        sample_rate: info.sample_rate,
        channels: info.channels,
        samples_per_frame: if info.frame_length_flag { 960 } else { 1024 },
        codec_string: format!("mp4a.40.{}", info.object_type),
        asc,
    })
}

/// Builds the two-byte AudioSpecificConfig for a plain AAC stream (as ADTS describes one).
pub fn aac_asc(object_type: u8, frequency_index: u8, channel_config: u8) -> Bytes {
    let v: u16 = (u16::from(object_type & 0x1f) << 11)
        | (u16::from(frequency_index & 0x0f) << 7)
        | (u16::from(channel_config & 0x0f) << 3);
    Bytes::copy_from_slice(&v.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::testdata::*;
    use super::*;

    #[test]
    fn aac_configs() {
        let cfg = parse_aac_asc(hex("1208 56e500")).unwrap();
        assert_eq!(
            (cfg.sample_rate, cfg.channels, cfg.samples_per_frame),
            (44100, 1, 1024)
        );
        assert_eq!(cfg.codec_string, "mp4a.40.2");
        let cfg = parse_aac_asc(hex("1190")).unwrap();
        assert_eq!((cfg.sample_rate, cfg.channels), (48000, 2));
        // frameLengthFlag → 960-sample frames.
        let cfg = parse_aac_asc(hex("1214")).unwrap();
        assert_eq!(cfg.samples_per_frame, 960);
        // Explicit HE-AAC: 24 kHz core, 48 kHz SBR, stereo.
        let cfg = parse_aac_asc(hex("2b118800")).unwrap();
        assert_eq!(cfg.codec_string, "mp4a.40.5");
        assert_eq!((cfg.sample_rate, cfg.channels), (24000, 2));
        // Explicit 24-bit rate: aot 2, index 15, 44100 (0x00ac44), 2 channels.
        // 00010 1111 000000001010110001000100 0010 000
        let cfg = parse_aac_asc(hex("1780562210")).unwrap();
        assert_eq!((cfg.sample_rate, cfg.channels), (44100, 2));
        // 7 channel configuration → 8 channels.
        assert_eq!(parse_aac_asc(hex("11b8")).unwrap().channels, 8);
        // Escape object type 31 + 6 bits: 42 (USAC) is unsupported.
        let err = parse_aac_asc(hex("f9 48 80 00")).unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert_eq!(err.kind(), "unsupported");
        // Reserved frequency index 13.
        assert!(parse_aac_asc(hex("1688")).unwrap_err().is_malformed());
        assert!(parse_aac_asc(hex("00")).is_err());
    }
}
