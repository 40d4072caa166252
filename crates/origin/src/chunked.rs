//! Low-latency DASH: a request for the segment being built (`seg-E-N.m4s` before it is
//! stored, which the low-latency MPD announces by its `$Number$`) is answered with chunked
//! transfer: each of its parts as soon as it is stored (the LL-HLS part objects
//! `seg-E-N.P.m4s`, in order), the body ending when the segment is complete (its remaining
//! bytes then come from the segment object: a segment is exactly its parts, one after the
//! other). docs/dash.md describes it.
//!
//! Only a request the media store cannot answer gets here, so serving HLS, or DASH of a
//! stream without parts, costs nothing more: no state is read for a stored segment. A
//! waiting answer sleeps on the stream's change signal (the registry's `StreamWatch`, woken
//! by this worker's writer or the state store's change feed), bounded by the stall timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tidegate_packager::PlaylistState;
use tokio::time::Instant;

use tidegate_registry::stream::StreamWatch;

use crate::store::StreamId;
use crate::Context;

/// A segment whose next part takes longer than this many target durations is given up:
/// the body is cut off (an error to the player, which asks again), never ended as if
/// complete.
const STALL_TARGET_DURATIONS: u32 = 3;

/// What the answer has sent so far, and where it waits.
struct Progress {
    ctx: Arc<Context>,
    id: StreamId,
    /// The stream's change signal: the answer waits on it for the next part.
    watch: StreamWatch,
    /// The segment's name.
    uri: String,
    /// Parts sent.
    parts: usize,
    /// Bytes sent (the offset of the next part in the segment).
    bytes: u64,
    /// When the last bytes were sent (or the request arrived).
    progressed: Instant,
    done: bool,
}

/// What the stream's state says about the segment an answer is sending.
enum Next {
    /// The segment is complete and listed: send its bytes from the offset reached.
    Complete,
    /// The next part is listed (stored at `uri`): send it.
    Part { uri: String },
    /// The segment is still being built and has no new part yet: wait.
    Wait,
    /// The segment is neither being built nor listed (the publisher left, another session
    /// took over): cut the body off.
    Gone,
}

fn next(state: &PlaylistState, uri: &str, parts_sent: usize) -> Next {
    if state.segments.iter().any(|s| s.uri == uri) {
        return Next::Complete;
    }
    match state.segment_in_progress() {
        Some(building) if building.uri == uri => match building.parts.get(parts_sent) {
            Some(part) => Next::Part {
                uri: part.uri.clone(),
            },
            None => Next::Wait,
        },
        _ => Next::Gone,
    }
}

/// The stalled-answer timeout of a stream.
fn stall_timeout(state: &PlaylistState) -> Duration {
    Duration::from_secs(u64::from(state.target_duration.max(1)))
        .saturating_mul(STALL_TARGET_DURATIONS)
}

/// An error that cuts the chunked body off (the client sees a truncated answer).
fn cut(why: &'static str) -> std::io::Error {
    std::io::Error::other(why)
}

impl Progress {
    /// The next chunk of the body, `None` at its end.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        loop {
            // Read through the watch: a change from here on wakes the wait below.
            let rendered = match self.ctx.streams.view(&mut self.watch).await {
                Ok(Some(r)) => r,
                Ok(None) => return self.fail("the stream is gone"),
                Err(e) => {
                    tracing::debug!(error = %e, "chunked segment: state unavailable");
                    return self.fail("state unavailable");
                }
            };
            let state = &rendered.state;
            match next(state, &self.uri, self.parts) {
                Next::Complete => {
                    self.done = true;
                    let path = format!("{}/{}", self.id.prefix(), self.uri);
                    return match self.ctx.streams.media().get(&path).await {
                        Ok(Some(segment)) => {
                            let from = usize::try_from(self.bytes).unwrap_or(usize::MAX);
                            if from >= segment.len() {
                                None
                            } else {
                                Some(Ok(segment.slice(from..)))
                            }
                        }
                        _ => Some(Err(cut("the complete segment could not be read"))),
                    };
                }
                Next::Part { uri } => {
                    let path = format!("{}/{}", self.id.prefix(), uri);
                    match self.ctx.streams.media().get(&path).await {
                        Ok(Some(part)) => {
                            self.parts += 1;
                            self.bytes = self.bytes.saturating_add(part.len() as u64);
                            self.progressed = Instant::now();
                            return Some(Ok(part));
                        }
                        // Listed but not (or no longer) readable: the segment is being
                        // completed; look again.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "chunked segment: a part could not be read");
                            return self.fail("storage error");
                        }
                    }
                }
                Next::Wait => {}
                Next::Gone => return self.fail("the segment is no longer being built"),
            }
            let Some(left) = stall_timeout(state).checked_sub(self.progressed.elapsed()) else {
                return self.fail("no new part");
            };
            // The stream's next change (a part, the segment complete, the session gone).
            let _ = tokio::time::timeout(left, self.watch.changed()).await;
        }
    }

    fn fail(&mut self, why: &'static str) -> Option<Result<Bytes, std::io::Error>> {
        self.done = true;
        Some(Err(cut(why)))
    }
}

/// The answer to a request for `file` of `id` that the media store does not hold: the
/// segment being built, sent with chunked transfer, or `None` (404) when `file` is not it.
pub(crate) async fn segment_in_progress(
    ctx: &Arc<Context>,
    id: &StreamId,
    file: &str,
    cache: &'static str,
) -> Option<Response> {
    // The watch first, so a change while the view is read is not missed.
    let mut watch = ctx.streams.watch_media(id).await.ok()??;
    let arrived = Instant::now();
    let uri = loop {
        let rendered = ctx.streams.view(&mut watch).await.ok()??;
        let state = &rendered.state;
        if let Some(building) = state.segment_in_progress() {
            if building.uri == file {
                break building.uri;
            }
        }
        // An MPD from another worker (a round-robin Service) may already announce the
        // segment after the last one this worker knows: its view is a few milliseconds
        // behind. That request is held until the segment is being built here too, at
        // most one target duration; anything else is a 404 at once.
        if !follows_the_last(state, file) {
            return None;
        }
        let limit = Duration::from_secs(u64::from(state.target_duration.max(1)));
        let left = limit.checked_sub(arrived.elapsed())?;
        tokio::time::timeout(left, watch.changed()).await.ok()?;
    };
    let progress = Progress {
        ctx: ctx.clone(),
        id: id.clone(),
        watch,
        uri,
        parts: 0,
        bytes: 0,
        progressed: Instant::now(),
        done: false,
    };
    let chunks = futures_util::stream::unfold(progress, |mut progress| async move {
        let chunk = progress.next_chunk().await?;
        Some((chunk, progress))
    });
    // No Content-Length: hyper sends the body with Transfer-Encoding: chunked, each part
    // as it comes.
    let mut resp = Response::new(Body::from_stream(chunks));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("video/iso.segment"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Some(resp)
}

/// `seg-E-N.ext` → (`seg-E`, N, `ext`).
fn split_segment_name(uri: &str) -> Option<(&str, u64, &str)> {
    let (stem, ext) = uri.rsplit_once('.')?;
    let (head, number) = stem.rsplit_once('-')?;
    Some((head, number.parse().ok()?, ext))
}

/// `file` is the segment right after the last one `state` lists or is building (same
/// session and extension, the next number).
fn follows_the_last(state: &PlaylistState, file: &str) -> bool {
    let last = state
        .segment_in_progress()
        .map(|b| b.uri)
        .or_else(|| state.segments.back().map(|s| s.uri.clone()));
    let (Some(last), Some((head, number, ext))) = (last, split_segment_name(file)) else {
        return false;
    };
    split_segment_name(&last)
        .is_some_and(|(h, n, e)| h == head && e == ext && n.checked_add(1) == Some(number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_packager::{part_uri, Container, PartEntry, SegmentEntry};

    fn part(n: u32) -> PartEntry {
        PartEntry {
            uri: part_uri("seg-1-3.m4s", n),
            duration_secs: 1.0 / 3.0,
            independent: n == 0,
            gap: false,
            offset: u64::from(n) * 10,
            bytes: 10,
        }
    }

    fn state() -> PlaylistState {
        let mut state = PlaylistState::new(Container::Fmp4, 10, 2);
        state.part_target_secs = Some(1.0 / 3.0);
        state.begin_session();
        state
    }

    #[test]
    fn the_answer_follows_the_segment_from_its_parts_to_complete() {
        let mut state = state();
        assert!(matches!(next(&state, "seg-1-3.m4s", 0), Next::Gone));
        // Only hinted: not being built yet (the request is held by `follows_the_last`).
        state.preload_hint = Some(part_uri("seg-1-3.m4s", 0));
        assert!(matches!(next(&state, "seg-1-3.m4s", 0), Next::Gone));
        state.push_part(part(0), 0, Some("init-1-0.mp4".into()), None);
        match next(&state, "seg-1-3.m4s", 0) {
            Next::Part { uri } => assert_eq!(uri, "seg-1-3.0.m4s"),
            _ => panic!("part 0 is stored"),
        }
        assert!(matches!(next(&state, "seg-1-3.m4s", 1), Next::Wait));
        state.push_segment(SegmentEntry {
            sequence: 0,
            uri: "seg-1-3.m4s".into(),
            duration_secs: 2.0,
            program_date_time_ms: 0,
            discontinuity: false,
            map_uri: Some("init-1-0.mp4".into()),
            bytes: 60,
            start_ticks: Some(0),
            video_frames: Some(60),
            video_cadence: None,
            period: None,
            parts: Vec::new(),
        });
        assert!(matches!(next(&state, "seg-1-3.m4s", 1), Next::Complete));
        // Another segment is not this one.
        assert!(matches!(next(&state, "seg-1-4.m4s", 0), Next::Gone));
    }

    #[test]
    fn an_ended_stream_has_nothing_in_progress() {
        let mut state = state();
        state.push_part(part(0), 0, Some("init-1-0.mp4".into()), None);
        state.end();
        assert!(matches!(next(&state, "seg-1-3.m4s", 1), Next::Gone));
        assert_eq!(stall_timeout(&state), Duration::from_secs(6));
    }

    #[test]
    fn only_the_segment_after_the_last_one_known_is_held() {
        let mut state = state();
        state.push_part(part(0), 0, Some("init-1-0.mp4".into()), None);
        // Building seg-1-3: seg-1-4 may already be announced by a worker ahead of this one.
        assert!(follows_the_last(&state, "seg-1-4.m4s"));
        assert!(!follows_the_last(&state, "seg-1-5.m4s"));
        assert!(!follows_the_last(&state, "seg-1-3.m4s"));
        assert!(!follows_the_last(&state, "seg-2-4.m4s"));
        assert!(!follows_the_last(&state, "seg-1-4.ts"));
        assert!(!follows_the_last(&state, "init-1-0.mp4"));
        assert!(!follows_the_last(&state, "seg-1-x.m4s"));
        assert_eq!(
            split_segment_name("seg-17-42.m4s"),
            Some(("seg-17", 42, "m4s"))
        );
    }
}
