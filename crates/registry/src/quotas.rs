//! Tenant quotas at publish time: pure decisions, and the per-tenant attempt buckets.
//!
//! A key that resolved to a tenant is then checked against the tenant's [`Quotas`], in
//! this order (the cheap one first, so a flood of attempts costs no store read):
//!
//! 1. **attempts a second** (`max_publish_rate`): a token bucket per tenant on this worker
//!    ([`PublishRates`]), refilled at the rate with a burst of as many, refuses a flood
//!    without a store call; an attempt that passed it is then counted per tenant and second
//!    in the state store, across the cluster
//!    ([`StateStore::count_publish_attempt`](crate::store::StateStore::count_publish_attempt)),
//!    and refused past the rate. The bucket and the count are the tenant's own, so one
//!    tenant's flood never spends another's.
//! 2. **live streams** (`max_streams`) and **total ingest bitrate** (`max_total_bitrate_bps`),
//!    counted across the cluster from the state store: the tenant's records in the index of
//!    streams that are not ended ([`StateStore::list_active`](crate::store::StateStore::list_active)),
//!    live when a publisher holds a fresh lease ([`live_from_records`]), merged with the
//!    sessions live on this worker that have no record yet ([`merge_live`]). The stream
//!    being published is never counted against itself: a publisher taking over its own
//!    stream (a reconnect, a backup encoder) is not an extra stream ([`admit`]).
//!
//! A session on another worker that has not delivered its first media frame has no record
//! yet, so two publishers starting within that moment on two workers may both be admitted
//! for the last slot; the count is exact again at the next attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tidegate_model::Quotas;

use crate::metrics::PublishRefusal;
use crate::store::StreamRecord;
use crate::stream::LEASE_TIMEOUT_MS;

/// A holder's figures older than this give no bitrate (a stream whose worker stopped
/// writing them counts as live at 0 bps until its lease lapses).
pub const FIGURES_FRESH_MS: i64 = 5_000;

/// One live stream of a tenant, as the quota checks count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStream {
    /// The public stream name.
    pub name: String,
    /// Its measured ingest bitrate (0 when not measured yet or not known).
    pub bitrate_bps: u64,
}

/// Why a tenant's publisher is refused by a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// `max_streams` streams are live (across the cluster).
    Streams {
        /// Live streams of the tenant, the newcomer's own stream not counted.
        live: u32,
        /// The quota.
        max: u32,
    },
    /// The tenant's live streams measure `max_total_bitrate_bps` or more (across the cluster).
    TotalBitrate {
        /// Their bitrate together, bits per second.
        live_bps: u64,
        /// The quota.
        max_bps: u64,
    },
    /// More than `max_publish_rate` attempts a second (on this worker, or in this second
    /// across the cluster).
    Rate {
        /// The quota.
        max_per_s: u32,
    },
}

impl QuotaRefusal {
    /// The `reason` label of `tidegate_publish_refused_total`.
    pub fn reason(&self) -> PublishRefusal {
        match self {
            Self::Streams { .. } => PublishRefusal::QuotaStreams,
            Self::TotalBitrate { .. } => PublishRefusal::QuotaBitrate,
            Self::Rate { .. } => PublishRefusal::QuotaRate,
        }
    }

    /// What the encoder is told (RTMP's status description) and the log says.
    pub fn text(&self, tenant: &str) -> String {
        match self {
            Self::Streams { live, max } => {
                format!("tenant {tenant}: {live} of {max} live streams")
            }
            Self::TotalBitrate { live_bps, max_bps } => format!(
                "tenant {tenant}: live streams at {} of {} total ingest bitrate",
                fmt_bps(*live_bps),
                fmt_bps(*max_bps)
            ),
            Self::Rate { max_per_s } => {
                format!("tenant {tenant}: over its {max_per_s} publish attempts a second")
            }
        }
    }
}

/// `bps` for a human: `800 bps`, `750 kbps`, `2.5 Mbps`.
pub fn fmt_bps(bps: u64) -> String {
    if bps >= 1_000_000 {
        let tenths = bps / 100_000;
        if tenths.is_multiple_of(10) {
            format!("{} Mbps", tenths / 10)
        } else {
            format!("{}.{} Mbps", tenths / 10, tenths % 10)
        }
    } else if bps >= 1_000 {
        format!("{} kbps", bps / 1_000)
    } else {
        format!("{bps} bps")
    }
}

/// May stream `name` start, with `live` the tenant's live streams (its own among them or
/// not: it is never counted against itself)?
pub fn admit(quotas: &Quotas, name: &str, live: &[LiveStream]) -> Result<(), QuotaRefusal> {
    let others = live.iter().filter(|s| s.name != name);
    if let Some(max) = quotas.max_streams {
        let count = others.clone().count();
        if count >= usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(QuotaRefusal::Streams {
                live: u32::try_from(count).unwrap_or(u32::MAX),
                max,
            });
        }
    }
    if let Some(max_bps) = quotas.max_total_bitrate_bps {
        let live_bps = others.fold(0u64, |sum, s| sum.saturating_add(s.bitrate_bps));
        if live_bps >= max_bps {
            return Err(QuotaRefusal::TotalBitrate { live_bps, max_bps });
        }
    }
    Ok(())
}

/// The live streams among `records` at `now_ms` (unix ms): not ended, a publisher connected
/// (`publisher_left_ms` unset) whose lease was renewed within [`LEASE_TIMEOUT_MS`] (a
/// dead worker's streams drop out), with the bitrate of fresh holder figures.
pub fn live_from_records<'a>(
    records: impl IntoIterator<Item = &'a StreamRecord>,
    now_ms: i64,
) -> Vec<LiveStream> {
    records
        .into_iter()
        .filter(|r| {
            !r.playlist.ended
                && r.publisher_left_ms.is_none()
                && r.last_media_ms
                    .or(r.session_started_ms)
                    .is_some_and(|t| now_ms.saturating_sub(t) <= LEASE_TIMEOUT_MS)
        })
        .map(|r| LiveStream {
            name: r.id.name.clone(),
            bitrate_bps: r
                .holder
                .as_ref()
                .filter(|h| now_ms.saturating_sub(h.at_ms) <= FIGURES_FRESH_MS)
                .map_or(0, |h| h.bitrate_bps),
        })
        .collect()
}

/// The store's view merged with this worker's live sessions (which include those with no
/// record yet): one entry per name, this worker's measurement where it has one.
pub fn merge_live(stored: Vec<LiveStream>, here: Vec<LiveStream>) -> Vec<LiveStream> {
    let mut by_name: HashMap<String, u64> = stored
        .into_iter()
        .map(|s| (s.name, s.bitrate_bps))
        .collect();
    for s in here {
        by_name.insert(s.name, s.bitrate_bps);
    }
    let mut out: Vec<LiveStream> = by_name
        .into_iter()
        .map(|(name, bitrate_bps)| LiveStream { name, bitrate_bps })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A token bucket: `rate` tokens a second, at most `rate` held (the burst). Pure: the
/// caller passes the time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` a second at `now`.
    pub fn new(rate: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.max(1)),
            at: now,
        }
    }

    /// Takes one token at `now` if there is one (refilled at `rate` a second since the last
    /// call); `false` when the bucket is empty.
    pub fn try_take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Each tenant's publish-attempt bucket on this worker; one entry per tenant that has a
/// `max_publish_rate` and made an attempt (deleted tenants are dropped with
/// [`PublishRates::retain`]).
#[derive(Debug, Default)]
pub struct PublishRates {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl PublishRates {
    /// Counts an attempt of `tenant` at `now` against `rate` a second; `false` when over
    /// (always with a rate of 0).
    pub fn allow(&self, tenant: &str, rate: u32, now: Instant) -> bool {
        if rate == 0 {
            return false;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get_mut(tenant) {
            Some(b) => b.try_take(rate, now),
            None => {
                let mut b = TokenBucket::new(rate, now);
                let ok = b.try_take(rate, now);
                buckets.insert(tenant.to_owned(), b);
                ok
            }
        }
    }

    /// Keeps the buckets of the tenants `keep` says exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t, _| keep(t));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{HolderFigures, StreamId};
    use tidegate_packager::{Container, PlaylistState};

    fn live(name: &str, bps: u64) -> LiveStream {
        LiveStream {
            name: name.into(),
            bitrate_bps: bps,
        }
    }

    fn quotas(streams: Option<u32>, total: Option<u64>) -> Quotas {
        Quotas {
            max_streams: streams,
            max_total_bitrate_bps: total,
            ..Quotas::default()
        }
    }

    #[test]
    fn the_n_plus_first_stream_is_refused_and_its_own_stream_never_counts() {
        let q = quotas(Some(2), None);
        let two = [live("a", 0), live("b", 0)];
        assert_eq!(
            admit(&q, "c", &two),
            Err(QuotaRefusal::Streams { live: 2, max: 2 })
        );
        // A reconnect or takeover of a live stream is not an extra stream.
        assert_eq!(admit(&q, "a", &two), Ok(()));
        assert_eq!(admit(&q, "c", &two[..1]), Ok(()));
        assert_eq!(admit(&quotas(None, None), "z", &two), Ok(()));
        assert_eq!(
            admit(&quotas(Some(0), None), "a", &[]),
            Err(QuotaRefusal::Streams { live: 0, max: 0 })
        );
        assert_eq!(
            QuotaRefusal::Streams { live: 5, max: 5 }.text("acme"),
            "tenant acme: 5 of 5 live streams"
        );
    }

    #[test]
    fn the_total_bitrate_counts_the_other_live_streams() {
        let q = quotas(None, Some(5_000_000));
        let streams = [live("a", 3_000_000), live("b", 2_000_000)];
        assert_eq!(
            admit(&q, "c", &streams),
            Err(QuotaRefusal::TotalBitrate {
                live_bps: 5_000_000,
                max_bps: 5_000_000
            })
        );
        // Its own bitrate is not counted: "b" coming back is admitted.
        assert_eq!(admit(&q, "b", &streams), Ok(()));
        assert_eq!(admit(&q, "c", &streams[..1]), Ok(()));
        let text = QuotaRefusal::TotalBitrate {
            live_bps: 5_200_000,
            max_bps: 5_000_000,
        }
        .text("acme");
        assert_eq!(
            text,
            "tenant acme: live streams at 5.2 Mbps of 5 Mbps total ingest bitrate"
        );
        assert_eq!(
            QuotaRefusal::TotalBitrate {
                live_bps: 0,
                max_bps: 0
            }
            .reason()
            .as_str(),
            "quota_bitrate"
        );
        assert_eq!(fmt_bps(750_000), "750 kbps");
        assert_eq!(fmt_bps(999), "999 bps");
    }

    fn record(
        name: &str,
        ended: bool,
        left: Option<i64>,
        lease: i64,
        figures: i64,
    ) -> StreamRecord {
        StreamRecord {
            id: StreamId::new("acme", name).unwrap(),
            playlist: {
                let mut p = PlaylistState::new(Container::Fmp4, 6, 2);
                p.ended = ended;
                p
            },
            updated_ms: lease,
            publisher_left_ms: left,
            owner: "w".into(),
            last_media_ms: Some(lease),
            takeovers: Vec::new(),
            session_started_ms: Some(0),
            holder: Some(HolderFigures {
                at_ms: figures,
                status: tidegate_health::Status::Healthy,
                reasons: Vec::new(),
                bitrate_bps: 1_000,
                protocol: None,
                packets: tidegate_health::PacketTotals::default(),
                reconnects: 0,
                status_since_ms: 0,
            }),
        }
    }

    #[test]
    fn only_streams_with_a_connected_publisher_and_a_fresh_lease_are_live() {
        let now = 100_000;
        let records = [
            record("live", false, None, now - 500, now - 500),
            record("stale-figures", false, None, now - 500, now - 60_000),
            record("reconnecting", false, Some(now - 1_000), now - 1_000, now),
            record("ended", true, None, now, now),
            record("dead-worker", false, None, now - 30_000, now - 30_000),
        ];
        assert_eq!(
            live_from_records(&records, now),
            vec![live("live", 1_000), live("stale-figures", 0)]
        );
        // This worker's sessions (one with no record yet) join them, measured here.
        assert_eq!(
            merge_live(
                live_from_records(&records, now),
                vec![live("live", 2_000), live("new", 0)]
            ),
            vec![
                live("live", 2_000),
                live("new", 0),
                live("stale-figures", 0)
            ]
        );
    }

    #[test]
    fn a_bucket_allows_its_rate_with_a_burst_of_as_many() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.try_take(3, t0)));
        assert!(!b.try_take(3, t0));
        assert!(!b.try_take(3, t0 + Duration::from_millis(100)));
        assert!(b.try_take(3, t0 + Duration::from_millis(400)));
        // A long pause refills to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(3, later)));
        assert!(!b.try_take(3, later));
    }

    #[test]
    fn one_tenants_flood_does_not_spend_another_tenants_attempts() {
        let rates = PublishRates::default();
        let t0 = Instant::now();
        let flooded = (0..1_000).filter(|_| rates.allow("noisy", 2, t0)).count();
        assert_eq!(flooded, 2, "the noisy tenant gets its own burst only");
        assert!(
            rates.allow("quiet", 2, t0),
            "another tenant's bucket is full"
        );
        assert!(rates.allow("quiet", 2, t0));
        assert!(!rates.allow("quiet", 2, t0));
        rates.retain(|t| t == "quiet");
        assert!(
            rates.allow("noisy", 2, t0),
            "a tenant gone and back starts full"
        );
    }
}
