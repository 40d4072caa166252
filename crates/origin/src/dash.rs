//! Live DASH: `GET /dash/TENANT/STREAM/manifest.mpd`, the MPD of the stream's HLS segments
//! (rendered on request from the playlist state the HLS playlists are rendered from, by
//! [`tidegate_packager`]'s pure renderer; the segments are not copied: its `BaseURL` is
//! `/hls/TENANT/STREAM/`), and `GET /dash/time`, the clock its `UTCTiming` names.
//! docs/dash.md says which DASH-IF rules it follows.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tidegate_packager::{format_program_date_time, MpdOptions, MpdUnavailable};

use crate::metrics::StoreOp;
use crate::origin::{not_found, PLAYLIST_CACHE};
use crate::playback::{PlaybackAccess, PlaybackGate, SIGNED_PLAYLIST_CACHE};
use crate::store::StreamId;
use crate::{unix_ms, Context};

/// The MPD's content type (ISO/IEC 23009-1 Annex C).
const MPD_CONTENT_TYPE: &str = "application/dash+xml";

/// The path of the `UTCTiming` endpoint.
const TIME_PATH: &str = "/dash/time";

/// Longest `Host` header put into the `UTCTiming` URL.
const MAX_HOST_LEN: usize = 255;

/// `GET /dash/time`: now, as `urn:mpeg:dash:utc:http-iso:2014` wants it (ISO 8601 UTC with
/// milliseconds). Never cached.
pub async fn time() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format_program_date_time(unix_ms()),
    )
        .into_response()
}

/// The absolute URL of [`TIME_PATH`] on the host the viewer asked (a player resolves the
/// `UTCTiming` value against its page, not the MPD), or the bare path when the `Host` header
/// is missing or odd.
fn time_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= MAX_HOST_LEN
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        });
    let Some(host) = host else {
        return TIME_PATH.to_owned();
    };
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}{TIME_PATH}")
}

/// `GET /dash/TENANT/STREAM/manifest.mpd`.
pub async fn manifest(
    State(ctx): State<Arc<Context>>,
    Extension(gate): Extension<Arc<PlaybackGate>>,
    Path((tenant, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(id) = StreamId::new(&tenant, &stream) else {
        return not_found();
    };
    let access = match crate::playback::check(&ctx, &gate, &id, query.as_deref()).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let rendered = match ctx.streams.rendered(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => {
            ctx.metrics.store_error(StoreOp::GetState);
            tracing::warn!(error = %e, "could not read stream state");
            return (StatusCode::SERVICE_UNAVAILABLE, "state unavailable\n").into_response();
        }
    };
    let (token_query, cache) = match &access {
        PlaybackAccess::Public => (None, PLAYLIST_CACHE),
        PlaybackAccess::Signed(token) => (Some(format!("token={token}")), SIGNED_PLAYLIST_CACHE),
    };
    let mpd_id = format!("{}/{}", id.tenant, id.name);
    let base_url = format!("/hls/{}/{}/", id.tenant, id.name);
    let utc_timing_url = time_url(&headers);
    let options = MpdOptions {
        id: &mpd_id,
        base_url: Some(&base_url),
        query: token_query.as_deref(),
        utc_timing_url: &utc_timing_url,
        now_ms: unix_ms(),
    };
    match rendered.state.render_mpd(&options) {
        Ok(mpd) => {
            let mut resp = mpd.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(MPD_CONTENT_TYPE),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            resp
        }
        Err(why @ MpdUnavailable::MpegTs) => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "max-age=1")],
            format!("not found: {}\n", why.reason()),
        )
            .into_response(),
        Err(MpdUnavailable::NoSegments) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_time_url_names_the_host_asked() {
        assert_eq!(
            time_url(&headers(&[("host", "edge.example:8080")])),
            "http://edge.example:8080/dash/time"
        );
        assert_eq!(
            time_url(&headers(&[
                ("host", "cdn.example"),
                ("x-forwarded-proto", "HTTPS")
            ])),
            "https://cdn.example/dash/time"
        );
        assert_eq!(time_url(&headers(&[])), "/dash/time");
        assert_eq!(
            time_url(&headers(&[("host", "x\"><script>")])),
            "/dash/time"
        );
    }
}
