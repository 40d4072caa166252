//! The JSON API under `/api/v1`, described by `docs/openapi.yaml` (served at
//! `/api/v1/openapi.yaml`; `crates/cli/tests/openapi.rs` checks the server against it).
//!
//! | call | what |
//! | --- | --- |
//! | `GET streams` | every stream: status, bitrate, uptime, worker, protocol, codecs, resolution, reconnects |
//! | `GET streams/{tenant}/{stream}` | one stream, with its recent health events |
//! | `POST streams/{tenant}/{stream}/kick` | disconnect its publisher on this worker |
//! | `POST streams/{tenant}/{stream}/end` | end it now, wherever its publisher is |
//! | `GET workers` | the cluster's live members with their load |
//! | `GET, POST tenants` | every tenant; create one |
//! | `GET, PATCH, DELETE tenants/{tenant}` | one tenant (settings and key ids); change it; delete it and its keys |
//! | `POST tenants/{tenant}/keys` | a new stream key for a stream: the secret is in this answer only |
//! | `POST tenants/{tenant}/keys/{id}/rotate` | a new secret for the key; its live publisher keeps streaming |
//! | `DELETE tenants/{tenant}/keys/{id}` | revoke the key; its publisher is disconnected |
//! | `POST tenants/{tenant}/playback-tokens` | a signed playback token (and URL) for a stream |
//! | `POST tenants/{tenant}/playback-keys` | a new playback signing key (its secret in this answer only) |
//! | `GET openapi.yaml` | the description (no token needed) |
//!
//! | `GET, POST tenants/{tenant}/tokens` | the tenant's admin tokens (ids, creation times); a new one, its secret in this answer only |
//! | `DELETE tenants/{tenant}/tokens/{id}` | revoke a tenant admin token |
//!
//! The `tenants` calls need an operator token: without `--admin-token` they answer 403 (a
//! worker without one would let anyone mint stream keys).
//!
//! **Scopes** (issue #12 item 5, [`crate::access`], `docs/tokens.md`): a tenant admin
//! token (`tgt_…`) acts on its own tenant only. It lists only its streams; another tenant's
//! stream or record is answered exactly as one that does not exist (decided from the path,
//! before any lookup); it adds, rotates and revokes its own keys and reads its own record;
//! creating, changing or deleting tenants, the tokens calls and `workers` are the
//! operator's (403).
//!
//! **Figures of a stream held elsewhere.** Bitrate, protocol, packets, reasons and
//! reconnects are measured by the worker the publisher is connected to; it publishes them
//! with its lease in the stream's record (about once a second). Any other worker answers
//! with those, and says how old they are (`figures_age_ms`); when it has none, or they are
//! older than [`HOLDER_FIGURES_MAX_AGE_MS`], it answers `null` (unknown), never `0`. A
//! stream without a connected publisher (`reconnecting`, `offline`) has no bitrate (`null`).
//!
//! When `--admin-token` is set every call but `openapi.yaml` needs
//! `Authorization: Bearer <token>` (the scheme in any case; 401 otherwise, before anything
//! else is looked at, counted in `tidegate_http_unauthorized_total`).
//! Every answer is JSON, errors included (`{"error": "..."}`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Extension, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_model::{KeyRecord, Playback, Quotas, TenantSettings};
use tidegate_registry::tenants::tokens::IssuedToken;
use tidegate_registry::tenants::{IssuedKey, ManageError};

use crate::access::{api_access, Access, Scope};
use tidegate_events::metrics::AdminAuthFailure;

use crate::metrics::StoreOp;
use crate::store::{HolderFigures, StoreError, StreamId, TenantRecord, WorkerRecord};
use crate::stream::StreamSummary;
use crate::{unix_ms, Context};

/// Figures from the holder through the shared state are served up to this age; older
/// ones (a holder that stopped renewing its lease) are unknown.
pub const HOLDER_FIGURES_MAX_AGE_MS: i64 = 5_000;

/// The OpenAPI description of this module's routes.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// The routes, to be nested under `/api/v1`.
pub fn router(ctx: Arc<Context>) -> Router<Arc<Context>> {
    Router::new()
        .route("/streams", get(streams))
        .route("/streams/{tenant}/{stream}", get(one_stream))
        .route("/streams/{tenant}/{stream}/kick", post(kick))
        .route("/streams/{tenant}/{stream}/end", post(end))
        .route("/workers", get(workers))
        .route("/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/tenants/{tenant}",
            get(one_tenant).patch(update_tenant).delete(delete_tenant),
        )
        .route("/tenants/{tenant}/keys", post(add_key))
        .route("/tenants/{tenant}/keys/{id}/rotate", post(rotate_key))
        .route("/tenants/{tenant}/keys/{id}", delete(revoke_key))
        // --- signed playback (issue #12) ---
        .route(
            "/tenants/{tenant}/playback-tokens",
            post(mint_playback_token),
        )
        .route("/tenants/{tenant}/playback-keys", post(rotate_playback_key))
        // Tenant admin tokens (issue #12 item 5).
        .route(
            "/tenants/{tenant}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/tenants/{tenant}/tokens/{id}", delete(revoke_token))
        // Every route above needs the token; the description below does not.
        .route_layer(middleware::from_fn_with_state(ctx, require_token))
        .route("/openapi.yaml", get(openapi))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
}

/// Answers 401 unless the request carries a credential [`api_access`] grants (the admin
/// token when one is set, or a current tenant token), and hands the handler its [`Scope`];
/// runs before the handler or any of its extractors looks at the request.
async fn require_token(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = presented(&headers);
    match api_access(ctx.config.admin_token.as_deref(), presented, |t| {
        ctx.tenants.resolve_token(t)
    }) {
        Access::Granted(scope) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Access::Refused(reason) => {
            ctx.metrics.http_unauthorized.inc();
            let peer = request
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            ctx.auth_log.refused(
                &ctx.metrics,
                reason,
                None,
                presented,
                // Nested: the path is what follows /api/v1.
                &format!("/api/v1{}", request.uri().path()),
                peer,
            );
            unauthorized()
        }
        Access::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant tokens cannot be checked right now; try again",
        ),
    }
}

/// The bearer credential of a request, if any.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// The 401 answer, with its challenge.
pub(crate) fn unauthorized() -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, "admin token required");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tidegate\""),
    );
    resp
}

/// A tenant scope asked for what is not its own: counted and logged (rate-limited) like
/// a refused credential; the caller answers as if it did not exist (or 403 for an
/// operator-only call).
fn out_of_scope(ctx: &Context, scope: &Scope, what: &str) {
    ctx.auth_log.refused(
        &ctx.metrics,
        AdminAuthFailure::OutOfScope,
        Some(scope),
        None,
        what,
        None,
    );
}

/// The 403 of an operator-only call asked with a tenant token (counted), `None` for the
/// operator.
fn operator_only(ctx: &Context, scope: &Scope, what: &str) -> Option<Response> {
    if scope.is_operator() {
        return None;
    }
    out_of_scope(ctx, scope, what);
    Some(error(
        StatusCode::FORBIDDEN,
        "this call needs the operator token (a tenant token manages its own streams and keys only)",
    ))
}

/// Whether `scope` may see tenant `tenant`; counts the refusal when not.
fn in_scope(ctx: &Context, scope: &Scope, tenant: &str, what: &str) -> bool {
    let sees = scope.sees(tenant);
    if !sees {
        out_of_scope(ctx, scope, what);
    }
    sees
}

/// The stream named by a `/streams/{tenant}/{stream}` path; a name no stream can have is
/// a 404, like a stream that does not exist.
struct StreamPath(StreamId);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((tenant, stream)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| error(StatusCode::NOT_FOUND, "no such stream"))?;
        StreamId::new(&tenant, &stream)
            .map(StreamPath)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such stream"))
    }
}

/// A stream as `GET /api/v1/streams` lists it.
#[derive(Debug, Serialize)]
pub struct StreamJson {
    /// Tenant.
    pub tenant: String,
    /// Public stream name.
    pub stream: String,
    /// `healthy`, `warning`, `reconnecting` or `offline`.
    pub status: &'static str,
    /// Why `warning` (empty otherwise, and when unknown).
    pub reasons: Vec<tidegate_health::Reason>,
    /// Incoming bitrate over the last seconds while a publisher is connected (measured
    /// here or by the holder); `null` when unknown or when none is connected.
    pub bitrate_bps: Option<u64>,
    /// Publisher reconnects the measuring worker saw.
    pub reconnects: Option<u64>,
    /// `rtmp` or `srt`, when known.
    pub protocol: Option<String>,
    /// RFC 6381 codecs of the current playlist.
    pub codecs: Option<String>,
    /// `WIDTHxHEIGHT` of the video.
    pub resolution: Option<String>,
    /// The worker that holds the stream's current epoch.
    pub worker: Option<String>,
    /// The worker the publisher is connected to (`null` when none is).
    pub held_by: Option<String>,
    /// How old the figures are when they come from the holder through the shared state;
    /// `null` when measured by the worker that answered (or unknown).
    pub figures_age_ms: Option<u64>,
    /// Whether its publisher is connected to this worker.
    pub live_here: bool,
    /// Unix ms since which the status holds (as this worker saw it).
    pub status_since_ms: Option<u64>,
    /// Unix ms since which the current publisher is connected (`null` when none is).
    pub connected_since_ms: Option<u64>,
    /// Seconds since then: the stream's uptime.
    pub uptime_s: Option<u64>,
    /// Unix ms when the publisher of the current epoch left (reconnecting or ended), from
    /// the shared record: right on every worker.
    pub publisher_left_ms: Option<i64>,
    /// Cumulative SRT packet counters (received, lost, dropped, retransmitted).
    pub packets: Option<tidegate_health::PacketTotals>,
    /// Fencing epoch (one per publish session).
    pub epoch: u64,
    /// `EXT-X-MEDIA-SEQUENCE` of the playlist.
    pub media_sequence: u64,
    /// Segments in the playlist.
    pub segments: usize,
    /// The HLS playlist path.
    pub playlist: String,
}

/// One stream with its recent health events (`GET /api/v1/streams/{tenant}/{stream}`).
#[derive(Debug, Serialize)]
pub struct StreamDetailJson {
    /// Everything the list shows.
    #[serde(flatten)]
    pub stream: StreamJson,
    /// Recent health events, oldest first (as this worker saw them).
    pub history: Vec<tidegate_health::HealthEvent>,
}

/// A member of the cluster as `GET /api/v1/workers` lists it.
#[derive(Debug, Serialize)]
pub struct WorkerJson {
    /// The stored record.
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Whether this is the worker that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
}

/// The status the API and the dashboard show for a stream.
pub fn status_of(s: &StreamSummary) -> &'static str {
    status_at(s, crate::unix_ms())
}

/// The holder's figures of a stream live on another worker, when fresh at `now_ms`.
fn holder_figures(s: &StreamSummary, now_ms: i64) -> Option<&HolderFigures> {
    let r = s.record.as_ref()?;
    if s.live_here || r.playlist.ended || r.publisher_left_ms.is_some() {
        return None;
    }
    r.holder
        .as_ref()
        .filter(|h| now_ms.saturating_sub(h.at_ms) <= HOLDER_FIGURES_MAX_AGE_MS)
}

fn status_at(s: &StreamSummary, now_ms: i64) -> &'static str {
    match (&s.record, &s.health) {
        (_, Some(h)) if s.live_here => h.status.as_str(),
        (Some(r), _) if r.playlist.ended => "offline",
        // Live on another worker: that worker judges its health.
        (Some(r), _) if r.publisher_left_ms.is_none() => {
            holder_figures(s, now_ms).map_or("healthy", |h| h.status.as_str())
        }
        (Some(_), _) => "reconnecting",
        (None, _) => "offline",
    }
}

/// `detail`: the one-stream call, which also shows what this worker saw of a publisher
/// that has left.
fn stream_json(s: &StreamSummary, now_ms: i64, detail: bool) -> StreamJson {
    let status = status_at(s, now_ms);
    let connected = matches!(status, "healthy" | "warning");
    let record = s.record.as_ref();
    let holder = holder_figures(s, now_ms);
    // Measured here: the publisher is on this worker, or (detail) what this worker saw of
    // one that left; a stream live elsewhere takes the holder's figures.
    let health = s
        .health
        .as_ref()
        .filter(|_| s.live_here || (detail && holder.is_none() && !connected));
    // This worker's own view when it has the publisher, else the record's (any worker).
    let connected_since_ms = if s.live_here {
        health.and_then(|h| h.connected_since_ms)
    } else {
        record
            .and_then(|r| r.session_started_ms)
            .and_then(|t| u64::try_from(t).ok())
    }
    .filter(|_| connected);
    let now = u64::try_from(now_ms).unwrap_or(0);
    let held_by = record
        .filter(|r| connected && !r.playlist.ended && r.publisher_left_ms.is_none())
        .map(|r| r.owner.clone());
    StreamJson {
        tenant: s.id.tenant.clone(),
        stream: s.id.name.clone(),
        status,
        reasons: match (health, holder) {
            (Some(h), _) => h.reasons.clone(),
            (None, Some(h)) => h.reasons.clone(),
            (None, None) => Vec::new(),
        },
        bitrate_bps: health
            .map(|h| h.bitrate_bps)
            .or(holder.map(|h| h.bitrate_bps))
            .filter(|_| connected),
        reconnects: health
            .map(|h| h.reconnects)
            .or(holder.map(|h| h.reconnects)),
        protocol: health
            .and_then(|h| h.protocol.map(str::to_owned))
            .or_else(|| holder.and_then(|h| h.protocol.clone())),
        codecs: record.and_then(|r| r.playlist.codecs.clone()),
        resolution: record
            .and_then(|r| r.playlist.resolution)
            .map(|(w, h)| format!("{w}x{h}")),
        worker: record.map(|r| r.owner.clone()),
        held_by,
        figures_age_ms: holder
            .filter(|_| health.is_none())
            .map(|h| u64::try_from(now_ms.saturating_sub(h.at_ms)).unwrap_or(0)),
        live_here: s.live_here,
        status_since_ms: health
            .map(|h| h.status_since_ms)
            .or(holder.map(|h| h.status_since_ms)),
        connected_since_ms,
        uptime_s: connected_since_ms.map(|t| now.saturating_sub(t) / 1000),
        publisher_left_ms: record.and_then(|r| r.publisher_left_ms),
        packets: health.map(|h| h.packets).or(holder.map(|h| h.packets)),
        epoch: record.map_or(0, |r| r.playlist.epoch),
        media_sequence: record.map_or(0, |r| r.playlist.media_sequence),
        segments: record.map_or(0, |r| r.playlist.segments.len()),
        playlist: format!("/hls/{}/{}/index.m3u8", s.id.tenant, s.id.name),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct ErrorJson<'a> {
        error: &'a str,
    }
    (status, Json(ErrorJson { error: message })).into_response()
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is matched
/// without regard to case (RFC 7235 section 2.1: `bearer`, `BEARER` are the same scheme)
/// and may be followed by more than one space.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

async fn streams(State(ctx): State<Arc<Context>>, Extension(scope): Extension<Scope>) -> Response {
    let now = unix_ms();
    let out: Vec<StreamJson> = ctx
        .streams
        .list()
        .await
        .iter()
        .filter(|s| scope.sees(&s.id.tenant))
        .map(|s| stream_json(s, now, false))
        .collect();
    Json(out).into_response()
}

/// What a stream that does not exist gets from `GET streams/{tenant}/{stream}`: also the
/// answer to a tenant scope naming another tenant's stream, existing or not.
fn no_such_stream() -> Response {
    error(StatusCode::NOT_FOUND, "no such stream")
}

async fn one_stream(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    StreamPath(id): StreamPath,
) -> Response {
    if !in_scope(&ctx, &scope, &id.tenant, "GET stream") {
        return no_such_stream();
    }
    match ctx.streams.summary(&id).await {
        Some(s) => Json(StreamDetailJson {
            stream: stream_json(&s, unix_ms(), true),
            history: s.health.map(|h| h.history).unwrap_or_default(),
        })
        .into_response(),
        None => no_such_stream(),
    }
}

#[derive(Serialize)]
struct ActionJson {
    tenant: String,
    stream: String,
    action: &'static str,
}

fn done(id: StreamId, action: &'static str) -> Response {
    Json(ActionJson {
        tenant: id.tenant,
        stream: id.name,
        action,
    })
    .into_response()
}

async fn kick(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    StreamPath(id): StreamPath,
) -> Response {
    let nothing_to_kick = || {
        error(
            StatusCode::CONFLICT,
            "no publisher of this stream on this worker",
        )
    };
    if !in_scope(&ctx, &scope, &id.tenant, "POST kick") {
        return nothing_to_kick();
    }
    if ctx.streams.kick(&id).await {
        done(id, "kicked")
    } else {
        nothing_to_kick()
    }
}

async fn end(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    StreamPath(id): StreamPath,
) -> Response {
    let nothing_to_end = || error(StatusCode::NOT_FOUND, "no such stream, or already ended");
    if !in_scope(&ctx, &scope, &id.tenant, "POST end") {
        return nothing_to_end();
    }
    match ctx.streams.end_stream(&id).await {
        Ok(true) => done(id, "ended"),
        Ok(false) => nothing_to_end(),
        Err(e) => {
            ctx.metrics.store_error(StoreOp::PutState);
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

async fn workers(State(ctx): State<Arc<Context>>, Extension(scope): Extension<Scope>) -> Response {
    // The members' addresses, pools and load are the operator's (another tenant's pool
    // and traffic show in them).
    if let Some(resp) = operator_only(&ctx, &scope, "GET workers") {
        return resp;
    }
    match ctx.state.workers().await {
        Ok(list) => {
            let out: Vec<WorkerJson> = list
                .into_iter()
                .map(|record| WorkerJson {
                    is_self: record.id == ctx.member.id,
                    record,
                })
                .collect();
            Json(out).into_response()
        }
        Err(e) => {
            ctx.metrics.store_error(StoreOp::ListWorkers);
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// A tenant as the API shows it: its settings and its keys' ids, never a secret or a hash.
#[derive(Debug, Serialize)]
struct TenantJson {
    name: String,
    pool: Option<String>,
    quotas: Quotas,
    playback: Playback,
    keys: Vec<KeyJson>,
    updated_ms: i64,
    /// SRT, webhooks, segments, reconnect window, health (secrets redacted).
    #[serde(flatten)]
    stream_settings: crate::tenant_settings_api::SettingsJson,
    /// Signed playback: the signing keys' ids, newest first (never a secret).
    playback_keys: Vec<PlaybackKeyJson>,
}

#[derive(Debug, Serialize)]
struct PlaybackKeyJson {
    id: String,
    created_ms: i64,
}

#[derive(Debug, Serialize)]
struct KeyJson {
    id: String,
    stream: String,
    created_ms: i64,
    rotated_ms: Option<i64>,
}

impl From<&KeyRecord> for KeyJson {
    fn from(k: &KeyRecord) -> Self {
        Self {
            id: k.id.to_string(),
            stream: k.stream.clone(),
            created_ms: k.created_ms,
            rotated_ms: k.rotated_ms,
        }
    }
}

fn tenant_json(t: &TenantRecord) -> TenantJson {
    TenantJson {
        name: t.name.clone(),
        pool: t.settings.pool.clone(),
        quotas: t.settings.quotas.clone(),
        playback: t.settings.playback,
        keys: t.keys.iter().map(KeyJson::from).collect(),
        updated_ms: t.updated_ms,
        stream_settings: (&t.settings).into(),
        playback_keys: t
            .playback_keys
            .iter()
            .map(|k| PlaybackKeyJson {
                id: k.id.to_string(),
                created_ms: k.created_ms,
            })
            .collect(),
    }
}

/// `POST /tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default, deserialize_with = "quotas_object")]
    quotas: Quotas,
    #[serde(default)]
    playback: Playback,
}

/// `PATCH /tenants/{tenant}`: only the fields present change (`"pool": null` clears it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchTenant {
    #[serde(default, deserialize_with = "crate::tenant_settings_api::present")]
    pool: Option<Option<String>>,
    #[serde(default, deserialize_with = "some_quotas_object")]
    quotas: Option<Quotas>,
    #[serde(default)]
    playback: Option<Playback>,
}

/// `POST /tenants/{tenant}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    stream: String,
}

/// A key as made or rotated: the only answers that carry its secret.
#[derive(Serialize)]
struct IssuedKeyJson {
    id: String,
    stream: String,
    key: String,
}

fn issued_json(issued: &IssuedKey) -> IssuedKeyJson {
    IssuedKeyJson {
        id: issued.record.id.to_string(),
        stream: issued.record.stream.clone(),
        key: issued.key.expose().to_owned(),
    }
}

/// A JSON request body, or why it is not one (answered as a 400, in JSON like every
/// answer).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid request body: {e}"))?;
    // Serde reads a struct from an array too; the API takes objects only.
    if !value.is_object() {
        return Err("invalid request body: a JSON object is expected".into());
    }
    serde_json::from_value(value).map_err(|e| format!("invalid request body: {e}"))
}

/// Quotas from a JSON object only (not from an array, which serde would also read). A
/// number written with a zero fraction (`8000000.0`) is an integer to JSON Schema and to
/// JavaScript, so it reads as one.
fn quotas_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Quotas, D::Error> {
    let map = serde_json::Map::deserialize(d)?;
    let map = map.into_iter().map(|(k, v)| (k, integral(v))).collect();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

/// `v` as an unsigned integer when it is a float with no fraction within 0..=2^53 (where a
/// float holds every integer exactly); otherwise `v` unchanged.
fn integral(v: serde_json::Value) -> serde_json::Value {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    match v.as_f64() {
        Some(f) if v.is_f64() && f.fract() == 0.0 && (0.0..=MAX_EXACT).contains(&f) => {
            // Exact: an integral float within 2^53 converts without loss.
            serde_json::Value::from(f as u64)
        }
        _ => v,
    }
}

fn some_quotas_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quotas>, D::Error> {
    quotas_object(d).map(Some)
}

/// The 403 of the tenant calls on a worker without an operator token.
fn no_operator_token(ctx: &Context) -> Option<Response> {
    ctx.config.admin_token.is_none().then(|| {
        error(
            StatusCode::FORBIDDEN,
            "managing tenants needs an operator token: start the worker with --admin-token",
        )
    })
}

/// What a tenant call answers: a [`Refusal`] ends it early (`?`).
type Answer = Result<Response, Refusal>;

/// An answer that ends a tenant call early (a refusal, a 400, a store error). Boxed: a
/// `Response` is too large to be carried through every `?` by value.
struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(resp: Response) -> Self {
        Self(Box::new(resp))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Who may make a tenant call.
#[derive(Clone, Copy)]
enum Caller<'a> {
    /// The operator only: a tenant token gets a 403.
    Operator,
    /// The operator, or a tenant token of tenant `.0`: another tenant's token gets the
    /// answer a tenant that does not exist gets.
    TenantOf(&'a str),
}

/// The preamble of every tenant call (`what` names it in the refusal's log line): 403 on a
/// worker without an operator token, then the caller's scope checked.
fn tenant_call(
    ctx: &Context,
    scope: &Scope,
    caller: Caller<'_>,
    what: &str,
) -> Result<(), Refusal> {
    if let Some(resp) = no_operator_token(ctx) {
        return Err(resp.into());
    }
    match caller {
        Caller::Operator => operator_only(ctx, scope, what).map_or(Ok(()), |r| Err(r.into())),
        Caller::TenantOf(tenant) if in_scope(ctx, scope, tenant, what) => Ok(()),
        Caller::TenantOf(_) => Err(no_such_tenant().into()),
    }
}

/// The JSON request body of a tenant call, or its 400.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    Ok(body(bytes).map_err(bad_request)?)
}

/// The 400 of a request that says `why` it is wrong.
fn bad_request(why: String) -> Response {
    error(StatusCode::BAD_REQUEST, &why)
}

/// `r`, or the answer to its [`ManageError`].
fn managed<T>(ctx: &Context, r: Result<T, ManageError>) -> Result<T, Refusal> {
    Ok(r.map_err(|e| manage_error(ctx, &e))?)
}

/// `resp`, marked never to be stored (it carries a secret).
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn manage_error(ctx: &Context, e: &ManageError) -> Response {
    let status = match e {
        ManageError::NotFound(_) => StatusCode::NOT_FOUND,
        ManageError::Exists | ManageError::TooManyKeys | ManageError::TooManyTokens => {
            StatusCode::CONFLICT
        }
        ManageError::Invalid(_) => StatusCode::BAD_REQUEST,
        ManageError::NoRandomness(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ManageError::Store(e) => return store_error(ctx, e),
    };
    error(status, &e.to_string())
}

fn store_error(ctx: &Context, e: &StoreError) -> Response {
    ctx.metrics.store_error(StoreOp::Tenants);
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

async fn list_tenants(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
) -> Answer {
    if let Some(resp) = no_operator_token(&ctx) {
        return Err(resp.into());
    }
    let list = match &scope {
        // Its own record only.
        Scope::Tenant(own) => ctx.tenants.get(own).await.map(Vec::from_iter),
        Scope::Operator => ctx.tenants.list().await,
    };
    let list = list.map_err(|e| store_error(&ctx, &e))?;
    Ok(Json(list.iter().map(tenant_json).collect::<Vec<_>>()).into_response())
}

async fn create_tenant(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    bytes: bytes::Bytes,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::Operator, "POST tenants")?;
    let (req, stream_settings): (CreateTenant, crate::tenant_settings_api::Create) =
        crate::tenant_settings_api::read_body(&bytes).map_err(bad_request)?;
    let mut settings = TenantSettings {
        pool: req.pool,
        quotas: req.quotas,
        playback: req.playback,
        ..TenantSettings::default()
    };
    stream_settings.apply(&mut settings).map_err(bad_request)?;
    let t = managed(&ctx, ctx.tenants.create(&req.name, settings).await)?;
    Ok((StatusCode::CREATED, Json(tenant_json(&t))).into_response())
}

/// What a tenant that does not exist gets: also the answer to a tenant scope naming
/// another tenant, existing or not.
fn no_such_tenant() -> Response {
    error(StatusCode::NOT_FOUND, "no such tenant")
}

async fn one_tenant(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::TenantOf(&name), "GET tenant")?;
    match ctx.tenants.get(&name).await {
        Ok(Some(t)) => Ok(Json(tenant_json(&t)).into_response()),
        Ok(None) => Err(no_such_tenant().into()),
        Err(e) => Err(store_error(&ctx, &e).into()),
    }
}

async fn update_tenant(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    bytes: bytes::Bytes,
) -> Answer {
    // Settings (pool, quotas, playback) are what the operator sells: a tenant token
    // cannot raise its own quota.
    tenant_call(&ctx, &scope, Caller::Operator, "PATCH tenant")?;
    let (patch, stream_settings): (PatchTenant, crate::tenant_settings_api::Patch) =
        crate::tenant_settings_api::read_body(&bytes).map_err(bad_request)?;
    stream_settings.check().map_err(bad_request)?;
    let edit = |s: &mut TenantSettings| {
        stream_settings.apply(s);
        if let Some(pool) = &patch.pool {
            s.pool.clone_from(pool);
        }
        if let Some(quotas) = &patch.quotas {
            s.quotas = quotas.clone();
        }
        if let Some(playback) = patch.playback {
            s.playback = playback;
        }
    };
    let t = managed(&ctx, ctx.tenants.update(&name, edit).await)?;
    Ok(Json(tenant_json(&t)).into_response())
}

#[derive(Serialize)]
struct TenantActionJson {
    name: String,
    action: &'static str,
}

async fn delete_tenant(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::Operator, "DELETE tenant")?;
    let t = managed(&ctx, ctx.tenants.delete(&name).await)?;
    Ok(Json(TenantActionJson {
        name: t.name,
        action: "deleted",
    })
    .into_response())
}

async fn add_key(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    bytes: bytes::Bytes,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::TenantOf(&name), "POST keys")?;
    let req: CreateKey = json_body(&bytes)?;
    let issued = managed(&ctx, ctx.tenants.add_key(&name, &req.stream).await)?;
    Ok((StatusCode::CREATED, Json(issued_json(&issued))).into_response())
}

async fn rotate_key(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path((name, id)): Path<(String, String)>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::TenantOf(&name), "POST rotate")?;
    let issued = managed(&ctx, ctx.tenants.rotate_key(&name, &id).await)?;
    Ok(Json(issued_json(&issued)).into_response())
}

#[derive(Serialize)]
struct KeyActionJson {
    id: String,
    stream: String,
    action: &'static str,
}

async fn revoke_key(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path((name, id)): Path<(String, String)>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::TenantOf(&name), "DELETE key")?;
    let k = managed(&ctx, ctx.tenants.revoke_key(&name, &id).await)?;
    Ok(Json(KeyActionJson {
        id: k.id.to_string(),
        stream: k.stream,
        action: "revoked",
    })
    .into_response())
}

// --- tenant admin tokens (issue #12 item 5) ---

/// `POST /tenants/{tenant}/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    scope: tidegate_model::TokenScope,
}

/// A token as listed: never its secret or its hash.
#[derive(Serialize)]
struct TokenJson {
    id: String,
    scope: tidegate_model::TokenScope,
    created_ms: i64,
}

impl From<&tidegate_model::TokenRecord> for TokenJson {
    fn from(t: &tidegate_model::TokenRecord) -> Self {
        Self {
            id: t.id.to_string(),
            scope: t.scope,
            created_ms: t.created_ms,
        }
    }
}

/// A token as made: the only answer that carries its secret.
#[derive(Serialize)]
struct IssuedTokenJson {
    id: String,
    scope: tidegate_model::TokenScope,
    token: String,
    created_ms: i64,
}

fn issued_token_json(issued: &IssuedToken) -> IssuedTokenJson {
    IssuedTokenJson {
        id: issued.record.id.to_string(),
        scope: issued.record.scope,
        token: issued.token.expose().to_owned(),
        created_ms: issued.record.created_ms,
    }
}

async fn create_token(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    bytes: bytes::Bytes,
) -> Answer {
    // A tenant token cannot mint tokens that would outlive its own revocation.
    tenant_call(&ctx, &scope, Caller::Operator, "POST tokens")?;
    let req: CreateToken = json_body(&bytes)?;
    let issued = managed(&ctx, ctx.tenants.create_token(&name, req.scope).await)?;
    Ok((StatusCode::CREATED, Json(issued_token_json(&issued))).into_response())
}

async fn list_tokens(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::Operator, "GET tokens")?;
    let list = managed(&ctx, ctx.tenants.tokens(&name).await)?;
    Ok(Json(list.iter().map(TokenJson::from).collect::<Vec<_>>()).into_response())
}

#[derive(Serialize)]
struct TokenActionJson {
    id: String,
    action: &'static str,
}

async fn revoke_token(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path((name, id)): Path<(String, String)>,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::Operator, "DELETE token")?;
    let t = managed(&ctx, ctx.tenants.revoke_token(&name, &id).await)?;
    Ok(Json(TokenActionJson {
        id: t.id.to_string(),
        action: "revoked",
    })
    .into_response())
}

// --- signed playback (issue #12) ---

/// The life of a minted token when the request names none.
const DEFAULT_PLAYBACK_TTL_S: u64 = 3600;

/// `POST /tenants/{tenant}/playback-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintPlaybackToken {
    stream: String,
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Serialize)]
struct PlaybackTokenJson {
    token: String,
    /// The playlist with the token, for a single stream; `null` for a prefix.
    url: Option<String>,
    /// Unix seconds (the token's `exp`).
    expires_at: i64,
    tenant: String,
    stream: String,
    key_id: String,
}

async fn mint_playback_token(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    bytes: bytes::Bytes,
) -> Answer {
    tenant_call(
        &ctx,
        &scope,
        Caller::TenantOf(&name),
        "POST playback-tokens",
    )?;
    let req: MintPlaybackToken = json_body(&bytes)?;
    let ttl_s = req.ttl_s.unwrap_or(DEFAULT_PLAYBACK_TTL_S);
    let minted = ctx
        .tenants
        .mint_playback_token(&name, &req.stream, ttl_s)
        .await;
    let minted = managed(&ctx, minted)?;
    let url = (!minted.claims.stream.ends_with('*')).then(|| {
        format!(
            "/hls/{}/{}/index.m3u8?token={}",
            minted.claims.tenant, minted.claims.stream, minted.token
        )
    });
    let answer = PlaybackTokenJson {
        url,
        expires_at: minted.claims.exp,
        tenant: minted.claims.tenant,
        stream: minted.claims.stream,
        key_id: minted.key_id.to_string(),
        token: minted.token,
    };
    Ok(no_store(
        (StatusCode::CREATED, Json(answer)).into_response(),
    ))
}

/// `POST /tenants/{tenant}/playback-keys` (the body may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotatePlaybackKey {
    #[serde(default)]
    keep_previous: Option<bool>,
}

#[derive(Serialize)]
struct IssuedPlaybackKeyJson {
    id: String,
    secret: String,
    created_ms: i64,
    previous_kept: bool,
}

async fn rotate_playback_key(
    State(ctx): State<Arc<Context>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    bytes: bytes::Bytes,
) -> Answer {
    tenant_call(&ctx, &scope, Caller::TenantOf(&name), "POST playback-keys")?;
    let req: RotatePlaybackKey = if bytes.iter().all(u8::is_ascii_whitespace) {
        RotatePlaybackKey::default()
    } else {
        json_body(&bytes)?
    };
    let keep_previous = req.keep_previous.unwrap_or(true);
    let key = managed(
        &ctx,
        ctx.tenants.rotate_playback_key(&name, keep_previous).await,
    )?;
    let answer = IssuedPlaybackKeyJson {
        id: key.id.to_string(),
        secret: key.secret,
        created_ms: key.created_ms,
        previous_kept: keep_previous,
    };
    Ok(no_store(
        (StatusCode::CREATED, Json(answer)).into_response(),
    ))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        OPENAPI_YAML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::same_token;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR   s3cret",
        ] {
            assert_eq!(bearer_token(value), Some("s3cret"), "{value}");
        }
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), Some(""));
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3creT", "s3cret"));
        assert!(!same_token("s3cre", "s3cret"));
        assert!(!same_token("", "s3cret"));
    }

    #[test]
    fn quotas_read_integral_floats_as_integers_and_nothing_else() {
        let read = |json: &str| -> Result<CreateTenant, String> { body(json.as_bytes()) };
        let t =
            read(r#"{"name": "a", "quotas": {"max_bitrate_bps": 8000000.0, "max_streams": 5}}"#)
                .unwrap();
        assert_eq!(t.quotas.max_bitrate_bps, Some(8_000_000));
        assert_eq!(t.quotas.max_streams, Some(5));
        for bad in [
            r#"{"name": "a", "quotas": {"max_bitrate_bps": 1.5}}"#,
            r#"{"name": "a", "quotas": {"max_bitrate_bps": -1.0}}"#,
            r#"{"name": "a", "quotas": {"max_streams": 1e300}}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
