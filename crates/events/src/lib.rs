//! What the worker reports: metrics ([`metrics`]), per-stream health and the stream event
//! bus ([`telemetry`]), and the webhooks and on-publish callback fed from them
//! ([`webhooks`]).
#![deny(missing_docs)]

pub mod metrics;
pub mod telemetry;
pub mod webhooks;

use tidegate_model::unix_ms;
use tidegate_store as store;
