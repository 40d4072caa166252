//! H.264 / AVC: the avcC record, the SPS fields tidegate needs, and building an avcC from
//! in-band parameter sets.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::MAX_PARSED_PARAMETER_SET;
use super::{cropped, dimension, malformed, put_u16_prefixed, read_crop_window, read_nal_list};
use super::{truncated, CodecError, Cursor};
use crate::bits::{nal_to_rbsp, BitReader};
use crate::{VideoCodec, VideoConfig};

/// `num_ref_frames_in_pic_order_cnt_cycle` accepted in an H.264 SPS (the spec's maximum).
const MAX_REF_FRAMES_IN_POC_CYCLE: u32 = 255;

/// The NAL unit arrays of an avcC, as ranges into the record.
struct AvcRecordLayout {
    nal_length_size: u8,
    sps: Vec<Range<usize>>,
    pps: Vec<Range<usize>>,
    sps_ext: Vec<Range<usize>>,
}

/// H.264 profiles whose avcC carries the chroma/bit-depth extension and whose SPS carries
/// `chroma_format_idc` and friends.
fn avc_profile_has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn avc_record_layout(record: &[u8]) -> Result<AvcRecordLayout, CodecError> {
    const WHAT: &str = "AVCDecoderConfigurationRecord";
    let mut c = Cursor::new(record, WHAT);
    let version = c.u8()?;
    if version != 1 {
        return Err(malformed(WHAT, "configurationVersion is not 1"));
    }
    let profile = c.u8()?;
    let _compat = c.u8()?;
    let _level = c.u8()?;
    let nal_length_size = (c.u8()? & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(malformed(WHAT, "lengthSizeMinusOne is 2"));
    }
    let mut layout = AvcRecordLayout {
        nal_length_size,
        sps: Vec::new(),
        pps: Vec::new(),
        sps_ext: Vec::new(),
    };
    let num_sps = usize::from(c.u8()? & 0x1f);
    read_nal_list(&mut c, num_sps, &mut layout.sps)?;
    let num_pps = usize::from(c.u8()?);
    read_nal_list(&mut c, num_pps, &mut layout.pps)?;
    // The chroma extension is optional in practice: many encoders omit it for High profile.
    if avc_profile_has_chroma_info(profile) && c.remaining() >= 4 {
        let _chroma = c.u8()?;
        let _luma = c.u8()?;
        let _chroma_depth = c.u8()?;
        let num_ext = usize::from(c.u8()?);
        // A broken extension is ignored rather than fatal (ffmpeg does the same).
        let mut ext = Vec::new();
        if read_nal_list(&mut c, num_ext, &mut ext).is_ok() {
            layout.sps_ext = ext;
        }
    }
    Ok(layout)
}

/// Fields of an H.264 SPS that tidegate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AvcSps {
    profile_idc: u8,
    constraint_flags: u8,
    level_idc: u8,
    chroma_format_idc: u32,
    bit_depth_luma_minus8: u32,
    bit_depth_chroma_minus8: u32,
    width: u32,
    height: u32,
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: u32) -> Result<(), CodecError> {
    let mut last: i32 = 8;
    let mut next: i32 = 8;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(malformed("H.264 SPS", "delta_scale out of range"));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

fn parse_avc_sps(nal: &[u8]) -> Result<AvcSps, CodecError> {
    const WHAT: &str = "H.264 SPS";
    let rbsp = nal_to_rbsp(nal, MAX_PARSED_PARAMETER_SET);
    let mut r = BitReader::new(&rbsp, WHAT);
    let header = r.bits32(8)?;
    if header & 0x1f != 7 {
        return Err(malformed(WHAT, "not an SPS NAL unit"));
    }
    let profile_idc = r.bits32(8)? as u8;
    let constraint_flags = r.bits32(8)? as u8;
    let level_idc = r.bits32(8)? as u8;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma_minus8 = 0;
    let mut bit_depth_chroma_minus8 = 0;
    if avc_profile_has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(malformed(WHAT, "chroma_format_idc > 3"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        bit_depth_luma_minus8 = r.ue()?;
        bit_depth_chroma_minus8 = r.ue()?;
        let _qpprime_bypass = r.bit()?;
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num_minus4 = r.ue()?;
    let poc_type = r.ue()?;
    match poc_type {
        0 => {
            let _log2_max_poc_lsb_minus4 = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.bit()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let n = r.ue()?;
            if n > MAX_REF_FRAMES_IN_POC_CYCLE {
                return Err(malformed(
                    WHAT,
                    "num_ref_frames_in_pic_order_cnt_cycle > 255",
                ));
            }
            for _ in 0..n {
                let _offset = r.se()?;
            }
        }
        2 => {}
        _ => return Err(malformed(WHAT, "pic_order_cnt_type > 2")),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps = r.bit()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.bit()?;
    }
    let _direct_8x8_inference = r.bit()?;
    let [crop_l, crop_r, crop_t, crop_b] = read_crop_window(&mut r)?;
    let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let coded_w = width_mbs * 16;
    let coded_h = height_map_units * 16 * field_factor;
    let crop_w = crop_unit_x * (crop_l + crop_r);
    let crop_h = crop_unit_y * (crop_t + crop_b);
    let width = cropped(coded_w, crop_w, WHAT, "cropping exceeds the picture width")?;
    let height = cropped(coded_h, crop_h, WHAT, "cropping exceeds the picture height")?;
    let width = dimension(width, WHAT)?;
    let height = dimension(height, WHAT)?;
    Ok(AvcSps {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width,
        height,
    })
}

/// The ranges of an avcC's parameter sets in decoder order: SPS, PPS, SPS extensions.
pub(super) fn parameter_set_ranges(record: &[u8]) -> Result<Vec<Range<usize>>, CodecError> {
    let layout = avc_record_layout(record)?;
    Ok(layout
        .sps
        .into_iter()
        .chain(layout.pps)
        .chain(layout.sps_ext)
        .collect())
}

/// Parses an AVCDecoderConfigurationRecord (the body of `avcC`, as an FLV/RTMP AVC sequence
/// header carries it). Width and height come from the first SPS, with frame cropping applied;
/// `codec_string` is `avc1.PPCCLL` from that SPS.
pub fn parse_avc_record(record: Bytes) -> Result<VideoConfig, CodecError> {
    let layout = avc_record_layout(&record)?;
    let sps_range = layout
        .sps
        .first()
        .ok_or(malformed("AVCDecoderConfigurationRecord", "no SPS"))?;
    if layout.pps.is_empty() {
        return Err(malformed("AVCDecoderConfigurationRecord", "no PPS"));
    }
    // The range came from reading this record, so it is inside it.
    let sps_nal = record
        .get(sps_range.clone())
        .ok_or(truncated("AVCDecoderConfigurationRecord"))?;
    let sps = parse_avc_sps(sps_nal)?;
    let codec_string = format!(
        "avc1.{:02x}{:02x}{:02x}",
        sps.profile_idc, sps.constraint_flags, sps.level_idc
    );
    Ok(VideoConfig {
        codec: VideoCodec::H264,
        width: sps.width,
        height: sps.height,
        nal_length_size: layout.nal_length_size,
        codec_string,
        record,
    })
}

/// Builds an AVCDecoderConfigurationRecord (4-byte NAL lengths) from in-band SPS/PPS NAL
/// units (each without start code), as an MPEG-TS demuxer finds them.
pub fn avc_record_from_parameter_sets(sps: &[Bytes], pps: &[Bytes]) -> Result<Bytes, CodecError> {
    const WHAT: &str = "H.264 parameter sets";
    let first = sps.first().ok_or(malformed(WHAT, "no SPS"))?;
    if pps.is_empty() {
        return Err(malformed(WHAT, "no PPS"));
    }
    if sps.len() > 31 {
        return Err(CodecError::LimitExceeded {
            what: "SPS in an avcC",
            limit: 31,
        });
    }
    if pps.len() > 255 {
        return Err(CodecError::LimitExceeded {
            what: "PPS in an avcC",
            limit: 255,
        });
    }
    let parsed = parse_avc_sps(first)?;
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_u8(parsed.profile_idc);
    out.put_u8(parsed.constraint_flags);
    out.put_u8(parsed.level_idc);
    out.put_u8(0xff); // reserved 111111 + lengthSizeMinusOne 3
    out.put_u8(0xe0 | sps.len() as u8);
    for s in sps {
        put_u16_prefixed(&mut out, s, WHAT)?;
    }
    out.put_u8(pps.len() as u8);
    for p in pps {
        put_u16_prefixed(&mut out, p, WHAT)?;
    }
    if avc_profile_has_chroma_info(parsed.profile_idc) {
        out.put_u8(0xfc | (parsed.chroma_format_idc & 3) as u8);
        out.put_u8(0xf8 | (parsed.bit_depth_luma_minus8 & 7) as u8);
        out.put_u8(0xf8 | (parsed.bit_depth_chroma_minus8 & 7) as u8);
        out.put_u8(0);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::super::parameter_sets;
    use super::super::testdata::*;
    use super::*;

    #[test]
    fn avc_records_from_ffmpeg() {
        for (hex_str, codec, w, h) in [
            (AVCC_HIGH_640X360, "avc1.64001e", 640, 360),
            (AVCC_HIGH_322X182, "avc1.64000d", 322, 182),
            (AVCC_BASELINE_320X240, "avc1.42c00d", 320, 240),
        ] {
            let record = hex(hex_str);
            let cfg = parse_avc_record(record.clone()).unwrap();
            assert_eq!(cfg.codec, VideoCodec::H264);
            assert_eq!(cfg.codec_string, codec);
            assert_eq!((cfg.width, cfg.height), (w, h), "{codec}");
            assert_eq!(cfg.nal_length_size, 4);
            assert_eq!(cfg.record, record);
        }
    }

    #[test]
    fn avc_parameter_sets_and_rebuilt_record() {
        let cfg = parse_avc_record(hex(AVCC_HIGH_640X360)).unwrap();
        let sets = parameter_sets(&cfg).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0][0] & 0x1f, 7);
        assert_eq!(sets[0].len(), 0x1a);
        assert_eq!(&sets[1][..], &hex("68ebe3cb22c0")[..]);
        // Rebuilding from the parameter sets reproduces ffmpeg's record byte for byte.
        let rebuilt = avc_record_from_parameter_sets(&sets[..1], &sets[1..]).unwrap();
        assert_eq!(rebuilt, cfg.record);
        let base = parse_avc_record(hex(AVCC_BASELINE_320X240)).unwrap();
        let sets = parameter_sets(&base).unwrap();
        let rebuilt = avc_record_from_parameter_sets(&sets[..1], &sets[1..]).unwrap();
        assert_eq!(rebuilt, base.record);
        assert!(avc_record_from_parameter_sets(&[], &sets[1..]).is_err());
        assert!(avc_record_from_parameter_sets(&sets[..1], &[]).is_err());
    }

    #[test]
    fn avc_sps_with_scaling_lists_poc_type_1_and_field_coding() {
        let mut w = BitWriter::default();
        w.put(8, 0x67);
        w.put(8, 100); // High
        w.put(8, 0);
        w.put(8, 40);
        w.ue(0); // sps id
        w.ue(1); // 4:2:0
        w.ue(0);
        w.ue(0);
        w.put(1, 0);
        w.put(1, 1); // seq_scaling_matrix_present_flag
                     // list 0: 16 zero deltas; list 1: delta -8 ends the list; 2..5 absent;
                     // list 6 (8x8): 64 deltas of +1; list 7 absent.
        w.put(1, 1);
        for _ in 0..16 {
            w.se(0);
        }
        w.put(1, 1);
        w.se(-8);
        for _ in 2..6 {
            w.put(1, 0);
        }
        w.put(1, 1);
        for _ in 0..64 {
            w.se(1);
        }
        w.put(1, 0);
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // poc type 1
        w.put(1, 0);
        w.se(-2);
        w.se(1);
        w.ue(2);
        w.se(3);
        w.se(-3);
        w.ue(4); // max_num_ref_frames
        w.put(1, 0);
        w.ue(119); // 120 MBs = 1920
        w.ue(33); // 34 map units, field coding → 1088
        w.put(1, 0); // frame_mbs_only_flag = 0
        w.put(1, 1);
        w.put(1, 1);
        w.put(1, 1); // cropping
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(2); // 2 * (2 * 2) = 8 lines
        w.put(1, 0); // no VUI
        let sps = Bytes::from(w.finish_nal());
        let parsed = parse_avc_sps(&sps).unwrap();
        assert_eq!((parsed.width, parsed.height), (1920, 1080));
        let pps = Bytes::from_static(&[0x68, 0xce, 0x38, 0x80]);
        let record = avc_record_from_parameter_sets(std::slice::from_ref(&sps), &[pps]).unwrap();
        let cfg = parse_avc_record(record).unwrap();
        assert_eq!(cfg.codec_string, "avc1.640028");
        assert_eq!((cfg.width, cfg.height), (1920, 1080));
        // Cropping larger than the picture is rejected.
        assert!(parse_avc_sps(&sps[..sps.len() - 2]).is_err());
    }
}
