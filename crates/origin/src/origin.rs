//! The HTTP side: playback origin (HLS), health, metrics, the dashboard (`crate::dashboard`)
//! and the JSON API (`crate::api`, nested under `/api/v1`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use tower_http::cors::{Any, CorsLayer};

use crate::metrics::StoreOp;
use crate::playback::{PlaybackAccess, PlaybackGate, SIGNED_PLAYLIST_CACHE, SIGNED_SEGMENT_CACHE};
use crate::store::{valid_name, StreamId};
use crate::Context;

/// Playlists change every segment: players must re-fetch them.
pub(crate) const PLAYLIST_CACHE: &str = "max-age=1";
/// Segment names are unique per epoch and never rewritten.
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";

/// The router for `--http-listen`.
pub fn router(ctx: Arc<Context>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS, Method::POST])
        .allow_headers(Any)
        .expose_headers(Any);
    Router::new()
        .merge(crate::dashboard::routes(
            ctx.config.rtmp_listen.port(),
            ctx.config.srt_listen.port(),
        ))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", crate::api::router(ctx.clone()))
        .route(
            "/hls/{tenant}/{stream}/{file}",
            get(hls).layer(Extension(PlaybackGate::new(&ctx.metrics))),
        )
        // Live DASH (crate::dash): the MPD of the HLS segments, and its UTCTiming clock.
        .route(
            "/dash/{tenant}/{stream}/manifest.mpd",
            get(crate::dash::manifest).layer(Extension(PlaybackGate::new(&ctx.metrics))),
        )
        .route("/dash/time", get(crate::dash::time))
        .layer(cors)
        // Outermost, so every answer is counted: CORS preflights, 404s, 401s.
        .layer(middleware::from_fn_with_state(ctx.clone(), count_answers))
        .with_state(ctx)
}

/// Counts every answer by status class (`tidegate_http_requests_total{class}`).
async fn count_answers(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    ctx.metrics.http_answer(response.status());
    response
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    if ctx.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `/metrics`, with what the credential may see ([`crate::access::metrics_access`]): all
/// of it, one tenant's series, or (a protected worker, no token) the worker-wide ones.
async fn metrics(State(ctx): State<Arc<Context>>, request: Request) -> Response {
    use crate::access::{filter_exposition, metrics_access, Access};
    let headers = request.headers();
    let presented = crate::api::presented(headers);
    let view = match metrics_access(
        ctx.config.admin_token.as_deref(),
        ctx.config.metrics_token.as_deref(),
        presented,
        |t| ctx.tenants.resolve_token(t),
    ) {
        Access::Granted(view) => view,
        Access::Refused(reason) => {
            let peer = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            ctx.auth_log
                .refused(&ctx.metrics, reason, None, presented, "/metrics", peer);
            return crate::api::unauthorized();
        }
        Access::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant tokens cannot be checked right now\n",
            )
                .into_response()
        }
    };
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if open_metrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            filter_exposition(&ctx.metrics.encode(), &view),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            filter_exposition(&ctx.metrics.encode_prometheus(), &view),
        )
            .into_response()
    }
}

pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn bytes_response(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

async fn hls(
    State(ctx): State<Arc<Context>>,
    Extension(gate): Extension<Arc<PlaybackGate>>,
    Path((tenant, stream, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    // Signed playback: a tenant that requires a token is refused without a valid one.
    let access = match crate::playback::check(&ctx, &gate, &id, query.as_deref()).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    match file.as_str() {
        "index.m3u8" | "master.m3u8" => {
            // LL-HLS: Delivery Directives (blocking reload, delta updates): crate::llhls.
            if file == "index.m3u8" {
                if let Some(answer) =
                    crate::llhls::media_playlist(&ctx, &id, query.as_deref(), &access).await
                {
                    return answer;
                }
            }
            let rendered = match ctx.streams.rendered(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => return not_found(),
                Err(e) => {
                    ctx.metrics.store_error(StoreOp::GetState);
                    tracing::warn!(error = %e, "could not read stream state");
                    return (StatusCode::SERVICE_UNAVAILABLE, "state unavailable\n")
                        .into_response();
                }
            };
            let body = if file == "index.m3u8" {
                Some(rendered.media).filter(|b| !b.is_empty())
            } else {
                rendered.multivariant
            };
            match (body, access) {
                (Some(b), PlaybackAccess::Public) => {
                    bytes_response(b, "application/vnd.apple.mpegurl", PLAYLIST_CACHE)
                }
                (Some(b), PlaybackAccess::Signed(token)) => {
                    // Every URI it lists carries the token on.
                    let carried =
                        crate::playback::carry_token(&String::from_utf8_lossy(&b), &token);
                    bytes_response(
                        Bytes::from(carried),
                        "application/vnd.apple.mpegurl",
                        SIGNED_PLAYLIST_CACHE,
                    )
                }
                (None, _) => not_found(),
            }
        }
        _ if tidegate_packager::parse_part_uri(&file).is_some() => {
            part(&ctx, &id, &file, &access).await
        }
        _ => {
            let content_type = if file.ends_with(".m4s") {
                "video/iso.segment"
            } else if file.ends_with(".mp4") {
                "video/mp4"
            } else if file.ends_with(".ts") {
                "video/mp2t"
            } else {
                return not_found();
            };
            if !valid_name(&file) {
                return not_found();
            }
            match ctx
                .streams
                .media()
                .get(&format!("{}/{}", id.prefix(), file))
                .await
            {
                Ok(Some(b)) => bytes_response(
                    b,
                    content_type,
                    match access {
                        PlaybackAccess::Public => SEGMENT_CACHE,
                        PlaybackAccess::Signed(_) => SIGNED_SEGMENT_CACHE,
                    },
                ),
                // Low-latency DASH: the segment being built, with chunked transfer.
                Ok(None) if file.ends_with(".m4s") => {
                    let cache = match access {
                        PlaybackAccess::Public => SEGMENT_CACHE,
                        PlaybackAccess::Signed(_) => SIGNED_SEGMENT_CACHE,
                    };
                    crate::chunked::segment_in_progress(&ctx, &id, &file, cache)
                        .await
                        .unwrap_or_else(not_found)
                }
                Ok(None) => not_found(),
                Err(e) => {
                    ctx.metrics.store_error(StoreOp::Get);
                    tracing::warn!(error = %e, "could not read a segment");
                    (StatusCode::SERVICE_UNAVAILABLE, "storage error\n").into_response()
                }
            }
        }
    }
}

/// An LL-HLS part (`seg-E-N.P.m4s`, docs/ll-hls.md): its own object while its segment is
/// being built, afterwards exactly its bytes sliced out of the segment (200, no `Range`
/// needed); 404 when the stream's playlist neither lists it nor hints it. A hinted part is
/// held until it exists, 503 past the blocking timeout ([`crate::llhls::hinted_part`]).
/// Immutable like a segment: the name never names other bytes.
async fn part(ctx: &Context, id: &StreamId, file: &str, access: &PlaybackAccess) -> Response {
    use tidegate_packager::PartRequest;
    if !valid_name(file) {
        return not_found();
    }
    // The part the preload hint names is held until it exists (crate::llhls).
    if let Some(answer) = crate::llhls::hinted_part(ctx, id, file).await {
        return answer;
    }
    let rendered = match ctx.streams.rendered(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => {
            ctx.metrics.store_error(StoreOp::GetState);
            tracing::warn!(error = %e, "could not read stream state");
            return (StatusCode::SERVICE_UNAVAILABLE, "state unavailable\n").into_response();
        }
    };
    let (object, range) = match rendered.state.part_request(file) {
        PartRequest::Stored => (file.to_owned(), None),
        PartRequest::InSegment {
            segment_uri,
            offset,
            len,
        } => (segment_uri, Some((offset, len))),
        // Not in this worker's view of a live stream, which may be behind the playlist the
        // viewer holds (read from another worker, whose feed or store was faster). Part
        // names are never reused, and a part is stored before it is listed: its object, if
        // there, is exactly the listed part. An ended stream lists all it ever will.
        PartRequest::NotFound if !rendered.state.ended => (file.to_owned(), None),
        PartRequest::Hinted | PartRequest::NotFound => return not_found(),
    };
    let body = match ctx
        .streams
        .media_object(&format!("{}/{object}", id.prefix()))
        .await
    {
        Ok(Some(b)) => b,
        Ok(None) => return not_found(),
        Err(e) => {
            ctx.metrics.store_error(StoreOp::Get);
            tracing::warn!(error = %e, "could not read a part");
            return (StatusCode::SERVICE_UNAVAILABLE, "storage error\n").into_response();
        }
    };
    let body = match range {
        None => body,
        Some((offset, len)) => {
            let start = usize::try_from(offset).ok();
            let end = start
                .zip(usize::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l));
            match start.zip(end) {
                Some((start, end)) if end <= body.len() => body.slice(start..end),
                // The segment object is not the one listed (cannot happen: names are
                // unique): nothing rather than wrong bytes.
                _ => return not_found(),
            }
        }
    };
    bytes_response(
        body,
        "video/iso.segment",
        match access {
            PlaybackAccess::Public => SEGMENT_CACHE,
            PlaybackAccess::Signed(_) => SIGNED_SEGMENT_CACHE,
        },
    )
}
