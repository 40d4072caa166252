//! Codec configuration record parsers (avcC, hvcC, av1C, AudioSpecificConfig), RFC 6381
//! `CODECS` strings, and the reverse direction for MPEG-TS ingest: building avcC/hvcC records
//! from in-band parameter sets and extracting parameter sets from a record.
//!
//! Every parser is bounded (named limits below), copies nothing but the head of one parameter
//! set, and returns [`CodecError`] instead of panicking on any input.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::bits::{leb128, nal_to_rbsp, BitReader};
use crate::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};

/// Parameter sets per record array accepted. H.264 allows 32 SPS and 256 PPS, real streams
/// carry one or two; the bound keeps a hostile record from allocating a huge list.
pub const MAX_PARAMETER_SETS: usize = 256;

/// NAL unit arrays per hvcC accepted (VPS, SPS, PPS, SEI... there are 64 NAL types).
pub const MAX_HEVC_ARRAYS: usize = 64;

/// Bytes of a parameter set copied (with emulation prevention removed) for parsing. The
/// fields read (up to the picture size) sit well inside this even with scaling lists.
pub const MAX_PARSED_PARAMETER_SET: usize = 4096;

/// `num_ref_frames_in_pic_order_cnt_cycle` accepted in an H.264 SPS (the spec's maximum).
const MAX_REF_FRAMES_IN_POC_CYCLE: u32 = 255;

/// Largest picture dimension (pixels) accepted; beyond any real codec level.
pub const MAX_DIMENSION: u32 = 65_536;

/// What went wrong with a codec configuration or bitstream. All variants describe bad or
/// unsupported input from the publisher, never an internal fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The structure ended before a field it must contain.
    #[error("{what} is truncated")]
    Truncated {
        /// The structure being read.
        what: &'static str,
    },
    /// A field holds a value the specification forbids.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// The structure being read.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Valid input using a feature tidegate does not handle.
    #[error("unsupported {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// The input exceeds one of the named limits of this module.
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

impl CodecError {
    /// A short, fixed label for metrics: `truncated`, `malformed`, `unsupported`, `limit`.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Truncated { .. } => "truncated",
            CodecError::Malformed { .. } => "malformed",
            CodecError::Unsupported { .. } => "unsupported",
            CodecError::LimitExceeded { .. } => "limit",
        }
    }

    /// The input is valid but uses a feature tidegate does not support.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CodecError::Unsupported { .. })
    }

    /// The input is broken (truncated, malformed or beyond a limit).
    pub fn is_malformed(&self) -> bool {
        !self.is_unsupported()
    }
}

fn truncated(what: &'static str) -> CodecError {
    CodecError::Truncated { what }
}

fn malformed(what: &'static str, reason: &'static str) -> CodecError {
    CodecError::Malformed { what, reason }
}

/// A byte cursor over a record that hands out ranges (so callers can slice the `Bytes`).
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(truncated(self.what))?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn range(&mut self, len: usize) -> Result<Range<usize>, CodecError> {
        let end = self.pos.checked_add(len).ok_or(truncated(self.what))?;
        if end > self.data.len() {
            return Err(truncated(self.what));
        }
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

// ---------------------------------------------------------------------------------------
// H.264
// ---------------------------------------------------------------------------------------

/// The NAL unit arrays of an avcC, as ranges into the record.
struct AvcRecordLayout {
    nal_length_size: u8,
    sps: Vec<Range<usize>>,
    pps: Vec<Range<usize>>,
    sps_ext: Vec<Range<usize>>,
}

fn read_nal_list(
    c: &mut Cursor<'_>,
    count: usize,
    out: &mut Vec<Range<usize>>,
) -> Result<(), CodecError> {
    if count > MAX_PARAMETER_SETS {
        return Err(CodecError::LimitExceeded {
            what: "parameter sets in one array",
            limit: MAX_PARAMETER_SETS,
        });
    }
    for _ in 0..count {
        let len = usize::from(c.u16()?);
        out.push(c.range(len)?);
    }
    Ok(())
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
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        crop_l = r.ue()?.into();
        crop_r = r.ue()?.into();
        crop_t = r.ue()?.into();
        crop_b = r.ue()?.into();
    }
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
    let width = coded_w
        .checked_sub(crop_w)
        .filter(|w| *w > 0)
        .ok_or(malformed(WHAT, "cropping exceeds the picture width"))?;
    let height = coded_h
        .checked_sub(crop_h)
        .filter(|h| *h > 0)
        .ok_or(malformed(WHAT, "cropping exceeds the picture height"))?;
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

fn dimension(v: u64, what: &'static str) -> Result<u32, CodecError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= MAX_DIMENSION)
        .ok_or(CodecError::LimitExceeded {
            what,
            limit: MAX_DIMENSION as usize,
        })
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
    let sps_nal = record.get(sps_range.clone()).unwrap_or_default();
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

fn put_u16_prefixed(out: &mut BytesMut, nal: &[u8], what: &'static str) -> Result<(), CodecError> {
    let len = u16::try_from(nal.len()).map_err(|_| CodecError::LimitExceeded {
        what,
        limit: usize::from(u16::MAX),
    })?;
    if len == 0 {
        return Err(malformed(what, "empty parameter set"));
    }
    out.put_u16(len);
    out.put_slice(nal);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HEVC
// ---------------------------------------------------------------------------------------

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
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        sub_profile[i] = r.bit()?;
        sub_level[i] = r.bit()?;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?;
        }
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
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
    let (mut l, mut rr, mut t, mut b) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        l = r.ue()?.into();
        rr = r.ue()?.into();
        t = r.ue()?.into();
        b = r.ue()?.into();
    }
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
    let width = pic_w
        .checked_sub(sub_w * (l + rr))
        .filter(|w| *w > 0)
        .ok_or(malformed(
            WHAT,
            "conformance window exceeds the picture width",
        ))?;
    let height = pic_h
        .checked_sub(sub_h * (t + b))
        .filter(|h| *h > 0)
        .ok_or(malformed(
            WHAT,
            "conformance window exceeds the picture height",
        ))?;
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
    let sps = parse_hevc_sps(record.get(sps_range.clone()).unwrap_or_default())?;
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

/// The parameter set NAL units of a video configuration record, in the order a decoder
/// needs them (H.264: SPS, PPS, SPS extensions; HEVC: VPS, SPS, PPS; other arrays are skipped),
/// sliced from the record without copying. AV1 has no parameter sets: the list is empty.
pub fn parameter_sets(config: &VideoConfig) -> Result<Vec<Bytes>, CodecError> {
    let record = &config.record;
    let slice = |r: &Range<usize>| -> Result<Bytes, CodecError> {
        if r.end > record.len() || r.start > r.end {
            return Err(truncated("configuration record"));
        }
        Ok(record.slice(r.clone()))
    };
    match config.codec {
        VideoCodec::H264 => {
            let layout = avc_record_layout(record)?;
            layout
                .sps
                .iter()
                .chain(&layout.pps)
                .chain(&layout.sps_ext)
                .map(slice)
                .collect()
        }
        VideoCodec::H265 => {
            let (_, arrays) = hevc_record_arrays(record)?;
            // VPS, SPS, PPS in that order; SEI arrays (e.g. x265's version string) are left out.
            [32u8, 33, 34]
                .iter()
                .flat_map(|t| arrays.iter().filter(move |a| a.nal_type == *t))
                .flat_map(|a| a.nals.iter())
                .map(slice)
                .collect()
        }
        VideoCodec::Av1 => Ok(Vec::new()),
    }
}

// ---------------------------------------------------------------------------------------
// AV1
// ---------------------------------------------------------------------------------------

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
    if data.len() < header_len {
        return Err(truncated(WHAT));
    }
    let payload_len = if has_size_field {
        let (size, n) = leb128(data.get(header_len..).unwrap_or_default(), WHAT)?;
        header_len += n;
        usize::try_from(size).map_err(|_| truncated(WHAT))?
    } else {
        data.len() - header_len
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
    let head = record.get(..4).ok_or(truncated(WHAT))?;
    if head[0] != 0x81 {
        return Err(malformed(WHAT, "marker/version is not 1/1"));
    }
    let profile = head[1] >> 5;
    let level = head[1] & 0x1f;
    let tier = if head[2] & 0x80 != 0 { 'H' } else { 'M' };
    let high_bitdepth = head[2] & 0x40 != 0;
    let twelve_bit = head[2] & 0x20 != 0;
    let depth = match (high_bitdepth, twelve_bit) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    let (mut width, mut height) = (0, 0);
    let mut obus = record.get(4..).unwrap_or_default();
    while !obus.is_empty() {
        let h = parse_obu_header(obus)?;
        if h.obu_type == obu_type::SEQUENCE_HEADER {
            let payload = obus.get(h.header_len..h.total_len()).unwrap_or_default();
            let seq = parse_av1_sequence_header(payload)?;
            width = seq.width;
            height = seq.height;
            break;
        }
        obus = obus.get(h.total_len()..).unwrap_or_default();
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
    let mut pos = 0usize;
    let mut leading = 0usize;
    let mut needs_copy = false;
    let mut seen_other = false;
    while pos < data.len() {
        let h = parse_obu_header(data.get(pos..).unwrap_or_default())?;
        if h.obu_type == obu_type::TEMPORAL_DELIMITER {
            if seen_other {
                needs_copy = true;
            } else {
                leading = pos + h.total_len();
            }
        } else {
            seen_other = true;
            if !h.has_size_field {
                needs_copy = true;
            }
        }
        pos += h.total_len();
    }
    if !needs_copy {
        return Ok(data.slice(leading..));
    }
    let mut out = BytesMut::with_capacity(data.len().saturating_add(8));
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let h = parse_obu_header(rest)?;
        if h.obu_type != obu_type::TEMPORAL_DELIMITER {
            if h.has_size_field {
                out.put_slice(rest.get(..h.total_len()).unwrap_or_default());
            } else {
                let ext = h.header_len == 2;
                let first = rest.first().copied().unwrap_or_default() | 0x02;
                out.put_u8(first);
                if ext {
                    out.put_u8(rest.get(1).copied().unwrap_or_default());
                }
                let mut size = h.payload_len as u64;
                loop {
                    let byte = (size & 0x7f) as u8;
                    size >>= 7;
                    if size == 0 {
                        out.put_u8(byte);
                        break;
                    }
                    out.put_u8(byte | 0x80);
                }
                out.put_slice(rest.get(h.header_len..h.total_len()).unwrap_or_default());
            }
        }
        pos += h.total_len();
    }
    Ok(out.freeze())
}

// ---------------------------------------------------------------------------------------
// AAC
// ---------------------------------------------------------------------------------------

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
    use super::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        Bytes::from(v)
    }

    // avcC from `ffmpeg -f lavfi -i testsrc2=size=640x360 -c:v libx264 -f flv` (Debian
    // ffmpeg 5.1); ffprobe: h264 High, 640x360, level 30.
    const AVCC_HIGH_640X360: &str = "0164001effe1001a6764001eacd940a02ff97011000003000100000300
        3c0f162d9601000668ebe3cb22c0fdf8f800";
    // libx264 -x264-params cqm=jvt, 322x182 (cropping on both axes); ffprobe: 322x182 High 13.
    const AVCC_HIGH_322X182: &str =
        "0164000dffe1001a6764000dacd941519e226c0440000003004000000c83c50a658001000768ebe3cb3002c0fdf8f800";
    // libx264 -profile:v baseline 320x240; ffprobe: Constrained Baseline, level 13.
    const AVCC_BASELINE_320X240: &str = "0142c00dffe100186742c00dd90141fb01100000030010000003
        0320f142a48001000568cb83cb20";
    // hvcC from ffmpeg 9 (imageio-ffmpeg) `-c:v libx265 -x265-params info=0 -f flv`, 426x240;
    // ffmpeg: hevc (Main), 426x240.
    const HVCC_MAIN_426X240: &str = "0101600000009000000000003cf000fcfdf8f800000f0320000100184001
        0c01ffff01600000030090000003000003003c959809210001002b420101016000000300900000030000
        03003ca00d880f1c9e5959a4932bc05a02000003000200000300321022000100074401c172b46240";
    // av1C from ffmpeg 9 `-c:v libsvtav1 -pix_fmt yuv420p10le -f flv`, 320x180; ffmpeg:
    // av1 (Main) yuv420p10le 320x180, DASH muxer codecs="av01.0.00M.10".
    const AV1C_MAIN_10BIT_320X180: &str = "81004c000a0b0200000561e7f66017c202";

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
        assert!(av1_strip_temporal_delimiters(hex("3205aa")).is_err());
        assert!(av1_strip_temporal_delimiters(hex("b200")).is_err());
        assert!(av1_strip_temporal_delimiters(hex("1200"))
            .unwrap()
            .is_empty());
    }

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

    /// Writes bits MSB first; test-only, to build bitstreams the encoders at hand never emit.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bit: usize,
    }

    impl BitWriter {
        fn put(&mut self, n: u32, v: u64) {
            for i in (0..n).rev() {
                if self.bit.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let b = ((v >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= b << (7 - self.bit % 8);
                self.bit += 1;
            }
        }
        fn ue(&mut self, v: u32) {
            let x = u64::from(v) + 1;
            let len = 64 - x.leading_zeros();
            self.put(len - 1, 0);
            self.put(len, x);
        }
        fn se(&mut self, v: i32) {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u32);
        }
        /// RBSP trailing bits, then emulation prevention.
        fn finish_nal(mut self) -> Vec<u8> {
            self.put(1, 1);
            while !self.bit.is_multiple_of(8) {
                self.put(1, 0);
            }
            let mut out = Vec::new();
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
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

    fn check_prefixes(
        full: &Bytes,
        parse: fn(Bytes) -> Result<VideoConfig, CodecError>,
        ok_from: usize,
    ) {
        for cut in 0..full.len() {
            let r = parse(full.slice(..cut));
            assert_eq!(r.is_ok(), cut >= ok_from, "cut {cut}: {r:?}");
        }
        assert!(parse(full.clone()).is_ok());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        // avcC: complete once the PPS is in (the chroma extension is optional).
        let avcc = hex(AVCC_HIGH_640X360);
        check_prefixes(&avcc, parse_avc_record, avcc.len() - 4);
        let avcc = hex(AVCC_BASELINE_320X240);
        check_prefixes(&avcc, parse_avc_record, avcc.len());
        let hvcc = hex(HVCC_MAIN_426X240);
        check_prefixes(&hvcc, parse_hevc_record, hvcc.len());
        // av1C: the 4-byte header alone is valid; a cut inside the OBU is not.
        let av1c = hex(AV1C_MAIN_10BIT_320X180);
        for cut in 0..av1c.len() {
            let r = parse_av1_record(av1c.slice(..cut));
            assert_eq!(r.is_ok(), cut == 4, "cut {cut}");
        }
        for cut in 0..2 {
            assert!(parse_aac_asc(hex("1190").slice(..cut)).is_err());
        }
    }

    #[test]
    fn bit_flips_never_panic() {
        let vectors = [
            AVCC_HIGH_640X360,
            AVCC_HIGH_322X182,
            HVCC_MAIN_426X240,
            AV1C_MAIN_10BIT_320X180,
        ];
        for v in vectors {
            let base = hex(v).to_vec();
            for i in 0..base.len() * 8 {
                let mut m = base.clone();
                m[i / 8] ^= 0x80 >> (i % 8);
                let m = Bytes::from(m);
                let _ = parse_avc_record(m.clone());
                let _ = parse_hevc_record(m.clone());
                let _ = parse_av1_record(m.clone());
                let _ = parse_aac_asc(m.clone());
                let _ = av1_strip_temporal_delimiters(m);
            }
        }
    }
}
