//! H.264/HEVC NAL unit framing: length-prefixed (MP4 sample / FLV) and Annex B (MPEG-TS)
//! iterators and conversions between the two. Every function is bounded by its input and
//! never panics.

use bytes::{BufMut, BytesMut};

use crate::codec::CodecError;

/// The Annex B start code written before every NAL unit (the 4-byte form).
pub const ANNEXB_START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Iterator over the NAL units of a length-prefixed access unit (each NAL preceded by a
/// big-endian length of `nal_length_size` bytes). Yields each NAL unit without its prefix;
/// zero-length NAL units are skipped. After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct LengthPrefixedNals<'a> {
    rest: &'a [u8],
    nal_length_size: u8,
    done: bool,
}

/// Iterates the NAL units of `data`, each preceded by a `nal_length_size`-byte (1 to 4)
/// big-endian length.
pub fn length_prefixed_nals(data: &[u8], nal_length_size: u8) -> LengthPrefixedNals<'_> {
    LengthPrefixedNals {
        rest: data,
        nal_length_size,
        done: false,
    }
}

impl<'a> Iterator for LengthPrefixedNals<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.rest.is_empty() {
                return None;
            }
            let size = usize::from(self.nal_length_size);
            if !(1..=4).contains(&size) {
                self.done = true;
                return Some(Err(CodecError::Malformed {
                    what: "NAL length prefix",
                    reason: "length size must be 1 to 4 bytes",
                }));
            }
            let Some((prefix, after)) = self.rest.split_at_checked(size) else {
                self.done = true;
                return Some(Err(CodecError::Truncated {
                    what: "NAL length prefix",
                }));
            };
            let len = prefix
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let Some((nal, rest)) = after.split_at_checked(len) else {
                self.done = true;
                return Some(Err(CodecError::Truncated { what: "NAL unit" }));
            };
            self.rest = rest;
            if !nal.is_empty() {
                return Some(Ok(nal));
            }
        }
    }
}

/// Converts a length-prefixed access unit to Annex B (a 4-byte start code before every NAL
/// unit), appending to `out`. On error `out` may hold the NAL units converted so far.
pub fn length_prefixed_to_annexb(
    data: &[u8],
    nal_length_size: u8,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    out.reserve(data.len().saturating_add(8));
    for nal in length_prefixed_nals(data, nal_length_size) {
        let nal = nal?;
        out.put_slice(&ANNEXB_START_CODE);
        out.put_slice(nal);
    }
    Ok(())
}

/// Iterator over the NAL units of an Annex B byte stream (3- or 4-byte start codes). Yields
/// each NAL unit without start code and without trailing zero bytes; bytes before the first
/// start code and empty NAL units are skipped.
#[derive(Debug, Clone)]
pub struct AnnexBNals<'a> {
    /// The input from just after a start code (or the whole input before the first one).
    rest: &'a [u8],
    started: bool,
}

/// Iterates the NAL units of the Annex B stream `data`.
pub fn annexb_nals(data: &[u8]) -> AnnexBNals<'_> {
    AnnexBNals {
        rest: data,
        started: false,
    }
}

/// The 3-byte Annex B start code (the 4-byte form is a zero byte before it).
const START_CODE_3: [u8; 3] = [0, 0, 1];

/// Splits `data` around its first `00 00 01`: the bytes before it and the bytes after it.
fn split_at_start_code(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let pos = data.windows(3).position(|w| w == START_CODE_3)?;
    let split = data
        .split_at_checked(pos)
        .and_then(|(before, code_and_after)| {
            Some((before, code_and_after.strip_prefix(&START_CODE_3)?))
        });
    debug_assert!(split.is_some(), "a start code was found at {pos}");
    split
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            let (_, after) = split_at_start_code(self.rest)?;
            self.rest = after;
        }
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (mut nal, rest) = split_at_start_code(self.rest).unwrap_or((self.rest, &[]));
            self.rest = rest;
            // Trailing zero bytes belong to the next (4-byte) start code or are padding.
            while let [head @ .., 0] = nal {
                nal = head;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Converts an Annex B access unit to length-prefixed format with 4-byte lengths, appending
/// to `out`. NAL units longer than `u32::MAX` bytes cannot be framed and are skipped.
pub fn annexb_to_length_prefixed(data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len().saturating_add(8));
    for nal in annexb_nals(data) {
        if let Ok(len) = u32::try_from(nal.len()) {
            out.put_u32(len);
            out.put_slice(nal);
        }
    }
}

/// The `nal_unit_type` of an H.264 NAL unit (low 5 bits of its first byte); `None` if empty.
pub fn h264_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// The `nal_unit_type` of an HEVC NAL unit (bits 1..7 of its first byte); `None` if empty.
pub fn hevc_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// H.264 `nal_unit_type` values used by muxers and demuxers.
pub mod h264_type {
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// Sequence parameter set extension.
    pub const SPS_EXT: u8 = 13;
}

/// HEVC `nal_unit_type` values used by muxers and demuxers.
pub mod hevc_type {
    /// First IRAP type (BLA_W_LP); IRAP pictures are 16..=23.
    pub const IRAP_FIRST: u8 = 16;
    /// Last IRAP type (reserved IRAP 23).
    pub const IRAP_LAST: u8 = 23;
    /// Video parameter set.
    pub const VPS: u8 = 32;
    /// Sequence parameter set.
    pub const SPS: u8 = 33;
    /// Picture parameter set.
    pub const PPS: u8 = 34;
    /// Access unit delimiter.
    pub const AUD: u8 = 35;
    /// Prefix SEI.
    pub const SEI_PREFIX: u8 = 39;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_round_trip() {
        let lp = [
            0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 0, 0, 0, 0, 3, 0x65, 0x88, 0x84,
        ];
        let nals: Vec<_> = length_prefixed_nals(&lp, 4).map(|n| n.unwrap()).collect();
        assert_eq!(nals, vec![&[0x09, 0xf0][..], &[0x65, 0x88, 0x84][..]]);
        let mut annexb = BytesMut::new();
        length_prefixed_to_annexb(&lp, 4, &mut annexb).unwrap();
        assert_eq!(
            &annexb[..],
            &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 0x88, 0x84]
        );
        let mut back = BytesMut::new();
        annexb_to_length_prefixed(&annexb, &mut back);
        assert_eq!(
            &back[..],
            &[0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 0x88, 0x84]
        );
    }

    #[test]
    fn other_length_sizes() {
        let lp = [2, 0x09, 0xf0, 1, 0x41];
        let mut out = BytesMut::new();
        length_prefixed_to_annexb(&lp, 1, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41]);
        let lp = [0, 1, 0x41];
        let nals: Vec<_> = length_prefixed_nals(&lp, 2).map(|n| n.unwrap()).collect();
        assert_eq!(nals, vec![&[0x41][..]]);
        assert!(length_prefixed_nals(&lp, 0).next().unwrap().is_err());
        assert!(length_prefixed_nals(&lp, 5).next().unwrap().is_err());
    }

    #[test]
    fn annexb_three_and_four_byte_start_codes() {
        let data = [
            0xaa, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4, 0, 0,
        ];
        let nals: Vec<_> = annexb_nals(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
        assert_eq!(annexb_nals(&[1, 2, 3]).count(), 0);
        assert_eq!(annexb_nals(&[0, 0, 1]).count(), 0);
        assert_eq!(
            annexb_nals(&[0, 0, 1, 0, 0, 1, 5]).collect::<Vec<_>>(),
            vec![&[5][..]]
        );
    }

    #[test]
    fn truncated_length_prefixed_is_an_error_at_every_split() {
        let lp = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        for cut in 1..lp.len() {
            let complete = cut == 6;
            let mut out = BytesMut::new();
            let r = length_prefixed_to_annexb(&lp[..cut], 4, &mut out);
            assert_eq!(r.is_ok(), complete, "cut {cut}");
        }
    }

    #[test]
    fn nal_types() {
        assert_eq!(h264_nal_type(&[0x65]), Some(h264_type::IDR));
        assert_eq!(hevc_nal_type(&[0x40, 0x01]), Some(hevc_type::VPS));
        assert_eq!(hevc_nal_type(&[]), None);
    }
}
