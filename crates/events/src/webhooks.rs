//! Webhooks and the `on-publish` authorisation callback.
//!
//! **Events.** Every stream event of the telemetry bus ([`StreamEvent`]: `stream.published`,
//! `stream.unpublished`, `stream.status_changed`, `stream.ended`) is POSTed as JSON to each
//! URL of `webhooks`, signed with `webhook-secret`:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Tidegate-Event-Id: evt_3f9c…           (the same on every retry: deduplicate on it)
//! Tidegate-Signature: t=1717171717,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//!
//! {"id":"evt_3f9c…","type":"stream.status_changed","created_at":"2024-05-31T16:08:37.123Z",
//!  "data":{"tenant":"default","stream":"cam","status":"warning","previous_status":"healthy",
//!          "reasons":[{"code":"low_bitrate","bps":0,"threshold_bps":1000000}],
//!          "protocol":"rtmp","worker":"host-1234","epoch":3}}
//! ```
//!
//! `t` is the time of the attempt (not of the event), so a receiver rejects a request whose
//! `|now - t|` exceeds its replay window ([`REPLAY_WINDOW`], 5 minutes, is what [`verify`]
//! and the README use). A 2xx answer is a delivery; anything else, a timeout or a transport
//! error is retried with exponential backoff ([`backoff`]: 1 s, 2 s, 4 s, 8 s) up to
//! [`MAX_ATTEMPTS`] attempts, then counted as failed.
//!
//! **Once per event across the cluster.** Events come from the worker that performed the
//! state transition (the owner of the publish session publishes, unpublishes and evaluates
//! health; the worker whose compare-and-set ended the stream sends `stream.ended`), so each
//! event is sent by exactly one worker. Delivery is at least once (a lost 2xx is retried):
//! receivers deduplicate on the event id.
//!
//! **Bounded.** Each URL has one delivery task and a queue of [`QUEUE_CAPACITY`] events,
//! delivered in order; when the queue is full the oldest event is dropped and counted
//! (`tidegate_webhook_deliveries_total{result="dropped"}`). Slow receivers never slow ingest.
//!
//! **Tenants' webhooks.** A tenant may name webhooks of its own (its settings' `webhooks`,
//! signed with its `webhook_secret`, or the server's when it has none): they receive that
//! tenant's events only, the same bodies signed the same way, *in addition to* the server's
//! `webhooks`, which keep receiving every event (the operator sees everything, a tenant only
//! its own). Each (tenant, URL, secret) has its own queue and task, made when it appears in
//! the tenants' settings ([`TenantHookMap`], from [`Telemetry::set_tenant_hooks`]) and stopped
//! when it goes (its undelivered events are dropped).
//!
//! [`Telemetry::set_tenant_hooks`]: crate::telemetry::Telemetry::set_tenant_hooks
//!
//! **on-publish.** Before a publisher is accepted (RTMP `publish`, SRT conclusion handshake)
//! the worker POSTs `{"action":"on_publish","tenant","stream","protocol","remote_addr",…}`
//! to `on-publish` (signed the same way when a secret is set). A 2xx answer accepts; any
//! other status, a timeout (`on-publish-timeout`) or an unreachable callback refuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tidegate_health::{Reason, Status};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{
    Metrics, OnPublishResult, Protocol, PublishRefusal, ResultLabels, WebhookResult,
};
use crate::store::StreamId;
use crate::telemetry::StreamEvent;
use crate::unix_ms;
use tidegate_model::WebhookUrl;

/// Header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Tidegate-Signature";
/// Header carrying the event id (stable across retries).
pub const EVENT_ID_HEADER: &str = "Tidegate-Event-Id";
/// The replay window receivers should enforce on `t` (and that [`verify`] enforces).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// Events waiting per URL; beyond, the oldest is dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;
/// Attempts per event and URL before it is counted as failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled for each next one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// On shutdown, how long queued events may still take to go out (one attempt each).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

type HmacSha256 = Hmac<Sha256>;

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex(&mac(secret, t, body)))
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// `t` is outside the replay window.
    #[error("timestamp outside the replay window")]
    Expired,
    /// No `v1` matches.
    #[error("signature mismatch")]
    Mismatch,
}

/// What a receiver does: parse `header`, check `|now - t| <= tolerance`, recompute the HMAC
/// over `"<t>.<body>"` and compare in constant time (any of several `v1=` entries may match,
/// which allows a secret rotation).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", v)) => sigs.push(unhex(v).ok_or(VerifyError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if now_secs.abs_diff(t) > tolerance.as_secs() {
        return Err(VerifyError::Expired);
    }
    for sig in sigs {
        let mut m = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        m.update(t.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// The wait after failed attempt number `attempt` (1-based): 1 s, 2 s, 4 s, … capped at
/// [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unix_secs() -> i64 {
    unix_ms().div_euclid(1000)
}

/// The JSON body of an event delivery.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// Unique event id (also in [`EVENT_ID_HEADER`]).
    pub id: &'a str,
    /// Event type, e.g. `stream.status_changed`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// When the event happened, RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// What it is about.
    pub data: PayloadData<'a>,
}

/// The `data` object of a delivery.
#[derive(Debug, Serialize)]
pub struct PayloadData<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Public stream name.
    pub stream: &'a str,
    /// Status after the event.
    pub status: Status,
    /// Status before (for `stream.published` and `stream.status_changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<Status>,
    /// Why `warning` (empty otherwise).
    pub reasons: &'a [Reason],
    /// Ingest protocol (`rtmp`, `srt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'a str>,
    /// The worker that sent it.
    pub worker: &'a str,
    /// The publish session's epoch.
    pub epoch: u64,
}

/// One event ready to send: id and body fixed, signed at each attempt.
#[derive(Debug, Clone)]
struct Delivery {
    id: Arc<str>,
    body: Bytes,
}

static EVENT_SEQ: AtomicU64 = AtomicU64::new(1);

fn event_id(ev: &StreamEvent) -> String {
    let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut h = Sha256::new();
    h.update(ev.worker.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(ev.at_ms.to_be_bytes());
    h.update(ev.kind.as_bytes());
    h.update(ev.tenant.as_bytes());
    h.update([0]);
    h.update(ev.stream.as_bytes());
    let digest = h.finalize();
    format!("evt_{}", hex(&digest[..16]))
}

fn render(ev: &StreamEvent) -> Delivery {
    let id = event_id(ev);
    let payload = Payload {
        id: &id,
        kind: ev.kind,
        created_at: tidegate_packager::format_program_date_time(ev.at_ms),
        data: PayloadData {
            tenant: &ev.tenant,
            stream: &ev.stream,
            status: ev.status,
            previous_status: ev.from,
            reasons: &ev.reasons,
            protocol: ev.protocol,
            worker: &ev.worker,
            epoch: ev.epoch,
        },
    };
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    Delivery {
        id: id.into(),
        body: Bytes::from(body),
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A receiver that redirects is misconfigured; following it could leak the body.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tidegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A URL for logs: scheme, host and port only (paths and queries may carry tokens).
fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Per-URL queue: bounded, drop-oldest.
struct Queue {
    items: Mutex<VecDeque<Delivery>>,
    ready: Notify,
}

impl Queue {
    fn push(&self, d: Delivery, metrics: &Metrics) {
        let dropped = match self.items.lock() {
            Ok(mut q) => {
                let dropped = if q.len() >= QUEUE_CAPACITY {
                    q.pop_front()
                } else {
                    None
                };
                q.push_back(d);
                dropped
            }
            Err(_) => None,
        };
        if let Some(old) = dropped {
            metrics.webhook_delivery(WebhookResult::Dropped);
            warn!(event = %old.id, "webhook queue full: oldest event dropped");
        }
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Delivery> {
        self.items.lock().ok()?.pop_front()
    }
}

/// One webhook of a tenant: where its events go and the secret they are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHook {
    /// The receiver.
    pub url: WebhookUrl,
    /// The tenant's `webhook_secret`, or the server's.
    pub secret: tidegate_model::Secret,
}

/// Every tenant's own webhooks, by tenant name.
pub type TenantHookMap = Arc<std::collections::HashMap<String, Vec<TenantHook>>>;

/// The delivery tasks of the tenants' webhooks, by (tenant, URL, secret).
#[derive(Default)]
struct TenantQueues {
    running: std::collections::HashMap<(String, String, String), (Arc<Queue>, CancellationToken)>,
}

impl TenantQueues {
    /// Starts a task for every hook of `hooks` not running yet and stops those that are gone.
    fn reconcile(
        &mut self,
        hooks: &TenantHookMap,
        spawn: impl Fn(&str, &TenantHook, Arc<Queue>, CancellationToken),
    ) {
        let wanted: std::collections::HashMap<_, _> = hooks
            .iter()
            .flat_map(|(tenant, list)| {
                list.iter().map(move |h| {
                    (
                        (
                            tenant.clone(),
                            h.url.as_str().to_owned(),
                            h.secret.expose().to_owned(),
                        ),
                        (tenant, h),
                    )
                })
            })
            .collect();
        self.running.retain(|key, (_, gone)| {
            let keep = wanted.contains_key(key);
            if !keep {
                gone.cancel();
            }
            keep
        });
        for (key, (tenant, hook)) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let q = Arc::new(Queue {
                items: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
            });
            let gone = CancellationToken::new();
            spawn(tenant, hook, q.clone(), gone.clone());
            info!(tenant = %tenant, url = %display_url(hook.url.as_str()), "tenant webhook enabled");
            self.running.insert(key, (q, gone));
        }
    }

    /// The queues of `tenant`'s webhooks.
    fn of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Arc<Queue>> + 'a {
        self.running
            .iter()
            .filter(move |((t, _, _), _)| t == tenant)
            .map(|(_, (q, _))| q)
    }
}

/// Starts the webhook dispatcher: one task reading the event bus, one delivery task per URL
/// of the server (`urls`, signed with `secret`) and per webhook of a tenant (`tenant_hooks`,
/// as they change). Returns a handle that finishes after `stop` is cancelled and the queues
/// are flushed (or [`SHUTDOWN_GRACE`] passed).
pub fn start(
    urls: &[WebhookUrl],
    secret: Option<&str>,
    timeout: Duration,
    mut events: broadcast::Receiver<StreamEvent>,
    mut tenant_hooks: tokio::sync::watch::Receiver<TenantHookMap>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let http = client(timeout);
    let mut queues = Vec::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let flush = CancellationToken::new();
    // Server queues stop only at shutdown.
    let never = CancellationToken::new();
    if let Some(secret) = secret {
        let secret: Arc<[u8]> = Arc::from(secret.as_bytes());
        for url in urls {
            let q = Arc::new(Queue {
                items: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
            });
            queues.push(q.clone());
            tracker.spawn(deliver_loop(
                url.as_str().to_owned(),
                q,
                http.clone(),
                secret.clone(),
                metrics.clone(),
                flush.clone(),
                never.clone(),
            ));
        }
    }
    if !queues.is_empty() {
        info!(
            urls = urls.len(),
            targets = ?urls.iter().map(|u| display_url(u.as_str())).collect::<Vec<_>>(),
            "webhooks enabled"
        );
    }
    let mut tenants = TenantQueues::default();
    let spawn_tenant = {
        let (tracker, http, metrics, flush) = (
            tracker.clone(),
            http.clone(),
            metrics.clone(),
            flush.clone(),
        );
        move |_tenant: &str, hook: &TenantHook, q: Arc<Queue>, gone: CancellationToken| {
            tracker.spawn(deliver_loop(
                hook.url.as_str().to_owned(),
                q,
                http.clone(),
                Arc::from(hook.secret.expose().as_bytes()),
                metrics.clone(),
                flush.clone(),
                gone,
            ));
        }
    };
    tenants.reconcile(&tenant_hooks.borrow_and_update().clone(), &spawn_tenant);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                () = stop.cancelled() => break,
            };
            if tenant_hooks.has_changed().unwrap_or(false) {
                let hooks = tenant_hooks.borrow_and_update().clone();
                tenants.reconcile(&hooks, &spawn_tenant);
            }
            match ev {
                Ok(ev) => {
                    let d = render(&ev);
                    debug!(event = %d.id, kind = ev.kind, stream = %format!("{}/{}", ev.tenant, ev.stream), "webhook queued");
                    for q in queues.iter().chain(tenants.of(&ev.tenant)) {
                        q.push(d.clone(), &metrics);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(skipped = n, "webhooks: event bus overran; events dropped");
                    metrics
                        .webhook_deliveries
                        .get_or_create(&ResultLabels {
                            result: WebhookResult::Dropped,
                        })
                        .inc_by(n.saturating_mul(queues.len() as u64));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        // Take what the bus still holds (the shutdown's own events), then flush.
        while let Ok(ev) = events.try_recv() {
            let d = render(&ev);
            for q in queues.iter().chain(tenants.of(&ev.tenant)) {
                q.push(d.clone(), &metrics);
            }
        }
        flush.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("webhooks: undelivered events left at shutdown");
        }
    })
}

async fn deliver_loop(
    url: String,
    q: Arc<Queue>,
    http: reqwest::Client,
    secret: Arc<[u8]>,
    metrics: Arc<Metrics>,
    flush: CancellationToken,
    gone: CancellationToken,
) {
    let shown = display_url(&url);
    loop {
        if gone.is_cancelled() {
            // A tenant's webhook that was removed: what it still had is dropped.
            return;
        }
        let Some(d) = q.pop() else {
            if flush.is_cancelled() {
                return;
            }
            tokio::select! {
                () = q.ready.notified() => {}
                () = flush.cancelled() => {}
                () = gone.cancelled() => {}
            }
            continue;
        };
        let mut attempt = 1;
        loop {
            match post(&http, &url, Some(&*secret), Some(&*d.id), d.body.clone()).await {
                Ok(()) => {
                    metrics.webhook_delivery(WebhookResult::Delivered);
                    debug!(event = %d.id, url = %shown, attempt, "webhook delivered");
                    break;
                }
                Err(e) if attempt < MAX_ATTEMPTS && !flush.is_cancelled() => {
                    let wait = backoff(attempt);
                    metrics.webhook_retries.inc();
                    warn!(event = %d.id, url = %shown, attempt, retry_in_s = wait.as_secs_f64(), error = %e, "webhook delivery failed; will retry");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = flush.cancelled() => {}
                    }
                    attempt += 1;
                }
                Err(e) => {
                    metrics.webhook_delivery(WebhookResult::Failed);
                    warn!(event = %d.id, url = %shown, attempt, error = %e, "webhook delivery failed; giving up");
                    break;
                }
            }
        }
    }
}

/// POSTs `body` as JSON, signed when a secret is given; `Ok` on 2xx.
async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&[u8]>,
    event_id: Option<&str>,
    body: Bytes,
) -> Result<(), String> {
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        req = req.header(SIGNATURE_HEADER, sign(secret, unix_secs(), &body));
    }
    if let Some(id) = event_id {
        req = req.header(EVENT_ID_HEADER, id);
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timeout".to_owned()),
        Err(e) if e.is_connect() => Err("connection failed".to_owned()),
        Err(e) => Err(format!("request failed: {e}")),
    }
}

/// The `on-publish` callback.
pub struct OnPublish {
    url: String,
    shown: String,
    secret: Option<Arc<[u8]>>,
    http: reqwest::Client,
    worker: String,
    metrics: Arc<Metrics>,
}

/// What the `on-publish` callback decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: publish.
    Accept,
    /// Another status: refused.
    Refuse,
    /// No answer in time or unreachable: refused (fail closed).
    Unavailable,
}

impl Verdict {
    /// Metric label for a refusal. Callers ask only for a refusal's: `Accept` has no label
    /// of its own and shares `Refuse`'s.
    pub fn reason(self) -> PublishRefusal {
        match self {
            Self::Accept | Self::Refuse => PublishRefusal::OnPublishRefused,
            Self::Unavailable => PublishRefusal::OnPublishUnavailable,
        }
    }
}

#[derive(Serialize)]
struct OnPublishBody<'a> {
    action: &'static str,
    tenant: &'a str,
    stream: &'a str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    remote_addr: String,
    worker: &'a str,
    created_at: String,
}

impl OnPublish {
    /// A callback to `url`, signed with `secret` when set.
    pub fn new(
        url: &WebhookUrl,
        secret: Option<&str>,
        timeout: Duration,
        worker: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        info!(url = %display_url(url.as_str()), timeout_ms = timeout.as_millis() as u64, "on-publish callback enabled");
        Self {
            shown: display_url(url.as_str()),
            url: url.as_str().to_owned(),
            secret: secret.map(|s| Arc::from(s.as_bytes())),
            http: client(timeout),
            worker,
            metrics,
        }
    }

    /// Asks the callback whether `id` may be published by `remote` over `protocol`.
    pub async fn check(
        &self,
        id: &StreamId,
        protocol: Protocol,
        app: Option<&str>,
        remote: SocketAddr,
    ) -> Verdict {
        let body = OnPublishBody {
            action: "on_publish",
            tenant: &id.tenant,
            stream: &id.name,
            protocol: protocol.as_str(),
            app,
            remote_addr: remote.to_string(),
            worker: &self.worker,
            created_at: tidegate_packager::format_program_date_time(unix_ms()),
        };
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let verdict = match post(&self.http, &self.url, self.secret.as_deref(), None, body).await {
            Ok(()) => Verdict::Accept,
            Err(e) if e.starts_with("HTTP ") => {
                info!(stream = %id, url = %self.shown, answer = %e, "on-publish refused the publisher");
                Verdict::Refuse
            }
            Err(e) => {
                warn!(stream = %id, url = %self.shown, error = %e, "on-publish callback unavailable; publisher refused");
                Verdict::Unavailable
            }
        };
        self.metrics.on_publish_call(match verdict {
            Verdict::Accept => OnPublishResult::Accepted,
            Verdict::Refuse => OnPublishResult::Refused,
            Verdict::Unavailable => OnPublishResult::Unavailable,
        });
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_model::check_url;

    #[test]
    fn signature_vector() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`.
        let h = sign(b"whsec_test", 1_700_000_000, b"{}");
        assert_eq!(
            h,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn verify_accepts_and_rejects() {
        let secret = b"a-long-enough-secret";
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000;
        let h = sign(secret, t, body);
        let w = REPLAY_WINDOW;
        assert_eq!(verify(secret, &h, body, t, w), Ok(()));
        assert_eq!(verify(secret, &h, body, t + 300, w), Ok(()));
        assert_eq!(
            verify(secret, &h, body, t + 301, w),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            verify(secret, &h, body, t - 301, w),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            verify(b"another-secret-xxxx", &h, body, t, w),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, &h, br#"{"id":"evt_2"}"#, t, w),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is covered: moving it breaks the signature.
        let moved = h.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(secret, &moved, body, t, w),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, "v1=00", body, t, w),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(secret, "t=1", body, 1, w),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(secret, "t=x,v1=00", body, t, w),
            Err(VerifyError::Malformed)
        );
        // Rotation: a second v1 may match.
        let two = format!("{h},v1={}", "ab".repeat(32));
        assert_eq!(verify(secret, &two, body, t, w), Ok(()));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&b), "00017f80ff");
        assert_eq!(unhex("00017f80ff").unwrap(), b);
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn payload_shape() {
        let ev = StreamEvent {
            kind: "stream.status_changed",
            at_ms: 1_700_000_000_123,
            tenant: "default".into(),
            stream: "cam".into(),
            epoch: 3,
            worker: "w1".into(),
            protocol: Some("rtmp"),
            from: Some(Status::Healthy),
            status: Status::Warning,
            reasons: vec![Reason::LowBitrate {
                bps: 0,
                threshold_bps: 1_000_000,
            }],
        };
        let d = render(&ev);
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["id"], &*d.id);
        assert!(d.id.starts_with("evt_") && d.id.len() == 36);
        assert_eq!(v["type"], "stream.status_changed");
        assert_eq!(v["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["data"]["status"], "warning");
        assert_eq!(v["data"]["previous_status"], "healthy");
        assert_eq!(v["data"]["reasons"][0]["code"], "low_bitrate");
        assert_eq!(v["data"]["protocol"], "rtmp");
        assert_eq!(v["data"]["epoch"], 3);
        // Every event gets its own id.
        assert_ne!(render(&ev).id, d.id);
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.invalid/h?token=x").is_ok());
        assert!(check_url("ftp://example.invalid/").is_err());
        assert!(check_url("/relative").is_err());
        assert_eq!(
            display_url("https://u:p@example.invalid:8443/h?token=x"),
            "https://example.invalid:8443"
        );
    }
}
