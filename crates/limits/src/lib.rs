//! Caps on what peers can make the worker hold, shared by every listener.
//!
//! - [`ConnectionLimiter`]: connections in total and per source address (an IPv6 /64 is one
//!   source). A listener asks it for each accepted socket and gets a [`ConnectionGuard`]
//!   (dropped with the connection) or a [`Refusal`] (close the socket at once and count the
//!   reason). HTTP has one of its own (`--http-max-connections*`); RTMP and SRT share one
//!   (`--max-connections*`, in `ingest::limits::IngestLimits`).
//! - [`FdBudget`]: the process's file-descriptor limit with a reserve kept for storage,
//!   state and segment files. A limiter built with a budget refuses with
//!   [`Refusal::FdReserve`] before peers can take the last descriptors.
//! - [`LogLimiter`]: at most N lines a second for one area (`rtmp`, `srt`:
//!   [`LOG_LINES_PER_SECOND`]; `http`: one) of lines peers can cause in bulk; the rest are
//!   counted in `tidegate_log_lines_suppressed_total{area}` and summed up in one line.
//! - [`AcceptBackoff`]: what an accept loop does when accepting fails for want of
//!   descriptors or memory: wait (doubling up to a second) and say so once a second.
//! - [`FailureLimiter`]: failed attempts (wrong stream keys) per source address; a source
//!   past its share is refused at once for a back-off period, in a table of capped size.
//!
//! All of it is plain bookkeeping behind short `std` mutexes and atomics: no I/O but the
//! occasional count of `/proc/self/fd`, nothing async but [`AcceptBackoff::pause`]'s wait.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Descriptors kept for storage, state and segment files at least, whatever the limit.
pub const FD_RESERVE_MIN: u64 = 256;
/// The reserve is also at least this fraction (1/N) of the limit.
pub const FD_RESERVE_DIVISOR: u64 = 8;
/// How long a count of `/proc/self/fd` is trusted; between counts the estimate moves with
/// the sockets held through the budget's own guards.
const FD_RECOUNT_INTERVAL: Duration = Duration::from_millis(100);

/// Why a connection was not admitted (the `reason` label of the refusal counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The listener's connection cap is reached.
    MaxConnections,
    /// The peer's source address holds its share already.
    PerSource,
    /// Admitting it would eat into the descriptors kept for storage and state.
    FdReserve,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 3] = [
        Refusal::MaxConnections,
        Refusal::PerSource,
        Refusal::FdReserve,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::PerSource => "per_source",
            Self::FdReserve => "fd_reserve",
        }
    }
}

/// The key connections are counted under: an IPv4 address, or the /64 of an IPv6 one (a
/// single host usually holds a whole /64), IPv4-mapped IPv6 counted as IPv4.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct LimiterShared {
    max_total: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
}

/// Connections in total and per source address, for one listener (or several that share a
/// cap). Cheap to clone; clones share the counts.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    shared: Arc<LimiterShared>,
    fds: Option<Arc<FdBudget>>,
}

impl ConnectionLimiter {
    /// At most `max_total` connections, `max_per_source` of them from one source (see
    /// [`source_key`]); with `fds`, none that would eat into its reserve.
    pub fn new(max_total: usize, max_per_source: usize, fds: Option<Arc<FdBudget>>) -> Self {
        Self {
            shared: Arc::new(LimiterShared {
                max_total,
                max_per_source,
                counts: Mutex::new(Counts::default()),
            }),
            fds,
        }
    }

    /// Admits a connection from `ip`: a guard that holds its place until dropped, or why
    /// not. The descriptor reserve is checked first (it protects everything else), then the
    /// total, then the source's share.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let fd = match &self.fds {
            Some(budget) => Some(budget.try_hold().ok_or(Refusal::FdReserve)?),
            None => None,
        };
        let source = source_key(ip);
        let mut counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.shared.max_total {
            return Err(Refusal::MaxConnections);
        }
        let held = counts.per_source.entry(source).or_insert(0);
        if *held >= self.shared.max_per_source {
            return Err(Refusal::PerSource);
        }
        *held += 1;
        counts.total += 1;
        Ok(ConnectionGuard {
            shared: self.shared.clone(),
            source,
            _fd: fd,
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// Connections held now by `ip`'s source.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_source
            .get(&source_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// One admitted connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    shared: Arc<LimiterShared>,
    source: IpAddr,
    _fd: Option<FdGuard>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_source.get_mut(&self.source) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                // The map never holds more sources than there are connections.
                counts.per_source.remove(&self.source);
            }
        }
    }
}

/// What [`raise_fd_limit`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (the hard limit when raising it worked).
    pub now: u64,
    /// Why it could not be raised, when it could not.
    pub error: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped by `fs.nr_open` when the hard
/// limit is unlimited) and tells the limit in force. Elsewhere than Linux it reports an
/// assumed 1024 and changes nothing.
pub fn raise_fd_limit() -> FdLimit {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let current = getrlimit(Resource::Nofile);
        let before = current.current.unwrap_or(u64::MAX);
        let hard = current.maximum.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1 << 20)
        });
        let unchanged = |error| FdLimit {
            before,
            now: before,
            error,
        };
        if before >= hard {
            return unchanged(None);
        }
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: current.maximum,
            },
        );
        match raised {
            Ok(()) => FdLimit {
                before,
                now: hard,
                error: None,
            },
            Err(e) => unchanged(Some(e.to_string())),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        FdLimit {
            before: 1024,
            now: 1024,
            error: None,
        }
    }
}

/// The descriptors kept for storage, state and segment files under a limit of `limit`.
pub fn fd_reserve_for(limit: u64) -> u64 {
    (limit / FD_RESERVE_DIVISOR).max(FD_RESERVE_MIN)
}

/// Open descriptors of this process, when the OS can tell.
pub fn count_open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // One of them is the directory handle itself.
    Some((dir.count() as u64).saturating_sub(1))
}

#[derive(Debug, Clone, Copy)]
struct FdSample {
    at: Option<Instant>,
    open: u64,
    held_then: u64,
}

/// The process's descriptor limit with a reserve that peers may not take: sockets ask
/// [`FdBudget::try_hold`] before they are kept, and get nothing once the open descriptors
/// come within the reserve of the limit.
///
/// Open descriptors are counted from `/proc/self/fd` at most every
/// [`FD_RECOUNT_INTERVAL`]; in between, the estimate follows the sockets held through this
/// budget (a flood moves that count, the slower storage and state files are seen at the next
/// recount). Where the count is unavailable only the held sockets are counted.
#[derive(Debug)]
pub struct FdBudget {
    limit: u64,
    reserve: u64,
    held: Arc<AtomicU64>,
    sample: Mutex<FdSample>,
    count: fn() -> Option<u64>,
    recount_every: Duration,
}

impl FdBudget {
    /// A budget of `limit` descriptors of which `reserve` are never given to peers.
    pub fn new(limit: u64, reserve: u64) -> Self {
        Self::with_counter(limit, reserve, count_open_fds, FD_RECOUNT_INTERVAL)
    }

    /// Like [`FdBudget::new`] with another way to count open descriptors, recounted at most
    /// every `recount_every` (tests).
    pub fn with_counter(
        limit: u64,
        reserve: u64,
        count: fn() -> Option<u64>,
        recount_every: Duration,
    ) -> Self {
        Self {
            limit,
            reserve,
            held: Arc::new(AtomicU64::new(0)),
            sample: Mutex::new(FdSample {
                at: None,
                open: 0,
                held_then: 0,
            }),
            count,
            recount_every,
        }
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The reserve.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Sockets held through this budget now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The estimated open descriptors now.
    pub fn open_estimate(&self) -> u64 {
        self.estimate(Instant::now())
    }

    fn estimate(&self, now: Instant) -> u64 {
        let mut sample = self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        let held = self.held.load(Ordering::Relaxed);
        let stale = sample
            .at
            .is_none_or(|at| now.duration_since(at) >= self.recount_every);
        if stale {
            *sample = FdSample {
                at: Some(now),
                open: (self.count)().unwrap_or(held),
                held_then: held,
            };
        }
        // Sockets opened since the count add to it, sockets closed since subtract.
        (sample.open + held).saturating_sub(sample.held_then)
    }

    /// A place for one more socket, or `None` when it would come within the reserve.
    pub fn try_hold(&self) -> Option<FdGuard> {
        let open = self.estimate(Instant::now());
        if open.saturating_add(1).saturating_add(self.reserve) > self.limit {
            return None;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        Some(FdGuard {
            held: self.held.clone(),
        })
    }
}

/// One socket counted by an [`FdBudget`]; uncounted when dropped.
#[derive(Debug)]
pub struct FdGuard {
    held: Arc<AtomicU64>,
}

impl Drop for FdGuard {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Log lines an ingest area (`rtmp`, `srt`) may write per second before the rest are
/// suppressed (and summed up).
pub const LOG_LINES_PER_SECOND: u32 = 10;
/// The window of [`LOG_LINES_PER_SECOND`]; owners call [`LogLimiter::flush`] about this
/// often, so the summary of a flood that stopped is written too.
pub const LOG_WINDOW: Duration = Duration::from_secs(1);

/// At most `per_second` log lines per second for one area (lines a flood of peers could
/// multiply: refusals, connections that ended before they were anyone, accept failures);
/// the rest are counted in `suppressed` (`tidegate_log_lines_suppressed_total{area}`) and
/// summed up in one line ("suppressed K log lines") when the window ends: at the next line
/// allowed, or at [`LogLimiter::flush`]. Shared by reference (a short mutex inside).
#[derive(Debug)]
pub struct LogLimiter {
    area: &'static str,
    per_second: u32,
    suppressed: Counter,
    window: Mutex<LogWindow>,
}

#[derive(Debug, Default)]
struct LogWindow {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter for `area` (a metric label: `rtmp`, `srt`, `http`) that counts what it
    /// suppresses in `suppressed`.
    pub fn new(area: &'static str, per_second: u32, suppressed: Counter) -> Self {
        Self {
            area,
            per_second,
            suppressed,
            window: Mutex::default(),
        }
    }

    /// Whether one more line may be written at `now`. The first line allowed after some
    /// were suppressed is preceded by the summary line.
    pub fn allow(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut w, now);
        if w.written < self.per_second {
            w.written += 1;
            true
        } else {
            w.suppressed += 1;
            self.suppressed.inc();
            false
        }
    }

    /// Writes the summary of a window that has ended with lines suppressed; returns how
    /// many it summed up (0 when none or the window is still open).
    pub fn flush(&self, now: Instant) -> u64 {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut w, now)
    }

    /// Starts a new window when the last one has ended, summing up what it suppressed.
    fn roll(&self, w: &mut LogWindow, now: Instant) -> u64 {
        let expired = w
            .started
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_WINDOW);
        if !expired {
            return 0;
        }
        let suppressed = w.suppressed;
        if suppressed > 0 {
            warn!(
                area = self.area,
                suppressed,
                "{}: suppressed {suppressed} log lines (more than {} a second)",
                self.area,
                self.per_second
            );
        }
        *w = LogWindow {
            started: Some(now),
            ..LogWindow::default()
        };
        suppressed
    }
}

/// The first wait after accepting failed for want of resources; doubled up to
/// [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between accept attempts while resources are short.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept failures of one TCP listener. Out of descriptors or memory, accepting again at
/// once fails again (the connection stays queued) and would log in a tight loop; so the
/// loop waits what [`AcceptBackoff::failed`] says (doubling from [`ACCEPT_BACKOFF_MIN`] to
/// [`ACCEPT_BACKOFF_MAX`]; [`AcceptBackoff::pause`] does the wait), which also writes at
/// most one line a second, and calls [`AcceptBackoff::accepted`] after each accepted socket.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    next: Duration,
    log: LogLimiter,
}

impl AcceptBackoff {
    /// For the listener named `listener` in the log (`HTTP`, `RTMP`), counting suppressed
    /// lines in `suppressed`.
    pub fn new(listener: &'static str, area: &'static str, suppressed: Counter) -> Self {
        Self {
            listener,
            next: ACCEPT_BACKOFF_MIN,
            log: LogLimiter::new(area, 1, suppressed),
        }
    }

    /// A socket was accepted: the next failure waits the least again.
    pub fn accepted(&mut self) {
        self.next = ACCEPT_BACKOFF_MIN;
    }

    /// Accepting failed with `e` at `now`: `None` when it concerned one connection only
    /// (accept again at once), else how long to wait before the next attempt.
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> Option<Duration> {
        if is_peer_error(e) {
            return None;
        }
        let wait = self.next;
        if self.log.allow(now) {
            warn!(
                error = %e,
                retry_in_ms = wait.as_millis() as u64,
                "cannot accept {} connections; waiting",
                self.listener
            );
        }
        self.next = (wait * 2).min(ACCEPT_BACKOFF_MAX);
        Some(wait)
    }

    /// After accepting failed with `e`: waits what [`AcceptBackoff::failed`] says. False
    /// when `stop` was cancelled meanwhile (the loop should end).
    pub async fn pause(&mut self, e: &io::Error, stop: &CancellationToken) -> bool {
        let Some(wait) = self.failed(e, Instant::now()) else {
            return !stop.is_cancelled();
        };
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// Sums up the failure lines suppressed in a window that has ended.
    pub fn flush(&self, now: Instant) {
        self.log.flush(now);
    }
}

/// An accept error that concerns one connection only (it went away before it was
/// accepted); the listener is fine.
pub fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

// --- failed attempts per source (issue #12, key guessing) ---

/// Sources a [`FailureLimiter`] remembers at most. An entry is about 48 bytes and the table
/// at most 131,072 buckets at this size, so the table stays under 7 MiB however many
/// addresses a peer uses.
pub const FAILURE_SOURCES_MAX: usize = 65_536;

/// A source the [`FailureLimiter`] refuses for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// How long the back-off has left.
    pub remaining: Duration,
}

/// One source's failures: those of its current window, or its back-off.
#[derive(Debug, Clone, Copy)]
struct SourceFailures {
    /// When its window (or, `blocked`, its back-off) started.
    since: Instant,
    /// Failures in the window.
    failures: u32,
    /// In back-off until `since` + the back-off.
    blocked: bool,
}

/// Failed attempts per source address (wrong stream keys), so that guessing from one address
/// is refused cheaply and slowed down: after `max_failures` failures within `window` from one
/// source (see [`source_key`]: an IPv6 /64 is one), [`FailureLimiter::check`] refuses it for
/// `backoff`, before the attempt costs anything (no parse, no hash); then it starts afresh. A
/// success forgives nothing (a peer with one valid key could otherwise guess on between its
/// own publishes). Refusals while blocked do not prolong the back-off, so a legitimate
/// encoder behind the same address gets in once it ends; a guesser gets `max_failures`
/// attempts per window and back-off.
///
/// Memory is bounded: at most `max_sources` sources (by default [`FAILURE_SOURCES_MAX`]).
/// When the table is full and a new source fails, the sources with nothing left to remember
/// (window over, back-off over) are dropped; if that leaves it more than three quarters full,
/// the entries whose window or back-off started first are dropped down to three quarters
/// (so the O(n) sweep runs once per n/4 new sources at most). A peer with more addresses
/// than the table holds can thus have its older entries forgotten: each address still
/// gets only `max_failures` attempts per window, each costing a hash at most.
///
/// With `max_failures` 0 it is off: it remembers nothing and refuses nothing.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    backoff: Duration,
    max_sources: usize,
    table: Mutex<HashMap<IpAddr, SourceFailures>>,
}

impl FailureLimiter {
    /// After `max_failures` failures within `window` from one source, its attempts are
    /// refused for `backoff`; at most `max_sources` sources are remembered. `max_failures` 0
    /// turns it off.
    pub fn new(max_failures: u32, window: Duration, backoff: Duration, max_sources: usize) -> Self {
        Self {
            max_failures,
            window,
            backoff,
            max_sources: max_sources.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether it is off (`max_failures` 0).
    pub fn is_off(&self) -> bool {
        self.max_failures == 0
    }

    /// The back-off a blocked source waits.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Whether `ip` may make an attempt at `now`: `Err` while its source is in back-off.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Blocked> {
        if self.is_off() {
            return Ok(());
        }
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get(&source_key(ip)) {
            Some(e) if e.blocked => {
                let elapsed = now.saturating_duration_since(e.since);
                if elapsed < self.backoff {
                    return Err(Blocked {
                        remaining: self.backoff - elapsed,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt of `ip` at `now`. `Some` when this failure starts its
    /// source's back-off (the one moment worth a log line).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<Blocked> {
        if self.is_off() {
            return None;
        }
        let source = source_key(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= self.max_sources && !table.contains_key(&source) {
            self.make_room(&mut table, now);
        }
        let e = table.entry(source).or_insert(SourceFailures {
            since: now,
            failures: 0,
            blocked: false,
        });
        let elapsed = now.saturating_duration_since(e.since);
        if e.blocked {
            if elapsed < self.backoff {
                // Checked before its back-off started, failed after: nothing more to count.
                return None;
            }
            *e = SourceFailures {
                since: now,
                failures: 0,
                blocked: false,
            };
        } else if elapsed >= self.window {
            e.since = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures < self.max_failures {
            return None;
        }
        *e = SourceFailures {
            since: now,
            failures: 0,
            blocked: true,
        };
        Some(Blocked {
            remaining: self.backoff,
        })
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops what is over; if the table is still more than three quarters full, the entries
    /// that started first, down to three quarters.
    fn make_room(&self, table: &mut HashMap<IpAddr, SourceFailures>, now: Instant) {
        table.retain(|_, e| {
            let span = if e.blocked { self.backoff } else { self.window };
            now.saturating_duration_since(e.since) < span
        });
        let target = self.max_sources / 4 * 3;
        if table.len() <= target {
            return;
        }
        let mut starts: Vec<Instant> = table.values().map(|e| e.since).collect();
        let cut = table.len() - target;
        let (_, newest_dropped, _) = starts.select_nth_unstable(cut - 1);
        let newest_dropped = *newest_dropped;
        table.retain(|_, e| e.since > newest_dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_the_total_holds_for_everyone() {
        let l = ConnectionLimiter::new(5, 2, None);
        let a1 = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).unwrap_err(),
            Refusal::PerSource
        );
        let _b1 = l.try_acquire(ip("10.0.0.2")).unwrap();
        let _b2 = l.try_acquire(ip("10.0.0.2")).unwrap();
        let _c1 = l.try_acquire(ip("10.0.0.3")).unwrap();
        assert_eq!(l.open(), 5);
        // Full: a new source is refused for the total, not for its share.
        assert_eq!(
            l.try_acquire(ip("10.0.0.4")).unwrap_err(),
            Refusal::MaxConnections
        );
        drop(a1);
        assert_eq!(l.open(), 4);
        assert_eq!(l.open_from(ip("10.0.0.1")), 1);
        let _a3 = l.try_acquire(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn dropping_every_guard_forgets_the_source() {
        let l = ConnectionLimiter::new(10, 3, None);
        let guards: Vec<_> = (0..3)
            .map(|_| l.try_acquire(ip("192.0.2.7")).unwrap())
            .collect();
        assert_eq!(l.open_from(ip("192.0.2.7")), 3);
        drop(guards);
        assert_eq!(l.open(), 0);
        assert_eq!(l.open_from(ip("192.0.2.7")), 0);
        assert!(l.shared.counts.lock().unwrap().per_source.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = ConnectionLimiter::new(10, 1, None);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::PerSource,
            "same /64"
        );
        let _b = l.try_acquire(ip("2001:db8:1:3::1")).unwrap();
        let _c = l.try_acquire(ip("198.51.100.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("::ffff:198.51.100.1")).unwrap_err(),
            Refusal::PerSource
        );
    }

    #[test]
    fn the_fd_reserve_is_checked_first_and_held_sockets_count_between_recounts() {
        // 20 open before any socket; limit 40 with a reserve of 10 leaves 10 for sockets.
        let budget = Arc::new(FdBudget::with_counter(40, 10, || Some(20), HOUR));
        let l = ConnectionLimiter::new(100, 100, Some(budget.clone()));
        let mut guards = Vec::new();
        for _ in 0..9 {
            guards.push(l.try_acquire(ip("10.1.1.1")).unwrap());
        }
        // 20 + 9 open: one more would leave exactly the reserve, so the tenth is the last.
        guards.push(l.try_acquire(ip("10.1.1.1")).unwrap());
        assert_eq!(
            l.try_acquire(ip("10.1.1.2")).unwrap_err(),
            Refusal::FdReserve
        );
        assert_eq!(budget.held(), 10);
        guards.pop();
        assert_eq!(budget.held(), 9);
        assert!(l.try_acquire(ip("10.1.1.2")).is_ok());
    }

    #[test]
    fn a_refusal_for_the_total_gives_back_its_fd_place() {
        let budget = Arc::new(FdBudget::with_counter(1000, 10, || Some(0), HOUR));
        let l = ConnectionLimiter::new(1, 1, Some(budget.clone()));
        let _a = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.2")).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(budget.held(), 1);
    }

    #[test]
    fn the_reserve_is_an_eighth_of_the_limit_and_never_under_256() {
        assert_eq!(fd_reserve_for(1024), 256);
        assert_eq!(fd_reserve_for(20_000), 2_500);
        assert_eq!(fd_reserve_for(100), 256);
    }

    #[test]
    fn this_process_can_count_its_descriptors_and_raise_its_limit() {
        let before = count_open_fds().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(count_open_fds().unwrap() > before);
        drop(f);
        let limit = raise_fd_limit();
        assert!(limit.now >= limit.before, "{limit:?}");
    }

    #[test]
    fn log_lines_past_the_rate_are_suppressed_counted_and_summed_up() {
        let counter = Counter::default();
        let limiter = LogLimiter::new("rtmp", 3, counter.clone());
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(counter.get(), 7);
        // Still the same second.
        assert!(!limiter.allow(t0 + Duration::from_millis(999)));
        assert_eq!(counter.get(), 8);
        // The next second allows lines again (after the summary line).
        assert!(limiter.allow(t0 + Duration::from_secs(1)));
        assert_eq!(limiter.window.lock().unwrap().suppressed, 0);
        assert_eq!(counter.get(), 8);
    }

    #[test]
    fn a_flood_that_stopped_is_summed_up_by_flush() {
        let counter = Counter::default();
        let limiter = LogLimiter::new("srt", LOG_LINES_PER_SECOND, counter.clone());
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..1_000u64 {
            // 1000 lines in 0.1 s.
            if limiter.allow(t0 + Duration::from_micros(i * 100)) {
                written += 1;
            }
        }
        assert_eq!(written, LOG_LINES_PER_SECOND);
        assert_eq!(counter.get(), 1_000 - u64::from(LOG_LINES_PER_SECOND));
        // Within the window: no summary yet; after it, one.
        assert_eq!(limiter.flush(t0 + Duration::from_millis(500)), 0);
        let later = t0 + LOG_WINDOW + Duration::from_millis(1);
        assert_eq!(limiter.flush(later), 990);
        assert_eq!(limiter.flush(later), 0);
        // The next window's lines are allowed again.
        for _ in 0..(LOG_LINES_PER_SECOND + 5) {
            limiter.allow(later);
        }
        assert_eq!(limiter.flush(later + LOG_WINDOW), 5);
    }

    #[test]
    fn accept_failures_for_want_of_descriptors_wait_longer_each_time_up_to_a_second() {
        let mut b = AcceptBackoff::new("RTMP", "rtmp", Counter::default());
        let t0 = Instant::now();
        let emfile = io::Error::from_raw_os_error(24);
        let waits: Vec<_> = (0..10).map(|_| b.failed(&emfile, t0).unwrap()).collect();
        assert_eq!(waits[0], ACCEPT_BACKOFF_MIN);
        assert_eq!(waits[1], ACCEPT_BACKOFF_MIN * 2);
        assert_eq!(waits[9], ACCEPT_BACKOFF_MAX);
        // Nine of ten lines in the same second were suppressed.
        assert_eq!(b.log.suppressed.get(), 9);
        // A peer that went away is no reason to wait.
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(b.failed(&reset, t0), None);
        b.accepted();
        assert_eq!(b.failed(&emfile, t0), Some(ACCEPT_BACKOFF_MIN));
    }

    #[test]
    fn accept_errors_of_one_peer_are_told_from_the_listeners() {
        assert!(is_peer_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_peer_error(&io::Error::from_raw_os_error(24)));
    }

    // --- failed attempts per source (issue #12, key guessing) ---

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_source_past_its_failures_is_refused_for_the_backoff_and_others_are_not() {
        let l = FailureLimiter::new(3, 10 * SEC, 30 * SEC, 100);
        let t0 = Instant::now();
        let guesser = ip("192.0.2.1");
        assert_eq!(l.failed(guesser, t0), None);
        assert_eq!(l.failed(guesser, t0 + SEC), None);
        assert!(l.check(guesser, t0 + SEC).is_ok());
        // The third failure within the window starts the back-off, once.
        assert_eq!(
            l.failed(guesser, t0 + 2 * SEC),
            Some(Blocked {
                remaining: 30 * SEC
            })
        );
        assert_eq!(
            l.check(guesser, t0 + 12 * SEC),
            Err(Blocked {
                remaining: 20 * SEC
            })
        );
        // Another source is not touched.
        assert!(l.check(ip("192.0.2.2"), t0 + 12 * SEC).is_ok());
        // Refusals do not prolong it: it ends 30 s after it started.
        for s in 3..32 {
            let _ = l.check(guesser, t0 + s * SEC);
        }
        assert!(l.check(guesser, t0 + 32 * SEC).is_ok());
        // Then it starts afresh: three more failures to the next back-off.
        assert_eq!(l.failed(guesser, t0 + 33 * SEC), None);
        assert_eq!(l.failed(guesser, t0 + 33 * SEC), None);
        assert!(l.failed(guesser, t0 + 33 * SEC).is_some());
        assert!(l.check(guesser, t0 + 34 * SEC).is_err());
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_block() {
        let l = FailureLimiter::new(3, 10 * SEC, 30 * SEC, 100);
        let t0 = Instant::now();
        let slow = ip("198.51.100.7");
        for i in 0..20 {
            // Two failures per 10 s window.
            assert_eq!(l.failed(slow, t0 + i * 5 * SEC + i / 2 * SEC), None);
            assert!(l.check(slow, t0 + i * 5 * SEC).is_ok());
        }
    }

    #[test]
    fn an_ipv6_64_is_one_source_for_failures() {
        let l = FailureLimiter::new(2, 10 * SEC, 30 * SEC, 100);
        let t0 = Instant::now();
        assert_eq!(l.failed(ip("2001:db8:7:7::1"), t0), None);
        assert!(l.failed(ip("2001:db8:7:7:abcd::2"), t0).is_some());
        assert!(l.check(ip("2001:db8:7:7::ffff"), t0).is_err());
        assert!(l.check(ip("2001:db8:7:8::1"), t0).is_ok());
        // IPv4-mapped IPv6 is the IPv4 address.
        l.failed(ip("203.0.113.5"), t0);
        l.failed(ip("::ffff:203.0.113.5"), t0);
        assert!(l.check(ip("203.0.113.5"), t0).is_err());
    }

    #[test]
    fn the_table_is_capped_and_drops_what_is_over_first() {
        let l = FailureLimiter::new(2, 10 * SEC, 30 * SEC, 8);
        let t0 = Instant::now();
        // A blocked source, then sources with one failure each, until full.
        let blocked = ip("10.9.9.9");
        l.failed(blocked, t0);
        l.failed(blocked, t0);
        for i in 0..7u8 {
            l.failed(IpAddr::from([10, 0, 0, i]), t0 + SEC);
        }
        assert_eq!(l.sources(), 8);
        // 15 s later the single failures' windows are over, the back-off is not: a new
        // source drops them and keeps the blocked one.
        l.failed(ip("10.1.1.1"), t0 + 15 * SEC);
        assert_eq!(l.sources(), 2);
        assert!(l.check(blocked, t0 + 15 * SEC).is_err());
        // Thousands of sources failing at once never hold more than the cap.
        for i in 0..5_000u32 {
            let at = t0 + 16 * SEC + Duration::from_micros(u64::from(i));
            l.failed(IpAddr::from(i.to_be_bytes()), at);
            assert!(l.sources() <= 8);
        }
    }

    #[test]
    fn a_full_table_of_live_entries_forgets_the_oldest_quarter_and_keeps_counting() {
        let l = FailureLimiter::new(3, 100 * SEC, 100 * SEC, 8);
        let t0 = Instant::now();
        for i in 0..8u32 {
            l.failed(IpAddr::from([10, 0, 0, i as u8]), t0 + i * SEC);
        }
        l.failed(ip("10.0.1.0"), t0 + 9 * SEC);
        // Down to six, plus the newcomer: the two that started first are gone.
        assert_eq!(l.sources(), 7);
        let table = l.table.lock().unwrap();
        assert!(!table.contains_key(&ip("10.0.0.0")));
        assert!(!table.contains_key(&ip("10.0.0.1")));
        assert!(table.contains_key(&ip("10.0.0.2")));
        assert!(table.contains_key(&ip("10.0.1.0")));
    }

    #[test]
    fn a_full_table_stays_under_seven_mib() {
        // What FAILURE_SOURCES_MAX's documentation counts: 48-byte entries, in at most
        // 131,072 buckets (hashbrown keeps 1/8 free) with a control byte each.
        let entry = std::mem::size_of::<(IpAddr, SourceFailures)>();
        assert!(entry <= 48, "{entry} bytes");
        let buckets = (FAILURE_SOURCES_MAX * 8 / 7).next_power_of_two();
        assert!(buckets * (entry + 1) < 7 << 20);
    }

    #[test]
    fn a_limiter_with_no_failures_allowed_is_off() {
        let l = FailureLimiter::new(0, 10 * SEC, 30 * SEC, 8);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.failed(ip("10.0.0.1"), t0), None);
        }
        assert!(l.check(ip("10.0.0.1"), t0).is_ok());
        assert_eq!(l.sources(), 0);
        assert!(l.is_off());
    }
}
