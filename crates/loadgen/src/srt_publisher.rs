//! The SRT publisher driver: one task per publisher owns a connected UDP socket and a
//! [`tidegate_srt::Caller`] (then the [`Connection`] it yields), and paces the shared
//! [`TsPass`]'s 1316-byte payloads into it.
//!
//! Handshake: send what the caller has, wait for a datagram or its timer, until it yields
//! a connection or a refusal (the rejection reason is the report's `detail`).
//!
//! Publishing loop: hand every payload due within [`COALESCE`] to
//! [`Connection::send`], drain [`Connection::poll_transmit`] into the socket (a datagram
//! the kernel will not take yet waits, in order, for the socket to be writable), then wait
//! for the first of: stop, a datagram (ACK, NAK, keep-alive, shutdown), the socket
//! writable, the next payload's due time, or the connection's timer. Retransmissions on
//! NAK, ACKACKs and keep-alives come out of `poll_transmit` like the data.
//!
//! At the end the publisher waits (up to [`STOP_FLUSH_TIMEOUT`]) until the server has
//! acknowledged everything, then sends a shutdown.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tidegate_srt::{Caller, CallerConfig, CloseReason, Connection, Error as SrtError, Event};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::report::{LiveState, Outcome, PublisherLive, PublisherOutcome, SrtCounters};
use crate::schedule::{aligned_start, wait_for_start};
use crate::target::SrtTarget;
use crate::ts_source::TsPass;

/// Payloads due within this much of now are handed in together (fewer wake-ups; at
/// 3 Mbit/s that is 3 payloads).
pub const COALESCE: Duration = Duration::from_millis(10);
/// Time allowed, at the end, for the server to acknowledge what was sent.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Datagrams waiting for the socket above which no more media is handed in.
const MAX_PENDING_DATAGRAMS: usize = 1024;
/// Receive buffer: larger than any SRT datagram.
const RECV_BUF: usize = 2048;

/// Everything one SRT publisher task needs.
#[derive(Debug)]
pub struct PublisherTask {
    /// Index (the `{i}` of its URL).
    pub index: usize,
    /// Where to publish.
    pub target: SrtTarget,
    /// The shared input, as MPEG-TS.
    pub ts: Arc<TsPass>,
    /// Start of the run: the origin of the keyframe phases.
    pub origin: Instant,
    /// When to connect (the ramp-up slot).
    pub start_at: Instant,
    /// Keyframe phase within the GOP, ms (see [`crate::schedule::stagger_phase_ms`]).
    pub phase_ms: u64,
    /// When to stop.
    pub end_at: Instant,
    /// Live counters.
    pub live: Arc<PublisherLive>,
    /// Turns true to stop early.
    pub stop: watch::Receiver<bool>,
}

/// What ends the publishing loop.
enum Exit {
    Stopped,
    Lost(String),
}

/// A random secret for the caller (socket ID, sequence numbers, keys): the standard
/// library's randomly keyed hasher, fed with the index and the time.
fn secret(index: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (k, part) in out.chunks_exact_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(index);
        h.write_usize(k);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Runs one SRT publisher to its end.
pub async fn run(mut t: PublisherTask) -> PublisherOutcome {
    let mut out = PublisherOutcome::not_started(t.index);
    if !wait_for_start(&mut t.stop, t.start_at, t.end_at).await {
        return out;
    }
    t.live.set_state(LiveState::Connecting);
    let connect_started = Instant::now();
    let socket = match open_socket(&t.target.addr).await {
        Ok(s) => s,
        Err(e) => return end(&t, out, Outcome::Failed, Some(format!("socket: {e}"))),
    };
    let remote = match socket.peer_addr() {
        Ok(a) => a,
        Err(e) => return end(&t, out, Outcome::Failed, Some(format!("socket: {e}"))),
    };
    let mut cfg = CallerConfig::new(secret(t.index));
    cfg.stream_id = Some(t.target.stream_id.clone());
    cfg.passphrase = t.target.passphrase.clone();
    if let Some(k) = tidegate_srt::KeyLength::from_bytes(t.target.key_bytes) {
        cfg.key_length = k;
    }
    if let Some(l) = t.target.latency {
        cfg.latency = l;
    }
    let mut buf = vec![0u8; RECV_BUF];
    let conn = match handshake(&mut t, &socket, remote, cfg, &mut buf).await {
        Handshake::Connected(c) => *c,
        Handshake::Stopped => {
            return end(
                &t,
                out,
                Outcome::Failed,
                Some("the run ended before the server let it publish".into()),
            )
        }
        Handshake::Refused(why) => return end(&t, out, Outcome::Refused, Some(why)),
        Handshake::Failed(why) => return end(&t, out, Outcome::Failed, Some(why)),
    };
    let now = Instant::now();
    out.connect_ms = Some(now.duration_since(connect_started).as_secs_f64() * 1000.0);
    t.live.set_state(LiveState::Publishing);
    let base = Instant::from_std(aligned_start(
        t.origin.into_std(),
        now.into_std(),
        t.phase_ms,
        t.ts.gop_ms,
    ));
    let mut d = Driver {
        conn,
        socket,
        ts: t.ts.clone(),
        pending: VecDeque::new(),
        base,
        pass: 0,
        index: 0,
        high_us: 0,
        live: t.live.clone(),
        out: &mut out,
    };
    let exit = d.drive(&mut t, &mut buf).await;
    let stats = d.conn.stats();
    let (pass, index) = (d.pass, d.index);
    drop(d);
    out.srt = Some(SrtCounters {
        packets_sent: stats.packets_sent,
        packets_retransmitted: stats.packets_retransmitted,
        packets_reported_lost: stats.packets_reported_lost,
        packets_send_dropped: stats.packets_send_dropped,
        naks_received: stats.naks_received,
        rtt_ms: stats.rtt.as_secs_f64() * 1000.0,
    });
    out.tags_sent = pass * t.ts.chunks.len() as u64 + index as u64;
    match exit {
        Exit::Stopped => end(&t, out, Outcome::Finished, None),
        Exit::Lost(why) => end(&t, out, Outcome::Dropped, Some(why)),
    }
}

fn end(
    t: &PublisherTask,
    mut out: PublisherOutcome,
    outcome: Outcome,
    detail: Option<String>,
) -> PublisherOutcome {
    out.bytes_sent = t.live.bytes_sent.load(Ordering::Relaxed);
    t.live.set_state(match outcome {
        Outcome::Finished => LiveState::Finished,
        Outcome::Refused => LiveState::Refused,
        Outcome::Dropped => LiveState::Dropped,
        Outcome::Failed | Outcome::NotStarted => LiveState::Failed,
    });
    out.outcome = outcome;
    out.detail = detail;
    out
}

async fn open_socket(addr: &str) -> std::io::Result<UdpSocket> {
    let remote = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the host has no address"))?;
    let local: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(remote).await?;
    Ok(socket)
}

enum Handshake {
    Connected(Box<Connection>),
    Stopped,
    Refused(String),
    Failed(String),
}

async fn handshake(
    t: &mut PublisherTask,
    socket: &UdpSocket,
    remote: SocketAddr,
    cfg: CallerConfig,
    buf: &mut [u8],
) -> Handshake {
    let mut caller = match Caller::new(std::time::Instant::now(), remote, cfg) {
        Ok(c) => c,
        Err(e) => return Handshake::Failed(e.to_string()),
    };
    loop {
        while let Some(d) = caller.poll_transmit(std::time::Instant::now()) {
            // `send`, not `try_send`: a new socket is not known writable until the reactor
            // says so. An error (nothing listening) loses the datagram; the caller repeats
            // it.
            if let Ok(n) = socket.send(&d).await {
                t.live.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        match caller.poll_outcome() {
            Some(Ok(c)) => return Handshake::Connected(Box::new(c)),
            Some(Err(SrtError::Rejected(r))) => return Handshake::Refused(r.to_string()),
            Some(Err(e)) => return Handshake::Failed(e.to_string()),
            None => {}
        }
        let Some(deadline) = caller.poll_timeout() else {
            return Handshake::Failed("the handshake stopped".into());
        };
        tokio::select! {
            _ = t.stop.changed() => return Handshake::Stopped,
            _ = sleep_until(t.end_at) => return Handshake::Stopped,
            r = socket.recv(buf) => {
                // ECONNREFUSED (nothing listening yet) is retried until the timeout.
                if let Ok(n) = r {
                    let _ = caller.handle_datagram(std::time::Instant::now(), buf.get(..n).unwrap_or_default());
                }
            }
            _ = sleep_until(Instant::from_std(deadline)) => {
                caller.handle_timeout(std::time::Instant::now());
            }
        }
    }
}

struct Driver<'a> {
    conn: Connection,
    socket: UdpSocket,
    ts: Arc<TsPass>,
    /// Datagrams the kernel did not take yet, in order.
    pending: VecDeque<Vec<u8>>,
    /// When media time 0 of pass 0 is due.
    base: Instant,
    /// Current pass over the input.
    pass: u64,
    /// Next payload of the pass.
    index: usize,
    /// Newest due time handed to the connection, µs from `base`.
    high_us: u64,
    live: Arc<PublisherLive>,
    out: &'a mut PublisherOutcome,
}

impl Driver<'_> {
    async fn drive(&mut self, t: &mut PublisherTask, buf: &mut [u8]) -> Exit {
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if let Err(e) = self.flush() {
                if stop_deadline.is_some() {
                    return Exit::Stopped;
                }
                return Exit::Lost(format!("send: {e}"));
            }
            while let Some(ev) = self.conn.poll_event() {
                if let Event::Closed { reason } = ev {
                    if stop_deadline.is_some() {
                        return Exit::Stopped;
                    }
                    return Exit::Lost(match reason {
                        CloseReason::PeerShutdown => "the server closed the connection".into(),
                        CloseReason::Timeout => "nothing from the server for 5 s".into(),
                        CloseReason::Local => "closed".into(),
                    });
                }
            }
            if stop_deadline.is_some()
                && self.pending.is_empty()
                && self.conn.stats().send_buffer_packets == 0
            {
                return self.close().await;
            }
            let media_due = (stop_deadline.is_none() && self.pending.len() < MAX_PENDING_DATAGRAMS)
                .then(|| {
                    let due = self.due(self.next_due_us());
                    due.checked_sub(COALESCE).unwrap_or(due)
                });
            let conn_due = self.conn.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = t.stop.changed(), if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop());
                }
                _ = sleep_until(t.end_at), if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop());
                }
                _ = sleep_until(stop_deadline.unwrap_or(t.end_at)), if stop_deadline.is_some() => {
                    return self.close().await;
                }
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        return Exit::Lost(format!("recv: {e}"));
                    }
                    self.receive(buf);
                }
                r = self.socket.writable(), if !self.pending.is_empty() => {
                    if let Err(e) = r {
                        return Exit::Lost(format!("send: {e}"));
                    }
                }
                _ = sleep_until(media_due.unwrap_or(t.end_at)), if media_due.is_some() => {
                    if let Err(e) = self.queue_due() {
                        return Exit::Lost(e.to_string());
                    }
                }
                _ = sleep_until(conn_due.unwrap_or(t.end_at)), if conn_due.is_some() => {
                    self.conn.handle_timeout(std::time::Instant::now());
                }
            }
        }
    }

    fn due(&self, us: u64) -> Instant {
        self.base + Duration::from_micros(us)
    }

    /// Due time of the next payload, µs from `base`.
    fn next_due_us(&self) -> u64 {
        let passes_ticks = u128::from(self.pass) * u128::from(self.ts.duration_ticks);
        let passes_us = u64::try_from(passes_ticks * 1000 / 90).unwrap_or(u64::MAX);
        let chunk = self.ts.chunks.get(self.index).map_or(0, |c| c.due_us);
        passes_us.saturating_add(chunk)
    }

    /// Reads every datagram waiting on the socket into the connection.
    fn receive(&mut self, buf: &mut [u8]) {
        loop {
            match self.socket.try_recv(buf) {
                Ok(n) => {
                    let _ = self.conn.handle_datagram(
                        std::time::Instant::now(),
                        buf.get(..n).unwrap_or_default(),
                    );
                }
                // WouldBlock: done; ECONNREFUSED and the like: the server's port is gone,
                // which the peer-idle timeout turns into a drop.
                Err(_) => return,
            }
        }
    }

    /// Hands every payload due within [`COALESCE`] to the connection, measuring how late
    /// each is.
    fn queue_due(&mut self) -> Result<(), SrtError> {
        let now = Instant::now();
        let until = now + COALESCE;
        let mut lag = 0u64;
        while self.pending.len() < MAX_PENDING_DATAGRAMS {
            let due_us = self.next_due_us();
            let due = self.due(due_us);
            if due > until {
                break;
            }
            let Some(payload) = self.ts.payload(self.pass, self.index) else {
                break;
            };
            self.conn.send(now.into_std(), payload)?;
            self.high_us = self.high_us.max(due_us);
            lag = lag.max(
                now.saturating_duration_since(self.due(self.high_us))
                    .as_millis() as u64,
            );
            self.index += 1;
            if self.index >= self.ts.chunks.len() {
                self.index = 0;
                self.pass += 1;
            }
            // Send as we go: the connection's queue stays short.
            if self.flush().is_err() {
                break;
            }
        }
        self.out.max_lag_ms = self.out.max_lag_ms.max(lag);
        self.live.lag_ms.store(lag, Ordering::Relaxed);
        Ok(())
    }

    /// Sends what the connection has, in order; stops at the first datagram the kernel
    /// will not take (kept for when the socket is writable).
    fn flush(&mut self) -> std::io::Result<()> {
        loop {
            let d = match self.pending.pop_front() {
                Some(d) => d,
                None => match self.conn.poll_transmit(std::time::Instant::now()) {
                    Some(d) => d,
                    None => return Ok(()),
                },
            };
            match self.socket.try_send(&d) {
                Ok(n) => {
                    self.live.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.pending.push_front(d);
                    return Ok(());
                }
                // The server's port is closed (ICMP): the datagram is lost like any other;
                // the peer-idle timeout ends the connection if it stays so.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn begin_stop(&mut self) -> Instant {
        let now = Instant::now();
        let next = self.next_due_us();
        let lag = now
            .checked_sub(COALESCE)
            .unwrap_or(now)
            .saturating_duration_since(self.due(next));
        self.out.final_lag_ms = lag.as_millis() as u64;
        self.out.media_seconds = next as f64 / 1e6;
        now + STOP_FLUSH_TIMEOUT
    }

    async fn close(&mut self) -> Exit {
        self.conn.close(std::time::Instant::now());
        let _ = self.flush();
        Exit::Stopped
    }
}
