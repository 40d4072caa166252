//! A bounded, panic-free MSB-first bit reader with the variable-length codes H.264/HEVC
//! (exp-Golomb) and AV1 (`uvlc`, `leb128`) use, and emulation-prevention removal.

use crate::codec::CodecError;

/// The longest exp-Golomb prefix accepted: 31 leading zeros encode values up to 2^32 - 2.
const MAX_EXP_GOLOMB_LEADING_ZEROS: u32 = 31;

/// Reads bits MSB-first from a byte slice; every read past the end is an error.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    /// What is being read, for error messages.
    what: &'static str,
}

impl<'a> BitReader<'a> {
    /// A reader over `data`, naming the structure `what` in errors.
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    fn truncated(&self) -> CodecError {
        CodecError::Truncated { what: self.what }
    }

    /// Reads one bit.
    pub(crate) fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| self.truncated())?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` (at most 64) bits as an unsigned big-endian number.
    pub(crate) fn bits(&mut self, n: u32) -> Result<u64, CodecError> {
        if n > 64 {
            return Err(CodecError::Malformed {
                what: self.what,
                reason: "field wider than 64 bits",
            });
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        Ok(value)
    }

    /// Reads `n` (at most 32) bits.
    pub(crate) fn bits32(&mut self, n: u32) -> Result<u32, CodecError> {
        let v = self.bits(n.min(32))?;
        u32::try_from(v).map_err(|_| self.truncated())
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        if end > self.data.len().saturating_mul(8) {
            return Err(self.truncated());
        }
        self.pos = end;
        Ok(())
    }

    /// Reads an unsigned exp-Golomb code (`ue(v)`).
    pub(crate) fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > MAX_EXP_GOLOMB_LEADING_ZEROS {
                return Err(CodecError::Malformed {
                    what: self.what,
                    reason: "exp-Golomb code too long",
                });
            }
        }
        let suffix = self.bits(zeros)?;
        let value = (1u64 << zeros) - 1 + suffix;
        u32::try_from(value).map_err(|_| CodecError::Malformed {
            what: self.what,
            reason: "exp-Golomb value out of range",
        })
    }

    /// Reads a signed exp-Golomb code (`se(v)`).
    pub(crate) fn se(&mut self) -> Result<i32, CodecError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).map_err(|_| CodecError::Malformed {
            what: self.what,
            reason: "signed exp-Golomb value out of range",
        })
    }

    /// Reads an AV1 `uvlc()` code.
    pub(crate) fn uvlc(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros >= 32 {
                // The spec returns (1 << 32) - 1 for 32 or more leading zeros.
                return Ok(u32::MAX);
            }
        }
        let suffix = self.bits(zeros)?;
        let value = suffix + (1u64 << zeros) - 1;
        u32::try_from(value).map_err(|_| self.truncated())
    }
}

/// The largest number of bytes a `leb128()` value may span (AV1 spec 4.10.5).
const MAX_LEB128_BYTES: usize = 8;

/// Reads an AV1 `leb128()` value from the start of `data`; returns the value and its length.
pub(crate) fn leb128(data: &[u8], what: &'static str) -> Result<(u64, usize), CodecError> {
    let mut value: u64 = 0;
    for (i, byte) in data.iter().take(MAX_LEB128_BYTES).enumerate() {
        value |= u64::from(byte & 0x7f) << (i * 7);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if data.len() >= MAX_LEB128_BYTES {
        Err(CodecError::Malformed {
            what,
            reason: "leb128 longer than 8 bytes",
        })
    } else {
        Err(CodecError::Truncated { what })
    }
}

/// Copies at most `max` bytes of a NAL unit payload into an RBSP, removing
/// emulation-prevention bytes (`00 00 03` → `00 00`). Parsers only need the head of a
/// parameter set, so the bound keeps the copy small.
pub(crate) fn nal_to_rbsp(nal: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len().min(max));
    let mut zeros = 0usize;
    for &b in nal {
        if out.len() >= max {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0,1,2,3,4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
        assert_eq!(r.ue().unwrap(), 4);
        let data = [0b0100_1100, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        // 010 → se +1, 011 → se -1, 00100 → se +2
        assert_eq!(r.se().unwrap(), 1);
        assert_eq!(r.se().unwrap(), -1);
        assert_eq!(r.se().unwrap(), 2);
    }

    #[test]
    fn exp_golomb_bounds() {
        let zeros = [0u8; 8];
        assert!(BitReader::new(&zeros, "t").ue().is_err());
        assert!(BitReader::new(&[], "t").ue().is_err());
        let mut r = BitReader::new(&[0xff], "t");
        assert!(r.bits(9).is_err());
        assert!(r.skip(usize::MAX).is_err());
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(
            nal_to_rbsp(&[0x67, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3], 100),
            vec![0x67, 0, 0, 1, 0, 0, 0, 0]
        );
        assert_eq!(nal_to_rbsp(&[1, 2, 3, 4], 2), vec![1, 2]);
    }

    #[test]
    fn leb128_values() {
        assert_eq!(leb128(&[0x05], "t").unwrap(), (5, 1));
        assert_eq!(leb128(&[0x80, 0x01], "t").unwrap(), (128, 2));
        assert!(leb128(&[0x80], "t").is_err());
        assert!(leb128(&[0xff; 9], "t").is_err());
    }
}
