//! Publishers: ffmpeg sending a test file over RTMP (once, for a while, or forever), into
//! MPEG-TS over SRT or UDP, and an encoder that reconnects whenever it is cut off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::media::{media, Media, MEDIA_SECS};
use crate::paths::{log_dir, unique_name};
use crate::process::Proc;
use crate::tools::ffmpeg;

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
        Self::start_rotating(file, &[url.to_owned()])
    }

    /// Starts publishing `file` to `urls[0]`, and each restart to the next URL in turn: an
    /// encoder with a primary and a backup ingest address, which moves to the other when
    /// it loses the one it had.
    pub fn start_rotating(file: &Path, urls: &[String]) -> ReconnectingPublisher {
        assert!(!urls.is_empty(), "a publisher needs a URL");
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let starts = Arc::new(AtomicU64::new(0));
        let log = log_dir().join(format!("{}.log", unique_name("reconnecting-publisher")));
        let (s, c, n, l) = (stop.clone(), child.clone(), starts.clone(), log.clone());
        let (file, urls) = (file.to_path_buf(), urls.to_vec());
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
                    .args(["-c", "copy", "-f", "flv"])
                    .arg(&urls[n.load(Ordering::SeqCst) as usize % urls.len()])
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

    /// Kills the running ffmpeg (the encoder drops its connection); the loop starts it
    /// again at once, to the next URL.
    pub fn restart(&self) {
        if let Some(ch) = self.child.lock().unwrap().as_mut() {
            let _ = ch.kill();
        }
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
        crate::process::log_tail(&self.log, n)
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
