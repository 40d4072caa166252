//! H.265 / HEVC: the hvcC record, the SPS fields tidegate needs, the RFC 6381 codec string,
//! and building an hvcC from in-band parameter sets.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::{cropped, dimension, malformed, put_u16_prefixed, read_crop_window, read_nal_list};
use super::{truncated, CodecError, Cursor};
use super::{MAX_HEVC_ARRAYS, MAX_PARAMETER_SETS, MAX_PARSED_PARAMETER_SET};
use crate::bits::{nal_to_rbsp, BitReader};
use crate::{VideoCodec, VideoConfig};

/// Length of the fixed part of an hvcC, before `numOfArrays`.
const HVCC_HEADER_LEN: usize = 22;

/// One NAL unit array of an hvcC.
struct HevcArray {
    nal_type: u8,
    nals: Vec<Range<usize>>,
}

fn hevc_record_arrays(record: &[u8]) -> Result<(u8, Vec<HevcArray>), CodecError> {
    const WHAT: &str = "HEVCDecoderConfigurationRecord";
    let mut c = Cursor::new(record, WHAT);
    c.range(HVCC_HEADER_LEN - 1)?;
    let nal_length_size = (c.u8()? & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(malformed(WHAT, "lengthSizeMinusOne is 2"));
    }
    let num_arrays = usize::from(c.u8()?);
    if num_arrays > MAX_HEVC_ARRAYS {
        return Err(CodecError::LimitExceeded {
            what: "hvcC arrays",
            limit: MAX_HEVC_ARRAYS,
        });
    }
    let mut arrays = Vec::with_capacity(num_arrays);
    for _ in 0..num_arrays {
        let nal_type = c.u8()? & 0x3f;
        let count = usize::from(c.u16()?);
        let mut nals = Vec::new();
        read_nal_list(&mut c, count, &mut nals)?;
        arrays.push(HevcArray { nal_type, nals });
    }
    Ok((nal_length_size, arrays))
}

/// Fields of an HEVC SPS that tidegate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HevcSps {
    /// general_profile_space .. general_level_idc, exactly as an hvcC header carries them.
    profile_tier_level: [u8; 12],
    max_sub_layers: u8,
    temporal_id_nesting: bool,
    chroma_format_idc: u32,
    bit_depth_luma_minus8: u32,
    bit_depth_chroma_minus8: u32,
    width: u32,
    height: u32,
}

fn parse_hevc_sps(nal: &[u8]) -> Result<HevcSps, CodecError> {
    const WHAT: &str = "HEVC SPS";
    let rbsp = nal_to_rbsp(nal, MAX_PARSED_PARAMETER_SET);
    let mut r = BitReader::new(&rbsp, WHAT);
    let header = r.bits32(16)?;
    if (header >> 9) & 0x3f != 33 {
        return Err(malformed(WHAT, "not an SPS NAL unit"));
    }
    let _vps_id = r.bits32(4)?;
    let max_sub_layers_minus1 = r.bits32(3)? as u8;
    let temporal_id_nesting = r.bit()?;
    let mut profile_tier_level = [0u8; 12];
    for b in &mut profile_tier_level {
        *b = r.bits32(8)? as u8;
    }
    // (sub_layer_profile_present_flag, sub_layer_level_present_flag) per sub-layer.
    let mut sub_layer_flags = Vec::with_capacity(usize::from(max_sub_layers_minus1));
    for _ in 0..max_sub_layers_minus1 {
        sub_layer_flags.push((r.bit()?, r.bit()?));
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?;
        }
    }
    for (profile_present, level_present) in sub_layer_flags {
        if profile_present {
            r.skip(88)?;
        }
        if level_present {
            r.skip(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(malformed(WHAT, "chroma_format_idc > 3"));
    }
    let mut separate_colour_plane = false;
    if chroma_format_idc == 3 {
        separate_colour_plane = r.bit()?;
    }
    let pic_w = u64::from(r.ue()?);
    let pic_h = u64::from(r.ue()?);
    let [l, rr, t, b] = read_crop_window(&mut r)?;
    let bit_depth_luma_minus8 = r.ue()?;
    let bit_depth_chroma_minus8 = r.ue()?;
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let width = cropped(
        pic_w,
        sub_w * (l + rr),
        WHAT,
        "conformance window exceeds the picture width",
    )?;
    let height = cropped(
        pic_h,
        sub_h * (t + b),
        WHAT,
        "conformance window exceeds the picture height",
    )?;
    Ok(HevcSps {
        profile_tier_level,
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width: dimension(width, WHAT)?,
        height: dimension(height, WHAT)?,
    })
}

/// RFC 6381 / ISO 14496-15 Annex E codec string from the 12 profile-tier-level bytes.
fn hevc_codec_string(ptl: &[u8; 12]) -> String {
    let space = match ptl[0] >> 6 {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let profile = ptl[0] & 0x1f;
    let tier = if ptl[0] & 0x20 != 0 { 'H' } else { 'L' };
    let compat = u32::from_be_bytes([ptl[1], ptl[2], ptl[3], ptl[4]]).reverse_bits();
    let level = ptl[11];
    let mut s = format!("hvc1.{space}{profile}.{compat:X}.{tier}{level}");
    let constraints = &ptl[5..11];
    let keep = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1);
    for b in constraints.iter().take(keep) {
        let _ = write!(s, ".{b:X}");
    }
    s
}

/// Parses an HEVCDecoderConfigurationRecord (the body of `hvcC`). Width and height come from
/// the first SPS (conformance window applied); the codec string from the record header.
pub fn parse_hevc_record(record: Bytes) -> Result<VideoConfig, CodecError> {
    const WHAT: &str = "HEVCDecoderConfigurationRecord";
    let (nal_length_size, arrays) = hevc_record_arrays(&record)?;
    let sps_range = arrays
        .iter()
        .filter(|a| a.nal_type == 33)
        .flat_map(|a| a.nals.first())
        .next()
        .ok_or(malformed(WHAT, "no SPS"))?;
    // The range came from reading this record, so it is inside it.
    let sps = parse_hevc_sps(record.get(sps_range.clone()).ok_or(truncated(WHAT))?)?;
    let mut ptl = [0u8; 12];
    ptl.copy_from_slice(record.get(1..13).ok_or(truncated(WHAT))?);
    Ok(VideoConfig {
        codec: VideoCodec::H265,
        width: sps.width,
        height: sps.height,
        nal_length_size,
        codec_string: hevc_codec_string(&ptl),
        record,
    })
}

/// The ranges of an hvcC's parameter sets in decoder order: VPS, SPS, PPS. Other arrays
/// (SEI, e.g. x265's version string) are left out.
pub(super) fn parameter_set_ranges(record: &[u8]) -> Result<Vec<Range<usize>>, CodecError> {
    let (_, arrays) = hevc_record_arrays(record)?;
    Ok([32u8, 33, 34]
        .iter()
        .flat_map(|t| arrays.iter().filter(move |a| a.nal_type == *t))
        .flat_map(|a| a.nals.iter().cloned())
        .collect())
}

/// Builds an HEVCDecoderConfigurationRecord (4-byte NAL lengths) from in-band VPS/SPS/PPS
/// NAL units (each without start code). Header fields come from the first SPS.
pub fn hevc_record_from_parameter_sets(
    vps: &[Bytes],
    sps: &[Bytes],
    pps: &[Bytes],
) -> Result<Bytes, CodecError> {
    const WHAT: &str = "HEVC parameter sets";
    let first = sps.first().ok_or(malformed(WHAT, "no SPS"))?;
    if vps.is_empty() {
        return Err(malformed(WHAT, "no VPS"));
    }
    if pps.is_empty() {
        return Err(malformed(WHAT, "no PPS"));
    }
    let parsed = parse_hevc_sps(first)?;
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_slice(&parsed.profile_tier_level);
    out.put_u16(0xf000); // reserved + min_spatial_segmentation_idc 0
    out.put_u8(0xfc); // reserved + parallelismType 0 (unknown)
    out.put_u8(0xfc | (parsed.chroma_format_idc & 3) as u8);
    out.put_u8(0xf8 | (parsed.bit_depth_luma_minus8 & 7) as u8);
    out.put_u8(0xf8 | (parsed.bit_depth_chroma_minus8 & 7) as u8);
    out.put_u16(0); // avgFrameRate unknown
    let layers = (parsed.max_sub_layers & 7) << 3;
    let nesting = u8::from(parsed.temporal_id_nesting) << 2;
    out.put_u8(layers | nesting | 3); // constantFrameRate 0, lengthSizeMinusOne 3
    out.put_u8(3);
    for (nal_type, list) in [(32u8, vps), (33, sps), (34, pps)] {
        if list.len() > MAX_PARAMETER_SETS {
            return Err(CodecError::LimitExceeded {
                what: "parameter sets in one array",
                limit: MAX_PARAMETER_SETS,
            });
        }
        out.put_u8(0x80 | nal_type); // array_completeness 1
        out.put_u16(list.len() as u16);
        for nal in list {
            put_u16_prefixed(&mut out, nal, WHAT)?;
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::super::parameter_sets;
    use super::super::testdata::*;
    use super::*;

    #[test]
    fn hevc_record_from_ffmpeg() {
        let record = hex(HVCC_MAIN_426X240);
        let cfg = parse_hevc_record(record.clone()).unwrap();
        assert_eq!(cfg.codec, VideoCodec::H265);
        assert_eq!(cfg.codec_string, "hvc1.1.6.L60.90");
        assert_eq!((cfg.width, cfg.height), (426, 240));
        assert_eq!(cfg.nal_length_size, 4);
        let sets = parameter_sets(&cfg).unwrap();
        let types: Vec<u8> = sets.iter().map(|s| (s[0] >> 1) & 0x3f).collect();
        assert_eq!(types, vec![32, 33, 34]);
        let rebuilt = hevc_record_from_parameter_sets(&sets[..1], &sets[1..2], &sets[2..]).unwrap();
        let again = parse_hevc_record(rebuilt.clone()).unwrap();
        assert_eq!(again.codec_string, cfg.codec_string);
        assert_eq!((again.width, again.height), (426, 240));
        // Same header except the fields x265 fills in and we leave unknown
        // (min_spatial_segmentation, parallelismType, avgFrameRate, constantFrameRate).
        assert_eq!(rebuilt[..13], record[..13]);
        assert_eq!(rebuilt[16..19], record[16..19]);
        assert_eq!(parameter_sets(&again).unwrap(), sets);
        // An SEI array placed first (as x265 does with its version string) is skipped.
        let mut with_sei = record[..22].to_vec();
        with_sei.push(4);
        with_sei.extend_from_slice(&[0x27, 0, 1, 0, 3, 0x4e, 0x01, 0x05]);
        with_sei.extend_from_slice(&record[23..]);
        let cfg = parse_hevc_record(Bytes::from(with_sei)).unwrap();
        assert_eq!(parameter_sets(&cfg).unwrap(), sets);
    }

    #[test]
    fn hevc_codec_strings() {
        let mut ptl = [0u8; 12];
        ptl[0] = 0x01;
        ptl[1] = 0x60;
        ptl[5] = 0xb0;
        ptl[11] = 93;
        assert_eq!(hevc_codec_string(&ptl), "hvc1.1.6.L93.B0");
        // Main 10, high tier, no constraint flags.
        let mut ptl = [0u8; 12];
        ptl[0] = 0x22;
        ptl[1] = 0x20;
        ptl[11] = 120;
        assert_eq!(hevc_codec_string(&ptl), "hvc1.2.4.H120");
        // Profile space 1, constraint bytes with an interior zero kept.
        let mut ptl = [0u8; 12];
        ptl[0] = 0x41;
        ptl[4] = 0x01;
        ptl[5] = 0x90;
        ptl[7] = 0x01;
        ptl[11] = 30;
        assert_eq!(hevc_codec_string(&ptl), "hvc1.A1.80000000.L30.90.0.1");
    }

    #[test]
    fn hevc_sps_with_sub_layers_and_conformance_window() {
        let mut w = BitWriter::default();
        w.put(16, 0x4201);
        w.put(4, 0);
        w.put(3, 2); // max_sub_layers_minus1 = 2
        w.put(1, 1);
        // general PTL: Main 10 (2), compat bit 2, level 123
        w.put(8, 0x02);
        w.put(32, 0x2000_0000);
        w.put(48, 0x9000_0000_0000);
        w.put(8, 123);
        // sub layer 0: profile+level present, sub layer 1: level only
        w.put(2, 0b11);
        w.put(2, 0b01);
        for _ in 2..8 {
            w.put(2, 0);
        }
        w.put(32, 0);
        w.put(32, 0);
        w.put(24, 0);
        w.put(8, 90);
        w.put(8, 90);
        w.ue(0); // sps id
        w.ue(1); // 4:2:0
        w.ue(1920);
        w.ue(1088);
        w.put(1, 1);
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4); // 2 * 4 = 8 lines
        w.ue(2);
        w.ue(2);
        let sps = Bytes::from(w.finish_nal());
        let parsed = parse_hevc_sps(&sps).unwrap();
        assert_eq!((parsed.width, parsed.height), (1920, 1080));
        assert_eq!(parsed.max_sub_layers, 3);
        assert_eq!(parsed.bit_depth_luma_minus8, 2);
        let vps = Bytes::from_static(&[0x40, 0x01, 0x0c]);
        let pps = Bytes::from_static(&[0x44, 0x01, 0xc1]);
        let record = hevc_record_from_parameter_sets(&[vps], &[sps], &[pps]).unwrap();
        let cfg = parse_hevc_record(record).unwrap();
        assert_eq!(cfg.codec_string, "hvc1.2.4.L123.90");
        assert_eq!((cfg.width, cfg.height), (1920, 1080));
    }
}
