//! Shared with crates/mpegts/tests (included there by path).
//! Test-side media: ffmpeg lavfi sources encoded to an MP4, split back into tidegate frames
//! (length-prefixed video access units with 90 kHz timestamps from ffprobe, raw AAC frames
//! with RTMP-style millisecond timestamps), plus helpers to cut segments and run ffmpeg.
//! (Shared verbatim by the fmp4 and mpegts crates' tests.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{BufMut, Bytes, BytesMut};
use tidegate_media::codec::{
    avc_record_from_parameter_sets, hevc_record_from_parameter_sets, parse_avc_record,
    parse_hevc_record,
};
use tidegate_media::nal::{annexb_nals, h264_nal_type, hevc_nal_type};
use tidegate_media::{adts, AudioConfig, Frame, TrackKind, TrackRun, VideoCodec, VideoConfig};

/// Every timestamp is shifted by this (1 s) so B-frames' negative decode times stay >= 0.
pub const SHIFT: i64 = 90_000;

pub struct Media {
    pub video: VideoConfig,
    pub audio: AudioConfig,
    pub video_frames: Vec<Frame>,
    pub audio_frames: Vec<Frame>,
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidegate-mux-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("ffmpeg/ffprobe must be installed for this test");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Encodes ~6 s of testsrc2 + sine (2 s GOPs) with `codec` (H.264 or HEVC) and parses it.
pub fn generate(dir: &Path, codec: VideoCodec) -> Media {
    let src = dir.join("src.mp4");
    let (encoder, params): (&str, &[&str]) = match codec {
        VideoCodec::H264 => (
            "libx264",
            &[
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
                "-bf",
                "2",
            ],
        ),
        _ => (
            "libx265",
            &[
                "-x265-params",
                "keyint=60:min-keyint=60:scenecut=0:bframes=2:log-level=error",
            ],
        ),
    };
    run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "6", "-c:v", encoder, "-pix_fmt", "yuv420p"])
        .args(params)
        .args(["-c:a", "aac", "-ac", "2", "-b:a", "96k"])
        .args(["-video_track_timescale", "90000"])
        .arg(&src));
    let (bsf, format) = match codec {
        VideoCodec::H264 => ("h264_mp4toannexb,h264_metadata=aud=insert", "h264"),
        _ => ("hevc_mp4toannexb,hevc_metadata=aud=insert", "hevc"),
    };
    let es = dir.join("video.es");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&src)
        .args(["-map", "0:v", "-c", "copy", "-bsf:v", bsf, "-f", format])
        .arg(&es));
    let aac = dir.join("audio.aac");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&src)
        .args(["-map", "0:a", "-c", "copy", "-f", "adts"])
        .arg(&aac));
    let packets = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "packet=pts,dts,flags",
            "-of",
            "compact=p=0",
        ])
        .arg(&src));
    let timing: Vec<(i64, i64, bool)> = packets
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let field = |k: &str| {
                line.split('|')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .unwrap()
                    .to_string()
            };
            (
                field("pts").parse().unwrap(),
                field("dts").parse().unwrap(),
                field("flags").contains('K'),
            )
        })
        .collect();

    // Split the Annex B stream at AUDs; keep slices/SEI, collect parameter sets.
    let es = std::fs::read(&es).unwrap();
    let hevc = codec == VideoCodec::H265;
    let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
    let mut units: Vec<BytesMut> = Vec::new();
    for nal in annexb_nals(&es) {
        let (is_aud, list) = if hevc {
            match hevc_nal_type(nal) {
                Some(35) => (true, None),
                Some(32) => (false, Some(&mut vps)),
                Some(33) => (false, Some(&mut sps)),
                Some(34) => (false, Some(&mut pps)),
                _ => (false, None),
            }
        } else {
            match h264_nal_type(nal) {
                Some(9) => (true, None),
                Some(7) => (false, Some(&mut sps)),
                Some(8) => (false, Some(&mut pps)),
                _ => (false, None),
            }
        };
        if is_aud {
            units.push(BytesMut::new());
        } else if let Some(list) = list {
            let nal = Bytes::copy_from_slice(nal);
            if !list.contains(&nal) {
                list.push(nal);
            }
        } else {
            let unit = units.last_mut().expect("stream starts with an AUD");
            unit.put_u32(nal.len() as u32);
            unit.put_slice(nal);
        }
    }
    assert_eq!(units.len(), timing.len(), "access units vs ffprobe packets");
    let video = if hevc {
        parse_hevc_record(hevc_record_from_parameter_sets(&vps, &sps, &pps).unwrap()).unwrap()
    } else {
        parse_avc_record(avc_record_from_parameter_sets(&sps, &pps).unwrap()).unwrap()
    };
    let video_frames = units
        .into_iter()
        .zip(&timing)
        .map(|(data, &(pts, dts, keyframe))| Frame {
            track: TrackKind::Video,
            dts: dts + SHIFT,
            pts: pts + SHIFT,
            keyframe,
            data: data.freeze(),
        })
        .collect();

    // ADTS frames -> raw AAC with RTMP-style millisecond timestamps.
    let aac = std::fs::read(&aac).unwrap();
    let mut audio = None;
    let mut audio_frames = Vec::new();
    let mut rest = &aac[..];
    let mut k = 0u64;
    while !rest.is_empty() {
        let h = adts::parse_header(rest).unwrap();
        let config = h.audio_config().unwrap();
        let rate = u64::from(config.sample_rate);
        let ms = (k * 1024 * 1000 + rate / 2) / rate;
        let dts = ms as i64 * 90 + SHIFT;
        audio_frames.push(Frame {
            track: TrackKind::Audio,
            dts,
            pts: dts,
            keyframe: true,
            data: Bytes::copy_from_slice(&rest[h.header_len..h.frame_len]),
        });
        audio.get_or_insert(config);
        rest = &rest[h.frame_len..];
        k += 1;
    }
    Media {
        video,
        audio: audio.unwrap(),
        video_frames,
        audio_frames,
    }
}

/// One segment's frames per track with their end times.
pub struct Cut {
    pub video: (usize, usize, i64),
    pub audio: (usize, usize, i64),
}

impl Cut {
    pub fn runs<'a>(&self, m: &'a Media) -> [TrackRun<'a>; 2] {
        [
            TrackRun {
                track: TrackKind::Video,
                frames: &m.video_frames[self.video.0..self.video.1],
                end_dts: self.video.2,
            },
            TrackRun {
                track: TrackKind::Audio,
                frames: &m.audio_frames[self.audio.0..self.audio.1],
                end_dts: self.audio.2,
            },
        ]
    }
}

/// Cuts at every keyframe (2 s GOPs: 3 segments); audio follows the video cut times.
pub fn cut(m: &Media) -> Vec<Cut> {
    let keys: Vec<usize> = (0..m.video_frames.len())
        .filter(|&i| m.video_frames[i].keyframe)
        .collect();
    assert_eq!(keys.len(), 3, "expected three 2 s GOPs");
    let vn = m.video_frames.len();
    let an = m.audio_frames.len();
    let video_end = m.video_frames[vn - 1].dts + 3000;
    let audio_end = m.audio_frames[an - 1].dts + 1920;
    let mut cuts = Vec::new();
    let mut audio_start = 0;
    for (i, &start) in keys.iter().enumerate() {
        let (stop, end) = match keys.get(i + 1) {
            Some(&next) => (next, m.video_frames[next].dts),
            None => (vn, video_end),
        };
        let audio_stop = if i + 1 == keys.len() {
            an
        } else {
            m.audio_frames.iter().position(|f| f.dts >= end).unwrap()
        };
        let audio_end_dts = m.audio_frames.get(audio_stop).map_or(audio_end, |f| f.dts);
        cuts.push(Cut {
            video: (start, stop, end),
            audio: (audio_start, audio_stop, audio_end_dts),
        });
        audio_start = audio_stop;
    }
    cuts
}

/// Writes a VOD media playlist for `segments` (with an `EXT-X-MAP` when `map` is given).
pub fn write_playlist(dir: &Path, map: Option<&str>, segments: &[(String, f64)]) -> PathBuf {
    let mut text = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    if let Some(map) = map {
        text.push_str(&format!("#EXT-X-MAP:URI=\"{map}\"\n"));
    }
    for (name, duration) in segments {
        text.push_str(&format!("#EXTINF:{duration:.3},\n{name}\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    let path = dir.join("playlist.m3u8");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ffmpeg -v error -i input -f null -` must print nothing.
pub fn assert_decodes_cleanly(input: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "decoding {input:?} reported: {stderr}"
    );
}

/// ffprobe's stream entries, one map per stream.
pub fn probe_streams(input: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,sample_rate,channels,nb_read_frames",
            "-of",
            "compact=p=0",
        ])
        .arg(input));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.split('|')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The longest stream duration ffprobe reports.
pub fn probe_duration(input: &Path) -> f64 {
    run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(input))
    .lines()
    .filter_map(|l| l.trim().parse::<f64>().ok())
    .fold(0.0, f64::max)
}

/// The video packets' (pts, dts) as ffprobe reads them, in file order.
pub fn probe_video_timestamps(input: &Path) -> Vec<(i64, i64)> {
    run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
        .arg(input))
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let mut fields = l.split(',');
        let mut next = || fields.next().unwrap().trim().parse().unwrap();
        (next(), next())
    })
    .collect()
}

/// Checks the probe of a muxed H.264/HEVC + AAC stream.
pub fn assert_streams(input: &Path, codec_name: &str, m: &Media) {
    let streams = probe_streams(input);
    let video = streams
        .iter()
        .find(|s| s.get("codec_name").map(String::as_str) == Some(codec_name))
        .unwrap_or_else(|| panic!("no {codec_name} stream in {streams:?}"));
    assert_eq!(video["width"], "320");
    assert_eq!(video["height"], "240");
    assert_eq!(video["nb_read_frames"], m.video_frames.len().to_string());
    let audio = streams
        .iter()
        .find(|s| s.get("codec_name").map(String::as_str) == Some("aac"))
        .unwrap_or_else(|| panic!("no aac stream in {streams:?}"));
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], "2");
    assert_eq!(audio["nb_read_frames"], m.audio_frames.len().to_string());
}
