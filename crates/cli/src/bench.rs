//! `tidegate bench`: N paced publishers (and M viewers) against an ingest fleet, with a live
//! progress line on stderr and a report on stdout (and in JSON with `--json`). The work is
//! in the `tidegate-loadgen` crate; this file is the command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tidegate_loadgen::viewer::ViewerKind;
use tidegate_loadgen::{BenchConfig, Progress};

/// `tidegate bench` flags.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Publish URL: `rtmp://HOST[:PORT]/APP/KEY` or
    /// `srt://HOST:PORT[?streamid=...&passphrase=...&pbkeylen=16&latency=MS]`; `{i}` becomes
    /// the publisher's index and `{N+i}` N plus it (e.g. one port per publisher).
    #[arg(long, default_value = "rtmp://127.0.0.1:1935/live/bench{i}")]
    url: String,
    /// Input file, read into memory once: FLV (make one with --generate-clip), or MPEG-TS
    /// for srt:// URLs (an FLV input is muxed to MPEG-TS for SRT).
    #[arg(long, required_unless_present = "generate_clip")]
    input: Option<PathBuf>,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// New publisher connections per second, e.g. `10/s` or `10` (`0` = all at once).
    #[arg(long, default_value = "10/s", value_parser = parse_rate)]
    ramp_up_rate: f64,
    /// Length of the whole run, ramp-up included (e.g. `60s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// HLS viewers; viewer j plays stream `j % publishers`.
    #[arg(long, default_value_t = 0)]
    viewers: usize,
    /// Media playlist URL for the HLS and LL-HLS viewers; `{i}` becomes the stream index.
    #[arg(long)]
    play_url: Option<String>,
    /// What the viewers emulate, in turn (viewer j is the (j mod n)-th): `hls` (hls.js
    /// polling whole segments), `ll-hls` (hls.js in low-latency mode: blocking reloads,
    /// parts, preload hints), `dash` (a DASH player; low-latency DASH when the MPD has an
    /// availabilityTimeOffset). E.g. `--viewer-kind hls,ll-hls,dash`.
    #[arg(long, value_delimiter = ',', default_value = "hls", value_parser = parse_kind)]
    viewer_kind: Vec<ViewerKind>,
    /// MPD URL for the DASH viewers; `{i}` becomes the stream index (e.g.
    /// `http://HOST/dash/default/bench{i}/manifest.mpd`).
    #[arg(long)]
    dash_url: Option<String>,
    /// LL-HLS viewers ask for delta updates (`_HLS_skip=YES`) where the server offers them.
    #[arg(long)]
    ll_skip: bool,
    /// Viewers start this long after their stream's publisher (e.g. `10s`), to join a full
    /// live window as a viewer arriving mid-stream does (latency figures).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    viewer_delay: Duration,
    /// The server's metrics page, for its keyframe → listed latency
    /// [default: /metrics on the --play-url host].
    #[arg(long)]
    metrics_url: Option<String>,
    /// Also write the report as JSON to this file (`-` for stdout instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the standard test clip (10 s, 720p30 H.264 3 Mbit/s + AAC, 2 s GOP) to this
    /// FLV file with ffmpeg, then exit (or, with --input, then run on it).
    #[arg(long)]
    generate_clip: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Stream keys, one a line (a tenant's keys): publisher i puts line `i % lines` where
    /// the URL says `{key}`. Keys are secrets: the file is read, never printed.
    #[arg(long)]
    keys: Option<PathBuf>,
}

/// The keys of a `--keys` file: its non-empty lines, trimmed.
fn read_keys(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keys in {}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{} holds no key", path.display());
    }
    Ok(keys)
}

fn parse_kind(s: &str) -> Result<ViewerKind, String> {
    ViewerKind::parse(s).ok_or_else(|| format!("`{s}` is not a viewer kind (hls, ll-hls, dash)"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    let v: f64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a rate like `10/s`"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("`{s}` must be zero or positive"));
    }
    Ok(if v == 0.0 { f64::INFINITY } else { v })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Runs `tidegate bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.generate_clip {
        generate_clip(path)?;
        eprintln!("wrote {}", path.display());
        if args.input.is_none() {
            return Ok(());
        }
    }
    let Some(input) = &args.input else {
        bail!("--input is required");
    };
    let config = BenchConfig {
        url: args.url.clone(),
        publishers: args.publishers,
        ramp_up_per_sec: args.ramp_up_rate,
        duration: args.duration,
        viewers: args.viewers,
        play_url: args.play_url.clone(),
        viewer_kinds: args.viewer_kind.clone(),
        dash_url: args.dash_url.clone(),
        ll_skip: args.ll_skip,
        viewer_delay: args.viewer_delay,
        metrics_url: args.metrics_url.clone(),
        threads: args.threads.max(1),
        keys: match &args.keys {
            Some(path) => read_keys(path)?,
            None => Vec::new(),
        },
    };
    config.validate()?;
    let file = tidegate_loadgen::load_input(input)
        .with_context(|| format!("cannot use {}", input.display()))?;
    eprintln!(
        "tidegate bench: {} publisher(s), {} viewer(s), {:?}; input {:.1} s, GOP {} ms, {} kbit/s",
        config.publishers,
        config.viewers,
        config.duration,
        file.duration_ms() as f64 / 1000.0,
        file.gop_ms(),
        file.bitrate_bps() / 1000
    );
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let quiet = args.quiet;
    let report = runtime.block_on(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tidegate_loadgen::run(config, file, shutdown, |p: &Progress| {
            if !quiet {
                eprintln!("{}", p.line());
            }
        })
        .await
    })?;
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    let mut stdout = std::io::stdout().lock();
    if json_to_stdout {
        writeln!(stdout, "{}", report.to_json())?;
    } else {
        write!(stdout, "{}", report.to_text())?;
        if let Some(path) = &args.json {
            std::fs::write(path, report.to_json())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// The standard clip: 10 s of 1280x720 30 fps H.264 at 3 Mbit/s with a 2 s GOP, and AAC.
fn generate_clip(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-y", "-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "10"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-b:v", "3M", "-maxrate", "3M", "-bufsize", "6M"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-f", "flv"])
        .arg(path)
        .output()
        .context("cannot run ffmpeg (is it installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "ffmpeg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert_eq!(parse_rate("0"), Ok(f64::INFINITY));
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
