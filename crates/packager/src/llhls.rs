//! LL-HLS as pure decisions (draft-pantos-hls-rfc8216bis §6.2.5, Delivery Directives): the
//! query of a playlist request parsed strictly ([`parse_delivery_directives`]), whether a
//! blocking playlist reload is answered now, held, or refused ([`decide_blocking`]), and
//! the names of parts ([`part_uri`], [`parse_part_uri`]; docs/decisions/0018-ll-hls-parts.md).
//!
//! The origin's wiring, per playlist request:
//!
//! ```text
//! directives = parse_delivery_directives(query)?        // Err → 400
//! loop:
//!     match decide_blocking(&state.live_edge(), &directives):
//!         Ready          => answer state.render_media_playlist() (or render_delta_update()
//!                           when directives.skip), never before
//!         BadRequest(_)  => 400
//!         Wait { timeout_ms, .. } => wait for the stream's next change (the change feed),
//!                           at most timeout_ms from the request's arrival, then loop;
//!                           past it answer 503 (BlockingDecision::TIMEOUT_STATUS), never
//!                           the stale playlist
//! ```

use tidegate_media::TIMESCALE;

/// Default part duration in 90 kHz ticks: 1/3 s, 10 frames at 30 fps, 6 parts per 2 s GOP
/// (docs/decisions/0018-ll-hls-parts.md has the arithmetic).
pub const DEFAULT_PART_DURATION: u64 = TIMESCALE as u64 / 3;

/// Shortest part duration accepted (200 ms): shorter parts multiply requests for little
/// latency (MediaMTX#938: 20 ms parts broke hls.js).
pub const MIN_PART_DURATION: u64 = TIMESCALE as u64 / 5;

/// Longest part duration accepted (1 s).
pub const MAX_PART_DURATION: u64 = TIMESCALE as u64;

/// Longest accepted value of `_HLS_msn` or `_HLS_part`, in digits (a u64 has at most 20).
const MAX_DIRECTIVE_DIGITS: usize = 20;

/// A blocked request is answered 503 after this many Target Durations: §6.2.5.2 "A Server
/// that cannot provide the requested Playlist after blocking for more than three Target
/// Durations SHOULD return Service Unavailable, such as HTTP 503".
pub const BLOCKING_TIMEOUT_TARGET_DURATIONS: u64 = 3;

/// A request for an msn more than this many segments past the last one is refused:
/// §6.2.5.2 "If the _HLS_msn is greater than the Media Sequence Number of the last Media
/// Segment in the current Playlist plus two ... the server SHOULD immediately return Bad
/// Request".
pub const MAX_MSN_AHEAD: u64 = 2;

/// The Delivery Directives of one playlist request (§6.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryDirectives {
    /// `_HLS_msn`: hold until this segment exists.
    pub msn: Option<u64>,
    /// `_HLS_part`: with `msn`, hold until this part of that segment exists.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` or `v2`: answer with a delta update.
    pub skip: bool,
}

/// Why a playlist request's directives are refused (HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadDirective {
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    /// A directive's value is not a decimal integer (or `YES`/`v2` for `_HLS_skip`).
    #[error("{0}: not a valid value")]
    Malformed(&'static str),
    /// A directive appears twice.
    #[error("{0} given twice")]
    Repeated(&'static str),
    /// `_HLS_msn` is more than two segments past the last one.
    #[error("_HLS_msn too far ahead of the live edge")]
    MsnTooFarAhead,
    /// `_HLS_part` is past the last part by more than the Advance Part Limit.
    #[error("_HLS_part too far ahead of the live edge")]
    PartTooFarAhead,
}

/// Parses the Delivery Directives out of a playlist request's raw query (without `?`).
/// Other parameters (a playback token, cache busters) are ignored, and so are unknown
/// `_HLS_` parameters (reserved for future directives). Strict about the three it knows:
/// a decimal integer for `_HLS_msn` and `_HLS_part`, `YES` or `v2` for `_HLS_skip`, each at
/// most once, and `_HLS_part` only with `_HLS_msn`.
pub fn parse_delivery_directives(query: Option<&str>) -> Result<DeliveryDirectives, BadDirective> {
    let mut directives = DeliveryDirectives::default();
    let mut skip_seen = false;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "_HLS_msn" => set_once(
                &mut directives.msn,
                parse_decimal(value, "_HLS_msn")?,
                "_HLS_msn",
            )?,
            "_HLS_part" => set_once(
                &mut directives.part,
                parse_decimal(value, "_HLS_part")?,
                "_HLS_part",
            )?,
            "_HLS_skip" => {
                if std::mem::replace(&mut skip_seen, true) {
                    return Err(BadDirective::Repeated("_HLS_skip"));
                }
                directives.skip = match value {
                    "YES" | "v2" => true,
                    _ => return Err(BadDirective::Malformed("_HLS_skip")),
                };
            }
            _ => {}
        }
    }
    if directives.part.is_some() && directives.msn.is_none() {
        return Err(BadDirective::PartWithoutMsn);
    }
    Ok(directives)
}

fn set_once(slot: &mut Option<u64>, value: u64, name: &'static str) -> Result<(), BadDirective> {
    match slot.replace(value) {
        Some(_) => Err(BadDirective::Repeated(name)),
        None => Ok(()),
    }
}

/// A decimal-integer (§4.2: digits only, no sign, no spaces) that fits 64 bits.
fn parse_decimal(value: &str, name: &'static str) -> Result<u64, BadDirective> {
    if value.is_empty()
        || value.len() > MAX_DIRECTIVE_DIGITS
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(BadDirective::Malformed(name));
    }
    value.parse().map_err(|_| BadDirective::Malformed(name))
}

/// Where a stream's live edge is ([`crate::PlaylistState::live_edge`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveEdge {
    /// The msn of the segment being built (the last complete one is `next_msn - 1`).
    pub next_msn: u64,
    /// Parts of the last complete segment (0 when it had none).
    pub last_segment_parts: u32,
    /// Parts of the segment being built published so far.
    pub open_parts: u32,
    /// The msn of the oldest listed segment.
    pub oldest_msn: u64,
    /// The Part Target Duration, when the stream has parts.
    pub part_target_secs: Option<f64>,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration_secs: u32,
    /// The playlist has `EXT-X-ENDLIST`.
    pub ended: bool,
}

impl LiveEdge {
    /// The Advance Part Limit (§6.2.5.2): "three divided by the Part Target Duration if the
    /// Part Target Duration is less than one second, or three otherwise".
    pub fn advance_part_limit(&self) -> u64 {
        match self.part_target_secs {
            Some(t) if t.is_finite() && t > 0.0 && t < 1.0 => (3.0 / t).floor().max(3.0) as u64,
            _ => 3,
        }
    }

    /// How long a blocked request may wait before it is answered 503, in milliseconds.
    pub fn blocking_timeout_ms(&self) -> u64 {
        u64::from(self.target_duration_secs.max(1))
            .saturating_mul(1000)
            .saturating_mul(BLOCKING_TIMEOUT_TARGET_DURATIONS)
    }
}

/// What to do with a playlist request ([`decide_blocking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingDecision {
    /// Answer with the playlist now.
    Ready,
    /// Hold the request until the playlist holds segment `msn` (and its part `part`), then
    /// decide again; if that takes more than `timeout_ms` from the request's arrival,
    /// answer [`BlockingDecision::TIMEOUT_STATUS`] (503), never the unchanged playlist
    /// (AVPlayer raises -15410 on that).
    Wait {
        /// The segment waited for.
        msn: u64,
        /// The part of it waited for, if any.
        part: Option<u64>,
        /// The most the request may be held, in milliseconds.
        timeout_ms: u64,
    },
    /// Refuse with 400 Bad Request.
    BadRequest(BadDirective),
}

impl BlockingDecision {
    /// The HTTP status of a request still waiting at its timeout: 503 Service Unavailable.
    pub const TIMEOUT_STATUS: u16 = 503;
    /// The HTTP status of [`BlockingDecision::BadRequest`].
    pub const BAD_REQUEST_STATUS: u16 = 400;
}

/// Whether a playlist request with `directives` is answered now, held, or refused, given
/// the stream's live `edge` (§6.2.5.2, Blocking Playlist Reload). The wiring calls it on
/// arrival and again on every change of the stream until it is not `Wait`.
pub fn decide_blocking(edge: &LiveEdge, directives: &DeliveryDirectives) -> BlockingDecision {
    // "A Server MUST ignore _HLS_msn and _HLS_part if the Playlist contains an EXT-X-ENDLIST
    // tag."
    if edge.ended {
        return BlockingDecision::Ready;
    }
    let Some(msn) = directives.msn else {
        if directives.part.is_some() {
            return BlockingDecision::BadRequest(BadDirective::PartWithoutMsn);
        }
        return BlockingDecision::Ready;
    };
    // The last complete segment, as a signed number (-1 before the first).
    let last = i128::from(edge.next_msn) - 1;
    if i128::from(msn) > last + i128::from(MAX_MSN_AHEAD) {
        return BlockingDecision::BadRequest(BadDirective::MsnTooFarAhead);
    }
    let wait = |msn: u64, part: Option<u64>| BlockingDecision::Wait {
        msn,
        part,
        timeout_ms: edge.blocking_timeout_ms(),
    };
    let Some(part) = directives.part else {
        return if i128::from(msn) <= last {
            BlockingDecision::Ready
        } else {
            wait(msn, None)
        };
    };
    // Normalise a part past the last of a complete segment: "If the Client requests a Part
    // Index greater than that of the final Partial Segment of the Parent Segment, the Server
    // MUST treat the request as one for Part Index 0 of the following Parent Segment."
    let (msn, part) = if i128::from(msn) < last {
        // Every part of an older segment exists, and so does the next segment.
        return BlockingDecision::Ready;
    } else if i128::from(msn) == last {
        if edge.last_segment_parts == 0 || part < u64::from(edge.last_segment_parts) {
            return BlockingDecision::Ready;
        }
        (edge.next_msn, 0)
    } else {
        (msn, part)
    };
    if msn == edge.next_msn {
        if part < u64::from(edge.open_parts) {
            return BlockingDecision::Ready;
        }
        // "... or if the _HLS_part exceeds the last Partial Segment in the current Playlist
        // by the Advance Part Limit, then the server SHOULD immediately return Bad Request".
        let last_part = i128::from(edge.open_parts) - 1;
        if i128::from(part) - last_part > i128::from(edge.advance_part_limit()) {
            return BlockingDecision::BadRequest(BadDirective::PartTooFarAhead);
        }
    }
    wait(msn, Some(part))
}

/// The URI of part `index` of the segment at `segment_uri`: the segment's name with the
/// part index before its extension, `seg-3-17.m4s` → `seg-3-17.2.m4s`. Unique forever per
/// stream because segment names are (the epoch grows with every session), and it names
/// its parent, so an origin can answer it from the segment's bytes once the segment exists.
pub fn part_uri(segment_uri: &str, index: u32) -> String {
    match segment_uri.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{index}.{ext}"),
        None => format!("{segment_uri}.{index}"),
    }
}

/// The parent segment's URI and the part index of a part URI made by [`part_uri`];
/// `None` for anything else (a segment's own URI included).
pub fn parse_part_uri(uri: &str) -> Option<(String, u32)> {
    let (rest, ext) = uri.rsplit_once('.')?;
    let (stem, index) = rest.rsplit_once('.')?;
    if index.is_empty() || index.len() > 10 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // No leading zeros: one name per part.
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    let index = index.parse().ok()?;
    if stem.is_empty() || ext.is_empty() {
        return None;
    }
    Some((format!("{stem}.{ext}"), index))
}

#[cfg(test)]
mod tests;
