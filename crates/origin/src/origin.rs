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

/// What `--http-listen` serves: the router, and the playback fast path in front of it.
#[derive(Clone)]
pub struct App {
    /// Every route ([`router`]).
    pub router: Router,
    /// `GET /hls/…`, answered without the router ([`Playback`]).
    pub playback: Arc<Playback>,
}

/// The app for `--http-listen`: the router and its playback fast path, sharing one
/// [`PlaybackGate`].
pub fn app(ctx: Arc<Context>) -> App {
    let hls_gate = PlaybackGate::new(&ctx.metrics);
    App {
        router: router(ctx.clone(), hls_gate.clone()),
        playback: Arc::new(Playback { ctx, hls_gate }),
    }
}

/// The CORS rules of every answer: any origin may play and read (players run on other
/// sites' pages).
fn cors_layer() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS, Method::POST])
        .allow_headers(Any)
        .expose_headers(Any)
}

/// Every route of `--http-listen`.
fn router(ctx: Arc<Context>, hls_gate: Arc<PlaybackGate>) -> Router {
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
            get(hls).layer(Extension(hls_gate)),
        )
        // Live DASH (crate::dash): the MPD of the HLS segments, and its UTCTiming clock.
        .route(
            "/dash/{tenant}/{stream}/manifest.mpd",
            get(crate::dash::manifest).layer(Extension(PlaybackGate::new(&ctx.metrics))),
        )
        .route("/dash/time", get(crate::dash::time))
        .layer(cors_layer())
        // Outermost, so every answer is counted: CORS preflights, 404s, 401s.
        .layer(middleware::from_fn_with_state(ctx.clone(), count_answers))
        .with_state(ctx)
}

/// The playback fast path: `GET /hls/TENANT/STREAM/FILE` — the requests a worker answers
/// thousands of times a second, most of them held LL-HLS requests answered in one burst
/// per part — goes to the same handler as through the router, without the router's
/// per-request boxing and cloning of its layers (about a third of the worker's CPU per
/// answer: decision 0022). The answer is the router's to the byte: the same CORS
/// headers ([`cors_headers`], checked against the CORS layer in a test), counted in
/// `tidegate_http_requests_total` the same way. Anything else (other methods, a path
/// that is not exactly three plain names, percent-encoding) goes to the router.
pub struct Playback {
    ctx: Arc<Context>,
    hls_gate: Arc<PlaybackGate>,
}

impl Playback {
    /// The answer to `method path?query` when the fast path takes it; `None`: ask the
    /// router.
    pub async fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<Response> {
        let (tenant, stream, file) = hls_names(method, path)?;
        let mut response = hls_answer(&self.ctx, &self.hls_gate, tenant, stream, file, query).await;
        finish(&mut response);
        self.ctx.metrics.http_answer(response.status());
        Some(response)
    }
}

/// The three names of `GET /hls/TENANT/STREAM/FILE` when they can be taken as they are
/// (no percent-encoding for the router's `Path` to decode, none empty).
fn hls_names<'a>(method: &Method, path: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    if method != Method::GET || path.contains('%') {
        return None;
    }
    let mut names = path.strip_prefix("/hls/")?.split('/');
    let (tenant, stream, file) = (names.next()?, names.next()?, names.next()?);
    if names.next().is_some() || tenant.is_empty() || stream.is_empty() || file.is_empty() {
        return None;
    }
    Some((tenant, stream, file))
}

/// What the router adds to a handler's answer: `Content-Length` when the body's length
/// is known (as axum does), and the headers of [`cors_layer`].
fn finish(response: &mut Response) {
    use http_body::Body as _;
    if !response.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = response.body().size_hint().exact() {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    cors_headers(response.headers_mut());
}

/// The headers [`cors_layer`] adds to an answer that is not a preflight.
fn cors_headers(headers: &mut axum::http::HeaderMap) {
    headers.append(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
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
    hls_answer(&ctx, &gate, &tenant, &stream, &file, query.as_deref()).await
}

/// `GET /hls/TENANT/STREAM/FILE`, through the router or the fast path ([`Playback`]).
async fn hls_answer(
    ctx: &Arc<Context>,
    gate: &PlaybackGate,
    tenant: &str,
    stream: &str,
    file: &str,
    query: Option<&str>,
) -> Response {
    let Some(id) = StreamId::new(tenant, stream) else {
        return not_found();
    };
    // Signed playback: a tenant that requires a token is refused without a valid one.
    let access = match crate::playback::check(ctx, gate, &id, query).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    match file {
        "index.m3u8" | "master.m3u8" => {
            // LL-HLS: Delivery Directives (blocking reload, delta updates): crate::llhls.
            if file == "index.m3u8" {
                if let Some(answer) = crate::llhls::media_playlist(ctx, &id, query, &access).await {
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
        _ if tidegate_packager::parse_part_uri(file).is_some() => {
            part(ctx, &id, file, &access).await
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
            if !valid_name(file) {
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
                    crate::chunked::segment_in_progress(ctx, &id, file, cache)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Response {
        bytes_response(Bytes::from_static(b"media"), "video/mp4", SEGMENT_CACHE)
    }

    #[tokio::test]
    async fn the_fast_path_adds_what_the_cors_layer_adds() {
        for origin in [None, Some("https://player.example")] {
            let mut router = Router::new()
                .route("/x", get(|| async { segment() }))
                .layer(cors_layer());
            let mut request = Request::builder().uri("/x");
            if let Some(o) = origin {
                request = request.header(header::ORIGIN, o);
            }
            let through_layer =
                tower_service::Service::call(&mut router, request.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
            let mut direct = segment();
            finish(&mut direct);
            assert_eq!(
                through_layer.headers(),
                direct.headers(),
                "origin {origin:?}"
            );
            assert!(direct
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        }
    }

    #[test]
    fn the_fast_path_takes_plain_hls_gets_only() {
        let get = Method::GET;
        assert_eq!(
            hls_names(&get, "/hls/live/cam/index.m3u8"),
            Some(("live", "cam", "index.m3u8"))
        );
        assert_eq!(
            hls_names(&get, "/hls/live/cam/seg-1-2.3.m4s"),
            Some(("live", "cam", "seg-1-2.3.m4s"))
        );
        for path in [
            "/hls/live/cam",
            "/hls/live/cam/",
            "/hls//cam/index.m3u8",
            "/hls/live/cam/x/index.m3u8",
            "/hls/live/c%61m/index.m3u8",
            "/dash/live/cam/manifest.mpd",
            "/api/v1/streams",
        ] {
            assert_eq!(hls_names(&get, path), None, "{path}");
        }
        for method in [Method::HEAD, Method::OPTIONS, Method::POST] {
            assert_eq!(hls_names(&method, "/hls/live/cam/index.m3u8"), None);
        }
    }
}
