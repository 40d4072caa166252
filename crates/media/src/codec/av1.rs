//! AV1: OBU headers, the av1C record with its sequence header, and the temporal-delimiter
//! removal the sample format needs.

use bytes::{BufMut, Bytes, BytesMut};

use super::{dimension, malformed, truncated, CodecError};
use crate::bits::{leb128, BitReader};
use crate::{VideoCodec, VideoConfig};

/// AV1 OBU types used here.
pub mod obu_type {
    /// Sequence header.
    pub const SEQUENCE_HEADER: u8 = 1;
    /// Temporal delimiter.
    pub const TEMPORAL_DELIMITER: u8 = 2;
}

/// One parsed OBU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObuHeader {
    /// `obu_type`.
    pub obu_type: u8,
    /// Bytes of header (1 or 2) plus the `obu_size` field, if any.
    pub header_len: usize,
    /// Payload bytes following the header.
    pub payload_len: usize,
    /// Whether the OBU carries an `obu_size` field.
    pub has_size_field: bool,
}

impl ObuHeader {
    /// Total bytes of the OBU.
    pub fn total_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// Parses the OBU header at the start of `data`. An OBU without `obu_size` extends to the
/// end of `data`.
pub fn parse_obu_header(data: &[u8]) -> Result<ObuHeader, CodecError> {
    const WHAT: &str = "AV1 OBU header";
    let first = *data.first().ok_or(truncated(WHAT))?;
    if first & 0x80 != 0 {
        return Err(malformed(WHAT, "forbidden bit set"));
    }
    let obu_type = (first >> 3) & 0x0f;
    let has_extension = first & 0x04 != 0;
    let has_size_field = first & 0x02 != 0;
    let mut header_len = if has_extension { 2 } else { 1 };
    let after_header = data.get(header_len..).ok_or(truncated(WHAT))?;
    let payload_len = if has_size_field {
        let (size, n) = leb128(after_header, WHAT)?;
        header_len += n;
        usize::try_from(size).map_err(|_| truncated(WHAT))?
    } else {
        after_header.len()
    };
    let h = ObuHeader {
        obu_type,
        header_len,
        payload_len,
        has_size_field,
    };
    if h.total_len() > data.len() {
        return Err(truncated("AV1 OBU"));
    }
    Ok(h)
}

/// One OBU split off the front of a buffer.
struct Obu<'a> {
    header: ObuHeader,
    /// The header bytes: one or two, plus the `obu_size` field if there is one.
    head: &'a [u8],
    /// The payload.
    payload: &'a [u8],
}

/// Splits the OBU at the start of `data` off; returns it and the bytes after it.
fn split_obu(data: &[u8]) -> Result<(Obu<'_>, &[u8]), CodecError> {
    let header = parse_obu_header(data)?;
    let (obu, rest) = data
        .split_at_checked(header.total_len())
        .ok_or(truncated("AV1 OBU"))?;
    let (head, payload) = obu
        .split_at_checked(header.header_len)
        .ok_or(truncated("AV1 OBU"))?;
    Ok((
        Obu {
            header,
            head,
            payload,
        },
        rest,
    ))
}

/// Fields of an AV1 sequence header that tidegate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Av1SequenceHeader {
    width: u32,
    height: u32,
}

fn parse_av1_sequence_header(payload: &[u8]) -> Result<Av1SequenceHeader, CodecError> {
    const WHAT: &str = "AV1 sequence header";
    let mut r = BitReader::new(payload, WHAT);
    let _seq_profile = r.bits32(3)?;
    let _still_picture = r.bit()?;
    let reduced_still_picture_header = r.bit()?;
    if reduced_still_picture_header {
        let _seq_level_idx = r.bits32(5)?;
    } else {
        let timing_info_present = r.bit()?;
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if timing_info_present {
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.bit()? {
                let _num_ticks_per_picture_minus_1 = r.uvlc()?;
            }
            decoder_model_info_present = r.bit()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits32(5)? + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay_present = r.bit()?;
        let operating_points = r.bits32(5)? + 1;
        for _ in 0..operating_points {
            let _idc = r.bits32(12)?;
            let level = r.bits32(5)?;
            if level > 7 {
                let _tier = r.bit()?;
            }
            if decoder_model_info_present && r.bit()? {
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay_present && r.bit()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits32(4)? + 1;
    let height_bits = r.bits32(4)? + 1;
    let width = u64::from(r.bits32(width_bits)?) + 1;
    let height = u64::from(r.bits32(height_bits)?) + 1;
    Ok(Av1SequenceHeader {
        width: dimension(width, WHAT)?,
        height: dimension(height, WHAT)?,
    })
}

/// Parses an AV1CodecConfigurationRecord (the body of `av1C`) and the sequence header OBU in
/// its `configOBUs` for the picture size (0×0 when absent). `codec_string` is
/// `av01.P.LLT.DD`.
pub fn parse_av1_record(record: Bytes) -> Result<VideoConfig, CodecError> {
    const WHAT: &str = "AV1CodecConfigurationRecord";
    let (&[marker_version, profile_level, flags, _], mut obus) =
        record.split_first_chunk::<4>().ok_or(truncated(WHAT))?;
    if marker_version != 0x81 {
        return Err(malformed(WHAT, "marker/version is not 1/1"));
    }
    let profile = profile_level >> 5;
    let level = profile_level & 0x1f;
    let tier = if flags & 0x80 != 0 { 'H' } else { 'M' };
    let high_bitdepth = flags & 0x40 != 0;
    let twelve_bit = flags & 0x20 != 0;
    let depth = match (high_bitdepth, twelve_bit) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    let (mut width, mut height) = (0, 0);
    while !obus.is_empty() {
        let (obu, rest) = split_obu(obus)?;
        if obu.header.obu_type == obu_type::SEQUENCE_HEADER {
            let seq = parse_av1_sequence_header(obu.payload)?;
            width = seq.width;
            height = seq.height;
            break;
        }
        obus = rest;
    }
    Ok(VideoConfig {
        codec: VideoCodec::Av1,
        width,
        height,
        nal_length_size: 0,
        codec_string: format!("av01.{profile}.{level:02}{tier}.{depth:02}"),
        record,
    })
}

/// Removes temporal-delimiter OBUs from an AV1 temporal unit and checks that every OBU is
/// well framed. Returns the input itself (no copy) when there is nothing to remove or only
/// leading delimiters; copies only when a delimiter sits in the middle or an OBU lacks
/// `obu_size` (which is then added, as the sample format requires).
pub fn av1_strip_temporal_delimiters(data: Bytes) -> Result<Bytes, CodecError> {
    let mut leading = 0usize;
    let mut needs_copy = false;
    let mut seen_other = false;
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let (obu, after) = split_obu(rest)?;
        if obu.header.obu_type == obu_type::TEMPORAL_DELIMITER {
            if seen_other {
                needs_copy = true;
            } else {
                // `after` is a suffix of `data`: this is where the delimiter ends.
                leading = data.len() - after.len();
            }
        } else {
            seen_other = true;
            if !obu.header.has_size_field {
                needs_copy = true;
            }
        }
        rest = after;
    }
    if !needs_copy {
        return Ok(data.slice(leading..));
    }
    let mut out = BytesMut::with_capacity(data.len().saturating_add(8));
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let (obu, after) = split_obu(rest)?;
        rest = after;
        if obu.header.obu_type == obu_type::TEMPORAL_DELIMITER {
            continue;
        }
        if obu.header.has_size_field {
            out.put_slice(obu.head);
        } else {
            // Without a size field the head is the one or two header bytes: set
            // obu_has_size_field in the first and append obu_size as leb128.
            let (first, extension) = obu.head.split_first().ok_or(truncated("AV1 OBU"))?;
            out.put_u8(first | 0x02);
            out.put_slice(extension);
            let mut size = obu.payload.len() as u64;
            loop {
                let byte = (size & 0x7f) as u8;
                size >>= 7;
                if size == 0 {
                    out.put_u8(byte);
                    break;
                }
                out.put_u8(byte | 0x80);
            }
        }
        out.put_slice(obu.payload);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::super::parameter_sets;
    use super::super::testdata::*;
    use super::*;

    #[test]
    fn av1_record_from_ffmpeg() {
        let cfg = parse_av1_record(hex(AV1C_MAIN_10BIT_320X180)).unwrap();
        assert_eq!(cfg.codec, VideoCodec::Av1);
        assert_eq!(cfg.codec_string, "av01.0.00M.10");
        assert_eq!((cfg.width, cfg.height), (320, 180));
        assert_eq!(cfg.nal_length_size, 0);
        assert!(parameter_sets(&cfg).unwrap().is_empty());
        // A bare 4-byte record without configOBUs is valid, size unknown.
        let bare = parse_av1_record(hex("81004c00")).unwrap();
        assert_eq!((bare.width, bare.height), (0, 0));
        assert!(parse_av1_record(hex("01004c00")).is_err());
    }

    #[test]
    fn av1_temporal_delimiters() {
        // TD, then a sequence header OBU with size field: the TD is sliced off.
        let tu = hex("1200 0a0b0200000561e7f66017c202");
        let out = av1_strip_temporal_delimiters(tu.clone()).unwrap();
        assert_eq!(out, tu.slice(2..));
        // A TD in the middle forces a copy without it.
        let tu = hex("0a0b0200000561e7f66017c202 1200 3201aa");
        let out = av1_strip_temporal_delimiters(tu).unwrap();
        assert_eq!(out, hex("0a0b0200000561e7f66017c202 3201aa"));
        // An OBU without size field gets one.
        let out = av1_strip_temporal_delimiters(hex("1200 30aabb")).unwrap();
        assert_eq!(out, hex("3202aabb"));
        // With an extension byte (temporal/spatial ids) too: the size goes after it.
        let out = av1_strip_temporal_delimiters(hex("1200 3408aabb")).unwrap();
        assert_eq!(out, hex("360802aabb"));
        // A payload of 128 bytes needs a two-byte leb128 size.
        let mut tu = hex("30").to_vec();
        tu.extend_from_slice(&[0xcc; 128]);
        let out = av1_strip_temporal_delimiters(Bytes::from(tu)).unwrap();
        assert_eq!(out[..3], [0x32, 0x80, 0x01]);
        assert_eq!(out.len(), 3 + 128);
        assert!(av1_strip_temporal_delimiters(hex("3205aa")).is_err());
        assert!(av1_strip_temporal_delimiters(hex("b200")).is_err());
        assert!(av1_strip_temporal_delimiters(hex("1200"))
            .unwrap()
            .is_empty());
    }
}
