//! The per-tenant stream settings in the tenant calls (`POST /tenants`, `PATCH
//! /tenants/{tenant}`, and every answer that shows a tenant): SRT passphrase, key length and
//! latency, webhooks and their secret, reconnect window, segment format and duration, health
//! thresholds. Their JSON names are those of [`TenantSettings`]; a request's other fields are
//! left to the tenant calls of `api.rs`.
//!
//! Secrets (`srt_passphrase`, `webhook_secret`) are never shown: an answer says
//! [`REDACTED`] when one is set, `null` when not. A PATCH that sends [`REDACTED`] back keeps
//! the stored secret (a client may PATCH what it read); `null` clears a setting, which
//! then follows the server's flag again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidegate_model::{
    check_api_health, Secret, SegmentFormat, TenantHealth, TenantSettings, REDACTED,
};

/// The JSON names of these settings (the keys [`split`] takes out of a request).
pub const KEYS: [&str; 10] = [
    "srt_passphrase",
    "srt_pbkeylen",
    "srt_latency_ms",
    "webhooks",
    "webhook_secret",
    "reconnect_window_ms",
    "segment_format",
    "segment_duration_ms",
    "health",
    "part_duration_ms",
];

/// Splits a request object into these settings and the rest (for the other fields' reader).
pub fn split(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> (serde_json::Value, serde_json::Value) {
    let mut mine = serde_json::Map::new();
    for k in KEYS {
        if let Some(v) = object.remove(k) {
            mine.insert(k.to_owned(), v);
        }
    }
    (
        serde_json::Value::Object(object),
        serde_json::Value::Object(mine),
    )
}

/// A JSON request body split into the other fields' reader's and these settings' (each read
/// as `T` and `U`), or why it is not one (answered as a 400).
pub fn read_body<T: serde::de::DeserializeOwned, U: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, U), String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid request body: {e}"))?;
    integral_floats_as_integers(&mut value);
    // Serde reads a struct from an array too; the API takes objects only.
    let serde_json::Value::Object(object) = value else {
        return Err("invalid request body: a JSON object is expected".into());
    };
    let (rest, mine) = split(object);
    // Serde reads a struct from an array too: `health` is an object (or `null`) only.
    if mine.get("health").is_some_and(serde_json::Value::is_array) {
        return Err("invalid request body: health must be an object or null".into());
    }
    let invalid = |e: serde_json::Error| format!("invalid request body: {e}");
    Ok((
        serde_json::from_value(rest).map_err(invalid)?,
        serde_json::from_value(mine).map_err(invalid)?,
    ))
}

/// JSON has one number type: `5.0` is the integer 5 to JSON Schema (and to the API's
/// description), though serde reads integers only from `5`. Every number without a fraction
/// is made an integer before the fields are read; `5.5` stays what it is (and is refused
/// where an integer is expected).
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // Within ±2^53 an f64 with no fraction is exactly that integer.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    *v = serde_json::Value::from(i);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// The settings as an answer shows them (secrets redacted; unset: `null`, or `[]`).
#[derive(Debug, Serialize)]
pub struct SettingsJson {
    srt_passphrase: Option<&'static str>,
    srt_pbkeylen: Option<u8>,
    srt_latency_ms: Option<u64>,
    webhooks: Vec<String>,
    webhook_secret: Option<&'static str>,
    reconnect_window_ms: Option<u64>,
    segment_format: Option<SegmentFormat>,
    segment_duration_ms: Option<u64>,
    health: Option<TenantHealth>,
    part_duration_ms: Option<u64>,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&TenantSettings> for SettingsJson {
    fn from(s: &TenantSettings) -> Self {
        Self {
            srt_passphrase: s.srt_passphrase.as_ref().map(|_| REDACTED),
            srt_pbkeylen: s.srt_pbkeylen,
            srt_latency_ms: ms(s.srt_latency),
            webhooks: s.webhooks.clone(),
            webhook_secret: s.webhook_secret.as_ref().map(|_| REDACTED),
            reconnect_window_ms: ms(s.reconnect_window),
            segment_format: s.segment_format,
            segment_duration_ms: ms(s.segment_duration),
            health: s.health.clone(),
            part_duration_ms: ms(s.part_duration),
        }
    }
}

/// These settings in a `POST /tenants`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Create {
    srt_passphrase: Option<Secret>,
    srt_pbkeylen: Option<u8>,
    srt_latency_ms: Option<u64>,
    webhooks: Option<Vec<String>>,
    webhook_secret: Option<Secret>,
    reconnect_window_ms: Option<u64>,
    segment_format: Option<SegmentFormat>,
    segment_duration_ms: Option<u64>,
    health: Option<TenantHealth>,
    part_duration_ms: Option<u64>,
}

impl Create {
    /// Sets them in `s`; `Err` when a health threshold is out of the API's range.
    pub fn apply(self, s: &mut TenantSettings) -> Result<(), String> {
        if let Some(h) = &self.health {
            check_api_health(h)?;
        }
        s.srt_passphrase = self.srt_passphrase;
        s.srt_pbkeylen = self.srt_pbkeylen;
        s.srt_latency = self.srt_latency_ms.map(Duration::from_millis);
        s.webhooks = self.webhooks.unwrap_or_default();
        s.webhook_secret = self.webhook_secret;
        s.reconnect_window = self.reconnect_window_ms.map(Duration::from_millis);
        s.segment_format = self.segment_format;
        s.segment_duration = self.segment_duration_ms.map(Duration::from_millis);
        s.health = self.health;
        s.part_duration = self.part_duration_ms.map(Duration::from_millis);
        Ok(())
    }
}

/// These settings in a `PATCH /tenants/{tenant}`: a field present changes (`null` clears
/// it), an absent one stays.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Patch {
    #[serde(deserialize_with = "present")]
    srt_passphrase: Option<Option<Secret>>,
    #[serde(deserialize_with = "present")]
    srt_pbkeylen: Option<Option<u8>>,
    #[serde(deserialize_with = "present")]
    srt_latency_ms: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    webhooks: Option<Option<Vec<String>>>,
    #[serde(deserialize_with = "present")]
    webhook_secret: Option<Option<Secret>>,
    #[serde(deserialize_with = "present")]
    reconnect_window_ms: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    segment_format: Option<Option<SegmentFormat>>,
    #[serde(deserialize_with = "present")]
    segment_duration_ms: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    health: Option<Option<TenantHealth>>,
    #[serde(deserialize_with = "present")]
    part_duration_ms: Option<Option<u64>>,
}

impl Patch {
    /// A health threshold out of the API's range.
    pub fn check(&self) -> Result<(), String> {
        match &self.health {
            Some(Some(h)) => check_api_health(h),
            _ => Ok(()),
        }
    }

    /// Applies the fields present to `s` ([`Patch::check`] first).
    pub fn apply(&self, s: &mut TenantSettings) {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        }
        fn set_ms(slot: &mut Option<Duration>, v: &Option<Option<u64>>) {
            if let Some(v) = v {
                *slot = v.map(Duration::from_millis);
            }
        }
        fn set_secret(slot: &mut Option<Secret>, v: &Option<Option<Secret>>) {
            match v {
                // What an answer showed, sent back: the secret stays.
                Some(Some(p)) if p.expose() == REDACTED => {}
                Some(v) => slot.clone_from(v),
                None => {}
            }
        }
        set_secret(&mut s.srt_passphrase, &self.srt_passphrase);
        set(&mut s.srt_pbkeylen, &self.srt_pbkeylen);
        set_ms(&mut s.srt_latency, &self.srt_latency_ms);
        if let Some(w) = &self.webhooks {
            s.webhooks = w.clone().unwrap_or_default();
        }
        set_secret(&mut s.webhook_secret, &self.webhook_secret);
        set_ms(&mut s.reconnect_window, &self.reconnect_window_ms);
        set(&mut s.segment_format, &self.segment_format);
        set_ms(&mut s.segment_duration, &self.segment_duration_ms);
        set(&mut s.health, &self.health);
        set_ms(&mut s.part_duration, &self.part_duration_ms);
    }
}

/// A field that is present (`null` included) reads as `Some`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_never_carry_a_secret_and_a_patch_of_the_redacted_value_keeps_it() {
        let mut s = TenantSettings::default();
        let (rest, mine) = split(
            serde_json::json!({"name": "acme", "srt_passphrase": "acme-passphrase",
                "webhook_secret": "acme-webhook-secret", "srt_latency_ms": 300,
                "segment_format": "ts"})
            .as_object()
            .cloned()
            .unwrap(),
        );
        assert_eq!(rest, serde_json::json!({"name": "acme"}));
        serde_json::from_value::<Create>(mine)
            .unwrap()
            .apply(&mut s)
            .unwrap();
        let shown = serde_json::to_value(SettingsJson::from(&s)).unwrap();
        assert_eq!(shown["srt_passphrase"], REDACTED);
        assert_eq!(shown["webhook_secret"], REDACTED);
        assert_eq!(shown["srt_latency_ms"], 300);
        assert_eq!(shown["reconnect_window_ms"], serde_json::Value::Null);
        assert!(!shown.to_string().contains("acme-passphrase"));

        // PATCH what was shown: secrets stay; `null` clears; absent stays.
        let patch: Patch = serde_json::from_value(serde_json::json!({
            "srt_passphrase": REDACTED, "webhook_secret": null, "srt_latency_ms": null,
            "reconnect_window_ms": 5000}))
        .unwrap();
        patch.apply(&mut s);
        assert_eq!(
            s.srt_passphrase.as_ref().map(Secret::expose),
            Some("acme-passphrase")
        );
        assert!(s.webhook_secret.is_none());
        assert!(s.srt_latency.is_none());
        assert_eq!(s.reconnect_window, Some(Duration::from_secs(5)));
        assert_eq!(s.segment_format, Some(SegmentFormat::Ts));
        assert!(serde_json::from_value::<Patch>(serde_json::json!({"pool": "x"})).is_err());

        // 5.0 is the integer 5, as JSON Schema reads it; 5.5 is not.
        let (_, patch): (serde_json::Value, Patch) =
            read_body(br#"{"quotas": {"max_streams": 7.0}, "segment_duration_ms": 4000.0}"#)
                .unwrap();
        patch.apply(&mut s);
        assert_eq!(s.segment_duration, Some(Duration::from_secs(4)));
        assert!(read_body::<serde_json::Value, Patch>(br#"{"srt_latency_ms": 1.5}"#).is_err());
        assert!(read_body::<serde_json::Value, Create>(br#"{"health": [null, null]}"#).is_err());
        let (rest, _): (serde_json::Value, Patch) =
            read_body(br#"{"quotas": {"max_streams": 7.0}}"#).unwrap();
        assert_eq!(rest["quotas"]["max_streams"], 7);
    }
}
