//! The external tools the tests drive (ffmpeg, ffprobe, GStreamer, the static ffmpeg 9),
//! found on PATH or panicking with a message naming `scripts/install-test-tools.sh`: no test
//! skips silently.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Panics naming the missing tool and the script that installs it.
pub(crate) fn tool_missing(name: &str, what: &str) -> ! {
    panic!("required test tool `{name}` is missing ({what}); run ./scripts/install-test-tools.sh")
}

/// Path of a command on PATH, or a panic naming the tool.
pub fn require_cmd(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    tool_missing(name, "not on PATH")
}

/// Debian's ffmpeg (5.1 on Debian 12).
pub fn ffmpeg() -> PathBuf {
    require_cmd("ffmpeg")
}

/// Debian's ffprobe.
pub fn ffprobe() -> PathBuf {
    require_cmd("ffprobe")
}

/// The static ffmpeg 9 from the PyPI wheel `imageio-ffmpeg`: it writes Enhanced RTMP
/// (HEVC and AV1 in FLV), which Debian's ffmpeg 5.1 cannot.
pub fn ffmpeg9() -> PathBuf {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PATH.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
            ])
            .output()
            .map_err(|e| format!("python3: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} is not a file", p.display()))
        }
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => tool_missing("imageio-ffmpeg (static ffmpeg 9)", e),
    }
}

/// Panics unless GStreamer has `element`.
pub fn require_gst_element(element: &str) {
    let inspect = require_cmd("gst-inspect-1.0");
    let ok = Command::new(inspect)
        .arg(element)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        tool_missing(element, "GStreamer element not found by gst-inspect-1.0");
    }
}

/// Whether GStreamer has `element` (for choosing between equivalent elements).
pub fn has_gst_element(element: &str) -> bool {
    Command::new("gst-inspect-1.0")
        .arg(element)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// GStreamer's AAC encoder: `avenc_aac` (gst-libav) where it is installed, else
/// `voaacenc`; panics when there is neither.
pub fn gst_aac_encoder() -> &'static str {
    if has_gst_element("avenc_aac") {
        "avenc_aac"
    } else {
        require_gst_element("voaacenc");
        "voaacenc"
    }
}

/// Runs `cmd` to the end and panics, with `what` and its stderr, unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A self-signed P-256 certificate for 127.0.0.1 with common name `name`:
/// `(dir/name.crt, dir/name.key)`, made with `openssl req`.
pub fn self_signed_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run_ok(
        Command::new(require_cmd("openssl"))
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req",
    );
    (cert, key)
}
