//! An established SRT connection (live mode): receiver (ARQ, TSBPD, too-late drop) and
//! sender (send buffer, retransmission, drop after the latency) in one state machine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::crypto::{ctr_apply, KeyLength, KeySet, KeyedRng, KmMessage, KmState, Sek};
use crate::error::Error;
use crate::packet::{
    Ack, AckInfo, ControlBody, ControlPacket, DataPacket, KeyFlag, LossRange, Packet,
    PacketPosition, MAX_NAK_ENTRIES, MAX_PAYLOAD_SIZE,
};
use crate::seq::{MsgNo, SeqNo, TimestampUnwrapper};

/// Full ACK period (`COMM_SYN_INTERVAL_US`, 10 ms).
pub const ACK_INTERVAL: Duration = Duration::from_millis(10);
/// A light ACK is sent after this many packets between two full ACKs.
pub const LIGHT_ACK_PACKETS: u32 = 64;
/// Shortest period between two NAK reports of the same loss.
pub const MIN_NAK_INTERVAL: Duration = Duration::from_millis(20);
/// A keep-alive is sent when nothing else was sent for this long.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Default peer-idle timeout (`SRTO_PEERIDLETIMEO`).
pub const DEFAULT_PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer capacity in packets (libsrt's default flow window, `SRTO_FC`): the
/// furthest ahead of the next packet to deliver that a packet is accepted.
pub const RECV_BUFFER_PACKETS: usize = 25_600;
/// Send buffer capacity in packets; when full, the oldest packet is dropped.
pub const SEND_BUFFER_PACKETS: usize = 8_192;
/// Sent ACKs remembered for matching ACKACKs (libsrt's ACK window).
pub const ACK_HISTORY: usize = 1_024;
/// The sender keeps a packet at least this long, even with a lower latency
/// (`SRT_TLPKTDROP_MINTHRESHOLD_MS`).
pub const SEND_DROP_MIN: Duration = Duration::from_secs(1);
/// Added to the sender drop threshold (two ACK periods).
pub const SEND_DROP_EXTRA: Duration = Duration::from_millis(20);
/// Initial RTT estimate (draft: 100 ms).
pub const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Initial RTT variance estimate (draft: 50 ms).
pub const INITIAL_RTT_VAR: Duration = Duration::from_millis(50);
/// Rate statistics are computed over windows of this length.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Control packets queued for sending; more are dropped (they are all periodic).
pub const MAX_QUEUED_CONTROL: usize = 256;
/// Packets encrypted with one key before the sender switches to the other
/// (`SRTO_KMREFRESHRATE` default, 2^24).
pub const KM_REFRESH_PACKETS: u64 = 1 << 24;
/// Packets before (and after) a switch at which the new key is announced (and the old
/// one retired) (`SRTO_KMPREANNOUNCE` default, 2^16).
pub const KM_PREANNOUNCE_PACKETS: u64 = 1 << 16;
/// How often an unanswered in-band KMREQ is repeated.
pub const KM_RESEND_INTERVAL: Duration = Duration::from_millis(500);

/// Why a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a shutdown.
    PeerShutdown,
    /// Nothing was received for the peer-idle timeout.
    Timeout,
    /// [`Connection::close`] was called.
    Local,
}

/// What a connection reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One packet's payload (an SRT live-mode message, usually 7 TS packets), in order, at
    /// its TSBPD time.
    Payload(Bytes),
    /// The connection is over; no more events follow.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Counters and estimates, as `srt_bstats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data packets received (including retransmissions and duplicates).
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets detected missing (gaps in sequence numbers).
    pub packets_lost: u64,
    /// Packets received with the R flag (retransmissions).
    pub packets_retransmitted_received: u64,
    /// Missing packets given up on when their TSBPD time passed (too-late drop) or the
    /// sender asked to drop them.
    pub packets_dropped: u64,
    /// Packets that arrived after their slot was delivered or dropped, or twice.
    pub packets_belated: u64,
    /// Packets that could not be decrypted (unknown key) or arrived unencrypted on an
    /// encrypted connection; discarded.
    pub packets_undecryptable: u64,
    /// Packets beyond the receive buffer; discarded.
    pub packets_overflow: u64,
    /// Payloads delivered to the application.
    pub packets_delivered: u64,
    /// Data packets sent for the first time.
    pub packets_sent: u64,
    /// Payload bytes sent (first transmissions).
    pub bytes_sent: u64,
    /// Data packets sent again after a NAK.
    pub packets_retransmitted: u64,
    /// Packets the sender dropped unacknowledged (too old, or send buffer full).
    pub packets_send_dropped: u64,
    /// NAK packets sent.
    pub naks_sent: u64,
    /// NAK packets received.
    pub naks_received: u64,
    /// Distinct packets the peer reported lost in its NAKs (sender side: the loss the
    /// receiver saw on the way; a packet reported again counts once).
    pub packets_reported_lost: u64,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Round-trip time variance.
    pub rtt_var: Duration,
    /// Packets held in the receive buffer (received or awaited).
    pub recv_buffer_packets: u64,
    /// Span of the receive buffer in time (newest minus oldest held timestamp), ms.
    pub recv_buffer_ms: u64,
    /// Packets held in the send buffer.
    pub send_buffer_packets: u64,
    /// Receive bitrate over the last complete rate window, bits per second.
    pub receive_bitrate: u64,
    /// Receive packet rate over the last complete rate window, packets per second.
    pub receive_packet_rate: u64,
}

/// Parameters fixed by the handshake (built by the listener or the caller).
#[derive(Debug, Clone)]
pub(crate) struct ConnParams {
    pub now: Instant,
    pub start: Instant,
    pub local_id: u32,
    pub peer_id: u32,
    pub peer_addr: SocketAddr,
    pub stream_id: Option<String>,
    pub isn: SeqNo,
    pub peer_start: Instant,
    pub recv_latency: Duration,
    pub peer_latency: Duration,
    pub tlpktdrop: bool,
    pub idle_timeout: Duration,
    pub crypto: Option<CryptoParams>,
    pub rng: KeyedRng,
}

/// Encryption state agreed in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct CryptoParams {
    pub passphrase: Secret,
    pub keys: KeySet,
}

/// A passphrase that never appears in `Debug` output.
#[derive(Clone)]
pub(crate) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Missing {
        last_nak: Instant,
    },
    Abandoned,
    Present {
        deliver_at: Instant,
        ts: i64,
        payload: Bytes,
    },
}

#[derive(Debug, Clone)]
struct SendSlot {
    seq: SeqNo,
    msgno: MsgNo,
    timestamp: u32,
    key: KeyFlag,
    payload: Bytes,
    origin: Instant,
    in_loss: bool,
    /// A NAK has reported this packet lost at least once.
    nak_reported: bool,
}

#[derive(Debug, Clone)]
struct SendCrypto {
    passphrase: Secret,
    salt: [u8; 16],
    current: KeyFlag,
    even: Option<Sek>,
    odd: Option<Sek>,
    /// Packets encrypted since the last switch.
    count: u64,
    /// The KM message being announced and when it was last sent, until answered.
    pending_km: Option<(Bytes, Instant)>,
}

impl SendCrypto {
    /// Seals the keys it holds now into a KM message, keeps it as the one being announced
    /// (sent at `now`) and queues it on `ctrl`.
    fn announce_keys(&mut self, now: Instant, ctrl: &mut VecDeque<ControlBody>) {
        let sealed = KmMessage::seal(
            &self.passphrase.0,
            self.salt,
            self.even.as_ref(),
            self.odd.as_ref(),
        );
        // Our own keys of one length, a checked passphrase: sealing cannot fail.
        debug_assert!(sealed.is_ok(), "sealing our keys failed: {sealed:?}");
        if let Ok(m) = sealed {
            self.pending_km = Some((Bytes::from(m.to_bytes()), now));
            ctrl.push_back(ControlBody::KmRequest(Bytes::from(m.to_bytes())));
        }
    }
}

/// An established SRT connection.
///
/// # Driver call order
///
/// One task owns a `Connection`. Its loop:
/// 1. feed every datagram whose destination socket ID is [`Connection::socket_id`] (and
///    whose source is [`Connection::peer_addr`]) to [`Connection::handle_datagram`];
/// 2. when the timer fires, call [`Connection::handle_timeout`];
/// 3. to publish, call [`Connection::send`] with each payload (≤ 1456 bytes, usually
///    1316 = 7 TS packets) as it is produced;
/// 4. then drain [`Connection::poll_transmit`] (send each datagram to the peer) and
///    [`Connection::poll_event`] until both return `None`;
/// 5. re-arm the timer at [`Connection::poll_timeout`] (`None`: closed, stop).
///
/// The connection never reads the clock: every `now` comes from the driver and must not go
/// backwards.
#[derive(Debug)]
pub struct Connection {
    start: Instant,
    local_id: u32,
    peer_id: u32,
    peer_addr: SocketAddr,
    stream_id: Option<String>,
    peer_start: Instant,
    recv_latency: Duration,
    peer_latency: Duration,
    tlpktdrop: bool,
    idle_timeout: Duration,
    closed: bool,
    // receiver
    rcv_base: SeqNo,
    rcv_ack: SeqNo,
    buf: VecDeque<Slot>,
    ts_unwrap: TimestampUnwrapper,
    recv_keys: Option<KeySet>,
    passphrase: Option<Secret>,
    ack_number: u32,
    ack_history: VecDeque<(u32, SeqNo, Instant)>,
    last_ackacked: SeqNo,
    last_full_ack: Option<(SeqNo, Instant)>,
    pkts_since_ack: u32,
    next_ack: Instant,
    next_nak: Instant,
    rtt: Duration,
    rtt_var: Duration,
    rate_start: Instant,
    rate_pkts: u64,
    rate_bytes: u64,
    // sender
    snd_buf: VecDeque<SendSlot>,
    snd_next: SeqNo,
    snd_next_tx: SeqNo,
    snd_msgno: MsgNo,
    loss_queue: VecDeque<SeqNo>,
    send_crypto: Option<SendCrypto>,
    rng: KeyedRng,
    // both
    ctrl: VecDeque<ControlBody>,
    events: VecDeque<Event>,
    last_sent: Instant,
    last_recv: Instant,
    stats: Stats,
}

fn add(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

impl Connection {
    pub(crate) fn new(p: ConnParams) -> Connection {
        let send_crypto = p.crypto.as_ref().map(|c| SendCrypto {
            passphrase: c.passphrase.clone(),
            salt: c.keys.salt,
            current: if c.keys.even.is_some() {
                KeyFlag::Even
            } else {
                KeyFlag::Odd
            },
            even: c.keys.even.clone(),
            odd: c.keys.odd.clone(),
            count: 0,
            pending_km: None,
        });
        Connection {
            start: p.start,
            local_id: p.local_id,
            peer_id: p.peer_id,
            peer_addr: p.peer_addr,
            stream_id: p.stream_id,
            peer_start: p.peer_start,
            recv_latency: p.recv_latency,
            peer_latency: p.peer_latency,
            tlpktdrop: p.tlpktdrop,
            idle_timeout: p.idle_timeout,
            closed: false,
            rcv_base: p.isn,
            rcv_ack: p.isn,
            buf: VecDeque::new(),
            ts_unwrap: TimestampUnwrapper::default(),
            recv_keys: p.crypto.as_ref().map(|c| c.keys.clone()),
            passphrase: p.crypto.map(|c| c.passphrase),
            ack_number: 0,
            ack_history: VecDeque::new(),
            last_ackacked: p.isn,
            last_full_ack: None,
            pkts_since_ack: 0,
            next_ack: add(p.now, ACK_INTERVAL).unwrap_or(p.now),
            next_nak: add(p.now, MIN_NAK_INTERVAL).unwrap_or(p.now),
            rtt: INITIAL_RTT,
            rtt_var: INITIAL_RTT_VAR,
            rate_start: p.now,
            rate_pkts: 0,
            rate_bytes: 0,
            snd_buf: VecDeque::new(),
            snd_next: p.isn,
            snd_next_tx: p.isn,
            snd_msgno: MsgNo::new(1),
            loss_queue: VecDeque::new(),
            send_crypto,
            rng: p.rng,
            ctrl: VecDeque::new(),
            events: VecDeque::new(),
            last_sent: p.now,
            last_recv: p.now,
            stats: Stats {
                rtt: INITIAL_RTT,
                rtt_var: INITIAL_RTT_VAR,
                ..Stats::default()
            },
        }
    }

    /// Our socket ID: the destination ID of every datagram for this connection.
    pub fn socket_id(&self) -> u32 {
        self.local_id
    }
    /// The peer's socket ID.
    pub fn peer_socket_id(&self) -> u32 {
        self.peer_id
    }
    /// The peer's address (from the handshake).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
    /// The stream ID the caller sent, if any.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }
    /// The negotiated receive latency (TSBPD delay).
    pub fn latency(&self) -> Duration {
        self.recv_latency
    }
    /// The negotiated latency of the peer's receiver (our sender's drop horizon).
    pub fn peer_latency(&self) -> Duration {
        self.peer_latency
    }
    /// Whether the connection is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.recv_keys.is_some()
    }
    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.rtt = self.rtt;
        s.rtt_var = self.rtt_var;
        s.recv_buffer_packets = self.buf.len() as u64;
        let tss = self.buf.iter().filter_map(|sl| match sl {
            Slot::Present { ts, .. } => Some(*ts),
            _ => None,
        });
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for t in tss {
            lo = lo.min(t);
            hi = hi.max(t);
        }
        s.recv_buffer_ms = if hi >= lo {
            (hi.saturating_sub(lo) / 1000) as u64
        } else {
            0
        };
        s.send_buffer_packets = self.snd_buf.len() as u64;
        s
    }

    fn timestamp(&self, now: Instant) -> u32 {
        // Wraps every 2^32 µs (~71.6 min), as on the wire.
        now.saturating_duration_since(self.start).as_micros() as u32
    }

    fn queue_ctrl(&mut self, body: ControlBody) {
        if self.ctrl.len() < MAX_QUEUED_CONTROL {
            self.ctrl.push_back(body);
        }
    }

    fn close_with(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Closed { reason });
        }
    }

    /// Closes the connection: a shutdown packet is queued for [`Connection::poll_transmit`]
    /// and [`Event::Closed`] follows.
    pub fn close(&mut self, _now: Instant) {
        if !self.closed {
            self.ctrl.clear();
            self.ctrl.push_back(ControlBody::Shutdown);
            self.close_with(CloseReason::Local);
        }
    }

    /// Feeds one datagram addressed to this connection. An `Err` means the datagram was
    /// malformed and ignored; the connection is unaffected.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let pkt = Packet::parse(data)?;
        self.last_recv = now;
        match pkt {
            Packet::Data(d) => self.on_data(now, d),
            Packet::Control(c) => self.on_control(now, c),
        }
        self.deliver(now);
        Ok(())
    }

    fn on_data(&mut self, now: Instant, d: DataPacket) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += d.payload.len() as u64;
        self.rate_pkts += 1;
        self.rate_bytes += d.payload.len() as u64;
        if d.retransmitted {
            self.stats.packets_retransmitted_received += 1;
        }
        let off = d.seq.diff(self.rcv_base);
        if off < 0 {
            self.stats.packets_belated += 1;
            return;
        }
        let off = off as usize;
        if off >= RECV_BUFFER_PACKETS {
            self.stats.packets_overflow += 1;
            return;
        }
        let payload = match (d.key, &self.recv_keys) {
            (KeyFlag::None, None) => d.payload,
            (KeyFlag::None, Some(_)) | (_, None) => {
                self.stats.packets_undecryptable += 1;
                return;
            }
            (flag, Some(keys)) => {
                let mut p = d.payload.to_vec();
                if !keys.decrypt(flag, d.seq.get(), &mut p) {
                    self.stats.packets_undecryptable += 1;
                    return;
                }
                Bytes::from(p)
            }
        };
        let ts = self.ts_unwrap.extend(d.timestamp);
        let deliver_at = u64::try_from(ts)
            .ok()
            .map(Duration::from_micros)
            .and_then(|d| add(self.peer_start, d))
            .and_then(|t| add(t, self.recv_latency))
            // A timestamp from before the peer's start delivers at once.
            .unwrap_or(self.peer_start);
        let present = Slot::Present {
            deliver_at,
            ts,
            payload,
        };
        if off >= self.buf.len() {
            let gap = off - self.buf.len();
            if gap > 0 {
                let first = self.rcv_base.add(self.buf.len() as u32);
                self.stats.packets_lost += gap as u64;
                for _ in 0..gap {
                    self.buf.push_back(Slot::Missing { last_nak: now });
                }
                self.stats.naks_sent += 1;
                self.queue_ctrl(ControlBody::Nak(vec![LossRange {
                    first,
                    last: d.seq.sub(1),
                }]));
            }
            self.buf.push_back(present);
        } else if let Some(slot) = self.buf.get_mut(off) {
            match slot {
                Slot::Missing { .. } => *slot = present,
                _ => {
                    self.stats.packets_belated += 1;
                    return;
                }
            }
        }
        self.advance_ack();
        self.pkts_since_ack += 1;
        if self.pkts_since_ack >= LIGHT_ACK_PACKETS {
            self.pkts_since_ack = 0;
            self.queue_ctrl(ControlBody::Ack(Ack {
                ack_number: 0,
                ack_seq: self.rcv_ack,
                info: AckInfo::Light,
            }));
        }
    }

    fn advance_ack(&mut self) {
        if self.rcv_ack.diff(self.rcv_base) < 0 {
            self.rcv_ack = self.rcv_base;
        }
        let mut off = self.rcv_ack.diff(self.rcv_base).max(0) as usize;
        while let Some(Slot::Present { .. } | Slot::Abandoned) = self.buf.get(off) {
            off += 1;
        }
        self.rcv_ack = self.rcv_base.add(off as u32);
    }

    fn deliver(&mut self, now: Instant) {
        loop {
            match self.buf.front() {
                Some(Slot::Present { deliver_at, .. }) if *deliver_at <= now => {
                    if let Some(Slot::Present { payload, .. }) = self.buf.pop_front() {
                        self.stats.packets_delivered += 1;
                        self.events.push_back(Event::Payload(payload));
                    }
                    self.rcv_base = self.rcv_base.next();
                }
                Some(Slot::Abandoned) => {
                    self.buf.pop_front();
                    self.rcv_base = self.rcv_base.next();
                }
                Some(Slot::Missing { .. }) if self.tlpktdrop => {
                    let next = self.buf.iter().enumerate().find_map(|(i, s)| match s {
                        Slot::Present { deliver_at, .. } => Some((i, *deliver_at)),
                        _ => None,
                    });
                    match next {
                        Some((i, at)) if at <= now => {
                            for _ in 0..i {
                                if let Some(Slot::Missing { .. }) = self.buf.pop_front() {
                                    self.stats.packets_dropped += 1;
                                }
                            }
                            self.rcv_base = self.rcv_base.add(i as u32);
                        }
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        self.advance_ack();
    }

    /// Delivers everything received, skipping gaps, without waiting for TSBPD times
    /// (the peer has finished; nothing more will arrive).
    fn flush(&mut self) {
        while let Some(slot) = self.buf.pop_front() {
            match slot {
                Slot::Present { payload, .. } => {
                    self.stats.packets_delivered += 1;
                    self.events.push_back(Event::Payload(payload));
                }
                Slot::Missing { .. } => self.stats.packets_dropped += 1,
                Slot::Abandoned => {}
            }
            self.rcv_base = self.rcv_base.next();
        }
        self.advance_ack();
    }

    fn next_delivery(&self) -> Option<Instant> {
        match self.buf.front()? {
            Slot::Present { deliver_at, .. } => Some(*deliver_at),
            Slot::Abandoned => None,
            Slot::Missing { .. } if self.tlpktdrop => self.buf.iter().find_map(|s| match s {
                Slot::Present { deliver_at, .. } => Some(*deliver_at),
                _ => None,
            }),
            Slot::Missing { .. } => None,
        }
    }

    fn on_control(&mut self, now: Instant, c: ControlPacket) {
        match c.body {
            ControlBody::Ack(a) => self.on_ack(now, a),
            ControlBody::AckAck(n) => self.on_ackack(now, n),
            ControlBody::Nak(list) => self.on_nak(list),
            ControlBody::Shutdown => {
                self.flush();
                self.close_with(CloseReason::PeerShutdown)
            }
            ControlBody::DropRequest { first, last, .. } => self.on_drop_request(first, last),
            ControlBody::KmRequest(km) => self.on_kmreq(&km),
            ControlBody::KmResponse(km) => {
                if let Some(sc) = &mut self.send_crypto {
                    if sc.pending_km.as_ref().is_some_and(|(p, _)| *p == km) {
                        sc.pending_km = None;
                    }
                }
            }
            // Handshakes here are repeats (answered by the listener); keep-alives only
            // refresh `last_recv`; the rest carries nothing for live mode.
            ControlBody::Handshake(_)
            | ControlBody::KeepAlive
            | ControlBody::CongestionWarning
            | ControlBody::PeerError(_)
            | ControlBody::Other { .. } => {}
        }
    }

    fn on_ack(&mut self, now: Instant, a: Ack) {
        let _ = now;
        // An ACK beyond what we sent is bogus.
        if a.ack_seq.diff(self.snd_next) > 0 {
            return;
        }
        while let Some(front) = self.snd_buf.front() {
            if front.seq.diff(a.ack_seq) < 0 {
                self.snd_buf.pop_front();
            } else {
                break;
            }
        }
        self.fix_next_tx();
        match a.info {
            AckInfo::Light => {}
            AckInfo::Small { .. } | AckInfo::Full { .. } => {
                self.queue_ctrl(ControlBody::AckAck(a.ack_number));
                if let AckInfo::Full { rtt, rtt_var, .. } | AckInfo::Small { rtt, rtt_var, .. } =
                    a.info
                {
                    // The sender adopts the receiver's estimate (it measures with ACKACKs).
                    if rtt > 0 {
                        self.rtt = Duration::from_micros(u64::from(rtt));
                        self.rtt_var = Duration::from_micros(u64::from(rtt_var));
                    }
                }
            }
        }
    }

    fn snd_una(&self) -> SeqNo {
        self.snd_buf.front().map_or(self.snd_next, |s| s.seq)
    }

    fn fix_next_tx(&mut self) {
        let una = self.snd_una();
        if self.snd_next_tx.diff(una) < 0 {
            self.snd_next_tx = una;
        }
    }

    fn on_ackack(&mut self, now: Instant, n: u32) {
        let Some((pos, &(_, seq, sent))) = self
            .ack_history
            .iter()
            .enumerate()
            .find(|(_, (no, _, _))| *no == n)
        else {
            return;
        };
        self.ack_history.drain(..=pos);
        if seq.diff(self.last_ackacked) > 0 {
            self.last_ackacked = seq;
        }
        let sample = now.saturating_duration_since(sent);
        // RFC 6298-style smoothing, as the draft specifies.
        let diff = self.rtt.abs_diff(sample);
        self.rtt_var = (self.rtt_var * 3 + diff) / 4;
        self.rtt = (self.rtt * 7 + sample) / 8;
    }

    fn on_nak(&mut self, list: Vec<LossRange>) {
        self.stats.naks_received += 1;
        let una = self.snd_una();
        let len = self.snd_buf.len();
        for r in list {
            let lo = r.first.diff(una).max(0) as usize;
            let hi = r.last.diff(una);
            if hi < 0 {
                continue;
            }
            let hi = (hi as usize).min(len.saturating_sub(1));
            // Only packets already sent can be lost.
            let sent = self.snd_next_tx.diff(una).max(0) as usize;
            if sent == 0 {
                continue;
            }
            for i in lo..=hi.min(sent.saturating_sub(1)) {
                if let Some(s) = self.snd_buf.get_mut(i) {
                    if !s.nak_reported {
                        s.nak_reported = true;
                        self.stats.packets_reported_lost += 1;
                    }
                    if !s.in_loss {
                        s.in_loss = true;
                        self.loss_queue.push_back(s.seq);
                    }
                }
            }
        }
    }

    fn on_drop_request(&mut self, first: SeqNo, last: SeqNo) {
        let lo = first.diff(self.rcv_base).max(0) as usize;
        let hi = last.diff(self.rcv_base);
        if hi < 0 {
            return;
        }
        let hi = (hi as usize).min(self.buf.len().saturating_sub(1));
        for i in lo..=hi {
            if let Some(slot) = self.buf.get_mut(i) {
                if let Slot::Missing { .. } = slot {
                    *slot = Slot::Abandoned;
                    self.stats.packets_dropped += 1;
                }
            }
        }
        self.advance_ack();
    }

    fn on_kmreq(&mut self, km: &[u8]) {
        let Some(pass) = self.passphrase.clone() else {
            self.queue_ctrl(ControlBody::KmResponse(Bytes::copy_from_slice(
                &(KmState::NoSecret as u32).to_be_bytes(),
            )));
            return;
        };
        let opened = KmMessage::parse(km).and_then(|m| m.open(&pass.0).map(|k| (m, k)));
        match opened {
            Ok((m, (even, odd))) => {
                if let Some(keys) = &mut self.recv_keys {
                    keys.salt = m.salt;
                    if even.is_some() {
                        keys.even = even;
                    }
                    if odd.is_some() {
                        keys.odd = odd;
                    }
                }
                self.queue_ctrl(ControlBody::KmResponse(Bytes::copy_from_slice(km)));
            }
            Err(_) => self.queue_ctrl(ControlBody::KmResponse(Bytes::copy_from_slice(
                &(KmState::BadSecret as u32).to_be_bytes(),
            ))),
        }
    }

    /// Queues one payload (≤ [`MAX_PAYLOAD_SIZE`] bytes) for sending, stamped with `now`.
    pub fn send(&mut self, now: Instant, payload: Bytes) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if payload.len() > MAX_PAYLOAD_SIZE {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_SIZE,
            });
        }
        if self.snd_buf.len() >= SEND_BUFFER_PACKETS {
            self.snd_buf.pop_front();
            self.stats.packets_send_dropped += 1;
            self.fix_next_tx();
        }
        let seq = self.snd_next;
        self.snd_next = seq.next();
        let msgno = self.snd_msgno;
        self.snd_msgno = msgno.next();
        let (key, payload) = self.encrypt(now, seq, payload);
        self.snd_buf.push_back(SendSlot {
            seq,
            msgno,
            timestamp: self.timestamp(now),
            key,
            payload,
            origin: now,
            in_loss: false,
            nak_reported: false,
        });
        Ok(())
    }

    fn encrypt(&mut self, now: Instant, seq: SeqNo, payload: Bytes) -> (KeyFlag, Bytes) {
        let Some(sc) = &mut self.send_crypto else {
            return (KeyFlag::None, payload);
        };
        sc.count += 1;
        let other = if sc.current == KeyFlag::Even {
            KeyFlag::Odd
        } else {
            KeyFlag::Even
        };
        // Key rotation: announce the next key, switch, then retire the old one.
        if sc.count == KM_REFRESH_PACKETS - KM_PREANNOUNCE_PACKETS {
            let len = sc
                .even
                .as_ref()
                .or(sc.odd.as_ref())
                .map_or(KeyLength::Aes128, Sek::len);
            let new = Some(self.rng.sek(len));
            if other == KeyFlag::Odd {
                sc.odd = new;
            } else {
                sc.even = new;
            }
            sc.announce_keys(now, &mut self.ctrl);
        } else if sc.count >= KM_REFRESH_PACKETS {
            sc.current = other;
            sc.count = 0;
        } else if sc.count == KM_PREANNOUNCE_PACKETS && sc.even.is_some() && sc.odd.is_some() {
            if sc.current == KeyFlag::Even {
                sc.odd = None;
            } else {
                sc.even = None;
            }
            sc.announce_keys(now, &mut self.ctrl);
        }
        let key = if sc.current == KeyFlag::Even {
            sc.even.as_ref()
        } else {
            sc.odd.as_ref()
        };
        // The current key is never retired (the rotation above only drops the other one)
        // and the connection starts with the key it announced.
        debug_assert!(key.is_some(), "no {:?} key to encrypt with", sc.current);
        match key {
            Some(k) => {
                let mut p = payload.to_vec();
                ctr_apply(k, &sc.salt, seq.get(), &mut p);
                (sc.current, Bytes::from(p))
            }
            None => (KeyFlag::None, payload),
        }
    }

    /// Advances timers: ACK/NAK reports, TSBPD delivery, sender drops, keep-alive and the
    /// peer-idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(idle_at) = add(self.last_recv, self.idle_timeout) {
            if now >= idle_at {
                self.close_with(CloseReason::Timeout);
                return;
            }
        }
        self.deliver(now);
        if now >= self.next_ack {
            self.send_full_ack(now);
            self.next_ack = add(now, ACK_INTERVAL).unwrap_or(now);
        }
        if now >= self.next_nak {
            self.send_periodic_nak(now);
            self.next_nak = add(now, self.nak_interval()).unwrap_or(now);
        }
        if now.saturating_duration_since(self.rate_start) >= RATE_WINDOW {
            let secs = now.saturating_duration_since(self.rate_start).as_secs_f64();
            self.stats.receive_packet_rate = (self.rate_pkts as f64 / secs) as u64;
            self.stats.receive_bitrate = (self.rate_bytes as f64 * 8.0 / secs) as u64;
            self.rate_pkts = 0;
            self.rate_bytes = 0;
            self.rate_start = now;
        }
        // Sender: drop what the receiver can no longer play.
        let horizon = self.peer_latency.max(SEND_DROP_MIN) + SEND_DROP_EXTRA;
        while let Some(front) = self.snd_buf.front() {
            if add(front.origin, horizon).is_some_and(|t| t <= now) {
                self.snd_buf.pop_front();
                self.stats.packets_send_dropped += 1;
            } else {
                break;
            }
        }
        self.fix_next_tx();
        if let Some(sc) = &mut self.send_crypto {
            if let Some((km, at)) = &mut sc.pending_km {
                if now.saturating_duration_since(*at) >= KM_RESEND_INTERVAL {
                    *at = now;
                    let km = km.clone();
                    self.queue_ctrl(ControlBody::KmRequest(km));
                }
            }
        }
        if now.saturating_duration_since(self.last_sent) >= KEEPALIVE_INTERVAL
            && self.ctrl.is_empty()
        {
            self.queue_ctrl(ControlBody::KeepAlive);
        }
    }

    fn nak_interval(&self) -> Duration {
        (self.rtt + self.rtt_var * 4).max(MIN_NAK_INTERVAL)
    }

    fn send_full_ack(&mut self, now: Instant) {
        let ack_seq = self.rcv_ack;
        if ack_seq == self.last_ackacked {
            return;
        }
        if let Some((seq, at)) = self.last_full_ack {
            // Same ACK as last time: repeat only after a round trip without ACKACK.
            if seq == ack_seq && now.saturating_duration_since(at) < self.rtt * 2 {
                return;
            }
        }
        self.ack_number = self.ack_number.wrapping_add(1).max(1);
        let n = self.ack_number;
        if self.ack_history.len() >= ACK_HISTORY {
            self.ack_history.pop_front();
        }
        self.ack_history.push_back((n, ack_seq, now));
        self.last_full_ack = Some((ack_seq, now));
        self.pkts_since_ack = 0;
        let avail = RECV_BUFFER_PACKETS.saturating_sub(self.buf.len()) as u32;
        let rate = self.stats.receive_packet_rate.min(u64::from(u32::MAX)) as u32;
        let byte_rate = (self.stats.receive_bitrate / 8).min(u64::from(u32::MAX)) as u32;
        self.queue_ctrl(ControlBody::Ack(Ack {
            ack_number: n,
            ack_seq,
            info: AckInfo::Full {
                rtt: self.rtt.as_micros().min(u128::from(u32::MAX)) as u32,
                rtt_var: self.rtt_var.as_micros().min(u128::from(u32::MAX)) as u32,
                buffer_available: avail,
                packet_rate: rate,
                link_capacity: rate,
                receive_rate: byte_rate,
            },
        }));
    }

    fn send_periodic_nak(&mut self, now: Instant) {
        let interval = self.nak_interval();
        let mut ranges: Vec<LossRange> = Vec::new();
        let base = self.rcv_base;
        for (i, slot) in self.buf.iter_mut().enumerate() {
            if let Slot::Missing { last_nak } = slot {
                if now.saturating_duration_since(*last_nak) < interval {
                    continue;
                }
                let seq = base.add(i as u32);
                match ranges.last_mut() {
                    Some(r) if r.last.next() == seq => {
                        r.last = seq;
                    }
                    _ => {
                        if ranges.len() >= MAX_NAK_ENTRIES {
                            break;
                        }
                        ranges.push(LossRange {
                            first: seq,
                            last: seq,
                        });
                    }
                }
                *last_nak = now;
            }
        }
        if !ranges.is_empty() {
            self.stats.naks_sent += 1;
            self.queue_ctrl(ControlBody::Nak(ranges));
        }
    }

    /// The next datagram to send to the peer, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let ts = self.timestamp(now);
        if let Some(body) = self.ctrl.pop_front() {
            self.last_sent = now;
            return Some(
                Packet::Control(ControlPacket {
                    timestamp: ts,
                    dest: self.peer_id,
                    body,
                })
                .to_bytes(),
            );
        }
        if self.closed {
            return None;
        }
        let una = self.snd_una();
        while let Some(seq) = self.loss_queue.pop_front() {
            let i = seq.diff(una);
            if i < 0 {
                continue;
            }
            if let Some(s) = self.snd_buf.get_mut(i as usize) {
                if s.in_loss {
                    s.in_loss = false;
                    self.stats.packets_retransmitted += 1;
                    let pkt = data_packet(s, self.peer_id, true);
                    self.last_sent = now;
                    return Some(pkt);
                }
            }
        }
        let i = self.snd_next_tx.diff(una);
        if i >= 0 {
            if let Some(s) = self.snd_buf.get(i as usize) {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += s.payload.len() as u64;
                let pkt = data_packet(s, self.peer_id, false);
                self.snd_next_tx = self.snd_next_tx.next();
                self.last_sent = now;
                return Some(pkt);
            }
        }
        None
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t = self.next_ack.min(self.next_nak);
        for c in [
            add(self.last_recv, self.idle_timeout),
            add(self.last_sent, KEEPALIVE_INTERVAL),
            self.next_delivery(),
            self.snd_buf.front().and_then(|f| {
                add(
                    f.origin,
                    self.peer_latency.max(SEND_DROP_MIN) + SEND_DROP_EXTRA,
                )
            }),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(c);
        }
        Some(t)
    }
}

fn data_packet(s: &SendSlot, dest: u32, retransmitted: bool) -> Vec<u8> {
    Packet::Data(DataPacket {
        seq: s.seq,
        position: PacketPosition::Only,
        in_order: false,
        key: s.key,
        retransmitted,
        msgno: s.msgno,
        timestamp: s.timestamp,
        dest,
        payload: s.payload.clone(),
    })
    .to_bytes()
}
