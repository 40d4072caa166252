//! Test vectors and helpers shared by the codec modules' tests.

use bytes::Bytes;

pub(crate) fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    Bytes::from(v)
}

// avcC from `ffmpeg -f lavfi -i testsrc2=size=640x360 -c:v libx264 -f flv` (Debian
// ffmpeg 5.1); ffprobe: h264 High, 640x360, level 30.
pub(crate) const AVCC_HIGH_640X360: &str =
    "0164001effe1001a6764001eacd940a02ff97011000003000100000300
    3c0f162d9601000668ebe3cb22c0fdf8f800";
// libx264 -x264-params cqm=jvt, 322x182 (cropping on both axes); ffprobe: 322x182 High 13.
pub(crate) const AVCC_HIGH_322X182: &str =
    "0164000dffe1001a6764000dacd941519e226c0440000003004000000c83c50a658001000768ebe3cb3002c0fdf8f800";
// libx264 -profile:v baseline 320x240; ffprobe: Constrained Baseline, level 13.
pub(crate) const AVCC_BASELINE_320X240: &str =
    "0142c00dffe100186742c00dd90141fb01100000030010000003
    0320f142a48001000568cb83cb20";
// hvcC from ffmpeg 9 (imageio-ffmpeg) `-c:v libx265 -x265-params info=0 -f flv`, 426x240;
// ffmpeg: hevc (Main), 426x240.
pub(crate) const HVCC_MAIN_426X240: &str =
    "0101600000009000000000003cf000fcfdf8f800000f0320000100184001
    0c01ffff01600000030090000003000003003c959809210001002b420101016000000300900000030000
    03003ca00d880f1c9e5959a4932bc05a02000003000200000300321022000100074401c172b46240";
// av1C from ffmpeg 9 `-c:v libsvtav1 -pix_fmt yuv420p10le -f flv`, 320x180; ffmpeg:
// av1 (Main) yuv420p10le 320x180, DASH muxer codecs="av01.0.00M.10".
pub(crate) const AV1C_MAIN_10BIT_320X180: &str = "81004c000a0b0200000561e7f66017c202";

/// Writes bits MSB first; test-only, to build bitstreams the encoders at hand never emit.
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    bit: usize,
}

impl BitWriter {
    pub(crate) fn put(&mut self, n: u32, v: u64) {
        for i in (0..n).rev() {
            if self.bit.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let b = ((v >> i) & 1) as u8;
            *self.bytes.last_mut().unwrap() |= b << (7 - self.bit % 8);
            self.bit += 1;
        }
    }
    pub(crate) fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        self.put(len - 1, 0);
        self.put(len, x);
    }
    pub(crate) fn se(&mut self, v: i32) {
        let k = if v > 0 { 2 * v - 1 } else { -2 * v };
        self.ue(k as u32);
    }
    /// RBSP trailing bits, then emulation prevention.
    pub(crate) fn finish_nal(mut self) -> Vec<u8> {
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
