//! The test media publishers send (`-re -c copy`, so that publishing costs no encoding),
//! generated once per target directory with ffmpeg's lavfi sources.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::target_dir;
use crate::tools::{ffmpeg, ffmpeg9, run_ok, tool_missing};

/// Length of the generated H.264/AAC test files; longer publishes loop them.
pub const MEDIA_SECS: u32 = 30;

/// Length of the generated HEVC/AV1 test files (encoding them is slow).
pub const ERTMP_MEDIA_SECS: u32 = 12;

/// The test files publishers read (`-re -c copy`), so that publishing costs no encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// H.264 High 640x360 25 fps, 2 s GOP, with B-frames + AAC-LC 48 kHz stereo.
    H264Aac,
    /// AAC only.
    AudioOnly,
    /// H.264 only.
    VideoOnly,
    /// HEVC (libx265) + AAC, written by ffmpeg 9.
    HevcAac,
    /// AV1 + AAC, written by ffmpeg 9 with the first AV1 encoder it has.
    Av1Aac,
}

impl Media {
    /// Duration of the file in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            Media::HevcAac | Media::Av1Aac => ERTMP_MEDIA_SECS,
            _ => MEDIA_SECS,
        }
    }
}

/// ffmpeg arguments for a fixed GOP: a keyframe every `frames` frames and none in between
/// (no scene-cut keyframes), so that segments are cut where the test expects.
pub fn fixed_gop_args(frames: u32) -> [String; 6] {
    let g = frames.to_string();
    ["-g", &g, "-keyint_min", &g, "-sc_threshold", "0"].map(str::to_owned)
}

/// ffmpeg arguments for constant-bitrate H.264 (libx264): `bitrate` (`3M`) held by the
/// rate control with a VBV buffer of `bufsize`, and filler data so the rate really is
/// constant.
pub fn x264_cbr_args(bitrate: &str, bufsize: &str) -> [String; 10] {
    [
        "-b:v",
        bitrate,
        "-minrate",
        bitrate,
        "-maxrate",
        bitrate,
        "-bufsize",
        bufsize,
        "-x264-params",
        "nal-hrd=cbr",
    ]
    .map(str::to_owned)
}

/// ffmpeg arguments for two generated inputs: the lavfi video source `video` (e.g.
/// `testsrc2=size=640x360:rate=25`) and a 440 Hz tone at 48 kHz.
pub fn lavfi_inputs(video: &str) -> [String; 8] {
    [
        "-f",
        "lavfi",
        "-i",
        video,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
    ]
    .map(str::to_owned)
}

/// The H.264 encoding of [`Media::H264Aac`] and [`Media::VideoOnly`]: High, 2 s GOP.
fn x264_args() -> Vec<String> {
    let mut args: Vec<String> = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
    ]
    .map(str::to_owned)
    .into();
    args.extend(fixed_gop_args(50));
    args.extend(["-b:v", "800k"].map(str::to_owned));
    args
}

const AAC: &[&str] = &["-c:a", "aac", "-b:a", "96k", "-ac", "2", "-ar", "48000"];

fn av1_encoder_args(ffmpeg: &Path) -> Vec<String> {
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-encoders"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let has = |name: &str| list.split_whitespace().any(|w| w == name);
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if has("libsvtav1") {
        v(&["-c:v", "libsvtav1", "-preset", "12", "-g", "50"])
    } else if has("librav1e") {
        v(&["-c:v", "librav1e", "-speed", "10", "-g", "50"])
    } else if has("libaom-av1") {
        v(&[
            "-c:v",
            "libaom-av1",
            "-usage",
            "realtime",
            "-cpu-used",
            "8",
            "-row-mt",
            "1",
            "-g",
            "50",
        ])
    } else {
        tool_missing(
            "an AV1 encoder in ffmpeg 9",
            "none of libsvtav1, librav1e, libaom-av1",
        )
    }
}

/// Path of the cached test file for `kind`, generated on first use. Safe across the
/// parallel test processes of one run: generation happens under a file lock, into a
/// temporary name renamed into place.
pub fn media(kind: Media) -> PathBuf {
    let name = format!("{kind:?}-v1.mp4").to_lowercase();
    cached_media(&name, |tmp| generate_media(kind, tmp))
}

/// Writes the test file for `kind` to `tmp`.
fn generate_media(kind: Media, tmp: &Path) {
    let secs = kind.seconds().to_string();
    let video = "testsrc2=size=640x360:rate=25";
    let audio = "sine=frequency=440:sample_rate=48000";
    let (exe, mut args): (PathBuf, Vec<String>) = match kind {
        Media::HevcAac | Media::Av1Aac => (ffmpeg9(), vec![]),
        _ => (ffmpeg(), vec![]),
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    args.extend(s(&["-y", "-nostdin", "-hide_banner", "-v", "error"]));
    let with_video = kind != Media::AudioOnly;
    let with_audio = kind != Media::VideoOnly;
    if with_video {
        args.extend(s(&["-f", "lavfi", "-i", video]));
    }
    if with_audio {
        args.extend(s(&["-f", "lavfi", "-i", audio]));
    }
    args.extend(s(&["-t", &secs]));
    match kind {
        Media::H264Aac | Media::VideoOnly => args.extend(x264_args()),
        Media::HevcAac => args.extend(s(&[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-x265-params",
            "keyint=50:min-keyint=50:scenecut=0:log-level=error",
            "-tag:v",
            "hvc1",
            "-b:v",
            "800k",
        ])),
        Media::Av1Aac => {
            args.extend(av1_encoder_args(&exe));
            args.extend(s(&["-pix_fmt", "yuv420p", "-b:v", "800k"]));
        }
        Media::AudioOnly => {}
    }
    if with_audio {
        args.extend(s(AAC));
    }
    args.extend(s(&["-movflags", "+faststart"]));
    args.push(tmp.to_string_lossy().into_owned());
    run_ok(
        Command::new(&exe).args(&args),
        &format!("generating {kind:?} with {} {args:?}", exe.display()),
    );
}

/// A test file like [`Media::H264Aac`] but with a keyframe every `gop_ms` (for tests that
/// need many short segments: `--segment-duration` down to 500 ms), generated once.
pub fn media_short_gop(gop_frames: u32) -> PathBuf {
    let name = format!("h264aac-20fps-gop{gop_frames}-v1.mp4");
    cached_media(&name, |tmp| {
        run_ok(
            Command::new(ffmpeg())
                .args(["-y", "-nostdin", "-hide_banner", "-v", "error"])
                .args(lavfi_inputs("testsrc2=size=320x180:rate=20"))
                .args(["-t", &MEDIA_SECS.to_string()])
                .args([
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                ])
                .args(fixed_gop_args(gop_frames))
                .args(["-b:v", "300k"])
                .args(AAC)
                .args(["-movflags", "+faststart"])
                .arg(tmp),
            &format!("generating {name}"),
        );
    })
}

/// The file `name` (`stem.ext`) in the test-media directory of the target directory,
/// written by `generate(tmp)` on first use. Safe across the parallel test processes of one
/// run: generation happens under a file lock, into a temporary name with the same extension
/// (ffmpeg picks its muxer from it), renamed into place.
pub fn cached_media(name: &str, generate: impl FnOnce(&Path)) -> PathBuf {
    let dir = target_dir().join("test-media");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    let lock = File::create(dir.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if path.exists() {
        return path;
    }
    let ext = path.extension().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{name}.tmp.{}.{ext}", std::process::id()));
    generate(&tmp);
    fs::rename(&tmp, &path).unwrap();
    path
}
