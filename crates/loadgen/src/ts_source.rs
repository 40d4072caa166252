//! What the SRT publishers send: one pass of the input as MPEG-TS, cut into 1316-byte
//! payloads (7 × 188-byte packets, what libsrt callers send) with a due time each, and
//! looped forever with continuous clocks.
//!
//! * An FLV input is muxed once, by [`tidegate_mpegts::TsMuxer`], one call per GOP (so a
//!   PAT and a PMT precede every keyframe, as a live encoder repeats them).
//! * A `.ts` input is used as it is (188-byte packets; a trailing partial packet is cut).
//!
//! Pacing follows the transport clock, as a real-time TS source does: each payload is due
//! at the PCR time of its first byte, interpolated linearly between the PCRs around it
//! (so a large keyframe is spread over one frame interval rather than sent in one burst),
//! relative to the pass's first PCR.
//!
//! Looping: pass `k` adds `k ×` [`TsPass::duration_ticks`] to every PCR, PTS and DTS and
//! advances each PID's continuity counter by `k ×` its payload-packet count, so the
//! receiver sees one continuous stream. Pass 0 is sent as slices of the shared buffer;
//! later passes copy each payload once to patch it (a few hundred bytes of header work per
//! 1316 bytes).

use bytes::{Bytes, BytesMut};
use tidegate_media::{Frame, MediaEvent, TrackKind, TrackRun, TIMESCALE};
use tidegate_mpegts::{packet, TsMuxer};

use crate::error::LoadgenError;
use crate::flv_file::{FlvFile, TagKind};

/// One MPEG-TS packet.
pub const TS_PACKET_BYTES: usize = packet::PACKET_LEN;
/// TS packets per SRT payload.
pub const PACKETS_PER_PAYLOAD: usize = 7;
/// One SRT payload: 7 TS packets, libsrt's default `SRTO_PAYLOADSIZE`.
pub const PAYLOAD_BYTES: usize = TS_PACKET_BYTES * PACKETS_PER_PAYLOAD;
/// Null packets (their continuity counter is undefined).
const NULL_PID: u16 = 0x1fff;
/// Modulo of 33-bit PCR bases, PTS and DTS.
const WRAP_33: u64 = 1 << 33;
/// 90 kHz ticks per millisecond.
const TICKS_PER_MS: u64 = TIMESCALE as u64 / 1000;
/// GOP assumed when no random-access point repeats.
const DEFAULT_GOP_MS: u32 = 2000;

/// One payload of the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in [`TsPass::data`].
    pub offset: usize,
    /// Length (a multiple of 188, at most [`PAYLOAD_BYTES`]).
    pub len: usize,
    /// Due time from the start of the pass, microseconds.
    pub due_us: u64,
}

/// One pass of the input as MPEG-TS, cut and timed.
#[derive(Debug, Clone)]
pub struct TsPass {
    /// The TS packets of one pass.
    pub data: Bytes,
    /// The payloads, in order, with their due times.
    pub chunks: Vec<Chunk>,
    /// Length of one pass in 90 kHz ticks: what pass `k` adds to every clock.
    pub duration_ticks: u64,
    /// Typical distance between random-access points, ms.
    pub gop_ms: u32,
    /// Per PID, payload-carrying packets in one pass, modulo 16.
    cc_step: Box<[u8; 8192]>,
}

impl TsPass {
    /// Length of one pass, ms.
    pub fn duration_ms(&self) -> u64 {
        self.duration_ticks / TICKS_PER_MS
    }

    /// Average bitrate of the TS, bits per second.
    pub fn bitrate_bps(&self) -> u64 {
        (self.data.len() as u64 * 8 * 1000)
            .checked_div(self.duration_ms())
            .unwrap_or(0)
    }

    /// Muxes an FLV file's media into one pass of MPEG-TS.
    pub fn from_flv(file: &FlvFile) -> Result<TsPass, LoadgenError> {
        let mut demux = tidegate_flv::FlvDemuxer::new();
        let mut video_cfg = None;
        let mut audio_cfg = None;
        let mut video: Vec<Frame> = Vec::new();
        let mut audio: Vec<Frame> = Vec::new();
        let bad = |e: tidegate_flv::FlvError| LoadgenError::Media(e.to_string());
        for (ts, tag) in file
            .headers
            .iter()
            .map(|h| (0, h))
            .chain(file.tags.iter().map(|t| (t.timestamp_ms, t)))
        {
            match tag.kind {
                TagKind::Video => demux.handle_video(ts, tag.data.clone()).map_err(bad)?,
                TagKind::Audio => demux.handle_audio(ts, tag.data.clone()).map_err(bad)?,
            }
            while let Some(ev) = demux.poll_event() {
                match ev {
                    MediaEvent::VideoConfig(c) => video_cfg = video_cfg.or(Some(c)),
                    MediaEvent::AudioConfig(c) => audio_cfg = audio_cfg.or(Some(c)),
                    MediaEvent::Frame(f) if f.track == TrackKind::Video => video.push(f),
                    MediaEvent::Frame(f) => audio.push(f),
                    MediaEvent::TimestampJump { .. }
                    | MediaEvent::VideoDeclared
                    | MediaEvent::VideoWithoutConfig => {}
                }
            }
        }
        if video_cfg.is_none() {
            video.clear();
        }
        if audio_cfg.is_none() {
            audio.clear();
        }
        if video.is_empty() && audio.is_empty() {
            return Err(LoadgenError::NoMedia);
        }
        let mut mux = TsMuxer::new(video_cfg.as_ref(), audio_cfg.as_ref())
            .map_err(|e| LoadgenError::Media(e.to_string()))?;
        let duration = i64::from(file.duration_ms.max(1)) * TICKS_PER_MS as i64;
        // GOP boundaries: every video keyframe after the first frame (or every 2 s of audio).
        let mut cuts: Vec<i64> = video
            .iter()
            .skip(1)
            .filter(|f| f.keyframe)
            .map(|f| f.dts)
            .collect();
        if video.is_empty() {
            let step = i64::from(DEFAULT_GOP_MS) * TICKS_PER_MS as i64;
            cuts = (1..)
                .map(|k| k * step)
                .take_while(|&t| t < duration)
                .collect();
        }
        cuts.push(i64::MAX);
        let mut out = BytesMut::new();
        let (mut vi, mut ai) = (0usize, 0usize);
        for cut in cuts {
            let v_end = vi
                + video
                    .get(vi..)
                    .map_or(0, |r| r.iter().take_while(|f| f.dts < cut).count());
            let a_end = ai
                + audio
                    .get(ai..)
                    .map_or(0, |r| r.iter().take_while(|f| f.dts < cut).count());
            let vr = video.get(vi..v_end).unwrap_or_default();
            let ar = audio.get(ai..a_end).unwrap_or_default();
            let end_of = |frames: &[Frame], next: Option<&Frame>| {
                next.map_or(duration, |f| f.dts)
                    .max(frames.last().map_or(0, |f| f.dts))
            };
            let runs = [
                TrackRun {
                    track: TrackKind::Video,
                    frames: vr,
                    end_dts: end_of(vr, video.get(v_end)),
                },
                TrackRun {
                    track: TrackKind::Audio,
                    frames: ar,
                    end_dts: end_of(ar, audio.get(a_end)),
                },
            ];
            if !vr.is_empty() || !ar.is_empty() {
                let seg = mux
                    .segment(&runs)
                    .map_err(|e| LoadgenError::Media(e.to_string()))?;
                out.extend_from_slice(&seg);
            }
            vi = v_end;
            ai = a_end;
        }
        let gop_ms = if video.is_empty() {
            DEFAULT_GOP_MS
        } else {
            file.gop_ms
        };
        Self::build(out.freeze(), Some(duration as u64), Some(gop_ms))
    }

    /// Uses an MPEG-TS file (188-byte packets) as it is.
    pub fn from_ts(data: Bytes) -> Result<TsPass, LoadgenError> {
        let whole = data.len() / TS_PACKET_BYTES * TS_PACKET_BYTES;
        Self::build(data.slice(..whole), None, None)
    }

    fn build(
        data: Bytes,
        duration_ticks: Option<u64>,
        gop_ms: Option<u32>,
    ) -> Result<TsPass, LoadgenError> {
        if data.is_empty() {
            return Err(LoadgenError::NoMedia);
        }
        let mut cc_step = Box::new([0u8; 8192]);
        // (byte offset, PCR ticks since the first PCR), on the first PID that carries PCR.
        let mut anchors: Vec<(usize, u64)> = Vec::new();
        let mut pcr_pid = None;
        let mut first_pcr = 0u64;
        let mut raps: Vec<u64> = Vec::new();
        for (i, p) in data.chunks_exact(TS_PACKET_BYTES).enumerate() {
            if p.first() != Some(&packet::SYNC_BYTE) {
                return Err(LoadgenError::Media(format!(
                    "not MPEG-TS: no sync byte at byte {}",
                    i * TS_PACKET_BYTES
                )));
            }
            let h = Header::of(p);
            if h.has_payload && h.pid != NULL_PID {
                if let Some(c) = cc_step.get_mut(usize::from(h.pid)) {
                    *c = (*c + 1) & 0xf;
                }
            }
            if let Some(pcr) = h.pcr(p) {
                if pcr_pid.is_none() {
                    pcr_pid = Some(h.pid);
                    first_pcr = pcr;
                }
                if pcr_pid == Some(h.pid) {
                    let rel = (pcr + WRAP_33 - first_pcr) % WRAP_33;
                    // Keep the anchors increasing (a PCR repeated or going back is skipped).
                    if anchors.last().is_none_or(|&(_, t)| rel > t) {
                        anchors.push((i * TS_PACKET_BYTES, rel));
                    }
                    if h.random_access(p) {
                        raps.push(rel);
                    }
                }
            }
        }
        let last = anchors.last().map_or(0, |&(_, t)| t);
        let duration = match duration_ticks {
            Some(d) => d.max(last + 1),
            None => {
                // The span of the PCRs plus one typical PCR interval.
                let step = if anchors.len() > 1 {
                    last / (anchors.len() as u64 - 1)
                } else {
                    0
                };
                let d = last + step;
                if d == 0 {
                    return Err(LoadgenError::Media(
                        "the MPEG-TS input has no PCR to pace it by".into(),
                    ));
                }
                d
            }
        };
        anchors.push((data.len(), duration));
        let gop_ms = gop_ms.unwrap_or_else(|| median_gap_ms(&raps));
        let mut chunks = Vec::with_capacity(data.len() / PAYLOAD_BYTES + 1);
        let mut a = 0usize;
        let mut offset = 0usize;
        while offset < data.len() {
            let len = PAYLOAD_BYTES.min(data.len() - offset);
            while anchors.get(a + 1).is_some_and(|&(o, _)| o <= offset) {
                a += 1;
            }
            let due_ticks = match (anchors.get(a), anchors.get(a + 1)) {
                // Before the first PCR: due at the start.
                (Some(&(o0, _)), _) if o0 > offset => 0,
                (Some(&(o0, t0)), Some(&(o1, t1))) if o1 > o0 => {
                    t0 + (t1 - t0) * (offset - o0) as u64 / (o1 - o0) as u64
                }
                (Some(&(_, t0)), _) => t0,
                (None, _) => 0,
            };
            chunks.push(Chunk {
                offset,
                len,
                due_us: due_ticks * 1000 / TICKS_PER_MS,
            });
            offset += len;
        }
        Ok(TsPass {
            data,
            chunks,
            duration_ticks: duration,
            gop_ms,
            cc_step,
        })
    }

    /// Payload `index` of pass `pass`: a slice of the pass for pass 0, a patched copy
    /// after. `None` past the last payload.
    pub fn payload(&self, pass: u64, index: usize) -> Option<Bytes> {
        let c = self.chunks.get(index)?;
        let slice = self.data.slice(c.offset..c.offset + c.len);
        if pass == 0 {
            return Some(slice);
        }
        let mut buf = BytesMut::from(&slice[..]);
        let shift = (pass.wrapping_mul(self.duration_ticks)) % WRAP_33;
        for p in buf.chunks_exact_mut(TS_PACKET_BYTES) {
            self.patch(p, pass, shift);
        }
        Some(buf.freeze())
    }

    fn patch(&self, p: &mut [u8], pass: u64, shift: u64) {
        let h = Header::of(p);
        if h.has_payload && h.pid != NULL_PID {
            let step = self.cc_step.get(usize::from(h.pid)).copied().unwrap_or(0);
            let cc = (u64::from(h.cc) + pass.wrapping_mul(u64::from(step))) & 0xf;
            if let Some(b) = p.get_mut(3) {
                *b = (*b & 0xf0) | cc as u8;
            }
        }
        if let Some(pcr) = h.pcr(p) {
            let v = (pcr + shift) % WRAP_33;
            if let Some(b) = p.get_mut(6..11) {
                b[0] = (v >> 25) as u8;
                b[1] = (v >> 17) as u8;
                b[2] = (v >> 9) as u8;
                b[3] = (v >> 1) as u8;
                b[4] = (b[4] & 0x7f) | (((v & 1) as u8) << 7);
            }
        }
        if !(h.pusi && h.has_payload) {
            return;
        }
        let start = h.payload_start;
        let Some(pes) = p.get_mut(start..) else {
            return;
        };
        if pes.len() < 14 || pes[..3] != [0, 0, 1] || !has_pes_header(pes[3]) {
            return;
        }
        let flags = pes[7] >> 6;
        if flags & 2 != 0 {
            shift_timestamp(&mut pes[9..14], shift);
        }
        if flags == 3 {
            if let Some(dts) = pes.get_mut(14..19) {
                shift_timestamp(dts, shift);
            }
        }
    }
}

/// Whether a PES `stream_id` has the optional header with PTS/DTS.
fn has_pes_header(stream_id: u8) -> bool {
    matches!(stream_id, 0xbd | 0xc0..=0xef | 0xfa..=0xfd)
}

/// Adds `shift` to a 5-byte PTS/DTS field, keeping its prefix.
fn shift_timestamp(b: &mut [u8], shift: u64) {
    if let Some(field) = b.first_chunk_mut::<5>() {
        let v = (packet::read_timestamp(*field) + shift) % WRAP_33;
        *field = packet::timestamp_bytes(field[0] >> 4, v);
    }
}

fn median_gap_ms(times: &[u64]) -> u32 {
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    match gaps.get(gaps.len() / 2) {
        Some(&g) if g > 0 => u32::try_from(g / TICKS_PER_MS).unwrap_or(DEFAULT_GOP_MS),
        _ => DEFAULT_GOP_MS,
    }
}

/// The fields of a TS packet header this module uses.
struct Header {
    pid: u16,
    pusi: bool,
    has_payload: bool,
    cc: u8,
    /// Adaptation field length (0 when absent).
    af_len: usize,
    has_af: bool,
    payload_start: usize,
}

impl Header {
    fn of(p: &[u8]) -> Header {
        let b = |i: usize| p.get(i).copied().unwrap_or(0);
        let afc = (b(3) >> 4) & 3;
        let has_af = afc & 2 != 0;
        let af_len = if has_af { usize::from(b(4)) } else { 0 };
        Header {
            pid: u16::from(b(1) & 0x1f) << 8 | u16::from(b(2)),
            pusi: b(1) & 0x40 != 0,
            has_payload: afc & 1 != 0,
            cc: b(3) & 0xf,
            af_len,
            has_af,
            payload_start: if has_af { 5 + af_len } else { 4 },
        }
    }

    /// The PCR base (90 kHz), if the adaptation field carries one.
    fn pcr(&self, p: &[u8]) -> Option<u64> {
        if !self.has_af || self.af_len < 7 || p.get(5)? & 0x10 == 0 {
            return None;
        }
        Some(packet::pcr_base(*p.get(6..)?.first_chunk::<5>()?))
    }

    fn random_access(&self, p: &[u8]) -> bool {
        self.has_af && self.af_len >= 1 && p.get(5).is_some_and(|f| f & 0x40 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TS packet as the muxer writes it: CC, optional PCR, optional PES start with PTS
    /// (and DTS), filled to exactly one packet.
    fn packet(pid: u16, cc: u8, pcr: Option<u64>, pes: Option<(u64, Option<u64>)>) -> Vec<u8> {
        let (header, len) = pes.map_or(([0; packet::MAX_PES_HEADER_LEN], 0), |(pts, dts)| {
            packet::pes_header(0xe0, pts, dts, usize::MAX)
        });
        let fill = vec![0xff; 184 - len - if pcr.is_some() { 8 } else { 0 }];
        let first = packet::FirstPacket {
            random_access: false,
            pcr,
        };
        let (mut out, mut cc) = (BytesMut::new(), cc);
        packet::write_pes(&mut out, pid, &mut cc, &header[..len], &fill, first);
        out.to_vec()
    }

    fn read_ts(b: &[u8]) -> u64 {
        packet::read_timestamp(b[..5].try_into().unwrap())
    }

    /// 28 packets (4 payloads): PCR 0 at packet 0, PCR 9000 (100 ms) at packet 14.
    fn two_pcrs() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..28u8 {
            let pcr = match i {
                0 => Some(WRAP_33 - 100),
                14 => Some(8_900),
                _ => None,
            };
            let pes = (i == 0).then_some((WRAP_33 - 50, Some(WRAP_33 - 80)));
            data.extend(packet(0x100, i % 16, pcr, pes));
        }
        data
    }

    #[test]
    fn paces_by_interpolated_pcr_and_loops_with_continuous_clocks() {
        let data = two_pcrs();
        let pass = TsPass::from_ts(Bytes::from(data.clone())).unwrap();
        assert_eq!(pass.chunks.len(), 4);
        let due: Vec<u64> = pass.chunks.iter().map(|c| c.due_us).collect();
        // Two PCRs 100 ms apart; the pass lasts one more PCR interval (200 ms); payloads
        // are due at the interpolated PCR of their first byte.
        assert_eq!(pass.duration_ticks, 18_000);
        assert_eq!(due, [0, 50_000, 100_000, 150_000]);
        assert_eq!(
            pass.payload(0, 0).unwrap(),
            Bytes::from(data[..1316].to_vec())
        );
        // Pass 2: clocks + 2 × 18000 ticks (wrapping at 2^33), CC + 2 × 28.
        let p = pass.payload(2, 0).unwrap();
        let h = Header::of(&p);
        assert_eq!(h.pcr(&p), Some(36_000 - 100));
        assert_eq!(h.cc, (2 * 28) % 16);
        let pes = &p[h.payload_start..];
        assert_eq!(read_ts(&pes[9..14]), 36_000 - 50);
        assert_eq!(read_ts(&pes[14..19]), 36_000 - 80);
        // Prefix and marker bits are kept.
        assert_eq!(pes[9] >> 4, 3);
        assert_eq!(pes[14] >> 4, 1);
        assert!([pes[9], pes[11], pes[13], pes[16], pes[18]]
            .iter()
            .all(|b| b & 1 == 1));
        // The second packet's CC continues from the first.
        assert_eq!(Header::of(&p[188..]).cc, (1 + 56) % 16);
        // The last payload of a pass followed by the first of the next: CCs in sequence.
        let last = pass.payload(0, 3).unwrap();
        let next = pass.payload(1, 0).unwrap();
        let last_cc = Header::of(&last[last.len() - 188..]).cc;
        assert_eq!(Header::of(&next).cc, (last_cc + 1) % 16);
        assert_eq!(pass.payload(0, 4), None);
    }

    #[test]
    fn the_schedule_loops_the_pass_on_the_transport_clock() {
        let pass = std::sync::Arc::new(TsPass::from_ts(Bytes::from(two_pcrs())).unwrap());
        let mut sched = crate::schedule::Schedule::new(pass);
        let mut due = vec![];
        let popped = sched.pop_due(std::time::Duration::from_millis(450), |t, chunk| {
            due.push((t.as_millis(), chunk.offset));
        });
        // 200 ms passes of 4 payloads 50 ms apart: pass k is due k × 200 ms later.
        assert_eq!(popped, 10);
        assert_eq!(
            due,
            [0, 50, 100, 150, 200, 250, 300, 350, 400, 450]
                .into_iter()
                .zip([0, 1316, 2632, 3948].into_iter().cycle())
                .collect::<Vec<_>>()
        );
        assert_eq!(sched.position(), (2, 2));
        assert_eq!(sched.handed_out(), 10);
        assert_eq!(sched.next_due(), std::time::Duration::from_millis(500));
    }

    #[test]
    fn rejects_what_is_not_ts() {
        assert!(TsPass::from_ts(Bytes::from(vec![0u8; 376])).is_err());
        assert!(TsPass::from_ts(Bytes::new()).is_err());
        // No PCR at all: nothing to pace by.
        let data = [packet(0x100, 0, None, None), packet(0x100, 1, None, None)].concat();
        assert!(TsPass::from_ts(Bytes::from(data)).is_err());
    }

    #[test]
    fn timestamp_shift_round_trips() {
        for v in [0u64, 1, 90_000, WRAP_33 - 1] {
            let p = packet(0x101, 0, None, Some((v, None)));
            let mut b = p[4..].to_vec();
            shift_timestamp(&mut b[9..14], 12_345);
            assert_eq!(read_ts(&b[9..14]), (v + 12_345) % WRAP_33);
        }
    }
}
