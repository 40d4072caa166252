//! MPEG-TS muxer for HLS `.ts` segments (H.264, HEVC, AAC), and the demuxer for ingest
//! ([`TsDemuxer`], SRT payloads).
//!
//! Drive it like this: create a [`TsMuxer`] for a track configuration (again whenever the
//! configuration changes), then call [`TsMuxer::segment`] once per cut segment with the
//! segment's [`TrackRun`]s; each call returns one self-contained segment. The muxer only
//! keeps the continuity counters, so consecutive segments form one continuous stream.
//!
//! Each segment starts with a PAT and a PMT, then PES packets in `dts` order interleaving
//! both tracks:
//!
//! - video (PID [`VIDEO_PID`]): one PES per access unit, Annex B start codes, an access unit
//!   delimiter first and the configuration record's parameter sets (SPS/PPS, or
//!   VPS/SPS/PPS) before every keyframe, `random_access_indicator` set on keyframes;
//! - audio (PID [`AUDIO_PID`]): raw AAC frames behind ADTS headers, up to
//!   [`MAX_AAC_FRAMES_PER_PES`] frames spanning at most [`MAX_AUDIO_PES_SPAN`] per PES;
//! - PCR on the video PID (the audio PID when there is no video): in the first packet of
//!   every PES on that PID, and in a PCR-only packet before any other PES that starts
//!   [`PCR_INTERVAL`] or more after the last PCR, and at the start of every segment.
//!
//! Timestamps: the 90 kHz frame times plus [`TIMESTAMP_OFFSET`] (1.4 s, the ffmpeg
//! convention), modulo 2^33. The PCR runs [`PCR_DELAY`] behind the DTS of the data that
//! follows it. Packets are 188 bytes; the last packet of each PES is filled with
//! adaptation-field stuffing. AV1 is refused (AV1 over HLS needs fMP4). Nothing here does
//! I/O.
#![deny(missing_docs)]

mod demux;
mod error;
pub mod packet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tidegate_media::codec::parameter_sets;
use tidegate_media::nal::{h264_nal_type, hevc_nal_type, length_prefixed_nals, ANNEXB_START_CODE};
use tidegate_media::{adts, AudioConfig, Frame, TrackKind, TrackRun, VideoCodec, VideoConfig};

pub use demux::{DemuxStats, TsDemuxer};
pub use error::TsError;
use packet::{pes_header, write_pcr_packet, write_pes, write_psi_packet, FirstPacket};

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// PID of the program association table.
pub const PAT_PID: u16 = 0;
/// `stream_type` of H.264 video.
pub const STREAM_TYPE_H264: u8 = 0x1b;
/// `stream_type` of HEVC video.
pub const STREAM_TYPE_HEVC: u8 = 0x24;
/// `stream_type` of AAC audio with ADTS framing.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
/// The single program's number.
const PROGRAM_NUMBER: u16 = 1;
/// `transport_stream_id` in the PAT.
const TRANSPORT_STREAM_ID: u16 = 1;
/// PES `stream_id` of the video stream.
const VIDEO_STREAM_ID: u8 = 0xe0;
/// PES `stream_id` of the audio stream.
const AUDIO_STREAM_ID: u8 = 0xc0;

/// Added to every PTS/DTS (90 kHz ticks) before the modulo-2^33 wrap: 1.4 s, as ffmpeg does,
/// so PTS stays well above 0 and above the PCR.
pub const TIMESTAMP_OFFSET: i64 = 126_000;
/// How far the PCR runs behind the DTS of the PES it precedes (0.7 s of decoder buffering).
pub const PCR_DELAY: i64 = 63_000;
/// A PCR is inserted before any PES whose DTS is at least this far (40 ms) past the last
/// PCR, which keeps PCRs well inside the 100 ms the standard allows.
pub const PCR_INTERVAL: i64 = 3_600;
/// Most AAC frames sharing one PES.
pub const MAX_AAC_FRAMES_PER_PES: usize = 8;
/// Longest span (90 kHz ticks, 50 ms) from the first to the last frame of one audio PES.
pub const MAX_AUDIO_PES_SPAN: i64 = 4_500;
/// Largest payload of one audio PES: what `PES_packet_length` can express after the header.
const MAX_AUDIO_PES_PAYLOAD: usize = 0xffff - 8;

/// The modulo of 33-bit PTS/DTS/PCR values.
const WRAP_33: i64 = 1 << 33;

/// H.264 access unit delimiter (primary_pic_type 7: any slice type), with start code.
const H264_AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];
/// HEVC access unit delimiter (pic_type 2: any slice type), with start code.
const HEVC_AUD: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];
/// H.264 `nal_unit_type` of an access unit delimiter.
const H264_NAL_AUD: u8 = 9;
/// HEVC `nal_unit_type` of an access unit delimiter.
const HEVC_NAL_AUD: u8 = 35;

/// The video track as the muxer needs it.
#[derive(Debug)]
struct VideoTrack {
    codec: VideoCodec,
    nal_length_size: u8,
    /// The parameter sets in Annex B form, written before every keyframe.
    parameter_sets: Bytes,
    cc: u8,
}

/// The audio track as the muxer needs it.
#[derive(Debug)]
struct AudioTrack {
    config: AudioConfig,
    cc: u8,
}

/// An MPEG-TS muxer for one track configuration. See the crate documentation.
#[derive(Debug)]
pub struct TsMuxer {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The PAT section (without CRC).
    pat: Vec<u8>,
    /// The PMT section (without CRC).
    pmt: Vec<u8>,
    pat_cc: u8,
    pmt_cc: u8,
    /// Reused for building each video access unit in Annex B form.
    scratch: BytesMut,
}

impl TsMuxer {
    /// A muxer for the given tracks (at least one). AV1 is [`TsError::Unsupported`].
    pub fn new(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Result<Self, TsError> {
        if video.is_none() && audio.is_none() {
            return Err(TsError::NoTracks);
        }
        let video = video.map(video_track).transpose()?;
        let audio = match audio {
            Some(config) => {
                // Fails now, rather than on every frame, if ADTS cannot describe it.
                adts::build_header(config, 0).map_err(|e| match e {
                    tidegate_media::codec::CodecError::Unsupported { what } => {
                        TsError::Unsupported { what }
                    }
                    other => TsError::Codec(other),
                })?;
                Some(AudioTrack {
                    config: config.clone(),
                    cc: 0,
                })
            }
            None => None,
        };
        let pcr_pid = if video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        let mut streams = Vec::new();
        if let Some(v) = &video {
            let stream_type = match v.codec {
                VideoCodec::H265 => STREAM_TYPE_HEVC,
                _ => STREAM_TYPE_H264,
            };
            streams.push((stream_type, VIDEO_PID));
        }
        if audio.is_some() {
            streams.push((STREAM_TYPE_AAC_ADTS, AUDIO_PID));
        }
        Ok(Self {
            video,
            audio,
            pat: pat_section(),
            pmt: pmt_section(pcr_pid, &streams),
            pat_cc: 0,
            pmt_cc: 0,
            scratch: BytesMut::new(),
        })
    }

    /// Muxes one segment from `runs` (at most one run per track; empty runs are ignored).
    pub fn segment(&mut self, runs: &[TrackRun<'_>]) -> Result<Bytes, TsError> {
        let mut video_frames: &[Frame] = &[];
        let mut audio_frames: &[Frame] = &[];
        let (mut video_seen, mut audio_seen) = (false, false);
        for run in runs {
            if run.frames.is_empty() {
                continue;
            }
            let (seen, configured, frames) = match run.track {
                TrackKind::Video => (&mut video_seen, self.video.is_some(), &mut video_frames),
                TrackKind::Audio => (&mut audio_seen, self.audio.is_some(), &mut audio_frames),
            };
            if !configured {
                return Err(TsError::UnconfiguredTrack(run.track));
            }
            if *seen {
                return Err(TsError::DuplicateTrack(run.track));
            }
            *seen = true;
            if !run.frames.is_sorted_by_key(|f| f.dts) {
                return Err(TsError::Timestamp {
                    what: "decode times going backwards",
                });
            }
            *frames = run.frames;
        }
        // Work on copies of the counters so a failed call changes nothing.
        let mut cc = Counters {
            pat: self.pat_cc,
            pmt: self.pmt_cc,
            video: self.video.as_ref().map_or(0, |v| v.cc),
            audio: self.audio.as_ref().map_or(0, |a| a.cc),
        };
        let mut out = BytesMut::with_capacity(estimate_len(video_frames, audio_frames));
        write_psi_packet(&mut out, PAT_PID, &mut cc.pat, &self.pat);
        write_psi_packet(&mut out, PMT_PID, &mut cc.pmt, &self.pmt);
        let pcr_on_video = self.video.is_some();
        let mut last_pcr: Option<i64> = None;
        // The frames not yet written.
        let (mut video_rest, mut audio_rest) = (video_frames, audio_frames);
        loop {
            let next_video = video_rest.first();
            let next_audio = audio_rest.first();
            let take_video = match (next_video, next_audio) {
                (Some(v), Some(a)) => v.dts <= a.dts,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_video {
                let Some((frame, after)) = video_rest.split_first() else {
                    break;
                };
                let Some(video) = self.video.as_ref() else {
                    break;
                };
                let pcr = pcr_due(&mut last_pcr, frame.dts, true)?;
                self.scratch.clear();
                annexb_access_unit(video, frame, &mut self.scratch)?;
                let pts = ts33(frame.pts)?;
                let dts = ts33(frame.dts)?;
                let (header, len) = pes_header(
                    VIDEO_STREAM_ID,
                    pts,
                    (pts != dts).then_some(dts),
                    usize::MAX,
                );
                let first = FirstPacket {
                    random_access: frame.keyframe,
                    pcr,
                };
                write_pes(
                    &mut out,
                    VIDEO_PID,
                    &mut cc.video,
                    header.as_slice().take(len),
                    &self.scratch,
                    first,
                );
                video_rest = after;
            } else {
                let Some(audio) = self.audio.as_ref() else {
                    break;
                };
                let (group, after) = audio_group(audio_rest, next_video.map(|v| v.dts));
                let Some(first_frame) = group.first() else {
                    break;
                };
                let dts = first_frame.dts;
                let pcr = if pcr_on_video {
                    if let Some(base) = pcr_due(&mut last_pcr, dts, false)? {
                        // No payload: the counter repeats the last value used on the PID.
                        write_pcr_packet(&mut out, VIDEO_PID, cc.video.wrapping_sub(1), base);
                    }
                    None
                } else {
                    pcr_due(&mut last_pcr, dts, true)?
                };
                self.scratch.clear();
                for frame in group {
                    let header = adts::build_header(&audio.config, frame.data.len())?;
                    self.scratch.put_slice(&header);
                    self.scratch.put_slice(&frame.data);
                }
                let (header, len) =
                    pes_header(AUDIO_STREAM_ID, ts33(dts)?, None, self.scratch.len());
                let first = FirstPacket {
                    random_access: !pcr_on_video,
                    pcr,
                };
                write_pes(
                    &mut out,
                    AUDIO_PID,
                    &mut cc.audio,
                    header.as_slice().take(len),
                    &self.scratch,
                    first,
                );
                audio_rest = after;
            }
        }
        self.pat_cc = cc.pat;
        self.pmt_cc = cc.pmt;
        if let Some(v) = self.video.as_mut() {
            v.cc = cc.video;
        }
        if let Some(a) = self.audio.as_mut() {
            a.cc = cc.audio;
        }
        Ok(out.freeze())
    }
}

/// Continuity counters while a segment is being written.
struct Counters {
    pat: u8,
    pmt: u8,
    video: u8,
    audio: u8,
}

fn video_track(config: &VideoConfig) -> Result<VideoTrack, TsError> {
    if config.codec == VideoCodec::Av1 {
        return Err(TsError::Unsupported {
            what: "AV1 video (AV1 over HLS needs fMP4)",
        });
    }
    if !(1..=4).contains(&config.nal_length_size) {
        return Err(TsError::Unsupported {
            what: "NAL length size other than 1 to 4 bytes",
        });
    }
    let mut sets = BytesMut::new();
    for nal in parameter_sets(config)? {
        sets.put_slice(&ANNEXB_START_CODE);
        sets.put_slice(&nal);
    }
    Ok(VideoTrack {
        codec: config.codec,
        nal_length_size: config.nal_length_size,
        parameter_sets: sets.freeze(),
        cc: 0,
    })
}

/// Appends `frame` in Annex B form: an AUD, the parameter sets on keyframes, then the
/// frame's NAL units (its own AUDs dropped, since ours must come first).
fn annexb_access_unit(
    video: &VideoTrack,
    frame: &Frame,
    out: &mut BytesMut,
) -> Result<(), TsError> {
    let hevc = video.codec == VideoCodec::H265;
    out.reserve(
        frame
            .data
            .len()
            .saturating_add(video.parameter_sets.len())
            .saturating_add(64),
    );
    if hevc {
        out.put_slice(&HEVC_AUD);
    } else {
        out.put_slice(&H264_AUD);
    }
    if frame.keyframe {
        out.put_slice(&video.parameter_sets);
    }
    for nal in length_prefixed_nals(&frame.data, video.nal_length_size) {
        let nal = nal?;
        let is_aud = if hevc {
            hevc_nal_type(nal) == Some(HEVC_NAL_AUD)
        } else {
            h264_nal_type(nal) == Some(H264_NAL_AUD)
        };
        if !is_aud {
            out.put_slice(&ANNEXB_START_CODE);
            out.put_slice(nal);
        }
    }
    Ok(())
}

/// The audio frames at the start of `frames` that share one PES: at most
/// [`MAX_AAC_FRAMES_PER_PES`], spanning less than [`MAX_AUDIO_PES_SPAN`], none at or after
/// the next video frame's `dts`, and fitting `PES_packet_length`; and the frames after them.
/// Never empty when `frames` is not.
fn audio_group(frames: &[Frame], next_video_dts: Option<i64>) -> (&[Frame], &[Frame]) {
    let Some(first) = frames.first() else {
        return (frames, &[]);
    };
    let mut bytes = 0usize;
    let mut count = 0usize;
    for frame in frames.iter().take(MAX_AAC_FRAMES_PER_PES) {
        let size = frame.data.len().saturating_add(adts::ADTS_HEADER_LEN);
        let fits = bytes.saturating_add(size) <= MAX_AUDIO_PES_PAYLOAD;
        let in_span = frame.dts.saturating_sub(first.dts) < MAX_AUDIO_PES_SPAN;
        let before_video = next_video_dts.is_none_or(|v| frame.dts < v);
        if count > 0 && !(fits && in_span && before_video) {
            break;
        }
        bytes = bytes.saturating_add(size);
        count += 1;
    }
    let split = frames.split_at_checked(count);
    debug_assert!(
        split.is_some(),
        "counted {count} of {} frames",
        frames.len()
    );
    split.unwrap_or((frames, &[]))
}

/// Decides whether a PCR goes before the PES at `dts`: always on the PCR PID's own PES
/// (`own_pid`), otherwise when [`PCR_INTERVAL`] has passed. Returns the PCR base to write.
fn pcr_due(last: &mut Option<i64>, dts: i64, own_pid: bool) -> Result<Option<u64>, TsError> {
    let due = own_pid || last.is_none_or(|l| dts.saturating_sub(l) >= PCR_INTERVAL);
    if !due {
        return Ok(None);
    }
    *last = Some(dts);
    let pcr = dts
        .checked_add(TIMESTAMP_OFFSET - PCR_DELAY)
        .ok_or(TsError::Timestamp {
            what: "PCR beyond 64 bits",
        })?;
    Ok(Some(pcr.rem_euclid(WRAP_33) as u64))
}

/// A 90 kHz frame time as a 33-bit PTS/DTS: plus [`TIMESTAMP_OFFSET`], modulo 2^33.
pub fn ts33(ticks: i64) -> Result<u64, TsError> {
    let t = ticks
        .checked_add(TIMESTAMP_OFFSET)
        .ok_or(TsError::Timestamp {
            what: "PTS beyond 64 bits",
        })?;
    Ok(t.rem_euclid(WRAP_33) as u64)
}

/// A generous estimate of a segment's size, so the output rarely reallocates.
fn estimate_len(video: &[Frame], audio: &[Frame]) -> usize {
    let payload = video.iter().chain(audio).fold(0usize, |acc, f| {
        acc.saturating_add(f.data.len()).saturating_add(64)
    });
    let packets = payload / 184 + video.len() + audio.len() + 4;
    packets
        .saturating_mul(packet::PACKET_LEN)
        .saturating_add(payload / 16)
}

/// The PAT section (no CRC): program [`PROGRAM_NUMBER`] at [`PMT_PID`].
fn pat_section() -> Vec<u8> {
    let mut s = Vec::with_capacity(12);
    s.push(0x00); // table_id: program_association_section
    s.extend_from_slice(&(0xb000u16 | 13).to_be_bytes()); // syntax 1, '0', reserved, length
    s.extend_from_slice(&TRANSPORT_STREAM_ID.to_be_bytes());
    s.push(0xc1); // reserved, version 0, current_next 1
    s.push(0); // section_number
    s.push(0); // last_section_number
    s.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
    s.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
    s
}

/// The PMT section (no CRC) for `streams` (`stream_type`, PID), PCR on `pcr_pid`.
fn pmt_section(pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
    // After section_length: 9 fixed bytes, 5 per stream, 4 CRC.
    let section_len = 9 + 5 * streams.len() as u16 + 4;
    let mut s = Vec::with_capacity(12 + 5 * streams.len());
    s.push(0x02); // table_id: TS_program_map_section
    s.extend_from_slice(&(0xb000 | section_len).to_be_bytes());
    s.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
    s.push(0xc1); // reserved, version 0, current_next 1
    s.push(0); // section_number
    s.push(0); // last_section_number
    s.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    s.extend_from_slice(&0xf000u16.to_be_bytes()); // program_info_length 0
    for &(stream_type, pid) in streams {
        s.push(stream_type);
        s.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        s.extend_from_slice(&0xf000u16.to_be_bytes()); // ES_info_length 0
    }
    s
}
