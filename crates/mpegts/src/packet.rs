//! Transport stream packets: PSI sections (PAT, PMT) with CRC32/MPEG-2, PES headers, and
//! packetization with adaptation-field stuffing.

use bytes::{Buf, BufMut, BytesMut};

/// Every transport stream packet is this long.
pub const PACKET_LEN: usize = 188;
/// Bytes after the 4-byte packet header.
const PACKET_BODY_LEN: usize = PACKET_LEN - 4;
/// The sync byte that starts every packet.
pub const SYNC_BYTE: u8 = 0x47;

/// The CRC-32/MPEG-2 polynomial (MSB first).
const CRC_POLYNOMIAL: u32 = 0x04c1_1db7;

/// CRC-32/MPEG-2 (init 0xFFFFFFFF, no reflection, no final XOR) as PSI sections use.
/// Bit by bit: sections are at most a few hundred bytes, a table would buy nothing.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |crc, &b| {
        let mut crc = crc ^ (u32::from(b) << 24);
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ CRC_POLYNOMIAL
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// Writes one packet carrying a PSI section (pointer field 0, then `section` with its CRC
/// appended, then 0xFF filler). `section` is at most 180 bytes here (PAT and a two-stream
/// PMT are far shorter).
pub fn write_psi_packet(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    let start = out.len();
    out.put_u8(SYNC_BYTE);
    out.put_u16(0x4000 | (pid & 0x1fff)); // payload_unit_start_indicator
    out.put_u8(0x10 | (*cc & 0x0f)); // payload only
    out.put_u8(0); // pointer_field
    out.put_slice(section);
    out.put_u32(crc32_mpeg2(section));
    let written = out.len().saturating_sub(start);
    out.put_bytes(0xff, PACKET_LEN.saturating_sub(written));
    *cc = (*cc + 1) & 0x0f;
}

/// Encodes a 33-bit PCR base (extension 0) as the 6 bytes of the adaptation field.
fn pcr_bytes(base: u64) -> [u8; 6] {
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7e,
        0,
    ]
}

/// Decodes the 33-bit PCR base from the first 5 of the 6 PCR bytes of an adaptation field
/// (the inverse of what the muxer writes; the reserved bits and the extension are ignored).
pub fn pcr_base([b0, b1, b2, b3, b4]: [u8; 5]) -> u64 {
    (u64::from(b0) << 25)
        | (u64::from(b1) << 17)
        | (u64::from(b2) << 9)
        | (u64::from(b3) << 1)
        | (u64::from(b4) >> 7)
}

/// Writes a packet with only an adaptation field carrying a PCR (no payload, so the
/// continuity counter does not advance).
pub fn write_pcr_packet(out: &mut BytesMut, pid: u16, cc: u8, pcr_base: u64) {
    out.put_u8(SYNC_BYTE);
    out.put_u16(pid & 0x1fff);
    out.put_u8(0x20 | (cc & 0x0f)); // adaptation field only
    out.put_u8((PACKET_BODY_LEN - 1) as u8); // adaptation_field_length 183
    out.put_u8(0x10); // PCR_flag
    out.put_slice(&pcr_bytes(pcr_base));
    out.put_bytes(0xff, PACKET_BODY_LEN - 8);
}

/// Encodes a 33-bit PTS or DTS with its 4-bit prefix as the 5 bytes of a PES header.
pub fn timestamp_bytes(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 29) as u8) & 0x0e) | 1,
        (ts >> 22) as u8,
        (((ts >> 14) as u8) & 0xfe) | 1,
        (ts >> 7) as u8,
        (((ts << 1) as u8) & 0xfe) | 1,
    ]
}

/// Decodes a 33-bit PTS or DTS from the 5 bytes of a PES header: the inverse of
/// [`timestamp_bytes`] (the prefix and marker bits are ignored).
pub fn read_timestamp([b0, b1, b2, b3, b4]: [u8; 5]) -> u64 {
    (u64::from((b0 >> 1) & 0x07) << 30)
        | (u64::from(b1) << 22)
        | (u64::from(b2 >> 1) << 15)
        | (u64::from(b3) << 7)
        | u64::from(b4 >> 1)
}

/// Longest PES header written: 9 fixed bytes plus PTS and DTS.
pub const MAX_PES_HEADER_LEN: usize = 19;

/// Builds a PES header: `stream_id`, PTS, DTS when it differs, and `PES_packet_length`
/// (0, "unbounded", when `payload_len` does not fit — allowed for video only; callers keep
/// audio PES short enough). Returns the buffer and its used length.
pub fn pes_header(
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    payload_len: usize,
) -> ([u8; MAX_PES_HEADER_LEN], usize) {
    let mut h = [0u8; MAX_PES_HEADER_LEN];
    let optional_len: u8 = if dts.is_some() { 10 } else { 5 };
    let packet_len = (3 + usize::from(optional_len))
        .checked_add(payload_len)
        .and_then(|l| u16::try_from(l).ok())
        .unwrap_or(0);
    h[..4].copy_from_slice(&[0, 0, 1, stream_id]);
    h[4..6].copy_from_slice(&packet_len.to_be_bytes());
    h[6] = 0x84; // marker '10', data_alignment_indicator
    h[7] = if dts.is_some() { 0xc0 } else { 0x80 }; // PTS_DTS_flags
    h[8] = optional_len;
    match dts {
        Some(dts) => {
            h[9..14].copy_from_slice(&timestamp_bytes(3, pts));
            h[14..19].copy_from_slice(&timestamp_bytes(1, dts));
            (h, 19)
        }
        None => {
            h[9..14].copy_from_slice(&timestamp_bytes(2, pts));
            (h, 14)
        }
    }
}

/// What the first packet of a PES carries in its adaptation field.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstPacket {
    /// Set `random_access_indicator`.
    pub random_access: bool,
    /// A PCR base to carry.
    pub pcr: Option<u64>,
}

/// Splits the PES `header` + `payload` into packets on `pid`, stuffing the last one with
/// its adaptation field.
pub fn write_pes(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    header: impl Buf,
    payload: &[u8],
    first: FirstPacket,
) {
    let mut pes = header.chain(payload);
    let mut is_first = true;
    while pes.has_remaining() || is_first {
        let (rai, pcr) = if is_first {
            (first.random_access, first.pcr)
        } else {
            (false, None)
        };
        // Adaptation field bytes required before stuffing: length + flags (+ PCR).
        let af_min = if rai || pcr.is_some() {
            2 + if pcr.is_some() { 6 } else { 0 }
        } else {
            0
        };
        let space = PACKET_BODY_LEN - af_min;
        let take = pes.remaining().min(space);
        let af_len = if af_min > 0 || take < PACKET_BODY_LEN {
            PACKET_BODY_LEN - take
        } else {
            0
        };
        out.put_u8(SYNC_BYTE);
        let pusi = if is_first { 0x4000 } else { 0 };
        out.put_u16(pusi | (pid & 0x1fff));
        let afc = if af_len > 0 { 0x30 } else { 0x10 };
        out.put_u8(afc | (*cc & 0x0f));
        if af_len == 1 {
            out.put_u8(0); // adaptation_field_length 0: one stuffing byte
        } else if af_len > 1 {
            out.put_u8((af_len - 1) as u8);
            let mut flags = 0u8;
            if rai {
                flags |= 0x40;
            }
            if pcr.is_some() {
                flags |= 0x10;
            }
            out.put_u8(flags);
            let mut used = 2;
            if let Some(base) = pcr {
                out.put_slice(&pcr_bytes(base));
                used += 6;
            }
            out.put_bytes(0xff, af_len - used);
        }
        out.put((&mut pes).take(take));
        *cc = (*cc + 1) & 0x0f;
        is_first = false;
    }
}
