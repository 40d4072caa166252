//! Stateless parsing of FLV audio/video tag bodies (legacy FLV and Enhanced RTMP v1/v2) into
//! [`VideoTag`] / [`AudioTag`]. Payloads are slices of the input [`Bytes`], never copies.

use bytes::Bytes;
use tidegate_media::VideoCodec;

use crate::FlvError;

/// ModEx entries accepted before the real packet type. The spec defines one (nanosecond
/// timestamp offset); the bound stops a tag made of nothing but modifiers.
pub const MAX_MOD_EX_ENTRIES: usize = 8;

/// Tracks examined in one multitrack message before giving up on finding the default one.
pub const MAX_MULTITRACK_TRACKS: usize = 256;

/// The default track of an Enhanced RTMP multitrack message; the only one tidegate ingests.
pub const DEFAULT_TRACK_ID: u8 = 0;

/// Enhanced RTMP (and legacy) video frame type for a key frame.
const FRAME_TYPE_KEY: u8 = 1;
/// Video frame type for a "video info / command frame" carrying no picture.
const FRAME_TYPE_COMMAND: u8 = 5;

/// Legacy FLV video codec id for AVC.
const CODEC_ID_AVC: u8 = 7;
/// Legacy FLV video codec id some encoders use for HEVC (the "Chinese FLV" extension).
const CODEC_ID_HEVC: u8 = 12;

/// Legacy FLV sound format for AAC.
const SOUND_FORMAT_AAC: u8 = 10;
/// Enhanced RTMP: the sound format value meaning "ExHeader follows".
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// Enhanced RTMP packet types (video; audio shares 0, 1, 2, 4 = MultichannelConfig, 5 =
/// Multitrack, 7 = ModEx).
mod packet_type {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    pub const CODED_FRAMES_X: u8 = 3;
    pub const METADATA: u8 = 4;
    pub const MPEG2TS_SEQUENCE_START: u8 = 5;
    pub const VIDEO_MULTITRACK: u8 = 6;
    pub const MOD_EX: u8 = 7;
    pub const AUDIO_MULTICHANNEL_CONFIG: u8 = 4;
    pub const AUDIO_MULTITRACK: u8 = 5;
}

/// Enhanced RTMP multitrack types.
mod multitrack_type {
    pub const ONE_TRACK: u8 = 0;
    // 1 = ManyTracks: one FourCC, per-track sizes (the generic path below).
    pub const MANY_TRACKS_MANY_CODECS: u8 = 2;
}

/// Why a well-formed tag carries nothing for the packager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A video info/command frame (frame type 5).
    Command,
    /// An Enhanced RTMP metadata packet (e.g. `colorInfo`).
    Metadata,
    /// End of sequence.
    SequenceEnd,
    /// An MPEG-2 TS sequence start (AV1 descriptor); the av1C sequence start is used.
    Mpeg2TsSequenceStart,
    /// An audio multichannel configuration (AAC carries its own in the ASC).
    MultichannelConfig,
    /// Only non-default tracks of a multitrack message.
    NonDefaultTrack,
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// A decoder configuration record (avcC, hvcC or av1C body).
    SequenceStart {
        /// The codec.
        codec: VideoCodec,
        /// The record.
        record: Bytes,
    },
    /// One coded picture.
    Frame {
        /// The codec.
        codec: VideoCodec,
        /// Frame type 1 (key frame).
        keyframe: bool,
        /// Composition time offset in milliseconds (0 where the format has none).
        composition_time_ms: i32,
        /// Length-prefixed NAL units (H.264/HEVC) or OBUs (AV1), as sent.
        data: Bytes,
    },
    /// Nothing for the packager.
    Ignored(Ignored),
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// An AAC AudioSpecificConfig.
    SequenceStart {
        /// The ASC bytes.
        asc: Bytes,
    },
    /// One raw AAC access unit.
    Frame {
        /// The payload.
        data: Bytes,
    },
    /// Nothing for the packager.
    Ignored(Ignored),
}

/// A cursor over a tag body handing out zero-copy slices.
struct Reader {
    data: Bytes,
    pos: usize,
    what: &'static str,
}

impl Reader {
    fn new(data: Bytes, what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    fn truncated(&self) -> FlvError {
        FlvError::Truncated { what: self.what }
    }

    fn take(&mut self, n: usize) -> Result<Bytes, FlvError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        if end > self.data.len() {
            return Err(self.truncated());
        }
        let out = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FlvError> {
        let b = *self.data.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u32, FlvError> {
        let bytes = self.take(n)?;
        Ok(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    }

    fn si24(&mut self) -> Result<i32, FlvError> {
        let v = self.be(3)?;
        // Sign-extend 24 bits.
        Ok(((v << 8) as i32) >> 8)
    }

    fn fourcc(&mut self) -> Result<[u8; 4], FlvError> {
        let b = self.take(4)?;
        let mut out = [0u8; 4];
        out.copy_from_slice(&b);
        Ok(out)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn rest(&mut self) -> Bytes {
        let out = self.data.slice(self.pos.min(self.data.len())..);
        self.pos = self.data.len();
        out
    }
}

/// Skips ModEx entries while `packet_type` is ModEx; returns the real packet type.
fn skip_mod_ex(r: &mut Reader, mut packet: u8) -> Result<u8, FlvError> {
    let mut entries = 0usize;
    while packet == packet_type::MOD_EX {
        entries += 1;
        if entries > MAX_MOD_EX_ENTRIES {
            return Err(FlvError::Malformed {
                what: r.what,
                reason: "too many ModEx entries",
            });
        }
        let mut size = usize::from(r.u8()?) + 1;
        if size == 256 {
            size = r.be(2)? as usize + 1;
        }
        r.take(size)?;
        // modExType (high nibble, ignored) | next packet type.
        packet = r.u8()? & 0x0f;
    }
    Ok(packet)
}

/// The body of the selected track of an Enhanced RTMP message.
struct ExBody {
    packet: u8,
    fourcc: [u8; 4],
    body: Bytes,
}

/// The body of an enhanced tag of packet type `packet`: the default track's when `packet` is
/// `multitrack` (`None` when that track is not in the tag), else the FourCC and the rest.
fn ex_body(r: &mut Reader, packet: u8, multitrack: u8) -> Result<Option<ExBody>, FlvError> {
    if packet == multitrack {
        return default_track(r, multitrack);
    }
    let fourcc = r.fourcc()?;
    Ok(Some(ExBody {
        packet,
        fourcc,
        body: r.rest(),
    }))
}

/// Reads a multitrack header and returns the default track's body, if present.
fn default_track(r: &mut Reader, multitrack: u8) -> Result<Option<ExBody>, FlvError> {
    let b = r.u8()?;
    let mt_type = b >> 4;
    let packet = b & 0x0f;
    if packet == multitrack || packet == packet_type::MOD_EX {
        return Err(FlvError::Malformed {
            what: r.what,
            reason: "nested multitrack/ModEx packet type",
        });
    }
    if mt_type > multitrack_type::MANY_TRACKS_MANY_CODECS {
        return Err(FlvError::Malformed {
            what: r.what,
            reason: "reserved multitrack type",
        });
    }
    let shared_fourcc = if mt_type == multitrack_type::MANY_TRACKS_MANY_CODECS {
        None
    } else {
        Some(r.fourcc()?)
    };
    for _ in 0..MAX_MULTITRACK_TRACKS {
        if r.is_empty() {
            return Ok(None);
        }
        let fourcc = match shared_fourcc {
            Some(f) => f,
            None => r.fourcc()?,
        };
        let track_id = r.u8()?;
        let body = if mt_type == multitrack_type::ONE_TRACK {
            r.rest()
        } else {
            let size = r.be(3)? as usize;
            r.take(size)?
        };
        if track_id == DEFAULT_TRACK_ID {
            return Ok(Some(ExBody {
                packet,
                fourcc,
                body,
            }));
        }
        if mt_type == multitrack_type::ONE_TRACK {
            return Ok(None);
        }
    }
    Ok(None)
}

fn fourcc_name(f: [u8; 4]) -> String {
    f.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Parses a video tag body (the payload of an RTMP Video message).
pub fn parse_video_tag(data: Bytes) -> Result<VideoTag, FlvError> {
    let mut r = Reader::new(data, "FLV video tag");
    let b0 = r.u8()?;
    if b0 & 0x80 != 0 {
        return parse_ex_video(&mut r, b0);
    }
    let frame_type = b0 >> 4;
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoTag::Ignored(Ignored::Command));
    }
    let codec = match b0 & 0x0f {
        CODEC_ID_AVC => VideoCodec::H264,
        CODEC_ID_HEVC => VideoCodec::H265,
        other => {
            return Err(FlvError::UnsupportedCodec(format!(
                "FLV video codec id {other}"
            )))
        }
    };
    let packet = r.u8()?;
    let composition_time_ms = r.si24()?;
    match packet {
        0 => Ok(VideoTag::SequenceStart {
            codec,
            record: r.rest(),
        }),
        1 => Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == FRAME_TYPE_KEY,
            composition_time_ms,
            data: r.rest(),
        }),
        2 => Ok(VideoTag::Ignored(Ignored::SequenceEnd)),
        _ => Err(FlvError::Malformed {
            what: "FLV video tag",
            reason: "reserved AVCPacketType",
        }),
    }
}

fn parse_ex_video(r: &mut Reader, b0: u8) -> Result<VideoTag, FlvError> {
    let frame_type = (b0 >> 4) & 0x07;
    let packet = skip_mod_ex(r, b0 & 0x0f)?;
    if frame_type == FRAME_TYPE_COMMAND {
        // Command frames (and metadata, which uses this frame type) carry no picture.
        return Ok(VideoTag::Ignored(if packet == packet_type::METADATA {
            Ignored::Metadata
        } else {
            Ignored::Command
        }));
    }
    if packet == packet_type::METADATA {
        return Ok(VideoTag::Ignored(Ignored::Metadata));
    }
    let Some(ex) = ex_body(r, packet, packet_type::VIDEO_MULTITRACK)? else {
        return Ok(VideoTag::Ignored(Ignored::NonDefaultTrack));
    };
    let codec = match &ex.fourcc {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::H265,
        b"av01" => VideoCodec::Av1,
        other => {
            return Err(FlvError::UnsupportedCodec(format!(
                "video FourCC {}",
                fourcc_name(*other)
            )))
        }
    };
    let mut body = Reader::new(ex.body, "Enhanced RTMP video body");
    let keyframe = frame_type == FRAME_TYPE_KEY;
    match ex.packet {
        packet_type::SEQUENCE_START => Ok(VideoTag::SequenceStart {
            codec,
            record: body.rest(),
        }),
        packet_type::CODED_FRAMES => {
            let composition_time_ms = if codec == VideoCodec::Av1 {
                0
            } else {
                body.si24()?
            };
            Ok(VideoTag::Frame {
                codec,
                keyframe,
                composition_time_ms,
                data: body.rest(),
            })
        }
        packet_type::CODED_FRAMES_X => Ok(VideoTag::Frame {
            codec,
            keyframe,
            composition_time_ms: 0,
            data: body.rest(),
        }),
        packet_type::SEQUENCE_END => Ok(VideoTag::Ignored(Ignored::SequenceEnd)),
        packet_type::MPEG2TS_SEQUENCE_START => Ok(VideoTag::Ignored(Ignored::Mpeg2TsSequenceStart)),
        packet_type::METADATA => Ok(VideoTag::Ignored(Ignored::Metadata)),
        _ => Err(FlvError::Malformed {
            what: "Enhanced RTMP video tag",
            reason: "reserved VideoPacketType",
        }),
    }
}

/// Parses an audio tag body (the payload of an RTMP Audio message).
pub fn parse_audio_tag(data: Bytes) -> Result<AudioTag, FlvError> {
    let mut r = Reader::new(data, "FLV audio tag");
    let b0 = r.u8()?;
    let sound_format = b0 >> 4;
    if sound_format == SOUND_FORMAT_EX_HEADER {
        return parse_ex_audio(&mut r, b0 & 0x0f);
    }
    if sound_format != SOUND_FORMAT_AAC {
        return Err(FlvError::UnsupportedCodec(format!(
            "FLV sound format {sound_format}"
        )));
    }
    match r.u8()? {
        0 => Ok(AudioTag::SequenceStart { asc: r.rest() }),
        1 => Ok(AudioTag::Frame { data: r.rest() }),
        _ => Err(FlvError::Malformed {
            what: "FLV audio tag",
            reason: "reserved AACPacketType",
        }),
    }
}

fn parse_ex_audio(r: &mut Reader, packet: u8) -> Result<AudioTag, FlvError> {
    let packet = skip_mod_ex(r, packet)?;
    let Some(ex) = ex_body(r, packet, packet_type::AUDIO_MULTITRACK)? else {
        return Ok(AudioTag::Ignored(Ignored::NonDefaultTrack));
    };
    if &ex.fourcc != b"mp4a" {
        return Err(FlvError::UnsupportedCodec(format!(
            "audio FourCC {}",
            fourcc_name(ex.fourcc)
        )));
    }
    match ex.packet {
        packet_type::SEQUENCE_START => Ok(AudioTag::SequenceStart { asc: ex.body }),
        packet_type::CODED_FRAMES => Ok(AudioTag::Frame { data: ex.body }),
        packet_type::SEQUENCE_END => Ok(AudioTag::Ignored(Ignored::SequenceEnd)),
        packet_type::AUDIO_MULTICHANNEL_CONFIG => {
            Ok(AudioTag::Ignored(Ignored::MultichannelConfig))
        }
        _ => Err(FlvError::Malformed {
            what: "Enhanced RTMP audio tag",
            reason: "reserved AudioPacketType",
        }),
    }
}
