//! The one-publish scenario shared by the publisher interop tests.

use std::thread;
use std::time::Duration;

use crate::hls::{live_playlist, wait_playlist, MediaPlaylist, Watch};
use crate::http::get;
use crate::probe::{full_check_ended, probe_duration, StreamInfo};
use crate::process::Proc;
use crate::publish::wait_publisher_success;
use crate::server::{Server, SEGMENT_SECS};

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
    let (mut watch, live_fetches) = watch_while_publishing(&url, fmp4, &mut publisher);
    wait_publisher_success(&mut publisher, Duration::from_secs(1));
    assert!(
        live_fetches >= 2,
        "only {live_fetches} live fetches: the playlist appeared too late"
    );
    server.assert_alive();

    // No publisher for the 3 s window: the playlist ends.
    let (playlist, streams) =
        check_ended_playlist(&url, Duration::from_secs(20), fmp4, video, &mut watch);
    assert_listed_duration(&playlist, sent_secs, SEGMENT_SECS + 0.25);
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

/// Waits (up to 25 s) for the first segment at `url`, then checks the playlist once a
/// second while `publisher` runs: every fetch passes the RFC checks of a live playlist
/// (fMP4 or MPEG-TS as `fmp4` says), never goes back, and every listed segment is
/// fetchable. Returns the watch (for the checks after the end) and the number of live
/// fetches.
pub fn watch_while_publishing(url: &str, fmp4: bool, publisher: &mut Proc) -> (Watch, usize) {
    let live = live_playlist(fmp4);
    wait_playlist(url, Duration::from_secs(25), "the first segment", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    let mut live_fetches = 0;
    while publisher.is_running() {
        watch.observe(url, &live);
        live_fetches += 1;
        thread::sleep(Duration::from_secs(1));
    }
    (watch, live_fetches)
}

/// Waits (up to `timeout`) for `EXT-X-ENDLIST` after the reconnect window, runs
/// [`full_check_ended`] on the ended playlist and checks it against what `watch` saw live
/// (no step back, every segment fetchable).
pub fn check_ended_playlist(
    url: &str,
    timeout: Duration,
    fmp4: bool,
    video: bool,
    watch: &mut Watch,
) -> (MediaPlaylist, Vec<StreamInfo>) {
    wait_playlist(
        url,
        timeout,
        "EXT-X-ENDLIST after the reconnect window",
        |pl| pl.endlist,
    );
    let (playlist, streams) = full_check_ended(url, fmp4, video);
    watch.accept(playlist.clone());
    (playlist, streams)
}

/// Asserts that the playlist's EXTINF durations add up to `sent_secs`, within
/// `tolerance_secs`.
pub fn assert_listed_duration(playlist: &MediaPlaylist, sent_secs: f64, tolerance_secs: f64) {
    let listed = playlist.total_duration();
    assert!(
        (listed - sent_secs).abs() <= tolerance_secs,
        "EXTINF durations add up to {listed:.2}s, {sent_secs}s were sent\n{}",
        playlist.text
    );
}
