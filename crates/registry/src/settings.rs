//! A tenant's settings laid over the server's: what its streams use for SRT (passphrase, key
//! length, latency), webhooks, segments (format, duration), the reconnect window and health.
//! Every setting a tenant leaves unset is the server's flag. Pure: the merges here are
//! functions of the server's values and the tenant's [`TenantSettings`].
//!
//! [`Tenants`](crate::tenants::Tenants) lays them over the server's whenever it reads the
//! tenants (at start, on every change notification, every few seconds): the stream registry
//! ([`Streams::set_tenant_settings`](crate::stream::Streams::set_tenant_settings)) takes the
//! segment format and duration and the reconnect window, telemetry the health thresholds and
//! the webhooks, the SRT listener asks [`Tenants::srt_for`](crate::tenants::Tenants::srt_for)
//! when a caller's stream id names the tenant.

use std::collections::HashMap;
use std::time::Duration;

use tidegate_config::ContainerOf as _;
use tidegate_health::HealthConfig;
use tidegate_model::{Secret, TenantSettings, WebhookUrl};

use crate::stream::StreamSettings;
use crate::webhooks::{TenantHook, TenantHookMap};

/// The SRT settings a caller is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrtSettings {
    /// The passphrase it must encrypt with; `None`: it must not encrypt.
    pub passphrase: Option<Secret>,
    /// The key length it must use (16, 24, 32); 0 takes the caller's.
    pub pbkeylen: u8,
    /// The receive latency asked for in the handshake.
    pub latency: Duration,
    /// Whether the passphrase and key length are the tenant's own (else the server's
    /// `--srt-passphrase` and `--srt-pbkeylen`): a refusal's log line says whose.
    pub tenant_encryption: bool,
}

impl SrtSettings {
    /// These (the server's) with `t`'s laid over them.
    pub fn for_tenant(&self, t: &TenantSettings) -> SrtSettings {
        SrtSettings {
            passphrase: t.srt_passphrase.clone().or_else(|| self.passphrase.clone()),
            pbkeylen: t.srt_pbkeylen.unwrap_or(self.pbkeylen),
            latency: t.srt_latency.unwrap_or(self.latency),
            tenant_encryption: t.srt_passphrase.is_some() || t.srt_pbkeylen.is_some(),
        }
    }
}

/// The server's values that the tenants' settings are laid over (besides the stream
/// registry's [`StreamSettings`] and the server's health thresholds, which their owners hold).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `--srt-passphrase`, `--srt-pbkeylen`, `--srt-latency`.
    pub srt: SrtSettings,
    /// `--webhook-secret`: what a tenant's webhooks are signed with when it has no secret.
    pub webhook_secret: Option<Secret>,
}

impl Defaults {
    /// The server's `--srt-passphrase`, `--srt-pbkeylen`, `--srt-latency` and
    /// `--webhook-secret`.
    pub fn new(
        srt_passphrase: Option<String>,
        srt_pbkeylen: u8,
        srt_latency: Duration,
        webhook_secret: Option<String>,
    ) -> Self {
        Self {
            srt: SrtSettings {
                passphrase: srt_passphrase.map(Secret::new),
                pbkeylen: srt_pbkeylen,
                latency: srt_latency,
                tenant_encryption: false,
            },
            webhook_secret: webhook_secret.map(Secret::new),
        }
    }
}

impl StreamSettings {
    /// These (the server's) with `t`'s segment format, segment and part duration and reconnect
    /// window.
    pub fn for_tenant(&self, t: &TenantSettings) -> StreamSettings {
        let mut s = self.clone();
        if let Some(format) = t.segment_format {
            s.container = format.container();
        }
        if let Some(d) = t.segment_duration {
            s.segment_duration = d;
            s.segment_ticks = ticks(d);
        }
        if let Some(w) = t.reconnect_window {
            s.reconnect_window = w;
        }
        if let Some(p) = t.part_duration {
            s.part_ticks = (!p.is_zero()).then(|| part_ticks(p));
        }
        s
    }
}

/// A part duration in 90 kHz ticks, rounded to the nearest (1/3 s is 30,000 ticks).
fn part_ticks(d: Duration) -> u64 {
    let t = (d.as_nanos() * u128::from(tidegate_media::TIMESCALE) + 500_000_000) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// A duration in 90 kHz ticks.
fn ticks(d: Duration) -> u64 {
    let t = d.as_micros() * u128::from(tidegate_media::TIMESCALE) / 1_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The thresholds of every tenant that overrides some: `server`'s with its overrides laid
/// over them. A tenant whose overrides do not hold over this server's thresholds (checked
/// against the defaults when they were set) keeps the server's, and is named in the `Err`
/// list so the caller can say so.
pub fn tenant_health(
    server: &HealthConfig,
    tenants: &HashMap<String, TenantSettings>,
) -> (HashMap<String, HealthConfig>, Vec<String>) {
    let mut out = HashMap::new();
    let mut refused = Vec::new();
    for (name, t) in tenants {
        let Some(o) = &t.health else { continue };
        let merged = server.merged(&o.overrides());
        if merged.validate().is_ok() {
            out.insert(name.clone(), merged);
        } else {
            refused.push(name.clone());
        }
    }
    refused.sort();
    (out, refused)
}

/// Every tenant's own webhooks, each signed with the tenant's secret or `server_secret`. A
/// tenant with webhooks and neither secret gets none (refused when set; a server restarted
/// without its secret leaves them unsigned never).
pub fn tenant_hooks(
    tenants: &HashMap<String, TenantSettings>,
    server_secret: Option<&Secret>,
) -> TenantHookMap {
    let mut out = HashMap::new();
    for (name, t) in tenants {
        let Some(secret) = t.webhook_secret.as_ref().or(server_secret) else {
            continue;
        };
        let hooks: Vec<TenantHook> = t
            .webhooks
            .iter()
            .filter_map(|u| u.parse::<WebhookUrl>().ok())
            .map(|url| TenantHook {
                url,
                secret: secret.clone(),
            })
            .collect();
        if !hooks.is_empty() {
            out.insert(name.clone(), hooks);
        }
    }
    std::sync::Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_model::SegmentFormat;
    use tidegate_packager::Container;

    fn server_srt() -> SrtSettings {
        SrtSettings {
            passphrase: Some(Secret::new("server-passphrase")),
            pbkeylen: 16,
            latency: Duration::from_millis(120),
            tenant_encryption: false,
        }
    }

    #[test]
    fn an_unset_setting_is_the_servers() {
        let t = TenantSettings::default();
        assert_eq!(server_srt().for_tenant(&t), server_srt());
        let server = crate::stream::test_settings(Duration::from_secs(3600));
        let merged = server.for_tenant(&t);
        assert_eq!(merged.container, server.container);
        assert_eq!(merged.segment_ticks, server.segment_ticks);
        assert_eq!(merged.reconnect_window, server.reconnect_window);
        let (health, refused) =
            tenant_health(&HealthConfig::default(), &HashMap::from([("t".into(), t)]));
        assert!(health.is_empty() && refused.is_empty());
    }

    #[test]
    fn a_tenants_setting_replaces_only_its_own_value() {
        let t = TenantSettings {
            srt_passphrase: Some(Secret::new("tenant-passphrase")),
            srt_latency: Some(Duration::from_millis(400)),
            segment_format: Some(SegmentFormat::Ts),
            segment_duration: Some(Duration::from_secs(4)),
            reconnect_window: Some(Duration::from_secs(3)),
            ..TenantSettings::default()
        };
        let srt = server_srt().for_tenant(&t);
        assert_eq!(
            srt.passphrase.as_ref().map(Secret::expose),
            Some("tenant-passphrase")
        );
        assert_eq!(srt.pbkeylen, 16, "not set: the server's");
        assert_eq!(srt.latency, Duration::from_millis(400));
        assert!(srt.tenant_encryption);
        // pbkeylen 0 of the tenant takes the caller's, whatever the server says.
        let any_key = TenantSettings {
            srt_pbkeylen: Some(0),
            ..TenantSettings::default()
        };
        assert_eq!(server_srt().for_tenant(&any_key).pbkeylen, 0);

        let server = crate::stream::test_settings(Duration::from_secs(3600));
        let s = server.for_tenant(&t);
        assert_eq!(s.container, Container::MpegTs);
        assert_eq!(s.segment_duration, Duration::from_secs(4));
        assert_eq!(s.segment_ticks, 360_000);
        assert_eq!(s.reconnect_window, Duration::from_secs(3));
        assert_eq!(s.playlist_window, server.playlist_window);
        assert_eq!(s.part_ticks, server.part_ticks, "not set: the server's");
        // LL-HLS parts: a duration, or 0 for none.
        let parted = StreamSettings {
            part_ticks: Some(30_000),
            ..server.clone()
        };
        for (ms, ticks) in [(500, Some(45_000)), (0, None)] {
            let t = TenantSettings {
                part_duration: Some(Duration::from_millis(ms)),
                ..TenantSettings::default()
            };
            assert_eq!(parted.for_tenant(&t).part_ticks, ticks, "{ms} ms");
        }
        assert_eq!(s.ended_retention, server.ended_retention);
    }

    #[test]
    fn the_registry_applies_a_tenants_settings_to_its_streams_only() {
        let (dir, streams) = crate::stream::test_streams("tenant-settings", "state");
        assert_eq!(streams.longest_segment_duration(), Duration::from_secs(2));
        let long = TenantSettings {
            segment_duration: Some(Duration::from_secs(6)),
            reconnect_window: Some(Duration::from_secs(1)),
            ..TenantSettings::default()
        };
        streams.set_tenant_settings(HashMap::from([("long".to_owned(), long)]));
        assert_eq!(streams.longest_segment_duration(), Duration::from_secs(6));
        assert_eq!(streams.settings_for("long").segment_ticks, 540_000);
        assert_eq!(
            streams.settings_for("long").reconnect_window,
            Duration::from_secs(1)
        );
        assert_eq!(streams.settings_for("other").segment_ticks, 180_000);
        assert_eq!(
            streams.settings_for("other").reconnect_window,
            Duration::from_secs(30)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn health_overrides_lie_over_the_servers_thresholds() {
        let server = HealthConfig {
            max_drop_rate: 0.05,
            ..HealthConfig::default()
        };
        let premium = TenantSettings {
            health: Some(tidegate_model::TenantHealth {
                min_bitrate_bps: Some(2_000_000),
                ..Default::default()
            }),
            ..TenantSettings::default()
        };
        // Over this server's thresholds the overrides do not hold (window shorter than
        // the low-bitrate time): the server's apply.
        let odd = TenantSettings {
            health: Some(tidegate_model::TenantHealth {
                relative_window: Some(Duration::from_secs(2)),
                ..Default::default()
            }),
            ..TenantSettings::default()
        };
        let tenants = HashMap::from([("premium".to_owned(), premium), ("odd".to_owned(), odd)]);
        let (health, refused) = tenant_health(&server, &tenants);
        assert_eq!(health["premium"].min_bitrate_bps, Some(2_000_000));
        assert!((health["premium"].max_drop_rate - 0.05).abs() < 1e-9);
        assert_eq!(refused, ["odd"]);
    }

    #[test]
    fn tenant_webhooks_are_signed_with_the_tenants_secret_or_the_servers() {
        let own = TenantSettings {
            webhooks: vec!["http://127.0.0.1:9/own".into()],
            webhook_secret: Some(Secret::new("tenant-secret-0123")),
            ..TenantSettings::default()
        };
        let borrowed = TenantSettings {
            webhooks: vec!["http://127.0.0.1:9/borrowed".into()],
            ..TenantSettings::default()
        };
        let tenants = HashMap::from([
            ("own".to_owned(), own),
            ("borrowed".to_owned(), borrowed),
            ("none".to_owned(), TenantSettings::default()),
        ]);
        let server = Secret::new("server-secret-0123");
        let hooks = tenant_hooks(&tenants, Some(&server));
        assert_eq!(hooks["own"][0].secret.expose(), "tenant-secret-0123");
        assert_eq!(hooks["borrowed"][0].secret.expose(), "server-secret-0123");
        assert!(!hooks.contains_key("none"));
        // No secret anywhere: no unsigned deliveries.
        let hooks = tenant_hooks(&tenants, None);
        assert!(hooks.contains_key("own") && !hooks.contains_key("borrowed"));
    }
}
