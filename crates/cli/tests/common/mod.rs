//! Shared helpers for the end-to-end tests: start the real `tidegate` binary, publish to it
//! with real clients (ffmpeg, GStreamer), fetch over HTTP, and check what comes out
//! (an RFC 8216 media-playlist checker, ffprobe, a full decode, keyframe-first segments).
//!
//! Every child process is killed when its handle drops; when a test panics, the logs of the
//! server and the publishers it started are printed. Tools that a test needs and that are
//! missing make it panic with a message naming `scripts/install-test-tools.sh`: no test
//! skips silently.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A `[health]` config section whose short windows turn a stalled stream `warning` within a
/// few seconds (defaults: 10 s warm-up, 5 s low, 60 s average window, 10 s dwell).
pub const FAST_HEALTH_TOML: &str = r#"
[health]
warmup = "2s"
relative-window = "10s"
low-bitrate-for = "2s"
recover-after = "2s"
min-dwell = "1s"
"#;

/// Target segment duration the tests run the server with (its default).
pub const SEGMENT_SECS: f64 = 2.0;
/// Length of the generated H.264/AAC test files; longer publishes loop them.
pub const MEDIA_SECS: u32 = 30;
/// Length of the generated HEVC/AV1 test files (encoding them is slow).
pub const ERTMP_MEDIA_SECS: u32 = 12;

// ---------------------------------------------------------------------------------------
// Tools and paths
// ---------------------------------------------------------------------------------------

fn tool_missing(name: &str, what: &str) -> ! {
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

/// The cargo target directory of this build.
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

/// Where per-test logs go (kept after the run for inspection).
pub fn log_dir() -> PathBuf {
    let d = target_dir().join("test-logs");
    fs::create_dir_all(&d).unwrap();
    d
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique within this machine's run: prefix, process id, counter.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free loopback TCP port, reserved for this test process (see [`reserve_port`]).
pub fn free_tcp_port() -> u16 {
    reserve_port()
}

/// A free loopback UDP port, reserved for this test process (see [`reserve_port`]).
pub fn free_udp_port() -> u16 {
    reserve_port()
}

/// The lock files of the ports this process reserved, held open until it exits.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port, free for both TCP and UDP, that no other test process of this
/// machine holds and this process never handed out before.
///
/// Asking the kernel for port 0 and closing the socket is not enough: nextest runs
/// tests as parallel processes, and the kernel hands the same ephemeral port to the
/// next one who asks (a CI run saw worker 0's RTMP port given to worker 2's HTTP
/// listener). So ports come from below the ephemeral range, where neither `bind(0)`
/// nor an outgoing connection ever lands, and each is claimed by an advisory lock on
/// a file named after it; the lock dies with the process.
pub fn reserve_port() -> u16 {
    let dir = std::env::temp_dir().join("tidegate-test-ports");
    fs::create_dir_all(&dir).unwrap();
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let hi = ephemeral_low.clamp(11_024, 65_535);
    let lo = hi.saturating_sub(20_000).max(10_000);
    let span = hi - lo;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut reserved = RESERVED.lock().unwrap();
    for i in 0..span {
        let port = (lo + (seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        let Ok(file) = File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another test process holds it, or this one already does
        }
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            reserved.push(file);
            return port;
        }
    }
    panic!("no free loopback port in {lo}..{hi}");
}

/// Polls `f` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// Test media, generated once per target dir
// ---------------------------------------------------------------------------------------

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

const X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-profile:v",
    "high",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "50",
    "-keyint_min",
    "50",
    "-sc_threshold",
    "0",
    "-b:v",
    "800k",
];
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
    let dir = target_dir().join("test-media");
    fs::create_dir_all(&dir).unwrap();
    let name = format!("{kind:?}-v1.mp4").to_lowercase();
    let path = dir.join(&name);
    if path.exists() {
        return path;
    }
    let lock = File::create(dir.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if path.exists() {
        return path;
    }
    let secs = kind.seconds().to_string();
    let video = "testsrc2=size=640x360:rate=25";
    let audio = "sine=frequency=440:sample_rate=48000";
    let tmp = dir.join(format!("{name}.tmp.{}.mp4", std::process::id()));
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
        Media::H264Aac | Media::VideoOnly => args.extend(s(X264)),
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
    fs::rename(&tmp, &path).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// A child process with its stderr (and stdout) in a log file; killed on drop, and its log
/// tail printed if the test is panicking.
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    child: Option<Child>,
    /// The log file (stdout and stderr).
    pub log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with output to a fresh log file named after `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = log_dir().join(format!("{}.log", unique_name(name)));
        let f = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            exit: None,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exit = c.try_wait().unwrap();
            }
        }
        self.exit
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = c.kill();
                self.exit = c.wait().ok();
            }
        }
    }

    /// Sends a signal by number (e.g. 2 for SIGINT, 15 for SIGTERM) with `kill(1)`.
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "----- {} ({}) exit {:?}, last log lines -----\n{}\n----- end of {} -----",
                self.name,
                self.log.display(),
                self.exit,
                self.log_tail(60),
                self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// ffmpeg loops the H.264 + AAC test file in real time, copied into MPEG-TS, to `output`
/// (an `srt://` or `udp://` URL); the process is named `name` in the logs.
pub fn ffmpeg_ts_loop(name: &str, output: &str) -> Proc {
    let mut cmd = Command::new(ffmpeg());
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-stream_loop",
        "-1",
    ]);
    cmd.arg("-i").arg(media(Media::H264Aac));
    cmd.args(["-c", "copy", "-f", "mpegts", output]);
    Proc::spawn(name, cmd)
}

/// [`ffmpeg_ts_loop`] into an SRT listener on `port` (a source that only listens, for SRT
/// pull); `extra` is appended to the URL's query.
pub fn srt_ffmpeg_listener(port: u16, extra: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt-listener",
        &format!("srt://127.0.0.1:{port}?mode=listener&latency=200000&pkt_size=1316{extra}"),
    )
}

/// What a live fMP4 media playlist must look like: no `EXT-X-ENDLIST`, at least one
/// segment.
pub fn live_fmp4() -> Expect {
    Expect {
        endlist: Some(false),
        fmp4: Some(true),
        min_segments: 1,
    }
}

/// Waits until the playlist at `url` goes on after an `EXT-X-DISCONTINUITY`: its next
/// media sequence number at least `min_new` past `before`, and at least two segments after
/// the last discontinuity.
pub fn wait_continued_after_discontinuity(
    url: &str,
    before: u64,
    min_new: u64,
    timeout: Duration,
    what: &str,
) -> MediaPlaylist {
    wait_playlist(url, timeout, what, |pl| {
        pl.discontinuities() >= 1
            && pl.next_msn() >= before + min_new
            && pl
                .text
                .rsplit("#EXT-X-DISCONTINUITY")
                .next()
                .is_some_and(|tail| tail.matches("#EXTINF").count() >= 2)
    })
}

/// A running `tidegate serve` on loopback ports chosen at run time.
pub struct Server {
    /// The process (logs to stderr, captured in `proc.log`).
    pub proc: Proc,
    /// RTMP listen address.
    pub rtmp: SocketAddr,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// SRT listen address (UDP).
    pub srt: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data directory with extra flags, and waits until ready.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("tidegate-test-")
            .tempdir()
            .unwrap();
        let mut s = Server::start_in(tmp.path(), extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let exe = env!("CARGO_BIN_EXE_tidegate");
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--rtmp-listen")
            .arg(rtmp.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--srt-listen")
            .arg(srt.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut s = Server {
            proc: Proc::spawn("tidegate", cmd),
            rtmp,
            http,
            srt,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        };
        s.wait_ready(Duration::from_secs(20));
        s
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let url = self.url("/readyz");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.try_exit() {
                panic!(
                    "tidegate exited during startup with {status}; log:\n{}",
                    self.proc.log_tail(100)
                );
            }
            if let Ok(r) = try_get(&url) {
                if r.status == 200 {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "tidegate not ready ({url}) after {timeout:?}; log:\n{}",
                    self.proc.log_tail(100)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:P{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `rtmp://127.0.0.1:P/live/KEY`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// `GET /api/v1/streams/default/KEY` as JSON (`null` while the stream does not exist);
    /// panics on any other answer than 200 or 404.
    pub fn stream_json(&self, key: &str) -> serde_json::Value {
        let r = get(&self.url(&format!("/api/v1/streams/default/{key}")));
        match r.status {
            404 => serde_json::Value::Null,
            200 => serde_json::from_slice(&r.body).unwrap(),
            s => panic!("API answered {s}: {}", r.text()),
        }
    }

    /// Polls [`Server::stream_json`] until `pred` holds for it and returns that view;
    /// panics with the last view and the server's log after `timeout`.
    pub fn wait_stream_json(
        &self,
        key: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stream_json(key);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: {what} not seen within {timeout:?}; API: {v}\nserver log:\n{}",
                self.proc.log_tail(40)
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// The open-mode HLS media playlist of stream `key`.
    pub fn playlist_url(&self, key: &str) -> String {
        self.url(&format!("/hls/default/{key}/index.m3u8"))
    }

    /// `kill -9` (no chance to flush or say goodbye).
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    /// Asserts the process is still running.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_exit() {
            panic!(
                "tidegate died with {status}; log:\n{}",
                self.proc.log_tail(100)
            );
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// Fetches `/metrics` and returns its text.
    pub fn metrics(&self) -> String {
        let r = get(&self.url("/metrics"));
        assert_eq!(r.status, 200, "/metrics status");
        r.text()
    }
}

// ---------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------

/// How long and how an ffmpeg publisher sends a test file.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Stop after this many seconds of media (`-t`); `None` sends the file once, or
    /// forever when `looped`.
    pub seconds: Option<u32>,
    /// Loop the input forever (`-stream_loop -1`).
    pub looped: bool,
}

impl Publish {
    /// Send `seconds` of media in real time, then end cleanly.
    pub fn for_secs(seconds: u32) -> Publish {
        Publish {
            seconds: Some(seconds),
            looped: seconds > MEDIA_SECS,
        }
    }

    /// Send until killed.
    pub fn forever() -> Publish {
        Publish {
            seconds: None,
            looped: true,
        }
    }
}

/// Publishes `file` in real time with `-c copy` to `url` using the ffmpeg at `exe`.
pub fn publish_with(exe: &Path, file: &Path, url: &str, how: &Publish) -> Proc {
    let mut cmd = Command::new(exe);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    if how.looped {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i").arg(file);
    if let Some(s) = how.seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    cmd.args(["-c", "copy", "-f", "flv", url]);
    Proc::spawn("ffmpeg-publish", cmd)
}

/// Publishes a test file with Debian's ffmpeg.
pub fn publish_ffmpeg(kind: Media, url: &str, how: &Publish) -> Proc {
    publish_with(&ffmpeg(), &media(kind), url, how)
}

/// Waits for a publisher that was given a duration to end, and asserts it ended cleanly.
pub fn wait_publisher_success(p: &mut Proc, timeout: Duration) {
    match p.wait_exit(timeout) {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "publisher {} failed with {s}; log:\n{}",
            p.name,
            p.log_tail(40)
        ),
        None => panic!(
            "publisher {} still running after {timeout:?}; log:\n{}",
            p.name,
            p.log_tail(40)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(15))
            .redirects(0)
            .build()
    })
}

/// GET; transport errors are `Err`, any HTTP status is `Ok`.
pub fn try_get(url: &str) -> Result<Resp, String> {
    let resp = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("GET {url}: {e}")),
    };
    let status = resp.status();
    let content_type = resp.header("content-type").map(str::to_string);
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    Ok(Resp {
        status,
        content_type,
        body,
    })
}

/// GET, panicking on a transport error.
pub fn get(url: &str) -> Resp {
    try_get(url).unwrap_or_else(|e| panic!("{e}"))
}

/// Resolves a playlist-relative URI.
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return uri.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if let Some(rest) = uri.strip_prefix('/') {
        // scheme://host[:port]/...
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[after_scheme..]
            .find('/')
            .map(|i| i + after_scheme)
            .unwrap_or(base.len());
        return format!("{}/{rest}", &base[..host_end]);
    }
    match base.rfind('/') {
        Some(i) => format!("{}{uri}", &base[..=i]),
        None => uri.to_string(),
    }
}

/// A tiny static file server for `root` on a loopback port (for checking the checker on
/// playlists that ffmpeg's own HLS muxer writes). Serves until the process exits.
pub fn serve_dir(root: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            thread::spawn(move || serve_one(stream, &root));
        }
    });
    addr
}

fn serve_one(mut s: TcpStream, root: &Path) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).into_owned();
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
    let rel = path.split('?').next().unwrap_or("").trim_start_matches('/');
    let file = root.join(rel);
    let (status, ctype, body) = if rel.contains("..") {
        ("403 Forbidden", "text/plain", b"no".to_vec())
    } else if let Ok(body) = fs::read(&file) {
        let ctype = match file.extension().and_then(|e| e.to_str()) {
            Some("m3u8") => "application/vnd.apple.mpegurl",
            Some("ts") => "video/mp2t",
            Some("m4s") | Some("mp4") => "video/mp4",
            _ => "application/octet-stream",
        };
        ("200 OK", ctype, body)
    } else {
        ("404 Not Found", "text/plain", b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body);
}

// ---------------------------------------------------------------------------------------
// RFC 8216 media playlist checker
// ---------------------------------------------------------------------------------------

/// One media segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// URI as written.
    pub uri: String,
    /// `EXTINF` duration in seconds.
    pub duration: f64,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// The `EXT-X-MAP` URI in force for it.
    pub map_uri: Option<String>,
    /// Its `EXT-X-PROGRAM-DATE-TIME`, if one precedes it directly.
    pub program_date_time: Option<String>,
}

/// A parsed media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    /// The URL it was fetched from (for resolving URIs).
    pub url: String,
    /// The text as served.
    pub text: String,
    /// `EXT-X-VERSION`.
    pub version: Option<u64>,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (0 when absent).
    pub discontinuity_sequence: u64,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` present.
    pub endlist: bool,
}

impl MediaPlaylist {
    /// The sequence number one past the last segment.
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// Sum of the `EXTINF` durations.
    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Number of `EXT-X-DISCONTINUITY` tags.
    pub fn discontinuities(&self) -> usize {
        self.segments.iter().filter(|s| s.discontinuity).count()
    }

    /// Absolute URL of a segment.
    pub fn segment_url(&self, seg: &Segment) -> String {
        resolve(&self.url, &seg.uri)
    }

    /// Whether a segment is fMP4 (has an `EXT-X-MAP`).
    pub fn is_fmp4(&self) -> bool {
        self.segments.iter().any(|s| s.map_uri.is_some())
    }
}

fn parse_u64(tag: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("{tag}: `{v}` is not a decimal-integer"))
}

fn attr(list: &str, name: &str) -> Option<String> {
    // Attribute lists: NAME=VALUE,NAME="quoted, with commas"
    let mut rest = list;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, remain) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        if key == name {
            return Some(value);
        }
        rest = remain.trim_start_matches(',');
    }
    None
}

/// Parses a media playlist by hand, enforcing the RFC 8216 rules that a parser can see.
pub fn parse_media_playlist(url: &str, text: &str) -> Result<MediaPlaylist, String> {
    let mut lines = text.lines();
    if lines.next().map(|l| l.trim_end()) != Some("#EXTM3U") {
        return Err("first line is not #EXTM3U".into());
    }
    let mut version = None;
    let mut target = None;
    let mut msn = None;
    let mut dsn = None;
    let mut segments = Vec::new();
    let mut endlist = false;
    let mut pending_inf: Option<f64> = None;
    let mut pending_disc = false;
    let mut pending_pdt = None;
    let mut map: Option<String> = None;
    for (i, raw) in text.lines().enumerate().skip(1) {
        let line = raw.trim_end();
        let lineno = i + 1;
        if line.is_empty() {
            continue;
        }
        if endlist && !line.starts_with('#') {
            return Err(format!("line {lineno}: media segment after EXT-X-ENDLIST"));
        }
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            if version.replace(parse_u64("EXT-X-VERSION", v)?).is_some() {
                return Err("EXT-X-VERSION appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            if target
                .replace(parse_u64("EXT-X-TARGETDURATION", v)?)
                .is_some()
            {
                return Err("EXT-X-TARGETDURATION appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            if !segments.is_empty() || pending_inf.is_some() {
                return Err("EXT-X-MEDIA-SEQUENCE after the first segment".into());
            }
            if msn.replace(parse_u64("EXT-X-MEDIA-SEQUENCE", v)?).is_some() {
                return Err("EXT-X-MEDIA-SEQUENCE appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            if !segments.is_empty() || pending_inf.is_some() {
                return Err("EXT-X-DISCONTINUITY-SEQUENCE after the first segment".into());
            }
            if dsn
                .replace(parse_u64("EXT-X-DISCONTINUITY-SEQUENCE", v)?)
                .is_some()
            {
                return Err("EXT-X-DISCONTINUITY-SEQUENCE appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            if pending_inf.is_some() {
                return Err(format!("line {lineno}: two EXTINF without a URI between"));
            }
            let d = v.split(',').next().unwrap_or("");
            let d: f64 = d
                .trim()
                .parse()
                .map_err(|_| format!("line {lineno}: EXTINF duration `{d}`"))?;
            if d.is_nan() || d <= 0.0 {
                return Err(format!(
                    "line {lineno}: EXTINF duration {d} is not positive"
                ));
            }
            pending_inf = Some(d);
        } else if line == "#EXT-X-DISCONTINUITY" {
            pending_disc = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            parse_pdt(v).map_err(|e| format!("line {lineno}: {e}"))?;
            pending_pdt = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            let uri = attr(v, "URI").ok_or(format!("line {lineno}: EXT-X-MAP without URI"))?;
            map = Some(uri);
        } else if line == "#EXT-X-ENDLIST" {
            endlist = true;
        } else if line.starts_with('#') {
            // Other tags (INDEPENDENT-SEGMENTS, LL-HLS tags, comments) are not checked here.
        } else {
            let Some(d) = pending_inf.take() else {
                return Err(format!("line {lineno}: URI `{line}` without EXTINF"));
            };
            segments.push(Segment {
                msn: 0,
                uri: line.to_string(),
                duration: d,
                discontinuity: std::mem::take(&mut pending_disc),
                map_uri: map.clone(),
                program_date_time: pending_pdt.take(),
            });
        }
    }
    if pending_inf.is_some() {
        return Err("EXTINF at the end without a URI".into());
    }
    let target_duration = target.ok_or("EXT-X-TARGETDURATION missing")?;
    let media_sequence = msn.ok_or("EXT-X-MEDIA-SEQUENCE missing")?;
    for (i, s) in segments.iter_mut().enumerate() {
        s.msn = media_sequence + i as u64;
    }
    Ok(MediaPlaylist {
        url: url.to_string(),
        text: text.to_string(),
        version,
        target_duration,
        media_sequence,
        discontinuity_sequence: dsn.unwrap_or(0),
        segments,
        endlist,
    })
}

/// Parses an `EXT-X-PROGRAM-DATE-TIME` value (ISO 8601 with a time zone).
pub fn parse_pdt(v: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .or_else(|_| chrono::DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map_err(|e| format!("EXT-X-PROGRAM-DATE-TIME `{v}`: {e}"))
}

/// What a check expects of a playlist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// `Some(true)`: `EXT-X-ENDLIST` must be there; `Some(false)`: must not.
    pub endlist: Option<bool>,
    /// `Some(true)`: fMP4 (every segment under an `EXT-X-MAP`); `Some(false)`: MPEG-TS.
    pub fmp4: Option<bool>,
    /// Minimum number of segments.
    pub min_segments: usize,
}

/// The static checks on one playlist text: hand parse, `m3u8-rs` parse, and the RFC rules
/// on durations, version, maps and the expectations.
pub fn check_playlist_text(
    url: &str,
    text: &str,
    expect: &Expect,
) -> Result<MediaPlaylist, String> {
    let pl = parse_media_playlist(url, text)?;
    let lib = m3u8_rs::parse_media_playlist_res(text.as_bytes())
        .map_err(|e| format!("m3u8-rs rejects the playlist: {e:?}"))?;
    if lib.media_sequence != pl.media_sequence
        || lib.target_duration != pl.target_duration
        || lib.segments.len() != pl.segments.len()
        || lib.end_list != pl.endlist
        || lib.discontinuity_sequence != pl.discontinuity_sequence
    {
        return Err(format!(
            "m3u8-rs disagrees: msn {} td {} segments {} endlist {} dsn {}",
            lib.media_sequence,
            lib.target_duration,
            lib.segments.len(),
            lib.end_list,
            lib.discontinuity_sequence
        ));
    }
    for (a, b) in lib.segments.iter().zip(&pl.segments) {
        if a.uri != b.uri || a.discontinuity != b.discontinuity {
            return Err(format!("m3u8-rs disagrees on segment {}", b.uri));
        }
    }
    for s in &pl.segments {
        let rounded = s.duration.round() as u64;
        if rounded > pl.target_duration {
            return Err(format!(
                "segment {} (msn {}) EXTINF {} rounds to {rounded} > TARGETDURATION {}",
                s.uri, s.msn, s.duration, pl.target_duration
            ));
        }
    }
    if pl.is_fmp4() && pl.version.unwrap_or(1) < 6 {
        return Err(format!(
            "EXT-X-MAP needs EXT-X-VERSION >= 6, have {:?}",
            pl.version
        ));
    }
    match expect.fmp4 {
        Some(true) => {
            if let Some(s) = pl.segments.iter().find(|s| s.map_uri.is_none()) {
                return Err(format!("fMP4 segment {} without EXT-X-MAP", s.uri));
            }
        }
        Some(false) if pl.is_fmp4() => {
            return Err("EXT-X-MAP in an MPEG-TS playlist".into());
        }
        _ => {}
    }
    match expect.endlist {
        Some(true) if !pl.endlist => return Err("EXT-X-ENDLIST expected, absent".into()),
        Some(false) if pl.endlist => return Err("EXT-X-ENDLIST present, not expected".into()),
        _ => {}
    }
    if pl.segments.len() < expect.min_segments {
        return Err(format!(
            "{} segments, expected at least {}",
            pl.segments.len(),
            expect.min_segments
        ));
    }
    Ok(pl)
}

/// The rules between two successive fetches of the same playlist.
pub fn check_progress(prev: &MediaPlaylist, next: &MediaPlaylist) -> Result<(), String> {
    if next.media_sequence < prev.media_sequence {
        return Err(format!(
            "EXT-X-MEDIA-SEQUENCE went back: {} -> {}",
            prev.media_sequence, next.media_sequence
        ));
    }
    if next.next_msn() < prev.next_msn() {
        return Err(format!(
            "the playlist lost segments at its end: last msn {} -> {}",
            prev.next_msn() as i64 - 1,
            next.next_msn() as i64 - 1
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        return Err("EXT-X-DISCONTINUITY-SEQUENCE went back".into());
    }
    // Segments in both must be the same segment.
    for s in &next.segments {
        if let Some(p) = prev.segments.iter().find(|p| p.msn == s.msn) {
            if p.uri != s.uri || p.discontinuity != s.discontinuity {
                return Err(format!("msn {} changed: {:?} -> {:?}", s.msn, p.uri, s.uri));
            }
        }
    }
    // Removing a segment that carried EXT-X-DISCONTINUITY must bump the sequence.
    let removed = next.media_sequence - prev.media_sequence;
    if removed as usize <= prev.segments.len() {
        let dropped = prev.segments[..removed as usize]
            .iter()
            .filter(|s| s.discontinuity)
            .count() as u64;
        if next.discontinuity_sequence != prev.discontinuity_sequence + dropped {
            return Err(format!(
                "EXT-X-DISCONTINUITY-SEQUENCE {} -> {} but {dropped} discontinuities left the window",
                prev.discontinuity_sequence, next.discontinuity_sequence
            ));
        }
    }
    if prev.endlist && (!next.endlist || next.next_msn() != prev.next_msn()) {
        return Err("an ended playlist changed".into());
    }
    Ok(())
}

/// Media container of a body, by its first bytes.
pub fn sniff(body: &[u8]) -> &'static str {
    if body.first() == Some(&0x47) && (body.len() < 189 || body.get(188) == Some(&0x47)) {
        "ts"
    } else if body.len() >= 8
        && matches!(&body[4..8], b"ftyp" | b"styp" | b"moof" | b"sidx" | b"moov")
    {
        "mp4"
    } else {
        "unknown"
    }
}

fn content_type_ok(container: &str, ctype: &str) -> bool {
    let ct = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match container {
        "ts" => ct == "video/mp2t",
        "mp4" => matches!(
            ct.as_str(),
            "video/mp4"
                | "audio/mp4"
                | "video/iso.segment"
                | "audio/iso.segment"
                | "application/mp4"
        ),
        _ => false,
    }
}

/// Fetches `url`, checks status and Content-Type of a playlist, and its text.
pub fn fetch_playlist(url: &str, expect: &Expect) -> Result<MediaPlaylist, String> {
    let r = try_get(url)?;
    if r.status != 200 {
        return Err(format!(
            "GET {url}: status {} body {:?}",
            r.status,
            r.text()
        ));
    }
    let ct = r
        .content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or("").trim().to_string();
    if !matches!(
        ct.as_str(),
        "application/vnd.apple.mpegurl" | "audio/mpegurl" | "application/x-mpegurl"
    ) {
        return Err(format!("playlist Content-Type {ct:?}"));
    }
    check_playlist_text(url, &r.text(), expect)
        .map_err(|e| format!("{e}\n--- playlist {url}:\n{}", r.text()))
}

/// Fetches every map and segment of `pl`: 200, non-empty, and a Content-Type that fits
/// the bytes. Returns the bodies by absolute URL.
pub fn fetch_all_media(pl: &MediaPlaylist) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut urls = Vec::new();
    for s in &pl.segments {
        if let Some(m) = &s.map_uri {
            let u = resolve(&pl.url, m);
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        urls.push(pl.segment_url(s));
    }
    for u in urls {
        let r = try_get(&u)?;
        if r.status != 200 {
            return Err(format!("GET {u}: status {}", r.status));
        }
        if r.body.is_empty() {
            return Err(format!("GET {u}: empty body"));
        }
        let container = sniff(&r.body);
        let ct = r.content_type.clone().unwrap_or_default();
        if !content_type_ok(container, &ct) {
            return Err(format!(
                "GET {u}: body looks like {container}, Content-Type is {ct:?}"
            ));
        }
        out.insert(u, r.body);
    }
    Ok(out)
}

/// Follows one playlist across fetches, applying [`check_progress`] each time.
#[derive(Default)]
pub struct Watch {
    /// The latest playlist seen.
    pub last: Option<MediaPlaylist>,
    /// Every distinct segment URL seen, by msn.
    pub seen: BTreeMap<u64, String>,
}

impl Watch {
    /// Fetches and checks the playlist (static rules, progress since the last fetch, and
    /// that every listed segment is fetchable). Panics with the reason.
    pub fn observe(&mut self, url: &str, expect: &Expect) -> MediaPlaylist {
        let pl = fetch_playlist(url, expect).unwrap_or_else(|e| panic!("{e}"));
        self.accept(pl)
    }

    /// Applies the progress and fetchability checks to an already fetched playlist.
    pub fn accept(&mut self, pl: MediaPlaylist) -> MediaPlaylist {
        if let Some(prev) = &self.last {
            check_progress(prev, &pl).unwrap_or_else(|e| {
                panic!("{e}\n--- before:\n{}\n--- after:\n{}", prev.text, pl.text)
            });
        }
        fetch_all_media(&pl).unwrap_or_else(|e| panic!("{e}\n--- playlist:\n{}", pl.text));
        for s in &pl.segments {
            self.seen.insert(s.msn, pl.segment_url(s));
        }
        self.last = Some(pl.clone());
        pl
    }
}

/// Polls a playlist until `pred` holds (fetch errors and 404 count as "not yet").
pub fn wait_playlist(
    url: &str,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&MediaPlaylist) -> bool,
) -> MediaPlaylist {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match try_get(url) {
            Ok(r) if r.status == 200 => match parse_media_playlist(url, &r.text()) {
                Ok(pl) if pred(&pl) => return pl,
                Ok(_) => last = r.text(),
                Err(e) => last = format!("unparsable: {e}\n{}", r.text()),
            },
            Ok(r) => last = format!("status {}: {}", r.status, r.text()),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what} at {url}; last:\n{last}");
        }
        thread::sleep(Duration::from_millis(300));
    }
}

// ---------------------------------------------------------------------------------------
// ffprobe and ffmpeg checks
// ---------------------------------------------------------------------------------------

/// One stream as ffprobe sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// `video` or `audio`.
    pub codec_type: String,
    /// e.g. `h264`, `hevc`, `av1`, `aac`.
    pub codec_name: String,
    /// Video width.
    pub width: Option<u64>,
    /// Video height.
    pub height: Option<u64>,
}

/// `ffprobe -v error -of json ARGS TARGET`, parsed; panics when ffprobe fails.
pub fn run_ffprobe(args: &[&str], target: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new(ffprobe())
            .args(["-v", "error", "-of", "json"])
            .args(args)
            .arg(target),
        &format!("ffprobe {args:?} {target}"),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ffprobe output not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The streams of a file or URL.
pub fn probe_streams(target: &str) -> Vec<StreamInfo> {
    let v = run_ffprobe(
        &["-show_entries", "stream=codec_type,codec_name,width,height"],
        target,
    );
    v["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| StreamInfo {
            codec_type: s["codec_type"].as_str().unwrap_or("").to_string(),
            codec_name: s["codec_name"].as_str().unwrap_or("").to_string(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
        })
        .collect()
}

/// Duration of the media at `target` as its packets say (first pts to last pts + duration
/// of the first stream), so it works on playlists too.
pub fn probe_duration(target: &str) -> f64 {
    let v = run_ffprobe(
        &[
            "-select_streams",
            "0",
            "-show_entries",
            "packet=pts_time,duration_time",
        ],
        target,
    );
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let mut lo = f64::MAX;
    let mut hi = f64::MIN;
    for p in &packets {
        let pts: f64 = match p["pts_time"].as_str().and_then(|s| s.parse().ok()) {
            Some(t) => t,
            None => continue,
        };
        let dur: f64 = p["duration_time"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        lo = lo.min(pts);
        hi = hi.max(pts + dur);
    }
    assert!(hi > lo, "ffprobe found no timed packets in {target}");
    hi - lo
}

/// Decodes everything at `target` with ffmpeg; panics if ffmpeg reports any error, or if
/// the packets' decode timestamps ever stand still or go back within a stream.
///
/// ffmpeg's null muxer also complains ("non monotonically increasing dts to muxer") when
/// two decoded frames land on one tick of ffmpeg's own output time base: a live publisher
/// whose clock jitters (GStreamer on a busy machine sends video at 85 ms and 90 ms) does
/// that, and the repackaged stream faithfully keeps it. That line says nothing of our
/// output, so it is left out here; the packet timestamps themselves are checked instead.
pub fn assert_decodes_cleanly(target: &str) {
    let out = Command::new(ffmpeg())
        .args(["-nostdin", "-v", "error", "-i", target, "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        // Matched anywhere in the line: ffmpeg's threads can print it glued to another line.
        .filter(|l| !l.contains("non monotonically increasing dts"))
        .collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "decoding {target} reported errors (exit {}):\n{err}",
        out.status
    );
    assert_dts_increase(target);
}

/// Panics unless every stream's packet decode timestamps strictly increase, except once
/// per `EXT-X-DISCONTINUITY` of the media playlist at `url` (a new publisher's
/// timestamps start afresh there, as RFC 8216 allows).
pub fn assert_dts_increase(url: &str) {
    let playlist = get(url);
    let resets = String::from_utf8_lossy(&playlist.body)
        .lines()
        .filter(|l| l.trim() == "#EXT-X-DISCONTINUITY")
        .count();
    let v = run_ffprobe(&["-show_entries", "packet=stream_index,dts"], url);
    let mut last: BTreeMap<i64, (i64, usize)> = BTreeMap::new();
    for p in v["packets"].as_array().cloned().unwrap_or_default() {
        let (Some(stream), Some(dts)) = (p["stream_index"].as_i64(), p["dts"].as_i64()) else {
            continue;
        };
        let entry = last.entry(stream).or_insert((i64::MIN, 0));
        if dts <= entry.0 {
            entry.1 += 1;
            assert!(
                entry.1 <= resets,
                "{url}: stream {stream} dts {dts} after {}: not increasing \
                 ({resets} discontinuities in the playlist)",
                entry.0
            );
        }
        entry.0 = dts;
    }
    assert!(!last.is_empty(), "ffprobe found no packets in {url}");
}

/// For every segment of `pl` with video: init + segment decode to a first frame that is a
/// keyframe. Returns how many segments were checked.
pub fn assert_segments_start_with_keyframes(pl: &MediaPlaylist) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for s in &pl.segments {
        let mut bytes = Vec::new();
        if let Some(m) = &s.map_uri {
            let r = get(&resolve(&pl.url, m));
            assert_eq!(r.status, 200, "init {m}");
            bytes.extend_from_slice(&r.body);
        }
        let r = get(&pl.segment_url(s));
        assert_eq!(r.status, 200, "segment {}", s.uri);
        bytes.extend_from_slice(&r.body);
        let ext = if s.map_uri.is_some() { "mp4" } else { "ts" };
        let f = dir.path().join(format!("seg-{}.{ext}", s.msn));
        fs::write(&f, &bytes).unwrap();
        let v = run_ffprobe(
            &[
                "-select_streams",
                "v:0",
                "-show_frames",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type",
            ],
            f.to_str().unwrap(),
        );
        let frames = v["frames"].as_array().cloned().unwrap_or_default();
        let Some(first) = frames.first() else {
            continue; // no video in this segment (audio-only stream)
        };
        let key =
            first["key_frame"].as_i64() == Some(1) || first["pict_type"].as_str() == Some("I");
        assert!(
            key,
            "segment {} (msn {}) does not start with a keyframe: first frame {first}",
            s.uri, s.msn
        );
        checked += 1;
    }
    checked
}

/// Everything one finished (ENDLIST) single-session playlist must pass: RFC checks,
/// fetchable media, keyframe-first segments (when `video`), ffprobe codecs, clean decode.
/// Returns the ffprobe stream list.
pub fn full_check_ended(url: &str, fmp4: bool, video: bool) -> (MediaPlaylist, Vec<StreamInfo>) {
    let expect = Expect {
        endlist: Some(true),
        fmp4: Some(fmp4),
        min_segments: 1,
    };
    let pl = fetch_playlist(url, &expect).unwrap_or_else(|e| panic!("{e}"));
    fetch_all_media(&pl).unwrap_or_else(|e| panic!("{e}\n--- playlist:\n{}", pl.text));
    if video {
        let n = assert_segments_start_with_keyframes(&pl);
        assert_eq!(n, pl.segments.len(), "every segment should carry video");
    }
    let streams = probe_streams(url);
    assert_decodes_cleanly(url);
    (pl, streams)
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// Sum of the values of every sample line whose name starts with `tidegate_`, mentions
/// `connection`, and has a `reason` label: the rejected/failed connection counters.
pub fn rejected_connections(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("tidegate_") && l.contains("connection") && l.contains("reason="))
        .filter_map(|l| {
            let after_labels = &l[l.rfind('}')? + 1..];
            after_labels.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// The one-publish scenario shared by the publisher interop tests
// ---------------------------------------------------------------------------------------

/// What [`publish_once_and_check`] saw.
pub struct PublishOutcome {
    /// The final (ended) playlist.
    pub playlist: MediaPlaylist,
    /// ffprobe's view of the playlist.
    pub streams: Vec<StreamInfo>,
    /// How many live fetches passed the checks while the publisher was sending.
    pub live_fetches: usize,
}

/// Starts a server with `--reconnect-window 3s` plus `extra`, starts a publisher with
/// `start(rtmp_url)` on key `cam`, checks the playlist once a second while it sends
/// (every fetch passes the RFC checks, never goes back, every segment fetchable), waits
/// for it to end cleanly and for `EXT-X-ENDLIST`, then runs [`full_check_ended`] and
/// asserts the listed duration is within one segment of `sent_secs` (EXTINF sum and
/// ffprobe's packet timeline).
pub fn publish_once_and_check(
    extra: &[&str],
    fmp4: bool,
    video: bool,
    sent_secs: f64,
    start: impl FnOnce(&str) -> Proc,
) -> PublishOutcome {
    let mut args = vec!["--reconnect-window", "3s"];
    args.extend_from_slice(extra);
    let mut server = Server::start(&args);
    let key = "cam";
    let url = server.playlist_url(key);
    let missing = get(&server.playlist_url("nobody-publishes-this"));
    assert_eq!(missing.status, 404, "unknown stream must be 404");

    let mut publisher = start(&server.rtmp_url(key));
    let live = Expect {
        endlist: Some(false),
        fmp4: Some(fmp4),
        min_segments: 1,
    };
    wait_playlist(&url, Duration::from_secs(25), "the first segment", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    let mut live_fetches = 0;
    while publisher.is_running() {
        watch.observe(&url, &live);
        live_fetches += 1;
        thread::sleep(Duration::from_secs(1));
    }
    wait_publisher_success(&mut publisher, Duration::from_secs(1));
    assert!(
        live_fetches >= 2,
        "only {live_fetches} live fetches: the playlist appeared too late"
    );
    server.assert_alive();

    // No publisher for the 3 s window: the playlist ends.
    wait_playlist(
        &url,
        Duration::from_secs(20),
        "EXT-X-ENDLIST after the reconnect window",
        |pl| pl.endlist,
    );
    let (playlist, streams) = full_check_ended(&url, fmp4, video);
    watch.accept(playlist.clone());

    let listed = playlist.total_duration();
    assert!(
        (listed - sent_secs).abs() <= SEGMENT_SECS + 0.25,
        "EXTINF durations add up to {listed:.2}s, {sent_secs}s were sent\n{}",
        playlist.text
    );
    let probed = probe_duration(&url);
    assert!(
        (probed - sent_secs).abs() <= SEGMENT_SECS + 0.25,
        "ffprobe sees {probed:.2}s, {sent_secs}s were sent"
    );
    server.assert_alive();
    PublishOutcome {
        playlist,
        streams,
        live_fetches,
    }
}

/// Asserts the probed streams are exactly: one video stream of `video` codec at 640x360
/// (if `Some`) and one AAC stream (if `audio`).
pub fn assert_streams(streams: &[StreamInfo], video: Option<&str>, audio: bool) {
    let v: Vec<_> = streams.iter().filter(|s| s.codec_type == "video").collect();
    let a: Vec<_> = streams.iter().filter(|s| s.codec_type == "audio").collect();
    match video {
        Some(codec) => {
            assert_eq!(v.len(), 1, "one video stream expected: {streams:?}");
            assert_eq!(v[0].codec_name, codec, "{streams:?}");
            assert_eq!(
                (v[0].width, v[0].height),
                (Some(640), Some(360)),
                "{streams:?}"
            );
        }
        None => assert!(v.is_empty(), "no video expected: {streams:?}"),
    }
    if audio {
        assert_eq!(a.len(), 1, "one audio stream expected: {streams:?}");
        assert_eq!(a[0].codec_name, "aac", "{streams:?}");
    } else {
        assert!(a.is_empty(), "no audio expected: {streams:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A local cluster: Redis + S3 (moto) + N workers + HAProxy (TCP mode) for RTMP
// ---------------------------------------------------------------------------------------

/// A loopback TCP relay the test can cut, standing in for a network partition between the
/// workers and a backend: while closed, new connections are accepted and dropped at once
/// and the ones in flight are shut down, so clients fail fast (no hang, no lost data on the
/// backend, which keeps running).
pub struct TcpGate {
    /// The address clients connect to.
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpGate {
    /// Relays a fresh loopback port to `backend`; starts open.
    pub fn new(backend: SocketAddr) -> TcpGate {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, l) = (open.clone(), live.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(backend) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut l = l.lock().unwrap();
                    l.retain(|s| s.peer_addr().is_ok());
                    l.push(client.try_clone().unwrap());
                    l.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        TcpGate { addr, open, live }
    }

    /// Cuts the backend off: connections in flight are shut down, new ones dropped.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A `redis-server` on a loopback port with an append-only file in `dir`, so a restart on
/// the same directory keeps every record (decision 0005: the fencing is only as durable as
/// Redis).
pub struct RedisServer {
    /// The process (`None` while stopped).
    pub proc: Option<Proc>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free port with its files in `dir`.
    pub fn start(dir: &Path) -> RedisServer {
        let mut r = RedisServer {
            proc: None,
            port: free_tcp_port(),
            dir: dir.to_path_buf(),
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and directory; waits for PONG.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "redis-server already running");
        let mut cmd = Command::new(require_cmd("redis-server"));
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir);
        let mut proc = Proc::spawn("redis-server", cmd);
        let port = self.port;
        wait_for(
            "redis-server to answer PING",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if let Some(s) = proc.try_exit() {
                    panic!("redis-server exited with {s}:\n{}", proc.log_tail(20));
                }
                redis_ping(port).then_some(())
            },
        );
        self.proc = Some(proc);
    }

    /// Stops it with SIGTERM (it writes its append-only file) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(15);
            if p.wait_exit(Duration::from_secs(10)).is_none() {
                panic!("redis-server did not stop on SIGTERM");
            }
        }
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// The S3 server moto (`python3 -m moto.server`) on a free loopback port, with one bucket.
pub struct MotoS3 {
    /// The process.
    pub proc: Proc,
    /// Its address.
    pub addr: SocketAddr,
    /// The bucket created at start.
    pub bucket: String,
}

impl MotoS3 {
    /// Starts moto and creates `bucket` through the S3 API (`PUT /bucket`).
    pub fn start(bucket: &str) -> MotoS3 {
        let port = free_tcp_port();
        let mut cmd = Command::new(require_cmd("python3"));
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let mut proc = Proc::spawn("moto-s3", cmd);
        let base = format!("http://127.0.0.1:{port}");
        wait_for(
            "moto to answer (python3 -m moto.server; pip install 'moto[server]')",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                if let Some(s) = proc.try_exit() {
                    panic!(
                        "moto exited with {s} (is `moto[server]` installed? \
                         scripts/install-test-tools.sh):\n{}",
                        proc.log_tail(20)
                    );
                }
                try_get(&format!("{base}/"))
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        let put = agent().put(&format!("{base}/{bucket}")).call();
        assert!(put.is_ok(), "CreateBucket {bucket}: {put:?}");
        MotoS3 {
            proc,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            bucket: bucket.to_string(),
        }
    }
}

/// How a [`Cluster`] is started.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Number of workers.
    pub workers: usize,
    /// Extra `tidegate serve` flags for every worker.
    pub worker_args: Vec<String>,
    /// HAProxy closes the sessions of a worker it marks down (`on-marked-down
    /// shutdown-sessions`): a hung (SIGSTOPped) worker's publisher is cut loose and
    /// reconnects elsewhere, as an encoder's own timeout would do. Off for drain tests,
    /// where the worker itself must move its publishers.
    pub shutdown_sessions_on_down: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            workers: 3,
            worker_args: Vec::new(),
            shutdown_sessions_on_down: true,
        }
    }
}

/// HAProxy's health-check period on each worker's `/readyz` (and the check timeout).
pub const HAPROXY_CHECK_MS: u64 = 300;

/// A local cluster on loopback: `redis-server` (append-only), moto S3 behind a
/// [`TcpGate`], N `tidegate serve` workers with `--state redis://… --storage s3://…`, and
/// HAProxy in TCP mode on one RTMP port (the stand-in for a Kubernetes Service), checking
/// each worker's `/readyz` every [`HAPROXY_CHECK_MS`], so a dead or draining worker is taken
/// out. Everything is killed on drop.
pub struct Cluster {
    /// The workers, in start order (a killed one stays in the list, dead).
    pub workers: Vec<Server>,
    /// HAProxy.
    pub haproxy: Proc,
    /// HAProxy's RTMP frontend.
    pub rtmp: SocketAddr,
    /// The state store.
    pub redis: RedisServer,
    /// The gate in front of S3 (close it for an object-storage outage).
    pub s3_gate: TcpGate,
    /// The S3 server.
    pub s3: MotoS3,
    /// The run directory (configs, Redis files, worker data dirs).
    pub dir: tempfile::TempDir,
    /// Workers stopped with SIGSTOP (left out of [`Cluster::running`]).
    pub paused: Vec<usize>,
}

impl Cluster {
    /// Starts everything and waits until every worker is ready and HAProxy listens.
    pub fn start(opts: ClusterOpts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("tidegate-cluster-")
            .tempdir()
            .unwrap();
        let redis_dir = dir.path().join("redis");
        fs::create_dir_all(&redis_dir).unwrap();
        let redis = RedisServer::start(&redis_dir);
        let s3 = MotoS3::start("tidegate");
        let s3_gate = TcpGate::new(s3.addr);
        let mut workers = Vec::new();
        for i in 0..opts.workers {
            workers.push(Self::spawn_worker(
                dir.path(),
                i,
                &redis.url(),
                s3_gate.addr,
                &s3.bucket,
                &opts.worker_args,
            ));
        }
        for w in &mut workers {
            w.wait_ready(Duration::from_secs(30));
        }
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(
            &cfg,
            haproxy_config(rtmp, &workers, opts.shutdown_sessions_on_down),
        )
        .unwrap();
        let mut check = Command::new(require_cmd("haproxy"));
        let out = check.arg("-c").arg("-f").arg(&cfg).output().unwrap();
        assert!(
            out.status.success(),
            "haproxy -c rejects the config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(require_cmd("haproxy"));
        cmd.arg("-db").arg("-f").arg(&cfg);
        let mut haproxy = Proc::spawn("haproxy", cmd);
        wait_for(
            "haproxy to listen",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if let Some(s) = haproxy.try_exit() {
                    panic!("haproxy exited with {s}:\n{}", haproxy.log_tail(30));
                }
                TcpStream::connect(rtmp).ok()
            },
        );
        Cluster {
            workers,
            haproxy,
            rtmp,
            redis,
            s3_gate,
            s3,
            dir,
            paused: Vec::new(),
        }
    }

    /// `SIGSTOP`s worker `i`: it keeps its sockets but does nothing (a hung process, a
    /// long GC pause, a partitioned node).
    pub fn pause(&mut self, i: usize) {
        self.workers[i].proc.signal(19);
        self.paused.push(i);
    }

    /// `SIGCONT`s worker `i`.
    pub fn resume(&mut self, i: usize) {
        self.workers[i].proc.signal(18);
        self.paused.retain(|&p| p != i);
    }

    fn spawn_worker(
        run: &Path,
        i: usize,
        redis: &str,
        s3: SocketAddr,
        bucket: &str,
        extra: &[String],
    ) -> Server {
        let data_dir = run.join(format!("worker-{i}"));
        fs::create_dir_all(&data_dir).unwrap();
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.arg("serve")
            .args(["--rtmp-listen", &rtmp.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--srt-listen", &srt.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--state", redis])
            .args(["--storage", &format!("s3://{bucket}/live")])
            .args(extra);
        cmd.env("NO_COLOR", "1")
            .env("AWS_ENDPOINT_URL", format!("http://{s3}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .env_remove("TIDEGATE_STATE")
            .env_remove("TIDEGATE_STORAGE");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        Server {
            proc: Proc::spawn(&format!("tidegate-w{i}"), cmd),
            rtmp,
            http,
            srt,
            data_dir,
            _tmp: None,
        }
    }

    /// `rtmp://HAPROXY/live/KEY`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// Indices of the workers whose process is still running (and not paused).
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].proc.is_running() && !self.paused.contains(&i))
            .collect()
    }

    /// The worker whose process holds `key` now (the record's owner, as any running worker
    /// reports it), if the stream is live.
    pub fn owner_of(&mut self, key: &str) -> Option<usize> {
        for i in self.running() {
            let url = self.workers[i].url(&format!("/api/v1/streams/default/{key}"));
            let Ok(r) = try_get(&url) else { continue };
            if r.status != 200 {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                continue;
            };
            let owner = v["worker"].as_str().unwrap_or_default().to_string();
            let live = !matches!(v["status"].as_str(), Some("reconnecting" | "offline"));
            if !live {
                return None;
            }
            return (0..self.workers.len())
                // The default worker id is `HOST-HTTPPORT`.
                .find(|&j| owner.ends_with(&format!("-{}", self.workers[j].http.port())));
        }
        None
    }

    /// Waits until `key` is live on some worker and returns it.
    pub fn wait_owner(&mut self, key: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.owner_of(key) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no worker holds {key} after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every worker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, w) in self.workers.iter().enumerate() {
            s.push_str(&format!(
                "----- worker {i} -----\n{}\n",
                w.proc.log_tail(40)
            ));
        }
        s
    }
}

/// The HAProxy configuration of a [`Cluster`] (and the shape `deploy/local/cluster.sh`
/// writes): TCP mode, a connect failure is retried on another worker (`option
/// redispatch`), `/readyz` checked every [`HAPROXY_CHECK_MS`].
pub fn haproxy_config(frontend: SocketAddr, workers: &[Server], shutdown_sessions: bool) -> String {
    let ms = HAPROXY_CHECK_MS;
    let mut cfg = format!(
        "global\n  maxconn 2000\n\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         timeout check {ms}ms\n  retries 3\n  option redispatch\n\n\
         frontend rtmp\n  bind {frontend}\n  default_backend workers\n\n\
         backend workers\n  balance leastconn\n  option httpchk GET /readyz\n  \
         http-check expect status 200\n  \
         default-server inter {ms}ms fastinter {ms}ms downinter {ms}ms fall 2 rise 2{}\n",
        if shutdown_sessions {
            " on-marked-down shutdown-sessions"
        } else {
            ""
        }
    );
    for (i, w) in workers.iter().enumerate() {
        cfg.push_str(&format!(
            "  server w{i} {} check port {}\n",
            w.rtmp,
            w.http.port()
        ));
    }
    cfg
}

/// An encoder that reconnects on failure: a thread that runs `ffmpeg -re -stream_loop -1
/// -i FILE -c copy -f flv URL` and starts it again at once whenever it exits, until
/// stopped. Every run appends to one log.
pub struct ReconnectingPublisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    child: std::sync::Arc<std::sync::Mutex<Option<Child>>>,
    /// How many times ffmpeg was started.
    pub starts: std::sync::Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
    /// The log file of every run.
    pub log: PathBuf,
}

impl ReconnectingPublisher {
    /// Starts publishing `file` to `url`.
    pub fn start(file: &Path, url: &str) -> ReconnectingPublisher {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let starts = Arc::new(AtomicU64::new(0));
        let log = log_dir().join(format!("{}.log", unique_name("reconnecting-publisher")));
        let (s, c, n, l) = (stop.clone(), child.clone(), starts.clone(), log.clone());
        let (file, url) = (file.to_path_buf(), url.to_string());
        let exe = ffmpeg();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let f = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&l)
                    .unwrap();
                let mut cmd = Command::new(&exe);
                cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
                    .args(["-stream_loop", "-1", "-i"])
                    .arg(&file)
                    .args(["-c", "copy", "-f", "flv", &url])
                    .stdin(Stdio::null())
                    .stdout(f.try_clone().unwrap())
                    .stderr(f);
                {
                    let mut slot = c.lock().unwrap();
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = cmd.spawn().expect("start ffmpeg");
                    n.fetch_add(1, Ordering::SeqCst);
                    *slot = Some(started);
                }
                loop {
                    let done = c
                        .lock()
                        .unwrap()
                        .as_mut()
                        .map(|ch| ch.try_wait().ok().flatten().is_some())
                        .unwrap_or(true);
                    if done {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                // A pause of a few ms keeps a refused encoder from spinning.
                thread::sleep(Duration::from_millis(50));
            }
        });
        ReconnectingPublisher {
            stop,
            child,
            starts,
            thread: Some(thread),
            log,
        }
    }

    /// How many times ffmpeg has been started.
    pub fn start_count(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    /// Stops the loop and kills the running ffmpeg.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut ch) = self.child.lock().unwrap().take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ReconnectingPublisher {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "----- reconnecting publisher ({}), {} starts -----\n{}\n-----",
                self.log.display(),
                self.start_count(),
                self.log_tail(40)
            );
        }
    }
}

/// A test file like [`Media::H264Aac`] but with a keyframe every `gop_ms` (for tests that
/// need many short segments: `--segment-duration` down to 500 ms), generated once.
pub fn media_short_gop(gop_frames: u32) -> PathBuf {
    let dir = target_dir().join("test-media");
    fs::create_dir_all(&dir).unwrap();
    let name = format!("h264aac-20fps-gop{gop_frames}-v1.mp4");
    let path = dir.join(&name);
    if path.exists() {
        return path;
    }
    let lock = File::create(dir.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if path.exists() {
        return path;
    }
    let tmp = dir.join(format!("{name}.tmp.{}.mp4", std::process::id()));
    let g = gop_frames.to_string();
    run_ok(
        Command::new(ffmpeg())
            .args(["-y", "-nostdin", "-hide_banner", "-v", "error"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=20"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &MEDIA_SECS.to_string()])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .args([
                "-g",
                &g,
                "-keyint_min",
                &g,
                "-sc_threshold",
                "0",
                "-b:v",
                "300k",
            ])
            .args(AAC)
            .args(["-movflags", "+faststart"])
            .arg(&tmp),
        &format!("generating {name}"),
    );
    fs::rename(&tmp, &path).unwrap();
    path
}

/// The sequence number in a segment name `seg-EPOCH-N.ext`: `(EPOCH, N)`.
pub fn segment_epoch_index(uri: &str) -> Option<(u64, u64)> {
    let stem = uri.rsplit('/').next()?.strip_prefix("seg-")?;
    let stem = stem.split('.').next()?;
    let (e, n) = stem.split_once('-')?;
    Some((e.parse().ok()?, n.parse().ok()?))
}

/// Value of an unlabelled counter or gauge in Prometheus text (`name` with or without the
/// `_total` suffix); 0 when absent.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name || n == format!("{name}_total")).then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// POST with an empty body; transport errors are `Err`, any HTTP status is `Ok(status)`.
pub fn try_post(url: &str) -> Result<u16, String> {
    match agent().post(url).send_bytes(&[]) {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(s, _)) => Ok(s),
        Err(e) => Err(format!("POST {url}: {e}")),
    }
}

/// Follows one stream's playlist on several workers at once: every fetch must answer 200
/// and pass the RFC checks and the progress rules against the previous fetch from the same
/// worker; every segment URL is fetched once when first listed, and
/// [`ClusterWatch::fetch_all_listed`] re-fetches everything listed.
#[derive(Default)]
pub struct ClusterWatch {
    prev: BTreeMap<usize, MediaPlaylist>,
    /// Segment file names (without the worker's address) ever listed, by msn.
    pub listed: BTreeMap<u64, String>,
    fetched: std::collections::BTreeSet<String>,
    /// Playlist fetches that passed.
    pub fetches: usize,
}

impl ClusterWatch {
    /// Fetches and checks the playlist of worker `i` at `url`; fetches newly listed media.
    pub fn observe(
        &mut self,
        i: usize,
        url: &str,
        expect: &Expect,
    ) -> Result<MediaPlaylist, String> {
        let pl = fetch_playlist(url, expect).map_err(|e| format!("worker {i}: {e}"))?;
        if let Some(prev) = self.prev.get(&i) {
            check_progress(prev, &pl).map_err(|e| {
                format!(
                    "worker {i}: {e}\n--- before:\n{}\n--- after:\n{}",
                    prev.text, pl.text
                )
            })?;
        }
        for s in &pl.segments {
            if let Some(old) = self.listed.get(&s.msn) {
                if old != &s.uri {
                    return Err(format!(
                        "worker {i}: msn {} is {} here but was {old} before\n{}",
                        s.msn, s.uri, pl.text
                    ));
                }
            }
            self.listed.insert(s.msn, s.uri.clone());
        }
        let fresh: Vec<Segment> = pl
            .segments
            .iter()
            .filter(|s| !self.fetched.contains(&s.uri))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let mut sub = pl.clone();
            sub.segments = fresh.clone();
            fetch_all_media(&sub).map_err(|e| format!("worker {i}: {e}\n{}", pl.text))?;
            self.fetched.extend(fresh.into_iter().map(|s| s.uri));
        }
        self.prev.insert(i, pl.clone());
        self.fetches += 1;
        Ok(pl)
    }

    /// Applies the checks of [`ClusterWatch::observe`] to a playlist already fetched from
    /// worker `i`.
    pub fn accept_for(&mut self, i: usize, pl: &MediaPlaylist) {
        if let Some(prev) = self.prev.get(&i) {
            check_progress(prev, pl).unwrap_or_else(|e| {
                panic!(
                    "worker {i}: {e}\n--- before:\n{}\n--- after:\n{}",
                    prev.text, pl.text
                )
            });
        }
        self.fetch_all_listed(pl).unwrap_or_else(|e| panic!("{e}"));
        for s in &pl.segments {
            self.listed.insert(s.msn, s.uri.clone());
            self.fetched.insert(s.uri.clone());
        }
        self.prev.insert(i, pl.clone());
    }

    /// Fetches every map and segment `pl` lists (all must answer 200).
    pub fn fetch_all_listed(&self, pl: &MediaPlaylist) -> Result<(), String> {
        fetch_all_media(pl)
            .map(|_| ())
            .map_err(|e| format!("{e}\n--- playlist:\n{}", pl.text))
    }
}

/// Checks a finished cluster playlist: segment epochs never go back, each epoch's segment
/// indices are contiguous unless the next listed one carries `EXT-X-DISCONTINUITY`, and
/// every change of epoch carries one. Returns the missing (epoch, index) pairs.
pub fn check_epochs(pl: &MediaPlaylist) -> Result<Vec<(u64, u64)>, String> {
    let mut missing = Vec::new();
    let mut prev: Option<(u64, u64)> = None;
    for s in &pl.segments {
        let (e, n) = segment_epoch_index(&s.uri)
            .ok_or_else(|| format!("segment name {} is not seg-EPOCH-N", s.uri))?;
        if let Some((pe, pn)) = prev {
            if e < pe {
                return Err(format!("epoch went back at {}:\n{}", s.uri, pl.text));
            }
            if e > pe && !s.discontinuity {
                return Err(format!(
                    "new epoch at {} without a discontinuity:\n{}",
                    s.uri, pl.text
                ));
            }
            if e == pe && n != pn + 1 {
                if !s.discontinuity {
                    return Err(format!(
                        "segments {pe}-{pn} .. {e}-{n} missing without a discontinuity:\n{}",
                        pl.text
                    ));
                }
                missing.extend((pn + 1..n).map(|k| (e, k)));
            }
        }
        prev = Some((e, n));
    }
    Ok(missing)
}
