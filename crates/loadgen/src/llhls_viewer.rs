//! The LL-HLS viewer: one task per viewer plays a live media playlist the way hls.js does
//! in low-latency mode (draft-pantos-hls-rfc8216bis §6.2.5, Apple's LL-HLS).
//!
//! Loop: GET the playlist (the first time plainly); start `PART-HOLD-BACK` behind the end
//! of the newest part (3 part targets without it; 3 target durations in a playlist without
//! parts); fetch the `EXT-X-MAP`, then every part from there on as it is listed (a segment
//! whole where it has no parts). Then, at the same time, the blocking reload for the next
//! part (`_HLS_msn=M&_HLS_part=P`, with `_HLS_skip=YES` when asked and offered) and the
//! `EXT-X-PRELOAD-HINT` part, which the server holds until the part exists. A playlist
//! without `CAN-BLOCK-RELOAD` is polled every part target (or half target duration).
//!
//! Per part: *delivery* = its last byte at the viewer minus its end (its wall clock from
//! PROGRAM-DATE-TIME plus the parts before it, plus its duration): how long after the part
//! existed the viewer had it; *listed* = the blocking reload that first listed it answered,
//! minus its end; and the emulated playhead's latency ([`crate::playhead`]). A 503 to a
//! blocking reload (held too long) is counted apart and asked again; a 400 (msn too far
//! ahead) is an error, followed by a plain reload.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use crate::http::{self, HttpClient};
use crate::playhead::{Playhead, WallClock};
use crate::playlist::{self, secs_to_ms, MediaPlaylist};
use crate::report::ViewerOutcome;
use crate::viewer::{ViewerKind, ViewerTask, FIRST_PLAYLIST_WAIT};

/// Time allowed for a blocking reload or a hinted part: the server holds them up to about
/// three target durations before it answers 503.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(20);
/// Part targets behind the newest part where playback starts without `PART-HOLD-BACK`.
const DEFAULT_HOLD_BACK_PARTS: f64 = 3.0;
/// Target durations behind the edge where playback starts in a playlist without parts.
const DEFAULT_HOLD_BACK_SEGMENTS: f64 = 3.0;
/// Wait after a failed request before the next one.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Shortest poll interval of a playlist that cannot block.
const MIN_POLL: Duration = Duration::from_millis(100);
/// Hinted parts remembered until the playlist lists them.
const MAX_HINTED: usize = 4;

/// Where a piece of media is in the presentation: (msn, part index); a whole segment is
/// `(msn, 0)` and is followed by `(msn + 1, 0)`.
type Position = (u64, u64);

/// A part or a whole segment to play (borrowed from its playlist).
struct Unit<'a> {
    position: Position,
    /// The position after it.
    next: Position,
    uri: &'a str,
    duration_s: f64,
    pdt_ms: Option<i64>,
    map: Option<&'a str>,
    is_part: bool,
}

/// The playable pieces of `pl` in order: each segment's parts, or the segment itself where
/// it has none, then the parts of the segment being written.
fn units(pl: &MediaPlaylist) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    for s in &pl.segments {
        if s.parts.is_empty() {
            out.push(Unit {
                position: (s.msn, 0),
                next: (s.msn + 1, 0),
                uri: &s.uri,
                duration_s: s.duration,
                pdt_ms: s.pdt_ms,
                map: s.map_uri.as_deref(),
                is_part: false,
            });
            continue;
        }
        let n = s.parts.len() as u64;
        for (i, p) in s.parts.iter().enumerate() {
            let i = i as u64;
            out.push(Unit {
                position: (s.msn, i),
                next: if i + 1 == n {
                    (s.msn + 1, 0)
                } else {
                    (s.msn, i + 1)
                },
                uri: &p.uri,
                duration_s: p.duration,
                pdt_ms: p.pdt_ms,
                map: s.map_uri.as_deref(),
                is_part: true,
            });
        }
    }
    let msn = pl.next_msn();
    let map = pl.segments.last().and_then(|s| s.map_uri.as_deref());
    for (i, p) in pl.open_parts.iter().enumerate() {
        let i = i as u64;
        out.push(Unit {
            position: (msn, i),
            next: (msn, i + 1),
            uri: &p.uri,
            duration_s: p.duration,
            pdt_ms: p.pdt_ms,
            map,
            is_part: true,
        });
    }
    out
}

/// How far behind the newest media playback starts, seconds.
fn hold_back_s(pl: &MediaPlaylist) -> f64 {
    let sc = pl.server_control.as_ref();
    match pl.part_target {
        Some(part) => sc
            .and_then(|c| c.part_hold_back)
            .unwrap_or(part * DEFAULT_HOLD_BACK_PARTS),
        None => sc
            .and_then(|c| c.hold_back)
            .unwrap_or(pl.target_duration * DEFAULT_HOLD_BACK_SEGMENTS),
    }
}

/// The URL of the playlist with the delivery directives.
fn blocking_url(base: &str, (msn, part): (u64, Option<u64>), skip: bool) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!("{base}{sep}_HLS_msn={msn}");
    if let Some(p) = part {
        url.push_str(&format!("&_HLS_part={p}"));
    }
    if skip {
        url.push_str("&_HLS_skip=YES");
    }
    url
}

/// Runs one LL-HLS viewer to its end.
pub async fn run(mut t: ViewerTask) -> ViewerOutcome {
    let mut out = ViewerOutcome {
        index: t.index,
        kind: ViewerKind::LlHls.name().into(),
        ..Default::default()
    };
    tokio::select! {
        _ = sleep_until(t.start_at) => {}
        _ = t.stop.changed() => return out,
    }
    let mut player = LlPlayer {
        client: http::client(),
        url: t.url.clone(),
        skip: t.skip,
        live: t.live.clone(),
        out: &mut out,
        clock: WallClock::now(),
        next: None,
        map_fetched: None,
        hinted: VecDeque::new(),
        playhead: Playhead::default(),
        playhead_from: None,
        joined_at: None,
    };
    tokio::select! {
        _ = sleep_until(t.end_at) => {}
        _ = t.stop.changed() => {}
        _ = player.play() => {}
    }
    let (stalls, stall_ms) = (player.playhead.stalls, player.playhead.stall_ms);
    out.stalls = stalls;
    out.stall_ms = stall_ms as u64;
    out
}

struct LlPlayer<'a> {
    client: HttpClient,
    url: String,
    skip: bool,
    live: std::sync::Arc<crate::report::ViewerLive>,
    out: &'a mut ViewerOutcome,
    clock: WallClock,
    /// The next piece of media to play.
    next: Option<Position>,
    map_fetched: Option<String>,
    /// Parts fetched through the preload hint, not yet listed: URI and arrival (Unix ms).
    hinted: VecDeque<(String, f64, f64)>,
    playhead: Playhead,
    /// Where playback starts (Unix ms of the media), chosen at the first playlist.
    playhead_from: Option<f64>,
    /// The newest piece listed when the viewer joined.
    joined_at: Option<Position>,
}

/// What a playlist request gave.
enum Answer {
    Playlist(Box<MediaPlaylist>, Instant),
    /// 503 to a blocking reload: ask again.
    Busy,
    /// Not there yet (before the stream's first segment) or failed: wait and retry
    /// without directives.
    Retry,
}

impl LlPlayer<'_> {
    fn error(&mut self, kind: &str) {
        self.out.error(kind);
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    async fn play(&mut self) {
        let started = Instant::now();
        let mut directives: Option<(u64, Option<u64>)> = None;
        let mut skip = false;
        let mut hint: Option<String> = None;
        loop {
            let url = match directives {
                Some(d) => blocking_url(&self.url, d, skip),
                None => self.url.clone(),
            };
            let hint_uri = hint.take();
            let hint_url = hint_uri.as_ref().map(|u| playlist::resolve(&self.url, u));
            let client = self.client.clone();
            let hint_fut = async move {
                match hint_url {
                    Some(u) => Some(http::get_timed(&client, &u, BLOCKING_TIMEOUT).await),
                    None => None,
                }
            };
            let (answer, hinted) = tokio::join!(self.load(&url, directives.is_some()), hint_fut);
            if let (Some(uri), Some(res)) = (hint_uri, hinted) {
                match res {
                    Ok(r) if r.status == 200 => {
                        self.count_fetch(r.bytes, true);
                        if self.hinted.len() >= MAX_HINTED {
                            self.hinted.pop_front();
                        }
                        self.hinted
                            .push_back((uri, self.clock.ms(r.done), self.clock.ms(r.seen)));
                    }
                    // A hint names a part that may never exist (the segment ended first):
                    // players ignore the miss.
                    Ok(_) => {}
                    Err(e) => self.error(e.kind()),
                }
            }
            let (pl, answered) = match answer {
                Answer::Playlist(pl, at) => (pl, at),
                Answer::Busy => {
                    // Held for the full timeout (seconds): ask again, after a breath in
                    // case a server answers 503 at once.
                    sleep(MIN_POLL).await;
                    continue;
                }
                Answer::Retry => {
                    if !self.out.started && started.elapsed() > FIRST_PLAYLIST_WAIT {
                        self.error("never_started");
                        return;
                    }
                    directives = None;
                    sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            let blocking = pl
                .server_control
                .as_ref()
                .is_some_and(|c| c.can_block_reload);
            self.out.low_latency = blocking && pl.part_target.is_some();
            self.on_playlist(&pl, answered).await;
            if pl.endlist {
                return;
            }
            if blocking {
                directives = Some(pl.next_directives());
                skip = self.skip
                    && pl
                        .server_control
                        .as_ref()
                        .is_some_and(|c| c.can_skip_until.is_some());
                hint = pl
                    .preload_hint
                    .as_ref()
                    .filter(|h| self.next.is_none_or(|n| (h.msn, h.part) >= n))
                    .map(|h| h.uri.clone());
            } else {
                let every = pl.part_target.unwrap_or(pl.target_duration / 2.0);
                sleep_until(answered + Duration::from_secs_f64(every).max(MIN_POLL)).await;
            }
        }
    }

    async fn load(&mut self, url: &str, blocking: bool) -> Answer {
        match http::get_body_at(&self.client, url, BLOCKING_TIMEOUT).await {
            Ok((200, body, at)) => match std::str::from_utf8(&body)
                .map_err(|_| "not UTF-8")
                .and_then(playlist::parse)
            {
                Ok(pl) => {
                    self.out.playlists += 1;
                    self.out.started = true;
                    Answer::Playlist(Box::new(pl), at)
                }
                Err(_) => {
                    self.error("parse");
                    Answer::Retry
                }
            },
            Ok((503, _, _)) if blocking => {
                self.out.blocking_503 += 1;
                Answer::Busy
            }
            Ok((404, _, _)) | Err(_) if !self.out.started => Answer::Retry,
            Ok((400, _, _)) if blocking => {
                self.error("blocking_400");
                Answer::Retry
            }
            Ok(_) => {
                self.error("playlist_status");
                Answer::Retry
            }
            Err(e) => {
                self.error(e.kind());
                Answer::Retry
            }
        }
    }

    fn count_fetch(&mut self, bytes: u64, part: bool) {
        self.out.segments += 1;
        self.out.bytes += bytes;
        if part {
            self.out.parts += 1;
        }
        self.live.segments.fetch_add(1, Ordering::Relaxed);
    }

    /// Fetches what `pl` lists from the next position on, and measures.
    async fn on_playlist(&mut self, pl: &MediaPlaylist, answered: Instant) {
        let units = units(pl);
        let (Some(first), Some(last)) = (units.first(), units.last()) else {
            return;
        };
        let next = match self.next {
            // Fell out of the window: jump to the oldest listed.
            Some(n) if n < first.position => first.position,
            Some(n) => n,
            None => {
                // Start: the piece holding the position `hold back` behind the edge.
                let Some(edge) = pl.edge_ms() else {
                    return;
                };
                let position = edge - secs_to_ms(hold_back_s(pl));
                let start = units
                    .iter()
                    .find(|u| {
                        u.pdt_ms
                            .is_some_and(|p| p + secs_to_ms(u.duration_s) > position)
                    })
                    .unwrap_or(last);
                self.playhead_from = Some(position as f64);
                self.joined_at = Some(last.position);
                start.position
            }
        };
        self.next = Some(next);
        let answered_ms = self.clock.ms(answered);
        for u in units.iter().filter(|u| u.position >= next) {
            if let Some(map) = &u.map {
                if self.map_fetched.as_deref() != Some(map) {
                    let url = playlist::resolve(&self.url, map);
                    match http::get_timed(&self.client, &url, http::HTTP_TIMEOUT).await {
                        Ok(r) if r.status == 200 => {
                            self.map_fetched = Some(map.to_string());
                            self.count_fetch(r.bytes, false);
                        }
                        Ok(_) => self.error("init_status"),
                        Err(e) => self.error(e.kind()),
                    }
                }
            }
            let end_ms = u.pdt_ms.map(|p| p as f64 + u.duration_s * 1000.0);
            // New since the last playlist: when its listing arrived.
            if u.is_part && self.out.playlists > 1 {
                if let Some(end) = end_ms {
                    self.out.part_listed_ms.push(answered_ms - end);
                }
            }
            let arrived = match self.hinted.iter().position(|(h, _, _)| *h == u.uri) {
                Some(i) => self.hinted.remove(i).map(|(_, at, seen)| (at, seen)),
                None => {
                    let url = playlist::resolve(&self.url, u.uri);
                    let t0 = Instant::now();
                    match http::get_timed(&self.client, &url, http::HTTP_TIMEOUT).await {
                        Ok(r) if r.status == 200 => {
                            self.count_fetch(r.bytes, u.is_part);
                            self.out
                                .fetch_ms
                                .push(r.done.duration_since(t0).as_secs_f64() * 1000.0);
                            Some((self.clock.ms(r.done), self.clock.ms(r.seen)))
                        }
                        Ok(_) => {
                            self.error(if u.is_part {
                                "part_status"
                            } else {
                                "segment_status"
                            });
                            None
                        }
                        Err(e) => {
                            self.error(e.kind());
                            None
                        }
                    }
                }
            };
            self.next = Some(u.next);
            let (Some((arrived, seen)), Some(pdt)) = (arrived, u.pdt_ms) else {
                continue;
            };
            let start = pdt as f64;
            if !self.playhead.started() {
                let from = self.playhead_from.unwrap_or(start);
                self.playhead.start(arrived, from);
            }
            if let Some(l) = self.playhead.arrive(start, arrived) {
                self.out.latency_ms.push(l);
            }
            // Delivery counts the parts that came into existence after the viewer joined.
            if let (Some(end), true) = (end_ms, self.joined_at.is_some_and(|j| u.position > j)) {
                self.out.delivery_ms.push(arrived - end);
                self.out.delivery_seen_ms.push(seen - end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: &str = "#EXTM3U
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
s4.m4s
#EXT-X-PART:DURATION=1.0,URI=\"s5.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.0,URI=\"s5.1.m4s\"
#EXTINF:2.000,
s5.m4s
#EXT-X-PART:DURATION=0.5,URI=\"s6.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s6.1.m4s\"
";

    #[test]
    fn units_are_parts_where_listed_and_segments_elsewhere() {
        let pl = playlist::parse(PL).unwrap();
        let u = units(&pl);
        let got: Vec<(Position, Position, &str, bool)> = u
            .iter()
            .map(|u| (u.position, u.next, u.uri, u.is_part))
            .collect();
        assert_eq!(
            got,
            vec![
                ((4, 0), (5, 0), "s4.m4s", false),
                ((5, 0), (5, 1), "s5.0.m4s", true),
                ((5, 1), (6, 0), "s5.1.m4s", true),
                ((6, 0), (6, 1), "s6.0.m4s", true),
            ]
        );
        assert_eq!(u[3].pdt_ms, Some(1_700_000_004_000));
        assert_eq!(u[3].map, Some("init.mp4"));
        assert_eq!(hold_back_s(&pl), 1.0);
        assert_eq!(pl.next_directives(), (6, Some(1)));
    }

    #[test]
    fn blocking_urls() {
        assert_eq!(
            blocking_url("http://h/a.m3u8", (6, Some(1)), false),
            "http://h/a.m3u8?_HLS_msn=6&_HLS_part=1"
        );
        assert_eq!(
            blocking_url("http://h/a.m3u8?token=x", (7, None), true),
            "http://h/a.m3u8?token=x&_HLS_msn=7&_HLS_skip=YES"
        );
    }
}
