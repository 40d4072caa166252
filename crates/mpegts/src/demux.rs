//! MPEG-TS demuxer for ingest (SRT payloads): TS packets in, [`MediaEvent`]s out.
//!
//! Drive it like this: feed every received chunk to [`TsDemuxer::handle_input`] (any
//! chunking; partial packets are kept, sync is regained on `0x47`), then drain
//! [`TsDemuxer::poll_event`] until it returns `None`. Nothing here does I/O.
//!
//! What it understands: the first program of the PAT, its PMT (CRC checked), and one video
//! (H.264 `0x1b`, HEVC `0x24`) and one audio (AAC ADTS `0x0f`) elementary stream. Other
//! streams are ignored and counted. A PES ends at the next `payload_unit_start` on its PID.
//! A PMT that adds a video stream queues [`MediaEvent::VideoDeclared`].
//! Video access units are split into NAL units: parameter sets become the configuration
//! record (a [`MediaEvent::VideoConfig`] whenever they change) and are removed from the frame
//! with access-unit delimiters; the rest is written with 4-byte length prefixes. An access
//! unit before any parameter sets cannot be decoded: it is dropped, counted, and reported as
//! [`MediaEvent::VideoWithoutConfig`]. Audio PES
//! are split into ADTS frames, each timed `pts + k × frame duration`. Timestamps are unwrapped
//! from 33 bits, passed through one jump detector for both tracks, and rebased so the first
//! decode time is 0.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use tidegate_media::codec::{
    avc_record_from_parameter_sets, hevc_record_from_parameter_sets, parse_avc_record,
    parse_hevc_record,
};
use tidegate_media::nal::{annexb_nals, h264_nal_type, h264_type, hevc_nal_type, hevc_type};
use tidegate_media::timestamp::{JumpDetector, PtsUnwrapper};
use tidegate_media::{
    adts, AudioConfig, Frame, MediaEvent, TrackKind, VideoCodec, VideoConfig, TIMESCALE,
};

use crate::packet::{crc32_mpeg2, pcr_base, read_timestamp};
use crate::TsError;

/// TS packet size.
const PACKET: usize = 188;
/// Largest PES reassembled; a bigger one is dropped and counted (a 4K keyframe is ~2 MB).
pub const MAX_PES_BYTES: usize = 16 << 20;
/// Largest PSI section reassembled.
const MAX_SECTION_BYTES: usize = 4096;
/// Unconsumed input kept while looking for sync (more means garbage: it is discarded).
const MAX_PENDING_INPUT: usize = 64 * PACKET;
/// Events waiting to be polled before input is refused (the driver must drain).
const MAX_QUEUED_EVENTS: usize = 4096;
/// A PCR moving by more than this (or backwards) counts as a PCR jump.
const PCR_JUMP_TICKS: i64 = TIMESCALE as i64;

/// Counters of what the demuxer saw and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// TS packets parsed.
    pub packets: u64,
    /// Continuity-counter errors (packets lost or reordered before us).
    pub cc_errors: u64,
    /// PCR jumps (more than a second, or backwards).
    pub pcr_jumps: u64,
    /// Times sync was lost and bytes skipped.
    pub sync_losses: u64,
    /// Packets with the transport error indicator set (dropped).
    pub tei_packets: u64,
    /// Frames dropped (no configuration yet, oversized or malformed PES).
    pub dropped_frames: u64,
    /// Elementary streams of types we do not ingest.
    pub ignored_streams: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    H264,
    Hevc,
    Aac,
}

#[derive(Debug)]
struct Pid {
    pid: u16,
    kind: Kind,
    pes: BytesMut,
    overflow: bool,
    cc: Option<u8>,
}

/// The demuxer. See the module documentation for the driver contract.
#[derive(Debug)]
pub struct TsDemuxer {
    pending: BytesMut,
    pmt_pid: Option<u16>,
    section: BytesMut,
    section_pid: Option<u16>,
    pmt_version: Option<u8>,
    streams: Vec<Pid>,
    pcr_pid: Option<u16>,
    last_pcr: Option<i64>,
    pcr_unwrap: PtsUnwrapper,
    ts_unwrap: PtsUnwrapper,
    jumps: JumpDetector,
    base: Option<i64>,
    video: Option<VideoConfig>,
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
    vps: Vec<Bytes>,
    audio: Option<AudioConfig>,
    events: VecDeque<MediaEvent>,
    stats: DemuxStats,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemuxer {
    /// A demuxer waiting for a PAT.
    pub fn new() -> Self {
        Self {
            pending: BytesMut::new(),
            pmt_pid: None,
            section: BytesMut::new(),
            section_pid: None,
            pmt_version: None,
            streams: Vec::new(),
            pcr_pid: None,
            last_pcr: None,
            pcr_unwrap: PtsUnwrapper::new(),
            ts_unwrap: PtsUnwrapper::new(),
            jumps: JumpDetector::default(),
            base: None,
            video: None,
            sps: Vec::new(),
            pps: Vec::new(),
            vps: Vec::new(),
            audio: None,
            events: VecDeque::new(),
            stats: DemuxStats::default(),
        }
    }

    /// What was seen and dropped so far.
    pub fn stats(&self) -> &DemuxStats {
        &self.stats
    }

    /// The next media event, in order.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Feeds received bytes (any chunking).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), TsError> {
        if self.events.len() > MAX_QUEUED_EVENTS {
            return Err(TsError::Unsupported {
                what: "events not drained",
            });
        }
        self.pending.extend_from_slice(data);
        loop {
            // Sync: a packet starts with 0x47 and (when we can see it) so does the next.
            let Some(start) = self.pending.iter().position(|b| *b == 0x47) else {
                if !self.pending.is_empty() {
                    self.stats.sync_losses += 1;
                }
                self.pending.clear();
                return Ok(());
            };
            if start > 0 {
                self.stats.sync_losses += 1;
                let _ = self.pending.split_to(start);
            }
            let Some(&packet) = self.pending.first_chunk::<PACKET>() else {
                break;
            };
            if self.pending.len() > PACKET && self.pending.get(PACKET) != Some(&0x47) {
                // False sync byte: skip it.
                self.stats.sync_losses += 1;
                self.pending.advance(1);
                continue;
            }
            self.pending.advance(PACKET);
            self.packet(&packet)?;
        }
        if self.pending.len() > MAX_PENDING_INPUT {
            self.stats.sync_losses += 1;
            self.pending.clear();
        }
        Ok(())
    }

    fn packet(&mut self, p: &[u8; PACKET]) -> Result<(), TsError> {
        self.stats.packets += 1;
        // The header, then (when there is an adaptation field) its length, its flags and
        // the PCR's 33-bit base, which sits first when PCR_flag is set.
        let &[_, b1, b2, b3, af_len, af_flags, c0, c1, c2, c3, c4, ..] = p;
        if b1 & 0x80 != 0 {
            self.stats.tei_packets += 1;
            return Ok(());
        }
        let pusi = b1 & 0x40 != 0;
        let pid = (u16::from(b1 & 0x1f) << 8) | u16::from(b2);
        let afc = (b3 >> 4) & 0x3;
        let cc = b3 & 0x0f;
        let mut off = 4;
        let mut discontinuity = false;
        if afc & 0x2 != 0 {
            let len = usize::from(af_len);
            if len > 0 {
                discontinuity = af_flags & 0x80 != 0;
                if af_flags & 0x10 != 0 && Some(pid) == self.pcr_pid {
                    let base = pcr_base([c0, c1, c2, c3, c4]);
                    let pcr = self.pcr_unwrap.unwrap(base);
                    if let Some(last) = self.last_pcr {
                        let d = pcr - last;
                        if !discontinuity && !(0..=PCR_JUMP_TICKS).contains(&d) {
                            self.stats.pcr_jumps += 1;
                        }
                    }
                    self.last_pcr = Some(pcr);
                }
            }
            off = 5 + len;
        }
        let has_payload = afc & 0x1 != 0;
        let payload = if has_payload {
            // An adaptation field longer than the packet leaves no payload.
            p.get(off..).unwrap_or(&[])
        } else {
            &[]
        };
        if pid == 0 {
            return self.psi(pid, pusi, payload);
        }
        if Some(pid) == self.pmt_pid {
            return self.psi(pid, pusi, payload);
        }
        let Some(s) = self.streams.iter_mut().find(|s| s.pid == pid) else {
            return Ok(());
        };
        // Continuity: duplicates are allowed once; a gap is counted.
        if has_payload {
            if let Some(prev) = s.cc {
                let expected = (prev + 1) & 0x0f;
                if cc == prev {
                    return Ok(()); // duplicate packet
                }
                if cc != expected && !discontinuity {
                    self.stats.cc_errors += 1;
                }
            }
            s.cc = Some(cc);
        }
        // A payload unit start ends the PES before it: take it out, then start the next.
        let finished = pusi.then(|| {
            (
                s.kind,
                std::mem::take(&mut s.overflow),
                std::mem::take(&mut s.pes),
            )
        });
        if !s.overflow {
            if s.pes.len() + payload.len() > MAX_PES_BYTES {
                s.overflow = true;
                s.pes.clear();
                self.stats.dropped_frames += 1;
            } else {
                s.pes.extend_from_slice(payload);
            }
        }
        if let Some((kind, overflow, pes)) = finished {
            self.flush_pes(kind, overflow, pes)?;
        }
        Ok(())
    }

    fn psi(&mut self, pid: u16, pusi: bool, payload: &[u8]) -> Result<(), TsError> {
        if pusi {
            let pointer = usize::from(*payload.first().unwrap_or(&0));
            self.section.clear();
            self.section_pid = Some(pid);
            self.section
                .extend_from_slice(payload.get(1 + pointer..).unwrap_or(&[]));
        } else if self.section_pid == Some(pid) && !self.section.is_empty() {
            if self.section.len() + payload.len() > MAX_SECTION_BYTES {
                self.section.clear();
                return Ok(());
            }
            self.section.extend_from_slice(payload);
        } else {
            return Ok(());
        }
        // Complete?
        let (Some(&b1), Some(&b2)) = (self.section.get(1), self.section.get(2)) else {
            return Ok(());
        };
        let len = (usize::from(b1 & 0x0f) << 8) | usize::from(b2);
        let total = 3 + len;
        if self.section.len() < total {
            return Ok(());
        }
        let section = self.section.split_to(total).freeze();
        self.section.clear();
        // table_id .. last_section_number (8 bytes), the body, CRC_32 (4 bytes).
        let Some((&[table_id, _, _, _, _, version_byte, _, _], after_header)) =
            section.split_first_chunk::<8>()
        else {
            return Ok(()); // too short to be a section: wait for the next repetition
        };
        let Some((body, _crc)) = after_header.split_last_chunk::<4>() else {
            return Ok(());
        };
        if crc32_mpeg2(&section) != 0 {
            return Ok(()); // corrupt: wait for the next repetition
        }
        match table_id {
            0x00 => {
                // PAT: the first program with a non-zero number.
                let (entries, _) = body.as_chunks::<4>();
                for &[program_hi, program_lo, pid_hi, pid_lo] in entries {
                    let program = (u16::from(program_hi) << 8) | u16::from(program_lo);
                    let map_pid = (u16::from(pid_hi & 0x1f) << 8) | u16::from(pid_lo);
                    if program != 0 {
                        self.pmt_pid = Some(map_pid);
                        break;
                    }
                }
            }
            0x02 => self.pmt(version_byte, body)?,
            _ => {}
        }
        Ok(())
    }

    /// `version_byte` is the section's byte 5 (reserved, version_number, current_next).
    fn pmt(&mut self, version_byte: u8, body: &[u8]) -> Result<(), TsError> {
        let version = (version_byte >> 1) & 0x1f;
        if self.pmt_version == Some(version) {
            return Ok(());
        }
        self.pmt_version = Some(version);
        let (Some(&p0), Some(&p1), Some(&i0), Some(&i1)) =
            (body.first(), body.get(1), body.get(2), body.get(3))
        else {
            return Ok(());
        };
        self.pcr_pid = Some((u16::from(p0 & 0x1f) << 8) | u16::from(p1));
        let info_len = (usize::from(i0 & 0x0f) << 8) | usize::from(i1);
        // Descriptors running past the section leave no stream entries.
        let mut rest = body.get(4 + info_len..).unwrap_or(&[]);
        let mut streams = Vec::new();
        let mut unsupported_video = false;
        while let Some((&[stream_type, pid_hi, pid_lo, es_hi, es_lo], after)) =
            rest.split_first_chunk::<5>()
        {
            let pid = (u16::from(pid_hi & 0x1f) << 8) | u16::from(pid_lo);
            let es_len = (usize::from(es_hi & 0x0f) << 8) | usize::from(es_lo);
            rest = after.get(es_len..).unwrap_or(&[]);
            let kind = match stream_type {
                0x1b => Some(Kind::H264),
                0x24 => Some(Kind::Hevc),
                0x0f => Some(Kind::Aac),
                0x01 | 0x02 | 0x10 | 0x33 => {
                    unsupported_video = true;
                    None
                }
                _ => None,
            };
            let Some(kind) = kind else {
                self.stats.ignored_streams += 1;
                continue;
            };
            let is_video = kind != Kind::Aac;
            if streams
                .iter()
                .any(|s: &Pid| (s.kind != Kind::Aac) == is_video)
            {
                self.stats.ignored_streams += 1;
                continue;
            }
            let old = self.streams.iter().find(|s| s.pid == pid && s.kind == kind);
            streams.push(Pid {
                pid,
                kind,
                pes: BytesMut::new(),
                overflow: false,
                cc: old.and_then(|o| o.cc),
            });
        }
        if unsupported_video && !streams.iter().any(|s| s.kind != Kind::Aac) {
            return Err(TsError::Unsupported {
                what: "video codec (only H.264 and HEVC are ingested)",
            });
        }
        let is_new_video =
            |s: &Pid| s.kind != Kind::Aac && !self.streams.iter().any(|o| o.pid == s.pid);
        if streams.iter().any(is_new_video) {
            self.events.push_back(MediaEvent::VideoDeclared);
        }
        self.streams = streams;
        Ok(())
    }

    /// Turns one finished PES of a `kind` stream into events (`overflow`: it was dropped).
    fn flush_pes(&mut self, kind: Kind, overflow: bool, pes: BytesMut) -> Result<(), TsError> {
        let pes = pes.freeze();
        if overflow || pes.is_empty() {
            return Ok(());
        }
        // PES header: start code prefix, stream_id, PES_packet_length, flags, header length.
        let Some((&[0, 0, 1, _, _, _, _, flags, header_len], _)) = pes.split_first_chunk::<9>()
        else {
            self.stats.dropped_frames += 1;
            return Ok(());
        };
        let data_start = 9 + usize::from(header_len);
        let Some(data) = pes.get(data_start..) else {
            self.stats.dropped_frames += 1;
            return Ok(());
        };
        let read_ts = |at: usize| Some(read_timestamp(*pes.get(at..)?.first_chunk::<5>()?));
        let pts = if flags & 0x80 != 0 { read_ts(9) } else { None };
        let dts = if flags & 0xc0 == 0xc0 {
            read_ts(14)
        } else {
            pts
        };
        let (Some(pts), Some(dts)) = (pts, dts) else {
            self.stats.dropped_frames += 1;
            return Ok(());
        };
        // One timeline for both tracks: unwrap the dts, keep the pts offset.
        let raw_dts = self.ts_unwrap.unwrap(dts);
        let cts = ((pts as i64 - dts as i64) % (1 << 33) + (1 << 33)) % (1 << 33);
        let cts = if cts > (1 << 32) { 0 } else { cts };
        let rebased = self.jumps.process(raw_dts);
        if let Some(delta) = rebased.jump {
            let track = if kind == Kind::Aac {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            self.events
                .push_back(MediaEvent::TimestampJump { track, delta });
        }
        let base = *self.base.get_or_insert(rebased.output);
        let dts = rebased.output - base;
        if dts < 0 {
            // Audio slightly before the first video (or vice versa): not representable.
            self.stats.dropped_frames += 1;
            return Ok(());
        }
        let data = pes.slice_ref(data);
        match kind {
            Kind::H264 | Kind::Hevc => self.video_au(kind, dts, dts + cts, data),
            Kind::Aac => self.audio_pes(dts, data),
        }
        Ok(())
    }

    fn video_au(&mut self, kind: Kind, dts: i64, pts: i64, data: Bytes) {
        let mut out = BytesMut::with_capacity(data.len() + 16);
        let (mut sps, mut pps, mut vps) = (Vec::new(), Vec::new(), Vec::new());
        let mut keyframe = false;
        for nal in annexb_nals(&data) {
            if nal.is_empty() {
                continue;
            }
            let drop = match kind {
                Kind::H264 => match h264_nal_type(nal) {
                    Some(h264_type::SPS) => {
                        sps.push(data.slice_ref(nal));
                        true
                    }
                    Some(h264_type::PPS) => {
                        pps.push(data.slice_ref(nal));
                        true
                    }
                    Some(h264_type::AUD) => true,
                    Some(h264_type::IDR) => {
                        keyframe = true;
                        false
                    }
                    _ => false,
                },
                _ => match hevc_nal_type(nal) {
                    Some(hevc_type::VPS) => {
                        vps.push(data.slice_ref(nal));
                        true
                    }
                    Some(hevc_type::SPS) => {
                        sps.push(data.slice_ref(nal));
                        true
                    }
                    Some(hevc_type::PPS) => {
                        pps.push(data.slice_ref(nal));
                        true
                    }
                    Some(hevc_type::AUD) => true,
                    Some(t) if (hevc_type::IRAP_FIRST..=hevc_type::IRAP_LAST).contains(&t) => {
                        keyframe = true;
                        false
                    }
                    _ => false,
                },
            };
            if !drop {
                // A PES is at most MAX_PES_BYTES, so every NAL unit has a 32-bit length.
                debug_assert!(nal.len() <= MAX_PES_BYTES);
                if let Ok(len) = u32::try_from(nal.len()) {
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(nal);
                }
            }
        }
        if !sps.is_empty() && !pps.is_empty() && (kind == Kind::H264 || !vps.is_empty()) {
            let changed = sps != self.sps || pps != self.pps || vps != self.vps;
            if changed || self.video.is_none() {
                let record = match kind {
                    Kind::H264 => avc_record_from_parameter_sets(&sps, &pps),
                    _ => hevc_record_from_parameter_sets(&vps, &sps, &pps),
                };
                let config = record.and_then(|r| match kind {
                    Kind::H264 => parse_avc_record(r),
                    _ => parse_hevc_record(r),
                });
                if let Ok(config) = config {
                    let codec_changed = self.video.as_ref().map(|v| v.codec)
                        != Some(match kind {
                            Kind::H264 => VideoCodec::H264,
                            _ => VideoCodec::H265,
                        });
                    if codec_changed || self.video.as_ref() != Some(&config) {
                        self.events
                            .push_back(MediaEvent::VideoConfig(config.clone()));
                    }
                    self.video = Some(config);
                    self.sps = sps;
                    self.pps = pps;
                    self.vps = vps;
                }
            }
        }
        if self.video.is_none() {
            self.stats.dropped_frames += 1;
            self.events.push_back(MediaEvent::VideoWithoutConfig);
            return;
        }
        if out.is_empty() {
            self.stats.dropped_frames += 1;
            return;
        }
        self.events.push_back(MediaEvent::Frame(Frame {
            track: TrackKind::Video,
            dts,
            pts: pts.max(dts),
            keyframe,
            data: out.freeze(),
        }));
    }

    fn audio_pes(&mut self, dts: i64, data: Bytes) {
        let mut rest: &[u8] = &data;
        let mut k: i64 = 0;
        while !rest.is_empty() {
            let Ok(h) = adts::parse_header(rest) else {
                self.stats.dropped_frames += 1;
                return;
            };
            // A frame running past the PES, or one with no payload, ends the PES.
            let Some((frame, after)) = rest.split_at_checked(h.frame_len) else {
                self.stats.dropped_frames += 1;
                return;
            };
            let Some((_, payload)) = frame
                .split_at_checked(h.header_len)
                .filter(|(_, payload)| !payload.is_empty())
            else {
                self.stats.dropped_frames += 1;
                return;
            };
            if let Ok(config) = h.audio_config() {
                if self.audio.as_ref() != Some(&config) {
                    self.events
                        .push_back(MediaEvent::AudioConfig(config.clone()));
                    self.audio = Some(config);
                }
            }
            let Some(audio) = &self.audio else {
                self.stats.dropped_frames += 1;
                return;
            };
            let rate = i64::from(audio.sample_rate.max(1));
            let spf = i64::from(audio.samples_per_frame);
            let t = dts + k * spf * i64::from(TIMESCALE) / rate;
            self.events.push_back(MediaEvent::Frame(Frame {
                track: TrackKind::Audio,
                dts: t,
                pts: t,
                keyframe: true,
                data: data.slice_ref(payload),
            }));
            k += 1;
            rest = after;
        }
    }
}
