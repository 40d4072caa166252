//! The HTTP side: playback origin (HLS), health, metrics and a small status API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};

use crate::store::{valid_name, StreamId};
use crate::stream::StreamSummary;
use crate::Context;

/// Playlists change every segment: players must re-fetch them.
const PLAYLIST_CACHE: &str = "max-age=1";
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
        .merge(crate::dashboard::routes())
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/streams", get(api_streams))
        .route("/api/v1/streams/{tenant}/{stream}", get(api_stream))
        .route(
            "/api/v1/streams/{tenant}/{stream}/kick",
            axum::routing::post(api_kick),
        )
        .route(
            "/api/v1/streams/{tenant}/{stream}/end",
            axum::routing::post(api_end),
        )
        .route("/hls/{tenant}/{stream}/{file}", get(hls))
        .layer(cors)
        .with_state(ctx)
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    if ctx.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(ctx): State<Arc<Context>>, headers: axum::http::HeaderMap) -> Response {
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
            ctx.metrics.encode(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            ctx.metrics.encode_prometheus(),
        )
            .into_response()
    }
}

#[derive(Serialize)]
struct StreamJson {
    reasons: Vec<tidegate_health::Reason>,
    bitrate_bps: Option<u64>,
    reconnects: Option<u64>,
    protocol: Option<&'static str>,
    /// Unix ms since which the status holds (as this worker saw it).
    status_since_ms: Option<u64>,
    /// Unix ms since which the current publisher is connected: the stream's uptime.
    connected_since_ms: Option<u64>,
    /// Unix ms when the publisher of the current epoch left (reconnecting or ended), from
    /// the shared record: right on every worker.
    publisher_left_ms: Option<i64>,
    /// Cumulative SRT packet counters (received, lost, dropped, retransmitted).
    packets: Option<tidegate_health::PacketTotals>,
    codecs: Option<String>,
    resolution: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    history: Vec<tidegate_health::HealthEvent>,
    tenant: String,
    stream: String,
    status: &'static str,
    epoch: u64,
    media_sequence: u64,
    segments: usize,
    playlist: String,
    worker: Option<String>,
}

fn status_of(s: &StreamSummary) -> &'static str {
    match (&s.record, &s.health) {
        (_, Some(h)) if s.live_here => h.status.as_str(),
        (Some(r), _) if r.playlist.ended => "offline",
        // Live on another worker: that worker judges its health.
        (Some(r), _) if r.publisher_left_ms.is_none() => "healthy",
        (Some(_), _) => "reconnecting",
        (None, _) => "offline",
    }
}

fn stream_json(s: StreamSummary, with_history: bool) -> StreamJson {
    let status = status_of(&s);
    let (epoch, seq, n, worker, codecs, resolution) = match &s.record {
        Some(r) => (
            r.playlist.epoch,
            r.playlist.media_sequence,
            r.playlist.segments.len(),
            Some(r.owner.clone()),
            r.playlist.codecs.clone(),
            r.playlist.resolution,
        ),
        None => (0, 0, 0, None, None, None),
    };
    let health = s.health.filter(|_| s.live_here || with_history);
    StreamJson {
        playlist: format!("/hls/{}/{}/index.m3u8", s.id.tenant, s.id.name),
        tenant: s.id.tenant,
        stream: s.id.name,
        status,
        reasons: health
            .as_ref()
            .map(|h| h.reasons.clone())
            .unwrap_or_default(),
        bitrate_bps: health.as_ref().map(|h| h.bitrate_bps),
        reconnects: health.as_ref().map(|h| h.reconnects),
        protocol: health.as_ref().and_then(|h| h.protocol),
        status_since_ms: health.as_ref().map(|h| h.status_since_ms),
        connected_since_ms: health.as_ref().and_then(|h| h.connected_since_ms),
        publisher_left_ms: s.record.as_ref().and_then(|r| r.publisher_left_ms),
        packets: health.as_ref().map(|h| h.packets),
        codecs,
        resolution: resolution.map(|(w, h)| format!("{w}x{h}")),
        epoch,
        media_sequence: seq,
        segments: n,
        worker,
        history: if with_history {
            health.map(|h| h.history).unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

async fn api_streams(State(ctx): State<Arc<Context>>) -> Response {
    let out: Vec<StreamJson> = ctx
        .streams
        .list()
        .await
        .into_iter()
        .map(|s| stream_json(s, false))
        .collect();
    axum::Json(out).into_response()
}

async fn api_stream(
    State(ctx): State<Arc<Context>>,
    Path((tenant, stream)): Path<(String, String)>,
) -> Response {
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    match ctx.streams.list().await.into_iter().find(|s| s.id == id) {
        Some(s) => axum::Json(stream_json(s, true)).into_response(),
        None => not_found(),
    }
}

/// Admin calls need `Authorization: Bearer <admin-token>` when a token is configured.
fn authorized(ctx: &Context, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = ctx.config.admin_token.as_deref() else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn api_kick(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
    Path((tenant, stream)): Path<(String, String)>,
) -> Response {
    if !authorized(&ctx, &headers) {
        return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
    }
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    if ctx.streams.kick(&id).await {
        (StatusCode::OK, "kicked\n").into_response()
    } else {
        (
            StatusCode::CONFLICT,
            "no publisher of this stream on this worker\n",
        )
            .into_response()
    }
}

async fn api_end(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
    Path((tenant, stream)): Path<(String, String)>,
) -> Response {
    if !authorized(&ctx, &headers) {
        return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
    }
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    match ctx.streams.end_stream(&id).await {
        Ok(true) => (StatusCode::OK, "ended\n").into_response(),
        Ok(false) => not_found(),
        Err(e) => {
            ctx.metrics.store_error("put_state");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
    }
}

fn not_found() -> Response {
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
    Path((tenant, stream, file)): Path<(String, String, String)>,
) -> Response {
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    match file.as_str() {
        "index.m3u8" | "master.m3u8" => {
            let rendered = match ctx.streams.rendered(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => return not_found(),
                Err(e) => {
                    ctx.metrics.store_error("get_state");
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
            match body {
                Some(b) => bytes_response(b, "application/vnd.apple.mpegurl", PLAYLIST_CACHE),
                None => not_found(),
            }
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
                Ok(Some(b)) => bytes_response(b, content_type, SEGMENT_CACHE),
                Ok(None) => not_found(),
                Err(e) => {
                    ctx.metrics.store_error("get");
                    tracing::warn!(error = %e, "could not read a segment");
                    (StatusCode::SERVICE_UNAVAILABLE, "storage error\n").into_response()
                }
            }
        }
    }
}
