//! Codec configuration record parsers (avcC, hvcC, av1C, AudioSpecificConfig), RFC 6381
//! `CODECS` strings, and the reverse direction for MPEG-TS ingest: building avcC/hvcC records
//! from in-band parameter sets and extracting parameter sets from a record.
//!
//! One file per codec ([`h264`], [`h265`], [`av1`], [`aac`]); this module holds what they
//! share: [`CodecError`], the limits, and a byte cursor. Every item is re-exported here, so
//! callers write `codec::parse_avc_record`.
//!
//! Every parser is bounded (named limits below), copies nothing but the head of one parameter
//! set, and returns [`CodecError`] instead of panicking on any input.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::bits::BitReader;
use crate::{VideoCodec, VideoConfig};

pub mod aac;
pub mod av1;
pub mod h264;
pub mod h265;
#[cfg(test)]
mod testdata;

pub(crate) use aac::parse_asc_info;
pub use aac::{aac_asc, parse_aac_asc, AAC_SAMPLE_RATES};
pub use av1::{
    av1_strip_temporal_delimiters, obu_type, parse_av1_record, parse_obu_header, ObuHeader,
};
pub use h264::{avc_record_from_parameter_sets, parse_avc_record};
pub use h265::{hevc_record_from_parameter_sets, parse_hevc_record};

/// Parameter sets per record array accepted. H.264 allows 32 SPS and 256 PPS, real streams
/// carry one or two; the bound keeps a hostile record from allocating a huge list.
pub const MAX_PARAMETER_SETS: usize = 256;

/// NAL unit arrays per hvcC accepted (VPS, SPS, PPS, SEI... there are 64 NAL types).
pub const MAX_HEVC_ARRAYS: usize = 64;

/// Bytes of a parameter set copied (with emulation prevention removed) for parsing. The
/// fields read (up to the picture size) sit well inside this even with scaling lists.
pub const MAX_PARSED_PARAMETER_SET: usize = 4096;

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

fn dimension(v: u64, what: &'static str) -> Result<u32, CodecError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= MAX_DIMENSION)
        .ok_or(CodecError::LimitExceeded {
            what,
            limit: MAX_DIMENSION as usize,
        })
}

/// The cropping window of an SPS (H.264 `frame_cropping`, HEVC `conformance_window`): the
/// presence flag, then left, right, top and bottom offsets (all zero when absent), in the
/// codec's crop units.
fn read_crop_window(r: &mut BitReader<'_>) -> Result<[u64; 4], CodecError> {
    let mut window = [0u64; 4];
    if r.bit()? {
        for offset in &mut window {
            *offset = r.ue()?.into();
        }
    }
    Ok(window)
}

/// A coded picture dimension less its cropping; malformed (`reason`) when the cropping takes
/// all of it or more.
fn cropped(
    coded: u64,
    crop: u64,
    what: &'static str,
    reason: &'static str,
) -> Result<u64, CodecError> {
    coded
        .checked_sub(crop)
        .filter(|v| *v > 0)
        .ok_or(malformed(what, reason))
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
    let ranges = match config.codec {
        VideoCodec::H264 => h264::parameter_set_ranges(record)?,
        VideoCodec::H265 => h265::parameter_set_ranges(record)?,
        VideoCodec::Av1 => Vec::new(),
    };
    ranges.iter().map(slice).collect()
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

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
