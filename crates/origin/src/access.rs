//! Who is asking, and what they may see (issue #12 item 5): the operator (`--admin-token`:
//! everything), a tenant (a tenant admin token: its own streams, keys, record and metric
//! series), Prometheus (`--metrics-token`: all of `/metrics`, nothing else), or nobody.
//!
//! The decisions are pure functions of the configured tokens, the presented credential and
//! the tenant a tenant token belongs to (looked up by the caller): [`api_access`] for
//! `/api/v1`, [`metrics_access`] for `/metrics`, [`Scope::sees`] for each tenant a call
//! names, and [`filter_exposition`] for the series a `/metrics` reader gets.
//! `docs/tokens.md` is the operator's view of the same rules.
//!
//! Rules, in order:
//! - the operator token (compared in constant time) is the operator;
//! - a credential of the tenant token shape (`tgt_…`) is a tenant token: its tenant, or
//!   refused (401) when it is none of the current ones — never taken for something else,
//!   even on a worker without `--admin-token`;
//! - with no `--admin-token` the API is open as it always was (no credential, or any
//!   other, is the operator);
//! - otherwise no credential, or any other, is refused (401).
//!
//! A tenant scope never learns whether another tenant's stream or record exists: a call
//! that names another tenant is answered as the same call for a name that does not exist,
//! decided from the path alone, before anything is looked up.

use std::net::SocketAddr;
use std::time::Instant;

use tidegate_events::metrics::{AdminAuthFailure, LogArea, Metrics};
use tidegate_limits::{LogLimiter, LOG_LINES_PER_SECOND};
use tidegate_model::AdminToken;
use tidegate_registry::tenants::tokens::TokenRefusal;
use tracing::warn;

/// Who a granted request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Operator,
    /// One tenant's streams, keys, record and metric series.
    Tenant(String),
}

impl Scope {
    /// Whether this scope may see (and act on) tenant `tenant`'s streams and record.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Self::Operator => true,
            Self::Tenant(own) => own == tenant,
        }
    }

    /// Whether this is the operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Operator)
    }
}

/// The verdict on a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<T> {
    /// Granted, as `T`.
    Granted(T),
    /// Refused: 401.
    Refused(AdminAuthFailure),
    /// A tenant token that cannot be checked yet (the tenant directory was never read): 503.
    Unavailable,
}

/// What a `/metrics` reader gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsView {
    /// Every series.
    All,
    /// Only the series labelled with this tenant.
    Tenant(String),
    /// Only the series labelled with no tenant and no stream: what an anonymous scrape of
    /// a protected worker gets.
    WorkerWide,
}

/// Whether `given` is `token`, in time that does not depend on where they differ.
pub fn same_token(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The tenant token's verdict: its tenant, or why not.
fn tenant_access<T>(
    presented: &str,
    tenant_of: impl FnOnce(&str) -> Result<String, TokenRefusal>,
    grant: impl FnOnce(String) -> T,
) -> Access<T> {
    match tenant_of(presented) {
        Ok(tenant) => Access::Granted(grant(tenant)),
        Err(TokenRefusal::Unknown) => Access::Refused(AdminAuthFailure::UnknownToken),
        Err(TokenRefusal::Unavailable) => Access::Unavailable,
    }
}

/// The verdict on an `/api/v1` call: `admin` is `--admin-token`, `presented` the bearer
/// credential (`None` or empty: none), `tenant_of` the tenant directory's lookup.
pub fn api_access(
    admin: Option<&str>,
    presented: Option<&str>,
    tenant_of: impl FnOnce(&str) -> Result<String, TokenRefusal>,
) -> Access<Scope> {
    let presented = presented.filter(|p| !p.is_empty());
    match (admin, presented) {
        (Some(a), Some(p)) if same_token(p, a) => Access::Granted(Scope::Operator),
        (_, Some(p)) if AdminToken::looks_like(p) => tenant_access(p, tenant_of, Scope::Tenant),
        (None, _) => Access::Granted(Scope::Operator),
        (Some(_), None) => Access::Refused(AdminAuthFailure::Missing),
        (Some(_), Some(_)) => Access::Refused(AdminAuthFailure::UnknownToken),
    }
}

/// The verdict on a `/metrics` scrape: `admin` and `metrics` are `--admin-token` and
/// `--metrics-token`. With neither set, an anonymous scrape sees everything (as before
/// tokens existed); with either, it sees only the worker-wide series, and a credential
/// that is none of the tokens is refused.
pub fn metrics_access(
    admin: Option<&str>,
    metrics: Option<&str>,
    presented: Option<&str>,
    tenant_of: impl FnOnce(&str) -> Result<String, TokenRefusal>,
) -> Access<MetricsView> {
    let protected = admin.is_some() || metrics.is_some();
    let presented = presented.filter(|p| !p.is_empty());
    let full = |p: &str| {
        [admin, metrics]
            .into_iter()
            .flatten()
            .any(|t| same_token(p, t))
    };
    match presented {
        Some(p) if full(p) => Access::Granted(MetricsView::All),
        Some(p) if AdminToken::looks_like(p) => tenant_access(p, tenant_of, MetricsView::Tenant),
        None if protected => Access::Granted(MetricsView::WorkerWide),
        Some(_) if protected => Access::Refused(AdminAuthFailure::UnknownToken),
        None | Some(_) => Access::Granted(MetricsView::All),
    }
}

/// The labels of a sample line that decide who sees it: its `tenant` value and whether it
/// has a `stream` label; `None` when the line cannot be read (it is then left out).
fn sample_labels(line: &str) -> Option<(Option<String>, bool)> {
    let open = line.find(['{', ' '])?;
    if line.as_bytes().get(open) != Some(&b'{') {
        return Some((None, false));
    }
    let mut rest = line.get(open + 1..)?;
    let mut tenant = None;
    let mut stream = false;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return after.starts_with(' ').then_some((tenant, stream));
        }
        let (name, tail) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        match name {
            "tenant" => tenant = Some(value),
            "stream" => stream = true,
            _ => {}
        }
        rest = tail.get(end + 1..)?;
    }
}

/// The exposition `text` (OpenMetrics or the classic text format) with only the samples
/// `view` may see. Comment lines (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) stay: they name
/// metrics, not tenants, so every family is still declared (some without samples).
pub fn filter_exposition(text: &str, view: &MetricsView) -> String {
    if *view == MetricsView::All {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keep = line.starts_with('#')
            || match (sample_labels(line), view) {
                (None, _) => false,
                (Some((tenant, _)), MetricsView::Tenant(own)) => tenant.as_deref() == Some(own),
                (Some((tenant, stream)), _) => tenant.is_none() && !stream,
            };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Refused credentials, counted (`tidegate_admin_auth_failures_total{reason}`) and logged at
/// most [`LOG_LINES_PER_SECOND`] lines a second (a guesser cannot fill the log; the rest
/// are counted in `tidegate_log_lines_suppressed_total{area="admin"}` and summed up).
#[derive(Debug)]
pub struct AuthLog {
    limiter: LogLimiter,
}

impl AuthLog {
    /// A log counting what it suppresses in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            limiter: LogLimiter::new(
                LogArea::Admin.as_str(),
                LOG_LINES_PER_SECOND,
                metrics.log_suppressed(LogArea::Admin),
            ),
        }
    }

    /// Counts and (rate-limited) logs a refusal of `presented` for `path`. The log line
    /// names a tenant token by its public id only; no secret ever reaches it.
    pub fn refused(
        &self,
        metrics: &Metrics,
        reason: AdminAuthFailure,
        scope: Option<&Scope>,
        presented: Option<&str>,
        path: &str,
        peer: Option<SocketAddr>,
    ) {
        metrics.admin_auth_failed(reason);
        if !self.limiter.allow(Instant::now()) {
            return;
        }
        let token_id = presented
            .and_then(AdminToken::parse)
            .map(|t| t.id().to_string());
        let tenant = match scope {
            Some(Scope::Tenant(t)) => Some(t.as_str()),
            _ => None,
        };
        warn!(
            reason = reason.as_str(),
            path,
            peer = ?peer,
            token_id = ?token_id,
            tenant = ?tenant,
            "admin credential refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake directory: `tgt_acme` is acme's token, `tgt_beta` beta's, `tgt_later` cannot
    /// be checked yet; anything else is unknown.
    fn directory(presented: &str) -> Result<String, TokenRefusal> {
        match presented {
            "tgt_acme" => Ok("acme".into()),
            "tgt_beta" => Ok("beta".into()),
            "tgt_later" => Err(TokenRefusal::Unavailable),
            _ => Err(TokenRefusal::Unknown),
        }
    }

    fn tenant(name: &str) -> Access<Scope> {
        Access::Granted(Scope::Tenant(name.into()))
    }

    const MISSING: Access<Scope> = Access::Refused(AdminAuthFailure::Missing);
    const UNKNOWN: Access<Scope> = Access::Refused(AdminAuthFailure::UnknownToken);

    #[test]
    fn with_an_operator_token_every_call_needs_a_token() {
        let admin = Some("op-secret");
        let cases = [
            (None, MISSING),
            (Some(""), MISSING),
            (Some("op-secret"), Access::Granted(Scope::Operator)),
            (Some("op-secreT"), UNKNOWN),
            (Some("op-secret "), UNKNOWN),
            (Some("tgt_acme"), tenant("acme")),
            (Some("tgt_beta"), tenant("beta")),
            (Some("tgt_revoked"), UNKNOWN),
            (Some("tgt_later"), Access::Unavailable),
        ];
        for (presented, want) in cases {
            assert_eq!(
                api_access(admin, presented, directory),
                want,
                "{presented:?}"
            );
        }
    }

    #[test]
    fn without_an_operator_token_the_api_stays_open_but_tenant_tokens_still_scope() {
        let cases = [
            (None, Access::Granted(Scope::Operator)),
            (Some("anything"), Access::Granted(Scope::Operator)),
            (Some("tgt_acme"), tenant("acme")),
            // A revoked tenant token never becomes the operator.
            (Some("tgt_revoked"), UNKNOWN),
        ];
        for (presented, want) in cases {
            assert_eq!(
                api_access(None, presented, directory),
                want,
                "{presented:?}"
            );
        }
    }

    #[test]
    fn a_tenant_scope_sees_its_own_tenant_only() {
        let acme = Scope::Tenant("acme".into());
        assert!(acme.sees("acme"));
        assert!(!acme.sees("beta"));
        assert!(!acme.sees("acme2") && !acme.sees("") && !acme.sees("default"));
        assert!(!acme.is_operator());
        assert!(Scope::Operator.sees("beta") && Scope::Operator.is_operator());
    }

    #[test]
    fn metrics_views() {
        use MetricsView::*;
        let view = |admin, metrics, presented| metrics_access(admin, metrics, presented, directory);
        // Unprotected: as before tokens existed, but a tenant token narrows.
        assert_eq!(view(None, None, None), Access::Granted(All));
        assert_eq!(view(None, None, Some("whatever")), Access::Granted(All));
        assert_eq!(
            view(None, None, Some("tgt_acme")),
            Access::Granted(Tenant("acme".into()))
        );
        assert_eq!(
            view(None, None, Some("tgt_revoked")),
            Access::Refused(AdminAuthFailure::UnknownToken)
        );
        // Protected by either token.
        for (admin, metrics) in [
            (Some("op"), None),
            (None, Some("prom")),
            (Some("op"), Some("prom")),
        ] {
            assert_eq!(view(admin, metrics, None), Access::Granted(WorkerWide));
            assert_eq!(view(admin, metrics, Some("")), Access::Granted(WorkerWide));
            assert_eq!(
                view(admin, metrics, Some("wrong")),
                Access::Refused(AdminAuthFailure::UnknownToken)
            );
            assert_eq!(
                view(admin, metrics, Some("tgt_beta")),
                Access::Granted(Tenant("beta".into()))
            );
            assert_eq!(view(admin, metrics, Some("tgt_later")), Access::Unavailable);
        }
        assert_eq!(view(Some("op"), None, Some("op")), Access::Granted(All));
        assert_eq!(
            view(Some("op"), Some("prom"), Some("prom")),
            Access::Granted(All)
        );
        assert_eq!(view(None, Some("prom"), Some("prom")), Access::Granted(All));
        // The metrics token is no operator token for the API.
        assert_eq!(api_access(Some("op"), Some("prom"), directory), UNKNOWN);
    }

    const EXPOSITION: &str = "\
# HELP tidegate_segments Media segments written.
# TYPE tidegate_segments counter
tidegate_segments_total 7
# TYPE tidegate_publish_refused counter
tidegate_publish_refused_total{protocol=\"rtmp\",reason=\"unknown_key\"} 2
tidegate_publish_refused_total{tenant=\"beta\",reason=\"max_streams\"} 1
# TYPE tidegate_stream_status gauge
tidegate_stream_status{tenant=\"acme\",stream=\"main\",protocol=\"rtmp\",status=\"healthy\"} 1
tidegate_stream_status{tenant=\"beta\",stream=\"secret-launch\",protocol=\"srt\",status=\"healthy\"} 1
tidegate_stream_status{tenant=\"acme\\\"x\",stream=\"odd\",protocol=\"srt\",status=\"healthy\"} 1
tidegate_odd{stream=\"no-tenant\"} 1
tidegate_broken{tenant=\"acme\" 1
# EOF
";

    #[test]
    fn a_tenant_view_keeps_only_its_own_series() {
        let out = filter_exposition(EXPOSITION, &MetricsView::Tenant("acme".into()));
        assert!(out.contains("tenant=\"acme\",stream=\"main\""), "{out}");
        assert!(
            !out.contains("beta") && !out.contains("secret-launch"),
            "{out}"
        );
        assert!(
            !out.contains("odd"),
            "an escaped look-alike is another tenant: {out}"
        );
        assert!(
            !out.contains("tidegate_segments_total 7"),
            "worker-wide: {out}"
        );
        assert!(
            !out.contains("broken"),
            "unreadable lines are left out: {out}"
        );
        assert!(out.contains("# TYPE tidegate_stream_status gauge") && out.ends_with("# EOF\n"));
    }

    #[test]
    fn the_worker_wide_view_keeps_no_tenant_or_stream() {
        let out = filter_exposition(EXPOSITION, &MetricsView::WorkerWide);
        assert!(out.contains("tidegate_segments_total 7"), "{out}");
        assert!(out.contains("reason=\"unknown_key\"} 2"), "{out}");
        for gone in ["acme", "beta", "no-tenant", "broken"] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
        assert_eq!(filter_exposition(EXPOSITION, &MetricsView::All), EXPOSITION);
    }

    #[test]
    fn label_values_are_read_with_their_escapes() {
        assert_eq!(sample_labels("x 1"), Some((None, false)));
        assert_eq!(
            sample_labels("x{a=\"1\",tenant=\"t\"} 1"),
            Some((Some("t".into()), false))
        );
        assert_eq!(
            sample_labels("x{tenant=\"a\\\\\\\"b\",stream=\"s\"} 1"),
            Some((Some("a\\\"b".into()), true))
        );
        for bad in ["x{tenant=\"t\" 1", "x{tenant=t} 1", "x{tenant=\"t\"}1", "x"] {
            assert_eq!(sample_labels(bad), None, "{bad}");
        }
    }
}
