//! The HTTP side of the worker: the playback origin (HLS), health and metrics endpoints
//! ([`origin`]) with signed playback ([`playback`]), the admin API ([`api`]), the dashboard
//! ([`dashboard`]), all served on an accept loop of its own with per-connection caps and
//! timeouts ([`http`]); LL-HLS blocking playlist reload, delta updates and held preload-hint
//! requests ([`llhls`]); and the startup banner's addresses ([`urls`]).
#![deny(missing_docs)]

pub mod access;
pub mod api;
mod chunked;
pub mod dash;
pub mod dashboard;
pub mod http;
pub mod llhls;
pub mod origin;
pub mod playback;
pub mod tenant_settings_api;
pub mod urls;

use std::sync::Arc;

use tidegate_config::OriginConfig;
use tidegate_events::metrics;
use tidegate_events::metrics::Metrics;
use tidegate_lifecycle::PhaseWatch;
use tidegate_model::unix_ms;
use tidegate_registry::stream;
use tidegate_registry::stream::Streams;
use tidegate_registry::tenants::Tenants;
use tidegate_registry::worker::Member;
use tidegate_store as store;
use tidegate_store::StateStore;

/// What the HTTP handlers share (the server builds it).
pub struct Context {
    /// The origin's section of the configuration.
    pub config: OriginConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The stream registry.
    pub streams: Arc<Streams>,
    /// The shared state (the cluster's members, for `/api/v1/workers`).
    pub state: Arc<dyn StateStore>,
    /// This worker as a cluster member.
    pub member: Arc<Member>,
    /// The tenant directory (`/api/v1/tenants`).
    pub tenants: Arc<Tenants>,
    /// The worker's phase: `/readyz` fails from [`tidegate_lifecycle::Phase::Draining`] on.
    pub phase: PhaseWatch,
    /// Refused admin credentials, counted and logged rate-limited (issue #12 item 5).
    pub auth_log: access::AuthLog,
}

impl Context {
    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.phase.is_ready() && self.streams.stores_healthy()
    }
}
