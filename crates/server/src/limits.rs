//! Caps on what peers can make the worker hold, shared by every listener.
//!
//! - [`ConnectionLimiter`]: connections in total and per source address. A listener asks
//!   it for each accepted socket and gets a [`ConnectionGuard`] (dropped with the
//!   connection) or a [`Refusal`] (close the socket at once and count the reason).
//! - [`FdBudget`]: the process's file-descriptor limit with a reserve kept for storage,
//!   state and segment files. A limiter built with a budget refuses with
//!   [`Refusal::FdReserve`] before peers can take the last descriptors.
//! - [`LogThrottle`]: at most one log line per interval for events a peer can cause in bulk;
//!   the rest are folded into the next line and counted.
//!
//! All of it is plain bookkeeping behind short `std` mutexes and atomics: no I/O but the
//! occasional count of `/proc/self/fd`, nothing async.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

    fn index(self) -> usize {
        match self {
            Self::MaxConnections => 0,
            Self::PerSource => 1,
            Self::FdReserve => 2,
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

/// At most one log line per interval for an event peers can cause in bulk. The caller
/// writes a line when [`LogThrottle::hit`] says so (with how many events were folded since
/// the last line) and counts a suppressed line otherwise; [`LogThrottle::flush`] tells when a
/// summary of folded events is due, so the last of a burst is not lost.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last_line: Option<Instant>,
    folded: u64,
}

impl LogThrottle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_line: None,
            folded: 0,
        }
    }

    /// One event at `now`: `Some(folded)` when a line may be written (`folded` events since
    /// the last line were not logged), `None` when this one is folded into the next line.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_line
            .is_none_or(|at| now.duration_since(at) >= self.interval);
        if due {
            self.last_line = Some(now);
            Some(std::mem::take(&mut self.folded))
        } else {
            self.folded += 1;
            None
        }
    }

    /// `Some(folded)` when events were folded and a summary line may be written now.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.folded == 0 {
            return None;
        }
        let due = self
            .last_line
            .is_none_or(|at| now.duration_since(at) >= self.interval);
        due.then(|| {
            self.last_line = Some(now);
            std::mem::take(&mut self.folded)
        })
    }
}

/// Refusals by reason since the last log line, for a listener's one-line-a-second summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefusalTally([u64; 3]);

impl RefusalTally {
    /// Counts one.
    pub fn add(&mut self, r: Refusal) {
        self.0[r.index()] += 1;
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Refusals for `r`.
    pub fn of(&self, r: Refusal) -> u64 {
        self.0[r.index()]
    }

    /// The counts so far, leaving zeros.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

impl std::fmt::Display for RefusalTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for r in Refusal::ALL {
            let n = self.of(r);
            if n > 0 {
                write!(f, "{}{}={n}", if first { "" } else { " " }, r.as_str())?;
                first = false;
            }
        }
        Ok(())
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
    fn a_throttle_writes_one_line_per_interval_and_summarises_the_rest() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(t.hit(t0), Some(0));
        for i in 1..=20 {
            assert_eq!(t.hit(t0 + Duration::from_millis(i * 40)), None);
        }
        assert_eq!(t.flush(t0 + Duration::from_millis(900)), None, "not yet");
        assert_eq!(t.flush(t0 + Duration::from_millis(1000)), Some(20));
        assert_eq!(t.flush(t0 + Duration::from_millis(3000)), None, "nothing");
        assert_eq!(t.hit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.hit(t0 + Duration::from_millis(2100)), Some(1));
    }

    #[test]
    fn a_tally_names_the_reasons_it_saw() {
        let mut t = RefusalTally::default();
        t.add(Refusal::PerSource);
        t.add(Refusal::PerSource);
        t.add(Refusal::FdReserve);
        assert_eq!(t.total(), 3);
        assert_eq!(t.to_string(), "per_source=2 fd_reserve=1");
        assert_eq!(t.take().total(), 3);
        assert_eq!(t.total(), 0);
    }
}
