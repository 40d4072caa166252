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
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tidegate_srt::{Caller, CallerConfig, CloseReason, Connection, Error as SrtError, Event};
use tokio::net::UdpSocket;
use tokio::time::{sleep_until, Instant};

use crate::publisher::{self, note_lag, Exit, Pacer};
use crate::report::{PublisherLive, PublisherOutcome, SrtCounters};
use crate::schedule::Schedule;
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

/// Everything one SRT publisher task needs: the input, as MPEG-TS, goes to an SRT target.
pub type PublisherTask = publisher::PublisherTask<SrtTarget, TsPass>;

/// Runs one SRT publisher to its end.
pub async fn run(mut t: PublisherTask) -> PublisherOutcome {
    let mut out = PublisherOutcome::not_started(t.slot.index);
    let Some(connect_started) = t.slot.start().await else {
        return out;
    };
    let (socket, remote) = match open_socket(&t.target.addr).await {
        Ok(s) => s,
        Err(e) => {
            return t
                .slot
                .conclude(out, Exit::Lost(format!("socket: {e}")), false)
        }
    };
    // The caller's socket ID, sequence numbers and keys come from the OS, as the server's do.
    let mut secret = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut secret) {
        let exit = Exit::Lost(format!("no randomness from the OS: {e}"));
        return t.slot.conclude(out, exit, false);
    }
    let mut cfg = CallerConfig::new(secret);
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
        Ok(c) => *c,
        Err(exit) => return t.slot.conclude(out, exit, false),
    };
    let pacer = t
        .slot
        .publishing(&mut out, connect_started, Instant::now(), t.media.gop_ms);
    let mut d = Driver {
        conn,
        socket,
        ts: t.media.clone(),
        sched: Schedule::new(t.media.clone()),
        pending: VecDeque::new(),
        pacer,
        live: t.slot.live.clone(),
        out: &mut out,
    };
    let exit = d.drive(&mut t, &mut buf).await;
    let stats = d.conn.stats();
    let handed_out = d.sched.handed_out();
    drop(d);
    out.srt = Some(SrtCounters {
        packets_sent: stats.packets_sent,
        packets_retransmitted: stats.packets_retransmitted,
        packets_reported_lost: stats.packets_reported_lost,
        packets_send_dropped: stats.packets_send_dropped,
        naks_received: stats.naks_received,
        rtt_ms: stats.rtt.as_secs_f64() * 1000.0,
    });
    out.tags_sent = handed_out;
    t.slot.conclude(out, exit, true)
}

/// A UDP socket connected to `addr`, and the address it resolved to.
async fn open_socket(addr: &str) -> std::io::Result<(UdpSocket, SocketAddr)> {
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
    Ok((socket, remote))
}

async fn handshake(
    t: &mut PublisherTask,
    socket: &UdpSocket,
    remote: SocketAddr,
    cfg: CallerConfig,
    buf: &mut [u8],
) -> Result<Box<Connection>, Exit> {
    let mut caller = Caller::new(std::time::Instant::now(), remote, cfg)
        .map_err(|e| Exit::Lost(e.to_string()))?;
    loop {
        while let Some(d) = caller.poll_transmit(std::time::Instant::now()) {
            // `send`, not `try_send`: a new socket is not known writable until the reactor
            // says so. An error (nothing listening) loses the datagram; the caller repeats
            // it.
            if let Ok(n) = socket.send(&d).await {
                t.slot
                    .live
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        match caller.poll_outcome() {
            Some(Ok(c)) => return Ok(Box::new(c)),
            Some(Err(SrtError::Rejected(r))) => return Err(Exit::Refused(r.to_string())),
            Some(Err(e)) => return Err(Exit::Lost(e.to_string())),
            None => {}
        }
        let Some(deadline) = caller.poll_timeout() else {
            return Err(Exit::Lost("the handshake stopped".into()));
        };
        tokio::select! {
            _ = t.slot.stop_requested() => return Err(Exit::Stopped),
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
    /// Which payload is next, and its media time.
    sched: Schedule<TsPass>,
    /// The pacing: media time 0 is pass 0's start.
    pacer: Pacer,
    live: Arc<PublisherLive>,
    out: &'a mut PublisherOutcome,
}

impl Driver<'_> {
    async fn drive(&mut self, t: &mut PublisherTask, buf: &mut [u8]) -> Exit {
        let mut stop_deadline: Option<Instant> = None;
        let end_at = t.slot.end_at;
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
                .then(|| self.pacer.wake_at(self.sched.next_due(), COALESCE));
            let conn_due = self.conn.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = t.slot.stop_requested(), if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop());
                }
                _ = sleep_until(stop_deadline.unwrap_or(end_at)), if stop_deadline.is_some() => {
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
                _ = sleep_until(media_due.unwrap_or(end_at)), if media_due.is_some() => {
                    if let Err(e) = self.queue_due() {
                        return Exit::Lost(e.to_string());
                    }
                }
                _ = sleep_until(conn_due.unwrap_or(end_at)), if conn_due.is_some() => {
                    self.conn.handle_timeout(std::time::Instant::now());
                }
            }
        }
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
            let media = self.sched.next_due();
            if self.pacer.due(media) > until {
                break;
            }
            let (pass, index) = self.sched.position();
            let Some(payload) = self.ts.payload(pass, index) else {
                break;
            };
            self.conn.send(now.into_std(), payload)?;
            lag = lag.max(self.pacer.hand_in(now, media));
            self.sched.advance();
            // Send as we go: the connection's queue stays short.
            if self.flush().is_err() {
                break;
            }
        }
        note_lag(&self.live, self.out, lag);
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
        self.pacer
            .record_stop(self.out, now, COALESCE, self.sched.next_due());
        now + STOP_FLUSH_TIMEOUT
    }

    async fn close(&mut self) -> Exit {
        self.conn.close(std::time::Instant::now());
        let _ = self.flush();
        Exit::Stopped
    }
}
