//! The DASH viewer: one task per viewer plays a live MPD the way dash.js does.
//!
//! Loop: GET the MPD (again every `minimumUpdatePeriod`); on the first load, start at now
//! minus the presentation delay (`ServiceDescription/Latency@target`, else
//! `suggestedPresentationDelay`, else three segments); fetch the period's init segment, then
//! every segment of the timeline from there on once it is available: at its end on the MPD
//! timeline, or, in low-latency DASH, `availabilityTimeOffset` earlier — the segment being
//! written, delivered with chunked transfer as it grows. In low-latency DASH the viewer
//! also asks for the segment after the newest listed one (the template's next number) as
//! soon as it becomes available, without waiting for the MPD update that lists it.
//!
//! Per segment: the emulated playhead's latency ([`crate::playhead`]; a segment is playable
//! from its first bytes), and *delivery* = its last byte minus its end on the timeline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::http::{self, HttpClient};
use crate::mpd::{self, Mpd, MpdPeriod};
use crate::playhead::{Playhead, WallClock};
use crate::playlist::resolve;
use crate::report::{ViewerLive, ViewerOutcome};
use crate::viewer::{ViewerTask, FIRST_PLAYLIST_WAIT};

/// Segments behind now where playback starts when the MPD suggests no delay.
const DEFAULT_DELAY_SEGMENTS: i64 = 3;
/// Bounds of the MPD reload interval.
const MIN_UPDATE: Duration = Duration::from_millis(200);
const MAX_UPDATE: Duration = Duration::from_secs(5);
/// Wait after a failed request before the next one.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Time allowed for a segment being written (chunked until its end).
const SEGMENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one DASH viewer to its end.
pub async fn run(mut t: ViewerTask) -> ViewerOutcome {
    let mut out = ViewerOutcome {
        index: t.index,
        kind: "dash".into(),
        ..Default::default()
    };
    tokio::select! {
        _ = sleep_until(t.start_at) => {}
        _ = t.stop.changed() => return out,
    }
    let mut player = DashPlayer {
        client: http::client(),
        url: t.url.clone(),
        live: t.live.clone(),
        out: &mut out,
        clock: WallClock::now(),
        next: None,
        init_fetched: None,
        playhead: Playhead::default(),
        position: None,
        joined_ms: None,
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

struct DashPlayer<'a> {
    client: HttpClient,
    url: String,
    live: Arc<ViewerLive>,
    out: &'a mut ViewerOutcome,
    clock: WallClock,
    /// The next segment to play: its period's start (ms) and its number.
    next: Option<(i64, u64)>,
    init_fetched: Option<String>,
    playhead: Playhead,
    /// Where playback starts (Unix ms of the media), chosen at the first MPD.
    position: Option<f64>,
    /// When the viewer joined (Unix ms).
    joined_ms: Option<f64>,
}

/// Where a segment becomes available, Unix ms: its end, less the availability time offset.
fn available_ms(end_ms: i64, start_ms: i64, ato: Option<f64>) -> i64 {
    match ato {
        Some(o) if o.is_infinite() => start_ms,
        Some(o) => end_ms - (o * 1000.0).round() as i64,
        None => end_ms,
    }
}

impl DashPlayer<'_> {
    fn error(&mut self, kind: &str) {
        self.out.error(kind);
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    async fn play(&mut self) {
        let started = Instant::now();
        loop {
            let loaded_at = Instant::now();
            let Some(mpd) = self.load().await else {
                if !self.out.started && started.elapsed() > FIRST_PLAYLIST_WAIT {
                    self.error("never_started");
                    return;
                }
                sleep_until(loaded_at + RETRY_AFTER).await;
                continue;
            };
            if mpd.low_latency() {
                self.out.kind = "ll-dash".into();
                self.out.low_latency = true;
            }
            let update = mpd
                .minimum_update_period_ms
                .map_or(MAX_UPDATE, |ms| Duration::from_millis(ms.max(0) as u64))
                .clamp(MIN_UPDATE, MAX_UPDATE);
            let reload_at = loaded_at + update;
            self.play_until(&mpd, reload_at).await;
            if !mpd.dynamic {
                return;
            }
            sleep_until(reload_at).await;
        }
    }

    async fn load(&mut self) -> Option<Mpd> {
        match http::get(&self.client, &self.url).await {
            Ok((200, body)) => match mpd::parse(&String::from_utf8_lossy(&body)) {
                Ok(m) => {
                    self.out.playlists += 1;
                    self.out.started = true;
                    Some(m)
                }
                Err(_) => {
                    self.error("parse");
                    None
                }
            },
            Ok((404, _)) | Err(_) if !self.out.started => None,
            Ok(_) => {
                self.error("mpd_status");
                None
            }
            Err(e) => {
                self.error(e.kind());
                None
            }
        }
    }

    /// Fetches the listed segments as they become available until `reload_at`; in
    /// low-latency DASH, also the next one of the template.
    async fn play_until(&mut self, mpd: &Mpd, reload_at: Instant) {
        let base = match &mpd.base_url {
            Some(b) => resolve(&self.url, b),
            None => self.url.clone(),
        };
        if self.next.is_none() {
            let now = self.clock.ms(Instant::now()) as i64;
            let longest = mpd
                .periods
                .iter()
                .flat_map(|p| p.segments.iter())
                .map(|s| s.duration_ms)
                .max()
                .unwrap_or(2000);
            let delay = mpd
                .target_latency_ms
                .or(mpd.suggested_presentation_delay_ms)
                .unwrap_or(longest * DEFAULT_DELAY_SEGMENTS);
            let position = now - delay;
            let start = mpd.periods.iter().find_map(|p| {
                p.segments
                    .iter()
                    .find(|s| s.end_ms() > position)
                    .map(|s| (p.start_ms, s.number))
            });
            let Some(start) = start.or_else(|| {
                let p = mpd.periods.last()?;
                Some((p.start_ms, p.segments.last()?.number))
            }) else {
                return;
            };
            self.next = Some(start);
            self.position = Some(position as f64);
            self.joined_ms = Some(now as f64);
        }
        for period in &mpd.periods {
            let Some((next_period, next_number)) = self.next else {
                return;
            };
            if period.start_ms < next_period {
                continue;
            }
            let from = if period.start_ms == next_period {
                next_number
            } else {
                0
            };
            let ato = period.availability_time_offset;
            for s in period.segments.iter().filter(|s| s.number >= from) {
                let at = available_ms(s.end_ms(), s.start_ms, ato);
                let at = self.clock.instant(at as f64);
                if at > reload_at {
                    return;
                }
                sleep_until(at).await;
                let url = resolve(&base, &s.uri);
                self.segment(period, &base, &url, (s.start_ms, s.end_ms()), false)
                    .await;
                self.next = Some((period.start_ms, s.number + 1));
            }
        }
        // Low-latency DASH: the segment after the newest listed, before an update lists it.
        let Some(period) = mpd.periods.last() else {
            return;
        };
        let (Some(last), Some(ato)) = (period.segments.last(), period.availability_time_offset)
        else {
            return;
        };
        if self.next != Some((period.start_ms, last.number + 1)) || ato <= 0.0 {
            return;
        }
        let start_ms = last.end_ms();
        let end_ms = start_ms + last.duration_ms;
        let at = self
            .clock
            .instant(available_ms(end_ms, start_ms, Some(ato)) as f64);
        if at > reload_at {
            return;
        }
        sleep_until(at).await;
        let ticks = (last.duration_ms as i128 * period.timescale as i128 / 1000) as i64;
        let uri = period.media_uri(last.number + 1, last.time.saturating_add(ticks));
        let url = resolve(&base, &uri);
        if self
            .segment(period, &base, &url, (start_ms, end_ms), true)
            .await
        {
            self.next = Some((period.start_ms, last.number + 1 + 1));
        }
    }

    /// Fetches one segment spanning `(start_ms, end_ms)` on the wall clock (and its
    /// period's init segment first); `true` when it came. A `predicted` segment (not listed
    /// yet) may answer 404 without an error.
    async fn segment(
        &mut self,
        period: &MpdPeriod,
        base: &str,
        url: &str,
        (start_ms, end_ms): (i64, i64),
        predicted: bool,
    ) -> bool {
        if let Some(init) = &period.init {
            if self.init_fetched.as_deref() != Some(init) {
                let init_url = resolve(base, init);
                match http::get_timed(&self.client, &init_url, http::HTTP_TIMEOUT).await {
                    Ok(r) if r.status == 200 => {
                        self.init_fetched = Some(init.clone());
                        self.out.segments += 1;
                        self.out.bytes += r.bytes;
                    }
                    Ok(_) => self.error("init_status"),
                    Err(e) => self.error(e.kind()),
                }
            }
        }
        let t0 = Instant::now();
        match http::get_timed(&self.client, url, SEGMENT_TIMEOUT).await {
            Ok(r) if r.status == 200 => {
                self.out.segments += 1;
                self.out.bytes += r.bytes;
                self.live.segments.fetch_add(1, Ordering::Relaxed);
                self.out
                    .fetch_ms
                    .push(r.done.duration_since(t0).as_secs_f64() * 1000.0);
                let first = self.clock.ms(r.first_byte);
                if !self.playhead.started() {
                    let from = self.position.unwrap_or(start_ms as f64);
                    self.playhead.start(first, from);
                }
                if let Some(l) = self.playhead.arrive(start_ms as f64, first) {
                    self.out.latency_ms.push(l);
                }
                // Delivery counts the segments that came into existence after the viewer
                // joined.
                if self.joined_ms.is_some_and(|j| end_ms as f64 > j) {
                    self.out
                        .delivery_ms
                        .push(self.clock.ms(r.done) - end_ms as f64);
                }
                true
            }
            // The predicted next segment may not be there yet (or the period ended).
            Ok(r) if r.status == 404 && predicted => false,
            Ok(_) => {
                self.error("segment_status");
                false
            }
            Err(e) => {
                self.error(e.kind());
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability() {
        assert_eq!(available_ms(2000, 0, None), 2000);
        assert_eq!(available_ms(2000, 0, Some(1.5)), 500);
        assert_eq!(available_ms(2000, 0, Some(f64::INFINITY)), 0);
    }
}
