//! The stream registry: streams, their publishers, the writer task that stores segments and
//! playlists, and the sweeper ([`stream`]); which stream a stream key publishes
//! ([`tenants`]), who may watch it ([`playback`]) and whether its tenant's quotas admit it
//! ([`quotas`]); this worker as a cluster member ([`worker`]).
#![deny(missing_docs)]

pub mod playback;
pub mod quotas;
pub mod settings;
pub mod stream;
pub mod tenants;
pub mod worker;

use tidegate_config as config;
use tidegate_events::{metrics, telemetry, webhooks};
use tidegate_model::unix_ms;
use tidegate_store as store;
