//! Signed playback at the origin: the check every playlist and segment request of a tenant
//! with `playback = "signed"` passes, and the playlists that carry the token on.
//!
//! A request of a signed tenant needs `?token=` (see `docs/signed-playback.md` and
//! `tidegate_model::verify_token`): valid for that tenant and stream, signed with one of the
//! tenant's current keys, not expired. Anything else is a 403 whose body says why (the
//! CORS layer around the router adds its headers, so a browser player sees the 403),
//! counted in `tidegate_playback_denied_total{tenant,reason}` and logged within the
//! `playback` area's [`LogLimiter`] (never the token). A playlist served with a token
//! lists every URI with the same `?token=` appended ([`carry_token`]): segments, the
//! `EXT-X-MAP`, the variant playlists and every `URI="..."` attribute (LL-HLS parts,
//! preload hints, rendition reports), so a player given only the signed URL needs nothing
//! else. Answers with a token are `Cache-Control: private` (a shared cache must not hand
//! them to a viewer without one), refusals `no-store`.
//!
//! Public tenants and open mode are not touched: no token is asked for, one given is
//! ignored.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tidegate_limits::LogLimiter;
use tidegate_model::{verify_token, TokenDenial};
use tidegate_registry::playback::PlaybackPolicy;

use crate::metrics::{LogArea, Metrics, PlaybackDenial};
use crate::store::StreamId;
use crate::{unix_ms, Context};

/// Refusal lines a second (a player retrying with an expired token, a scanner): then one
/// summary a second.
const LOG_LINES_PER_SECOND: u32 = 2;

/// Playlists of a signed tenant: re-fetched every segment, and never shared by a cache.
pub const SIGNED_PLAYLIST_CACHE: &str = "private, max-age=1";
/// Segments of a signed tenant: immutable, but for this viewer only.
pub const SIGNED_SEGMENT_CACHE: &str = "private, max-age=31536000, immutable";

/// What the origin keeps for signed playback (the router's extension).
#[derive(Debug)]
pub struct PlaybackGate {
    log: LogLimiter,
}

impl PlaybackGate {
    /// A gate counting its suppressed log lines in `metrics`.
    pub fn new(metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            log: LogLimiter::new(
                "playback",
                LOG_LINES_PER_SECOND,
                metrics.log_suppressed(LogArea::Playback),
            ),
        })
    }
}

/// May the request be served, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackAccess {
    /// No token needed (public tenant, open mode).
    Public,
    /// A valid token: playlists carry it on, answers are private.
    Signed(String),
}

/// The value of the first `token=` parameter of a raw query string. A token's characters
/// (base64url and dots) need no escaping, so it is taken as it is.
pub fn token_param(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// Checks a request of stream `id` with the raw query `query`: how to serve it, or the
/// answer to give instead.
pub async fn check(
    ctx: &Context,
    gate: &PlaybackGate,
    id: &StreamId,
    query: Option<&str>,
) -> Result<PlaybackAccess, Response> {
    let Some(policy) = ctx.tenants.playback_policy(&id.tenant) else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant directory not read yet\n",
        )
            .into_response());
    };
    let PlaybackPolicy::Signed(keys) = policy else {
        return Ok(PlaybackAccess::Public);
    };
    let Some(token) = token_param(query).filter(|t| !t.is_empty()) else {
        return Err(refuse(ctx, gate, id, PlaybackDenial::Missing));
    };
    let now_s = unix_ms() / 1000;
    let mut verdict = verify_token(token, &keys, &id.tenant, &id.name, now_s);
    if verdict == Err(TokenDenial::UnknownKey) && ctx.tenants.refresh_for_unknown_key().await {
        // A key made on another worker a moment ago: once more with the directory re-read.
        if let Some(PlaybackPolicy::Signed(keys)) = ctx.tenants.playback_policy(&id.tenant) {
            verdict = verify_token(token, &keys, &id.tenant, &id.name, now_s);
        }
    }
    match verdict {
        Ok(_) => Ok(PlaybackAccess::Signed(token.to_owned())),
        Err(d) => Err(refuse(ctx, gate, id, d.into())),
    }
}

fn refuse(ctx: &Context, gate: &PlaybackGate, id: &StreamId, reason: PlaybackDenial) -> Response {
    ctx.metrics.playback_refused(&id.tenant, reason);
    if gate.log.allow(Instant::now()) {
        tracing::info!(
            tenant = %id.tenant,
            stream = %id.name,
            reason = reason.as_str(),
            "playback refused"
        );
    }
    let text = match reason {
        PlaybackDenial::Missing => "this stream needs a playback token (?token=)",
        PlaybackDenial::Malformed => TokenDenial::Malformed.text(),
        PlaybackDenial::UnknownKey => TokenDenial::UnknownKey.text(),
        PlaybackDenial::BadSignature => TokenDenial::BadSignature.text(),
        PlaybackDenial::Expired => TokenDenial::Expired.text(),
        PlaybackDenial::OtherStream => TokenDenial::OtherStream.text(),
    };
    let mut resp = (StatusCode::FORBIDDEN, format!("{text}\n")).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `playlist` with `token` appended to every URI it lists: URI lines (segments, variant
/// playlists) and every `URI="..."` attribute of a tag (`EXT-X-MAP`, `EXT-X-MEDIA`,
/// `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`, ...), as `?token=T`, or
/// `&token=T` after a query the URI already has.
pub fn carry_token(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    for line in playlist.split_inclusive('\n') {
        let (content, end) = match line.strip_suffix('\n') {
            Some(c) => match c.strip_suffix('\r') {
                Some(c) => (c, "\r\n"),
                None => (c, "\n"),
            },
            None => (line, ""),
        };
        if content.trim().is_empty() {
            out.push_str(content);
        } else if content.starts_with('#') {
            carry_in_attributes(content, token, &mut out);
        } else {
            push_with_token(content, token, &mut out);
        }
        out.push_str(end);
    }
    out
}

/// A tag line with `token` appended inside each `URI="..."` attribute (an attribute whose
/// name is exactly `URI`: after the tag's `:` or a `,`).
fn carry_in_attributes(tag: &str, token: &str, out: &mut String) {
    const NAME: &str = "URI=\"";
    let mut rest = tag;
    while let Some(at) = rest.find(NAME) {
        let boundary = rest[..at].ends_with([':', ',']);
        let value_start = at + NAME.len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..value_start + len];
        if boundary && !value.is_empty() {
            push_with_token(value, token, out);
        } else {
            out.push_str(value);
        }
        out.push('"');
        rest = &rest[value_start + len + 1..];
    }
    out.push_str(rest);
}

fn push_with_token(uri: &str, token: &str, out: &mut String) {
    out.push_str(uri);
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str("token=");
    out.push_str(token);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_from_the_query() {
        assert_eq!(token_param(None), None);
        assert_eq!(token_param(Some("")), None);
        assert_eq!(token_param(Some("token=a.b.c")), Some("a.b.c"));
        assert_eq!(
            token_param(Some("_HLS_msn=4&token=a.b.c&_HLS_part=1")),
            Some("a.b.c")
        );
        assert_eq!(token_param(Some("xtoken=a&token=b")), Some("b"));
        assert_eq!(token_param(Some("token=")), Some(""));
    }

    #[test]
    fn every_uri_of_a_media_playlist_carries_the_token() {
        let playlist = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:3
#EXT-X-MEDIA-SEQUENCE:2
#EXT-X-MAP:URI=\"init-1-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.002Z
#EXTINF:1.998,
seg-2.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2-0.mp4\",BYTERANGE=\"100@0\"
#EXTINF:2.500,
seg-3.m4s
#EXT-X-PART:DURATION=0.5,URI=\"part-4.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-4.1.m4s?x=1\"
#EXT-X-RENDITION-REPORT:URI=\"../other/index.m3u8\",LAST-MSN=3
#EXT-X-ENDLIST
";
        let t = "aaa.bbb.c-_";
        let carried = carry_token(playlist, t);
        assert_eq!(
            carried,
            format!(
                "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:3
#EXT-X-MEDIA-SEQUENCE:2
#EXT-X-MAP:URI=\"init-1-0.mp4?token={t}\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.002Z
#EXTINF:1.998,
seg-2.m4s?token={t}
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2-0.mp4?token={t}\",BYTERANGE=\"100@0\"
#EXTINF:2.500,
seg-3.m4s?token={t}
#EXT-X-PART:DURATION=0.5,URI=\"part-4.0.m4s?token={t}\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-4.1.m4s?x=1&token={t}\"
#EXT-X-RENDITION-REPORT:URI=\"../other/index.m3u8?token={t}\",LAST-MSN=3
#EXT-X-ENDLIST
"
            )
        );
        let parsed = m3u8_rs::parse_media_playlist_res(carried.as_bytes()).unwrap();
        assert!(parsed
            .segments
            .iter()
            .all(|s| s.uri.ends_with(&format!("?token={t}"))));
    }

    #[test]
    fn the_variants_of_a_multivariant_playlist_carry_the_token() {
        let playlist = "#EXTM3U\r
#EXT-X-INDEPENDENT-SEGMENTS\r
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio.m3u8\"\r
#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"a\"\r
index.m3u8\r
";
        let carried = carry_token(playlist, "T");
        assert_eq!(
            carried,
            "#EXTM3U\r
#EXT-X-INDEPENDENT-SEGMENTS\r
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio.m3u8?token=T\"\r
#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"a\"\r
index.m3u8?token=T\r
"
        );
        let parsed = m3u8_rs::parse_master_playlist_res(carried.as_bytes()).unwrap();
        assert_eq!(parsed.variants[0].uri, "index.m3u8?token=T");
    }

    #[test]
    fn attributes_that_only_end_in_uri_and_text_without_uris_are_kept() {
        for line in [
            "#EXT-X-SESSION-DATA:DATA-ID=\"com.x\",VALUE=\"no uri here\"",
            "#EXT-X-FOO:XURI=\"a\"",
            "#EXT-X-FOO:URI=\"unterminated",
            "#EXTINF:2.0,",
            "",
        ] {
            let text = format!("{line}\n");
            assert_eq!(carry_token(&text, "T"), text, "{line}");
        }
        assert_eq!(carry_token("seg-1.ts", "T"), "seg-1.ts?token=T");
    }
}
