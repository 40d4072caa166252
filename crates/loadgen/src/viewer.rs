//! The viewer driver: one task per viewer plays a live HLS media playlist the way hls.js
//! does, and measures what a player would suffer.
//!
//! Loop: GET the playlist every target duration / 2; on the first load, start three
//! segments from the live edge (hls.js `liveSyncDurationCount`); fetch the `EXT-X-MAP`
//! whenever it changes and every segment from there on, one after another. Per segment it
//! records the GET time and, for segments that appear after the first load, the delay
//! between the segment's `EXT-X-PROGRAM-DATE-TIME` + duration (when its last frame
//! reached the server) and the poll that first saw it listed. No new segment for more
//! than 2 × target duration on a live playlist is a stall. Each segment also feeds the
//! emulated playhead ([`crate::playhead`]): playback starts at the first segment fetched
//! (three from the edge), and the latency is now minus the PROGRAM-DATE-TIME on screen.
//!
//! The other kinds of viewer: [`crate::llhls_viewer`] (hls.js in low-latency mode) and
//! [`crate::dash_viewer`] (a DASH player, low-latency when the MPD says so).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::http::{self, HttpClient};
use crate::playhead::{Playhead, WallClock};
use crate::playlist::{self, MediaPlaylist};
use crate::report::{ViewerLive, ViewerOutcome};

/// What a viewer emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerKind {
    /// hls.js with its defaults: polls the playlist, plays whole segments.
    Hls,
    /// hls.js with `lowLatencyMode`: blocking playlist reloads, parts, preload hints.
    LlHls,
    /// A DASH player (dash.js): the MPD's timeline; low-latency DASH when the MPD has an
    /// `availabilityTimeOffset`.
    Dash,
}

impl ViewerKind {
    /// Parses `hls`, `ll-hls` (or `llhls`), `dash`.
    pub fn parse(s: &str) -> Option<ViewerKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hls" => Some(ViewerKind::Hls),
            "ll-hls" | "llhls" => Some(ViewerKind::LlHls),
            "dash" | "ll-dash" | "lldash" => Some(ViewerKind::Dash),
            _ => None,
        }
    }

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            ViewerKind::Hls => "hls",
            ViewerKind::LlHls => "ll-hls",
            ViewerKind::Dash => "dash",
        }
    }
}

/// How long a viewer waits for its playlist to first exist (the publisher has to connect
/// and cut a first segment) before it counts `never_started`.
pub const FIRST_PLAYLIST_WAIT: Duration = Duration::from_secs(30);
/// Segments behind the live edge where playback starts (hls.js `liveSyncDurationCount`).
const LIVE_SYNC_SEGMENTS: u64 = 3;
/// A live playlist with no new segment for this many target durations is a stall.
const STALL_TARGET_DURATIONS: f64 = 2.0;
/// Shortest reload interval (guards against a zero target duration).
const MIN_RELOAD: Duration = Duration::from_millis(100);

/// Everything one viewer task needs.
#[derive(Debug)]
pub struct ViewerTask {
    /// Index.
    pub index: usize,
    /// What it emulates.
    pub kind: ViewerKind,
    /// The media playlist URL, or the MPD's for DASH (already expanded).
    pub url: String,
    /// LL-HLS: ask for delta updates (`_HLS_skip=YES`) where the server offers them.
    pub skip: bool,
    /// When to start.
    pub start_at: Instant,
    /// When to stop.
    pub end_at: Instant,
    /// Live counters.
    pub live: Arc<ViewerLive>,
    /// Turns true to stop early.
    pub stop: watch::Receiver<bool>,
}

/// Runs one viewer of any kind to its end.
pub async fn run(t: ViewerTask) -> ViewerOutcome {
    match t.kind {
        ViewerKind::Hls => run_hls(t).await,
        ViewerKind::LlHls => crate::llhls_viewer::run(t).await,
        ViewerKind::Dash => crate::dash_viewer::run(t).await,
    }
}

/// Runs one regular HLS viewer to its end.
async fn run_hls(mut t: ViewerTask) -> ViewerOutcome {
    let mut out = ViewerOutcome {
        index: t.index,
        kind: ViewerKind::Hls.name().into(),
        ..Default::default()
    };
    tokio::select! {
        _ = sleep_until(t.start_at) => {}
        _ = t.stop.changed() => return out,
    }
    let mut player = Player {
        client: http::client(),
        url: t.url.clone(),
        live: t.live.clone(),
        out: &mut out,
        started_at: Instant::now(),
        newest_msn: None,
        next_msn: None,
        map_fetched: None,
        last_new_at: Instant::now(),
        stalled_since: None,
        playhead: Playhead::default(),
        clock: WallClock::now(),
        joined_msn: None,
    };
    tokio::select! {
        _ = sleep_until(t.end_at) => {}
        _ = t.stop.changed() => {}
        _ = player.play() => {}
    }
    let now = Instant::now();
    if let Some(since) = player.stalled_since {
        player.out.stall_ms += now.saturating_duration_since(since).as_millis() as u64;
    }
    out
}

struct Player<'a> {
    client: HttpClient,
    url: String,
    live: Arc<ViewerLive>,
    out: &'a mut ViewerOutcome,
    started_at: Instant,
    /// Highest media sequence number seen listed.
    newest_msn: Option<u64>,
    /// Next segment to fetch.
    next_msn: Option<u64>,
    /// The init segment fetched last.
    map_fetched: Option<String>,
    last_new_at: Instant,
    stalled_since: Option<Instant>,
    playhead: Playhead,
    clock: WallClock,
    /// The newest segment listed when the viewer joined.
    joined_msn: Option<u64>,
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Player<'_> {
    fn error(&mut self, kind: &str) {
        self.out.error(kind);
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Plays until the playlist ends or the viewer gives up waiting for it.
    async fn play(&mut self) {
        let mut reload = Duration::from_secs(1);
        loop {
            let polled_at = Instant::now();
            match self.load_playlist().await {
                Load::Playlist(pl) => {
                    reload = Duration::from_secs_f64(pl.target_duration / 2.0).max(MIN_RELOAD);
                    self.on_playlist(&pl, polled_at);
                    self.fetch_new(&pl).await;
                    if pl.endlist {
                        return;
                    }
                }
                Load::NotYet => {
                    if polled_at.duration_since(self.started_at) > FIRST_PLAYLIST_WAIT {
                        self.error("never_started");
                        return;
                    }
                }
                Load::Failed => {}
            }
            sleep_until(polled_at + reload).await;
        }
    }

    async fn load_playlist(&mut self) -> Load {
        let res = http::get(&self.client, &self.url).await;
        let started = self.out.started;
        match res {
            Ok((200, body)) => {
                let text = String::from_utf8_lossy(&body);
                match playlist::parse(&text) {
                    Ok(pl) => {
                        self.out.playlists += 1;
                        self.out.started = true;
                        Load::Playlist(pl)
                    }
                    Err(_) => {
                        self.error("parse");
                        Load::Failed
                    }
                }
            }
            // Before the first segment is cut the playlist does not exist yet.
            Ok((404, _)) if !started => Load::NotYet,
            Err(_) if !started => Load::NotYet,
            Ok(_) => {
                self.error("playlist_status");
                Load::Failed
            }
            Err(e) => {
                self.error(e.kind());
                Load::Failed
            }
        }
    }

    /// PDT → listed delays and stall accounting for one playlist load.
    fn on_playlist(&mut self, pl: &MediaPlaylist, polled_at: Instant) {
        let now_ms = unix_ms_now();
        let first_load = self.newest_msn.is_none();
        let mut new = 0;
        for seg in &pl.segments {
            if self.newest_msn.is_some_and(|m| seg.msn <= m) {
                continue;
            }
            new += 1;
            if first_load {
                continue;
            }
            if let Some(pdt) = seg.pdt_ms {
                let end = pdt as f64 + seg.duration * 1000.0;
                self.out.pdt_to_listed_ms.push(now_ms as f64 - end);
            }
        }
        if let (Some(last), true) = (pl.segments.last(), first_load) {
            self.joined_msn = Some(last.msn);
        }
        if let Some(last) = pl.segments.last() {
            self.newest_msn = Some(self.newest_msn.map_or(last.msn, |m| m.max(last.msn)));
        }
        if new > 0 {
            self.last_new_at = polled_at;
            if let Some(since) = self.stalled_since.take() {
                self.out.stall_ms += polled_at.saturating_duration_since(since).as_millis() as u64;
            }
        } else if !pl.endlist && self.stalled_since.is_none() {
            let limit = Duration::from_secs_f64(pl.target_duration * STALL_TARGET_DURATIONS);
            if polled_at.saturating_duration_since(self.last_new_at) > limit {
                self.out.stalls += 1;
                self.live.stalls.fetch_add(1, Ordering::Relaxed);
                self.stalled_since = Some(self.last_new_at + limit);
            }
        }
    }

    /// Fetches (init and) every segment from `next_msn` on, in order.
    async fn fetch_new(&mut self, pl: &MediaPlaylist) {
        let (Some(first), Some(last)) = (pl.segments.first(), pl.segments.last()) else {
            return;
        };
        let start = last
            .msn
            .saturating_sub(LIVE_SYNC_SEGMENTS - 1)
            .max(first.msn);
        let next = *self.next_msn.get_or_insert(start);
        // Fell out of the window (fetches slower than real time): jump to the live edge.
        let next = if next < first.msn { start } else { next };
        for seg in pl.segments.iter().filter(|s| s.msn >= next) {
            if let Some(map) = &seg.map_uri {
                if self.map_fetched.as_deref() != Some(map) {
                    let url = playlist::resolve(&self.url, map);
                    if self.fetch("init_status", &url, false).await {
                        self.map_fetched = Some(map.clone());
                    }
                }
            }
            let url = playlist::resolve(&self.url, &seg.uri);
            if self.fetch("segment_status", &url, true).await {
                if let Some(pdt) = seg.pdt_ms {
                    let (start, arrived) = (pdt as f64, self.clock.ms(Instant::now()));
                    if !self.playhead.started() {
                        self.playhead.start(arrived, start);
                    }
                    if let Some(l) = self.playhead.arrive(start, arrived) {
                        self.out.latency_ms.push(l);
                    }
                    // Delivery counts the segments listed after the viewer joined.
                    if self.joined_msn.is_some_and(|j| seg.msn > j) {
                        self.out
                            .delivery_ms
                            .push(arrived - start - seg.duration * 1000.0);
                    }
                }
            }
            self.next_msn = Some(seg.msn + 1);
        }
    }

    async fn fetch(&mut self, status_kind: &str, url: &str, timed: bool) -> bool {
        let t0 = Instant::now();
        match http::get(&self.client, url).await {
            Ok((200, body)) => {
                self.out.segments += 1;
                self.out.bytes += body.len() as u64;
                self.live.segments.fetch_add(1, Ordering::Relaxed);
                if timed {
                    self.out.fetch_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                true
            }
            Ok(_) => {
                self.error(status_kind);
                false
            }
            Err(e) => {
                self.error(e.kind());
                false
            }
        }
    }
}

enum Load {
    Playlist(MediaPlaylist),
    NotYet,
    Failed,
}
