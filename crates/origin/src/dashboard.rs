//! The dashboard at `/`: a single page (vanilla JS and CSS, plus hls.js from npm for the
//! preview) embedded in the binary, so that `tidegate serve` needs no separate web server and
//! `cargo build` needs no npm.
//!
//! The page polls the read-only API (`/api/v1/streams` every second, one stream's health
//! history in the detail view) and plays previews from `/hls/...`. Assets live under
//! `/dashboard/<version>/<file>`, where `<version>` is a hash of every embedded asset: the
//! HTML (revalidated on every load through its ETag) names the current version, so assets
//! are cached for good and a new binary is never mixed with stale scripts.
//!
//! `assets/dashboard/vendor/hls.light.min.js` is the unmodified file of the npm package
//! hls.js at the version pinned in `web/package-lock.json`; `web/build.sh` refreshes it and a
//! unit test below checks that the two agree.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page, with `{{VERSION}}` where the asset version goes.
const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/dashboard/app.css"),
    },
    Asset {
        name: "hls.light.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/vendor/hls.light.min.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/dashboard/favicon.svg"),
    },
];

/// Versioned assets never change under the same URL.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page itself, and an asset asked for under another version: revalidate every time.
const REVALIDATE: &str = "no-cache";

/// 64-bit FNV-1a: a stable content hash for ETags (not a security property).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The version in asset URLs: a hash over every asset.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let parts: Vec<&[u8]> = ASSETS.iter().map(|a| a.body).collect();
    format!("{:012x}", fnv1a(&parts) >> 16)
});

/// The page with the asset version and this worker's ingest ports (shown in the empty
/// state) filled in, and its ETag.
fn index_page(rtmp_port: u16, srt_port: u16) -> (String, String) {
    let html = INDEX_HTML
        .replace("{{VERSION}}", &VERSION)
        .replace("{{RTMP_PORT}}", &rtmp_port.to_string())
        .replace("{{SRT_PORT}}", &srt_port.to_string());
    let etag = format!("\"{:016x}\"", fnv1a(&[html.as_bytes()]));
    (html, etag)
}

/// Per-asset ETags, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{:016x}\"", fnv1a(&[a.body])))
        .collect()
});

/// The dashboard's routes: `/` and `/dashboard/{version}/{file}`. The page's empty state
/// tells where to publish: `rtmp_port` and `srt_port` are the ports this worker listens on.
pub fn routes<S: Clone + Send + Sync + 'static>(rtmp_port: u16, srt_port: u16) -> Router<S> {
    let page = std::sync::Arc::new(index_page(rtmp_port, srt_port));
    Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let page = page.clone();
                async move { index(&headers, &page.0, &page.1) }
            }),
        )
        .route("/dashboard/{version}/{file}", get(asset))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn respond(
    headers: &HeaderMap,
    etag: &str,
    cache: &'static str,
    content_type: &'static str,
    body: axum::body::Body,
) -> Response {
    let mut resp = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn index(headers: &HeaderMap, html: &str, etag: &str) -> Response {
    let mut resp = respond(
        headers,
        etag,
        REVALIDATE,
        "text/html; charset=utf-8",
        html.to_owned().into(),
    );
    // The page loads only its own scripts and styles, and talks only to this origin; media
    // comes as blob: URLs from MediaSource.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
             worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'",
        ),
    );
    resp
}

async fn asset(headers: HeaderMap, Path((version, file)): Path<(String, String)>) -> Response {
    let Some((i, a)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == file) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = ETAGS.get(i).map(String::as_str).unwrap_or("\"0\"");
    // An old page asking for an old version gets today's file, uncached.
    let cache = if version == *VERSION {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    respond(&headers, etag, cache, a.content_type, a.body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version of `hls.js` that `web/package-lock.json` pins.
    fn locked_hls_version() -> String {
        let lock: serde_json::Value =
            serde_json::from_str(include_str!("../../../web/package-lock.json")).unwrap();
        lock["packages"]["node_modules/hls.js"]["version"]
            .as_str()
            .expect("web/package-lock.json pins hls.js")
            .to_string()
    }

    #[test]
    fn embedded_hls_js_is_the_locked_version() {
        let version = locked_hls_version();
        let js = ASSETS
            .iter()
            .find(|a| a.name == "hls.light.min.js")
            .unwrap()
            .body;
        let js = std::str::from_utf8(js).unwrap();
        // hls.js compiles its version in as a string literal (`Hls.version`).
        assert!(
            js.contains(&format!("\"{version}\"")),
            "assets/dashboard/vendor/hls.light.min.js is not hls.js {version} from \
             web/package-lock.json: run web/build.sh"
        );
        assert!(js.len() > 100_000, "the minified hls.js light build");
    }

    #[test]
    fn page_names_the_current_asset_version_and_the_ingest_ports() {
        let (html, _) = index_page(41935, 49000);
        assert!(!html.contains("{{"), "a placeholder is left in the page");
        assert!(html.contains("rtmp://HOST:41935/live/KEY"), "{html}");
        assert!(html.contains("srt://HOST:49000?streamid=KEY"), "{html}");
        assert!(!html.contains(":1935/") && !html.contains(":9000?"));
        for a in ASSETS {
            if a.name == "favicon.svg" || a.name.ends_with(".js") || a.name.ends_with(".css") {
                assert!(
                    html.contains(&format!("/dashboard/{}/{}", *VERSION, a.name)),
                    "index.html must load {}",
                    a.name
                );
            }
        }
    }

    #[test]
    fn if_none_match() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", \"b\""),
        );
        assert!(not_modified(&h, "\"b\""));
        assert!(!not_modified(&h, "\"c\""));
        assert!(!not_modified(&HeaderMap::new(), "\"b\""));
    }
}
