//! The CMAF header (init segment): `ftyp` + `moov`.

use bytes::{BufMut, Bytes};
use tidegate_media::{AudioConfig, VideoCodec, VideoConfig, TIMESCALE};

use crate::writer::BoxWriter;
use crate::{Fmp4Error, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

/// `ftyp` brands: major `iso6`, then the compatible brands.
const FTYP_MAJOR: &[u8; 4] = b"iso6";
const FTYP_COMPATIBLE: [&[u8; 4]; 4] = [b"iso6", b"cmfc", b"isom", b"mp41"];

/// Movie timescale (`mvhd`); nothing is timed in it since every duration is 0.
const MOVIE_TIMESCALE: u32 = 1000;

/// Longest configuration record or AudioSpecificConfig written into a sample entry. Real
/// records are well under a kilobyte; the cap keeps descriptor lengths trivially in range.
pub const MAX_RECORD_LEN: usize = 64 * 1024;

/// The unity transformation matrix of `mvhd`/`tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// ISO-639-2/T `und` packed as in `mdhd`.
const LANGUAGE_UND: u16 = 0x55c4;

/// MPEG-4 descriptor tags used by `esds`.
const ES_DESCRIPTOR_TAG: u8 = 0x03;
const DECODER_CONFIG_DESCRIPTOR_TAG: u8 = 0x04;
const DECODER_SPECIFIC_INFO_TAG: u8 = 0x05;
const SL_CONFIG_DESCRIPTOR_TAG: u8 = 0x06;
/// `objectTypeIndication` for MPEG-4 Audio.
const OBJECT_TYPE_MPEG4_AUDIO: u8 = 0x40;
/// `streamType` 5 (audio) << 2 | upStream 0 | reserved 1.
const STREAM_TYPE_AUDIO: u8 = 0x15;

/// See [`crate::init_segment`].
pub(crate) fn init_segment(
    video: Option<&VideoConfig>,
    audio: Option<&AudioConfig>,
) -> Result<Bytes, Fmp4Error> {
    if video.is_none() && audio.is_none() {
        return Err(Fmp4Error::NoTracks);
    }
    for len in [
        video.map_or(0, |v| v.record.len()),
        audio.map_or(0, |a| a.asc.len()),
    ] {
        if len > MAX_RECORD_LEN {
            return Err(Fmp4Error::LimitExceeded {
                what: "configuration record",
                limit: MAX_RECORD_LEN as u64,
            });
        }
    }
    let mut w = BoxWriter::with_capacity(1024 + video.map_or(0, |v| v.record.len()));
    ftyp(&mut w)?;
    let moov = w.open(b"moov");
    mvhd(&mut w)?;
    if let Some(v) = video {
        video_trak(&mut w, v)?;
    }
    if let Some(a) = audio {
        audio_trak(&mut w, a)?;
    }
    let mvex = w.open(b"mvex");
    for (present, id) in [
        (video.is_some(), VIDEO_TRACK_ID),
        (audio.is_some(), AUDIO_TRACK_ID),
    ] {
        if present {
            trex(&mut w, id)?;
        }
    }
    w.close(mvex)?;
    w.close(moov)?;
    Ok(w.buf.freeze())
}

pub(crate) fn ftyp(w: &mut BoxWriter) -> Result<(), Fmp4Error> {
    let b = w.open(b"ftyp");
    w.buf.put_slice(FTYP_MAJOR);
    w.buf.put_u32(0);
    for brand in FTYP_COMPATIBLE {
        w.buf.put_slice(brand);
    }
    w.close(b)
}

fn put_matrix(w: &mut BoxWriter) {
    for v in MATRIX {
        w.buf.put_u32(v);
    }
}

fn mvhd(w: &mut BoxWriter) -> Result<(), Fmp4Error> {
    let b = w.open_full(b"mvhd", 0, 0);
    w.buf.put_u32(0); // creation_time
    w.buf.put_u32(0); // modification_time
    w.buf.put_u32(MOVIE_TIMESCALE);
    w.buf.put_u32(0); // duration (fragmented: unknown)
    w.buf.put_u32(0x0001_0000); // rate 1.0
    w.buf.put_u16(0x0100); // volume 1.0
    w.buf.put_bytes(0, 10); // reserved
    put_matrix(w);
    w.buf.put_bytes(0, 24); // pre_defined
    w.buf.put_u32(AUDIO_TRACK_ID + 1); // next_track_ID
    w.close(b)
}

/// `tkhd` flags: track_enabled | track_in_movie.
const TKHD_FLAGS: u32 = 0x000003;

fn tkhd(
    w: &mut BoxWriter,
    track_id: u32,
    audio: bool,
    width: u32,
    height: u32,
) -> Result<(), Fmp4Error> {
    let b = w.open_full(b"tkhd", 0, TKHD_FLAGS);
    w.buf.put_u32(0); // creation_time
    w.buf.put_u32(0); // modification_time
    w.buf.put_u32(track_id);
    w.buf.put_u32(0); // reserved
    w.buf.put_u32(0); // duration
    w.buf.put_bytes(0, 8); // reserved
    w.buf.put_u16(0); // layer
    w.buf.put_u16(0); // alternate_group
    w.buf.put_u16(if audio { 0x0100 } else { 0 }); // volume
    w.buf.put_u16(0); // reserved
    put_matrix(w);
    w.buf.put_u32(width << 16); // 16.16 fixed point
    w.buf.put_u32(height << 16);
    w.close(b)
}

fn mdhd_hdlr(
    w: &mut BoxWriter,
    timescale: u32,
    handler: &[u8; 4],
    name: &[u8],
) -> Result<(), Fmp4Error> {
    let b = w.open_full(b"mdhd", 0, 0);
    w.buf.put_u32(0); // creation_time
    w.buf.put_u32(0); // modification_time
    w.buf.put_u32(timescale);
    w.buf.put_u32(0); // duration
    w.buf.put_u16(LANGUAGE_UND);
    w.buf.put_u16(0); // pre_defined
    w.close(b)?;
    let b = w.open_full(b"hdlr", 0, 0);
    w.buf.put_u32(0); // pre_defined
    w.buf.put_slice(handler);
    w.buf.put_bytes(0, 12); // reserved
    w.buf.put_slice(name);
    w.buf.put_u8(0); // NUL terminator
    w.close(b)
}

fn dinf(w: &mut BoxWriter) -> Result<(), Fmp4Error> {
    let dinf = w.open(b"dinf");
    let dref = w.open_full(b"dref", 0, 0);
    w.buf.put_u32(1); // entry_count
    w.full_leaf(b"url ", 0, 1, &[])?; // flags 1: media in this file
    w.close(dref)?;
    w.close(dinf)
}

/// The empty sample tables of a fragmented file, around the sample entry `entry` writes.
fn stbl(
    w: &mut BoxWriter,
    entry: impl FnOnce(&mut BoxWriter) -> Result<(), Fmp4Error>,
) -> Result<(), Fmp4Error> {
    let stbl = w.open(b"stbl");
    let stsd = w.open_full(b"stsd", 0, 0);
    w.buf.put_u32(1); // entry_count
    entry(w)?;
    w.close(stsd)?;
    w.full_leaf(b"stts", 0, 0, &0u32.to_be_bytes())?;
    w.full_leaf(b"stsc", 0, 0, &0u32.to_be_bytes())?;
    w.full_leaf(b"stsz", 0, 0, &[0; 8])?; // sample_size 0, sample_count 0
    w.full_leaf(b"stco", 0, 0, &0u32.to_be_bytes())?;
    w.close(stbl)
}

fn video_trak(w: &mut BoxWriter, v: &VideoConfig) -> Result<(), Fmp4Error> {
    let width = u16::try_from(v.width).map_err(|_| Fmp4Error::Config {
        what: "video width",
    })?;
    let height = u16::try_from(v.height).map_err(|_| Fmp4Error::Config {
        what: "video height",
    })?;
    let (entry_type, record_type): (&[u8; 4], &[u8; 4]) = match v.codec {
        VideoCodec::H264 => (b"avc1", b"avcC"),
        VideoCodec::H265 => (b"hvc1", b"hvcC"),
        VideoCodec::Av1 => (b"av01", b"av1C"),
    };
    let trak = w.open(b"trak");
    tkhd(w, VIDEO_TRACK_ID, false, v.width, v.height)?;
    let mdia = w.open(b"mdia");
    mdhd_hdlr(w, TIMESCALE, b"vide", b"VideoHandler")?;
    let minf = w.open(b"minf");
    w.full_leaf(b"vmhd", 0, 1, &[0; 8])?; // graphicsmode 0, opcolor 0
    dinf(w)?;
    stbl(w, |w| {
        let e = w.open(entry_type);
        w.buf.put_bytes(0, 6); // reserved
        w.buf.put_u16(1); // data_reference_index
        w.buf.put_bytes(0, 16); // pre_defined, reserved, pre_defined[3]
        w.buf.put_u16(width);
        w.buf.put_u16(height);
        w.buf.put_u32(0x0048_0000); // horizresolution 72 dpi
        w.buf.put_u32(0x0048_0000); // vertresolution 72 dpi
        w.buf.put_u32(0); // reserved
        w.buf.put_u16(1); // frame_count
        w.buf.put_bytes(0, 32); // compressorname
        w.buf.put_u16(0x0018); // depth
        w.buf.put_u16(0xffff); // pre_defined = -1
        w.leaf(record_type, &v.record)?;
        w.close(e)
    })?;
    w.close(minf)?;
    w.close(mdia)?;
    w.close(trak)
}

fn audio_trak(w: &mut BoxWriter, a: &AudioConfig) -> Result<(), Fmp4Error> {
    if a.sample_rate == 0 {
        return Err(Fmp4Error::Config {
            what: "audio sample rate",
        });
    }
    let trak = w.open(b"trak");
    tkhd(w, AUDIO_TRACK_ID, true, 0, 0)?;
    let mdia = w.open(b"mdia");
    mdhd_hdlr(w, a.sample_rate, b"soun", b"SoundHandler")?;
    let minf = w.open(b"minf");
    w.full_leaf(b"smhd", 0, 0, &[0; 4])?; // balance 0, reserved
    dinf(w)?;
    stbl(w, |w| {
        let e = w.open(b"mp4a");
        w.buf.put_bytes(0, 6); // reserved
        w.buf.put_u16(1); // data_reference_index
        w.buf.put_bytes(0, 8); // reserved
        w.buf.put_u16(u16::from(a.channels));
        w.buf.put_u16(16); // samplesize
        w.buf.put_u32(0); // pre_defined, reserved
                          // 16.16 fixed point; rates above 65535 Hz do not fit and are written as 0 (the
                          // timescale in `mdhd` is authoritative).
        w.buf.put_u32(if a.sample_rate <= 0xffff {
            a.sample_rate << 16
        } else {
            0
        });
        esds(w, &a.asc)?;
        w.close(e)
    })?;
    w.close(minf)?;
    w.close(mdia)?;
    w.close(trak)
}

/// Writes an MPEG-4 descriptor header: tag and the length in the shortest 7-bit-per-byte
/// form (at most 4 bytes, so at most 2^28 - 1).
fn descriptor_header(w: &mut BoxWriter, tag: u8, len: usize) {
    w.buf.put_u8(tag);
    let mut started = false;
    for shift in [21u32, 14, 7] {
        let group = ((len >> shift) & 0x7f) as u8;
        if started || group != 0 {
            started = true;
            w.buf.put_u8(0x80 | group);
        }
    }
    w.buf.put_u8((len & 0x7f) as u8);
}

/// Bytes a descriptor header takes for a body of `len` bytes.
fn descriptor_header_len(len: usize) -> usize {
    match len {
        0..=0x7f => 2,
        0x80..=0x3fff => 3,
        0x4000..=0x1f_ffff => 4,
        _ => 5,
    }
}

/// `esds`: ES_Descriptor { DecoderConfigDescriptor { DecoderSpecificInfo(asc) },
/// SLConfigDescriptor(predefined 2) }.
pub(crate) fn esds(w: &mut BoxWriter, asc: &[u8]) -> Result<(), Fmp4Error> {
    let dsi_len = asc.len();
    let dcd_len = 13 + descriptor_header_len(dsi_len) + dsi_len;
    let es_len = 3 + descriptor_header_len(dcd_len) + dcd_len + 3;
    let b = w.open_full(b"esds", 0, 0);
    descriptor_header(w, ES_DESCRIPTOR_TAG, es_len);
    w.buf.put_u16(0); // ES_ID (0 inside an MP4 file)
    w.buf.put_u8(0); // no stream dependence, URL or OCR stream; priority 0
    descriptor_header(w, DECODER_CONFIG_DESCRIPTOR_TAG, dcd_len);
    w.buf.put_u8(OBJECT_TYPE_MPEG4_AUDIO);
    w.buf.put_u8(STREAM_TYPE_AUDIO);
    w.buf.put_slice(&[0, 0, 0]); // bufferSizeDB unknown
    w.buf.put_u32(0); // maxBitrate unknown
    w.buf.put_u32(0); // avgBitrate unknown (variable)
    descriptor_header(w, DECODER_SPECIFIC_INFO_TAG, dsi_len);
    w.buf.put_slice(asc);
    descriptor_header(w, SL_CONFIG_DESCRIPTOR_TAG, 1);
    w.buf.put_u8(2); // predefined: reserved for MP4 files
    w.close(b)
}

fn trex(w: &mut BoxWriter, track_id: u32) -> Result<(), Fmp4Error> {
    let b = w.open_full(b"trex", 0, 0);
    w.buf.put_u32(track_id);
    w.buf.put_u32(1); // default_sample_description_index
    w.buf.put_u32(0); // default_sample_duration
    w.buf.put_u32(0); // default_sample_size
    w.buf.put_u32(0); // default_sample_flags
    w.close(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn esds_for_aac_lc_48k_stereo() {
        let mut w = BoxWriter::with_capacity(64);
        esds(&mut w, &[0x11, 0x90]).unwrap();
        let expected = hex("00000027 65736473 00000000
             03 19 0000 00
             04 11 40 15 000000 00000000 00000000
             05 02 1190
             06 01 02");
        assert_eq!(w.buf.as_ref(), expected.as_slice());
    }

    #[test]
    fn descriptor_lengths_use_the_shortest_form() {
        for (len, encoded) in [
            (0usize, "0500"),
            (0x7f, "057f"),
            (0x80, "058100"),
            (0x3fff, "05ff7f"),
            (0x4000, "05818000"),
            (0x20_0000, "0581808000"),
        ] {
            let mut w = BoxWriter::with_capacity(8);
            descriptor_header(&mut w, 5, len);
            assert_eq!(w.buf.as_ref(), hex(encoded).as_slice(), "length {len:#x}");
            assert_eq!(descriptor_header_len(len), w.buf.len());
        }
    }

    #[test]
    fn ftyp_vector() {
        let mut w = BoxWriter::with_capacity(32);
        ftyp(&mut w).unwrap();
        let expected =
            hex("00000020 66747970 69736f36 00000000 69736f36 636d6663 69736f6d 6d703431");
        assert_eq!(w.buf.as_ref(), expected.as_slice());
    }
}
