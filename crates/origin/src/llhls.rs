//! LL-HLS in the origin (issue #13 items 1–2, docs/ll-hls.md): blocking playlist reload
//! (`_HLS_msn` / `_HLS_part`), delta updates (`_HLS_skip`) and requests for the part the
//! preload hint names, answered by any worker.
//!
//! The decisions are [`tidegate_packager`]'s pure functions ([`parse_delivery_directives`],
//! [`decide_blocking`], [`PlaylistState::part_request`](tidegate_packager::PlaylistState));
//! this module carries them out:
//!
//! ```text
//! arrival = now
//! watch = streams.watch(stream)                     // unknown → 404
//! loop:
//!     view = streams.view(&mut watch)               // marks the change signal seen, then reads
//!     match decide(view):
//!         answer    => return it
//!         wait      => past arrival + timeout → 503 (never the stale playlist);
//!                      else await watch.changed() until that deadline, loop
//! ```
//!
//! A held request costs its own future and a receiver of the stream's change signal: no
//! task, no timer but its own, no store read of its own (a change wakes every waiter of the
//! stream; the first to read the view reloads it, the others share the result:
//! `tidegate_registry::stream`). A part that a held request waited for is read from the
//! media store once for all of them (`Streams::media_object`). Held requests are bounded by the HTTP connection cap
//! (`--http-max-connections`: HTTP/1.1 serves one request at a time per connection, and a
//! held one keeps its connection counted) and seen in `tidegate_llhls_held_requests`; the
//! idle timeout does not run while a handler holds its request (`crate::http`). When the
//! worker leaves the cluster (shutdown), held requests are answered 503 at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tidegate_packager::{
    decide_blocking, parse_delivery_directives, parse_part_uri, BadDirective, BlockingDecision,
    DeliveryDirectives, PartRequest,
};

use tidegate_lifecycle::Phase;

use crate::metrics::{BlockingOutcome, Metrics, StoreOp};
use crate::origin::{not_found, PLAYLIST_CACHE};
use crate::playback::{PlaybackAccess, SIGNED_PLAYLIST_CACHE};
use crate::store::StreamId;
use crate::stream::StreamWatch;
use crate::Context;

/// A playlist answering `_HLS_msn` (with or without `_HLS_part`) holds that segment (or
/// part) and everything before it, whenever it is served: the same URL never needs a
/// newer answer, so a CDN may keep it this many target durations (its key must include
/// the query: docs/ll-hls.md, "CDN caching").
pub const BLOCKING_ANSWER_MAX_AGE_TARGET_DURATIONS: u64 = 3;

/// Answers that must not be cached anywhere: 400, 503, a hinted part that will not come.
pub const NO_STORE: &str = "no-store";

/// The playlist's content type.
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// One held request, counted in `tidegate_llhls_held_requests` for as long as it lives
/// (a client that goes away drops the handler's future, and this with it).
struct Held(Arc<Metrics>);

impl Held {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.llhls_held_requests.inc();
        Self(metrics.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.llhls_held_requests.dec();
    }
}

/// The `Cache-Control` of a media playlist answered with `directives` for a stream whose
/// target duration is `target_duration_secs`. A signed tenant's answers are private
/// whatever they are ([`SIGNED_PLAYLIST_CACHE`]).
pub fn playlist_cache_control(
    directives: &DeliveryDirectives,
    target_duration_secs: u32,
    signed: bool,
) -> String {
    if signed {
        return SIGNED_PLAYLIST_CACHE.to_owned();
    }
    if directives.msn.is_some() {
        let max_age = u64::from(target_duration_secs.max(1))
            .saturating_mul(BLOCKING_ANSWER_MAX_AGE_TARGET_DURATIONS);
        format!("public, max-age={max_age}")
    } else {
        PLAYLIST_CACHE.to_owned()
    }
}

/// What to do with a request for a part, given how the current view would answer it and
/// whether the request has been held already ([`part_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStep {
    /// Serve it as any listed part or object (the origin's usual path).
    Serve,
    /// The preload hint names it and it does not exist yet: hold the request.
    Hold,
    /// It was hinted and will not come now (the stream ended, the hint moved past it): 404.
    Gone,
}

/// The next step for a part request: held while the preload hint names it, served once it
/// exists, 404 when it was held and is neither listed nor hinted any more. A request that
/// was never held takes the usual path (which answers 404 for what does not exist).
pub fn part_step(request: &PartRequest, held: bool) -> PartStep {
    match request {
        PartRequest::Hinted => PartStep::Hold,
        PartRequest::NotFound if held => PartStep::Gone,
        _ => PartStep::Serve,
    }
}

/// When a request that arrived at `arrival` and waits with `timeout_ms` must be answered
/// 503; `None` once that time has passed at `now`. Measured from the arrival, so the
/// reloads of a held request never extend it.
pub fn remaining(arrival: Instant, timeout_ms: u64, now: Instant) -> Option<Duration> {
    let deadline = arrival + Duration::from_millis(timeout_ms);
    deadline
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    resp
}

fn bad_request(metrics: &Metrics, why: BadDirective) -> Response {
    metrics.llhls_answered(BlockingOutcome::BadRequest);
    let mut resp = (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    resp
}

fn timed_out(metrics: &Metrics) -> Response {
    metrics.llhls_answered(BlockingOutcome::Timeout);
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "not available within the blocking timeout\n",
    )
}

/// Waits for the stream's next change, at most `left`. `false` when the worker is leaving
/// the cluster instead (its change feed stops, and HTTP closes next): the request is
/// answered 503 at once, so the player retries elsewhere rather than losing its connection.
async fn wait_change(ctx: &Context, watch: &mut StreamWatch, left: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::timeout(left, watch.changed()) => true,
        () = ctx.phase.reached(Phase::Leaving) => false,
    }
}

fn shutting_down(metrics: &Metrics) -> Response {
    metrics.llhls_answered(BlockingOutcome::ShuttingDown);
    answer(StatusCode::SERVICE_UNAVAILABLE, "worker shutting down\n")
}

fn state_unavailable(ctx: &Context, error: &crate::store::StoreError) -> Response {
    ctx.metrics.store_error(StoreOp::GetState);
    tracing::warn!(error = %error, "could not read stream state");
    answer(StatusCode::SERVICE_UNAVAILABLE, "state unavailable\n")
}

/// `index.m3u8` with Delivery Directives: `None` when the query has none (the origin serves
/// the playlist as for any client); else the answer — 400 at once for malformed
/// directives or an msn / part too far ahead, the playlist (or its delta update) once it
/// holds what was asked for, 503 if that takes longer than the blocking timeout.
pub async fn media_playlist(
    ctx: &Context,
    id: &StreamId,
    query: Option<&str>,
    access: &PlaybackAccess,
) -> Option<Response> {
    let directives = match parse_delivery_directives(query) {
        Ok(d) => d,
        Err(why) => return Some(bad_request(&ctx.metrics, why)),
    };
    if directives == DeliveryDirectives::default() {
        return None;
    }
    let arrival = Instant::now();
    let mut watch = match ctx.streams.watch(id).await {
        Ok(Some(w)) => w,
        Ok(None) => return Some(not_found()),
        Err(e) => return Some(state_unavailable(ctx, &e)),
    };
    let mut held: Option<Held> = None;
    loop {
        let view = match ctx.streams.view(&mut watch).await {
            Ok(Some(v)) => v,
            Ok(None) => return Some(not_found()),
            Err(e) => return Some(state_unavailable(ctx, &e)),
        };
        let edge = view.state.live_edge();
        match decide_blocking(&edge, &directives) {
            BlockingDecision::Ready => {
                if directives.msn.is_some() {
                    ctx.metrics.llhls_answered(BlockingOutcome::Ready);
                }
                let body = if directives.skip {
                    view.delta_update()
                } else {
                    view.media.clone()
                };
                if body.is_empty() {
                    return Some(not_found());
                }
                return Some(playlist_response(
                    body,
                    &directives,
                    edge.target_duration_secs,
                    access,
                ));
            }
            BlockingDecision::BadRequest(why) => return Some(bad_request(&ctx.metrics, why)),
            BlockingDecision::Wait { timeout_ms, .. } => {
                let Some(left) = remaining(arrival, timeout_ms, Instant::now()) else {
                    return Some(timed_out(&ctx.metrics));
                };
                held.get_or_insert_with(|| Held::new(&ctx.metrics));
                if !wait_change(ctx, &mut watch, left).await {
                    return Some(shutting_down(&ctx.metrics));
                }
            }
        }
    }
}

fn playlist_response(
    body: Bytes,
    directives: &DeliveryDirectives,
    target_duration_secs: u32,
    access: &PlaybackAccess,
) -> Response {
    let (body, signed) = match access {
        PlaybackAccess::Public => (body, false),
        // Every URI it lists carries the token on.
        PlaybackAccess::Signed(token) => (
            Bytes::from(crate::playback::carry_token(
                &String::from_utf8_lossy(&body),
                token,
            )),
            true,
        ),
    };
    let cache = playlist_cache_control(directives, target_duration_secs, signed);
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PLAYLIST_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}

/// A request for `file` that may be the part the preload hint names: held until the part
/// exists (`None`: serve it the usual way, like any listed part), 503 past the blocking
/// timeout, 404 when it will not come. `None` at once for anything that is not a part
/// name, or not the hinted part (the usual path answers it, or says 404).
pub async fn hinted_part(ctx: &Context, id: &StreamId, file: &str) -> Option<Response> {
    parse_part_uri(file)?;
    let arrival = Instant::now();
    // Most part requests are for listed parts: one look at the (cached) view settles them.
    let view = ctx.streams.rendered(id).await.ok().flatten()?;
    if part_step(&view.state.part_request(file), false) != PartStep::Hold {
        return None;
    }
    // Subscribed before the view is read again below: the part listed meanwhile is seen.
    let mut watch = ctx.streams.watch_media(id).await.ok().flatten()?;
    let mut held: Option<Held> = None;
    loop {
        let view = match ctx.streams.view(&mut watch).await {
            Ok(Some(v)) => v,
            // The usual path answers (404, or the store's error).
            Ok(None) | Err(_) if held.is_none() => return None,
            Ok(None) => {
                ctx.metrics.llhls_answered(BlockingOutcome::Gone);
                return Some(answer(StatusCode::NOT_FOUND, "not found\n"));
            }
            Err(e) => return Some(state_unavailable(ctx, &e)),
        };
        match part_step(&view.state.part_request(file), held.is_some()) {
            PartStep::Serve => {
                if held.is_some() {
                    ctx.metrics.llhls_answered(BlockingOutcome::Ready);
                }
                return None;
            }
            PartStep::Gone => {
                ctx.metrics.llhls_answered(BlockingOutcome::Gone);
                return Some(answer(StatusCode::NOT_FOUND, "not found\n"));
            }
            PartStep::Hold => {
                let timeout_ms = view.state.live_edge().blocking_timeout_ms();
                let Some(left) = remaining(arrival, timeout_ms, Instant::now()) else {
                    return Some(timed_out(&ctx.metrics));
                };
                held.get_or_insert_with(|| Held::new(&ctx.metrics));
                if !wait_change(ctx, &mut watch, left).await {
                    return Some(shutting_down(&ctx.metrics));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(msn: Option<u64>, part: Option<u64>, skip: bool) -> DeliveryDirectives {
        DeliveryDirectives { msn, part, skip }
    }

    #[test]
    fn an_answer_to_a_blocking_request_is_cacheable_for_a_few_target_durations() {
        let d = directives(Some(7), Some(2), false);
        assert_eq!(playlist_cache_control(&d, 2, false), "public, max-age=6");
        let d = directives(Some(7), None, true);
        assert_eq!(playlist_cache_control(&d, 4, false), "public, max-age=12");
    }

    #[test]
    fn a_delta_update_without_msn_is_cached_as_the_plain_playlist() {
        let d = directives(None, None, true);
        assert_eq!(playlist_cache_control(&d, 2, false), PLAYLIST_CACHE);
    }

    #[test]
    fn a_signed_tenant_keeps_its_answers_private() {
        for d in [
            directives(Some(7), Some(2), false),
            directives(None, None, true),
            directives(Some(7), None, true),
        ] {
            assert_eq!(playlist_cache_control(&d, 2, true), SIGNED_PLAYLIST_CACHE);
        }
    }

    #[test]
    fn a_hinted_part_is_held_then_served_or_gone() {
        let in_segment = PartRequest::InSegment {
            segment_uri: "seg-1-2.m4s".into(),
            offset: 0,
            len: 10,
        };
        assert_eq!(part_step(&PartRequest::Hinted, false), PartStep::Hold);
        assert_eq!(part_step(&PartRequest::Hinted, true), PartStep::Hold);
        assert_eq!(part_step(&PartRequest::Stored, true), PartStep::Serve);
        assert_eq!(part_step(&in_segment, true), PartStep::Serve);
        // Never hinted: the usual path answers (404 for what does not exist).
        assert_eq!(part_step(&PartRequest::NotFound, false), PartStep::Serve);
        // Hinted, then neither listed nor hinted: it will not come.
        assert_eq!(part_step(&PartRequest::NotFound, true), PartStep::Gone);
    }

    #[test]
    fn the_blocking_timeout_counts_from_the_arrival() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(remaining(t0, 6000, t0), Some(ms(6000)));
        assert_eq!(remaining(t0, 6000, t0 + ms(5999)), Some(ms(1)));
        assert_eq!(remaining(t0, 6000, t0 + ms(6000)), None);
        assert_eq!(remaining(t0, 6000, t0 + ms(9000)), None);
    }
}
