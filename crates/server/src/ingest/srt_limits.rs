//! What an SRT peer can make the listener hold, and how much it can make it log.
//!
//! * [`ConnectionLimits`]: SRT connections in the handshake (waiting for the on-publish
//!   callback) or connected, in total (`--max-connections`) and per source IP
//!   (`--max-connections-per-ip`). A caller takes a [`Slot`] once its conclusion carries a
//!   valid SYN cookie (so its address is real) and gives it back when it is refused or its
//!   connection ends. Inductions cost no slot: the listener keeps no state for them.
//! * [`LogBudget`]: at most a few log lines a second about callers that were never
//!   admitted; the rest are counted (`tidegate_log_lines_suppressed_total{area}`) and
//!   summed up in one line when the next window opens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Why a connection was not given a slot (the `reason` label of
/// `tidegate_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitRefusal {
    /// `--max-connections` connections are open.
    MaxConnections,
    /// `--max-connections-per-ip` connections from this address are open.
    PerSource,
}

impl LimitRefusal {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::PerSource => "per_source",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Caps on concurrent SRT connections, in total and per source IP.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_ip: usize,
}

impl ConnectionLimits {
    /// At most `max_total` connections, `max_per_ip` of them from one address.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimits {
            counts: Arc::default(),
            max_total,
            max_per_ip,
        }
    }

    /// A slot for one more connection from `ip`, held until the [`Slot`] drops.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<Slot, LimitRefusal> {
        let ip = ip.to_canonical();
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(LimitRefusal::MaxConnections);
        }
        let mine = c.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(LimitRefusal::PerSource);
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            ip,
        })
    }

    /// Connections holding a slot.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

/// One connection's place under [`ConnectionLimits`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Log lines about callers that were never admitted, per [`LOG_WINDOW`].
pub(crate) const LOG_LINES_PER_WINDOW: u32 = 10;
/// The window of [`LOG_LINES_PER_WINDOW`].
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(1);

/// What [`LogBudget::take`] allows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogVerdict {
    /// Write the line; first say that this many lines were suppressed before it (when not 0).
    Write {
        /// Lines suppressed since the last summary.
        suppressed: u64,
    },
    /// Do not write it (it was counted).
    Suppress,
}

/// A rate limit on log lines: [`LOG_LINES_PER_WINDOW`] per [`LOG_WINDOW`], then silence
/// until the next window, which starts with one summary of what was suppressed. Owned by one
/// task (the SRT router).
#[derive(Debug)]
pub(crate) struct LogBudget {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
    counter: Counter,
}

impl LogBudget {
    /// A budget that counts suppressed lines in `counter`.
    pub(crate) fn new(counter: Counter) -> Self {
        LogBudget {
            window_start: None,
            used: 0,
            suppressed: 0,
            counter,
        }
    }

    fn roll(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= LOG_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        fresh
    }

    /// Whether one more line may be written at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> LogVerdict {
        self.roll(now);
        if self.used >= LOG_LINES_PER_WINDOW {
            self.suppressed += 1;
            self.counter.inc();
            return LogVerdict::Suppress;
        }
        self.used += 1;
        LogVerdict::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }

    /// Lines suppressed in a window that has ended and not been summed up yet (call it now
    /// and then, so a flood that stopped is still summed up).
    pub(crate) fn overdue_summary(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || !self.roll(now) {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_address() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = limits.try_acquire(a).unwrap();
        // The IPv4-mapped form is the same address.
        let a2 = limits
            .try_acquire("::ffff:127.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(limits.try_acquire(a).unwrap_err(), LimitRefusal::PerSource);
        let b1 = limits.try_acquire(b).unwrap();
        assert_eq!(
            limits.try_acquire(b).unwrap_err(),
            LimitRefusal::MaxConnections
        );
        drop(a1);
        assert_eq!(limits.open(), 2);
        let b2 = limits.try_acquire(b).unwrap();
        drop((a2, b1, b2));
        assert_eq!(limits.open(), 0);
        assert!(limits.counts.lock().unwrap().per_ip.is_empty());
    }

    #[test]
    fn a_flood_of_lines_is_cut_and_summed_up() {
        let counter = Counter::default();
        let mut budget = LogBudget::new(counter.clone());
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_micros(i * 100); // 1000 lines in 0.1 s
            if let LogVerdict::Write { suppressed } = budget.take(now) {
                assert_eq!(suppressed, 0);
                written += 1;
            }
        }
        assert_eq!(written, LOG_LINES_PER_WINDOW);
        assert_eq!(counter.get(), 1_000 - u64::from(LOG_LINES_PER_WINDOW));
        // Within the window: no summary yet; after it, one.
        assert_eq!(
            budget.overdue_summary(t0 + Duration::from_millis(500)),
            None
        );
        let later = t0 + LOG_WINDOW + Duration::from_millis(1);
        assert_eq!(budget.overdue_summary(later), Some(990));
        assert_eq!(budget.overdue_summary(later), None);
        // The next line in a later window reports what was suppressed since the summary.
        for _ in 0..(LOG_LINES_PER_WINDOW + 5) {
            budget.take(later);
        }
        assert_eq!(
            budget.take(later + LOG_WINDOW),
            LogVerdict::Write { suppressed: 5 }
        );
    }
}
