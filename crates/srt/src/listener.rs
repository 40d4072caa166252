//! The listener side of the HSv5 handshake: stateless induction (SYN cookies), then a
//! conclusion the application accepts or rejects after looking at the stream ID.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::connection::{
    ConnParams, Connection, CryptoParams, Secret, DEFAULT_PEER_IDLE_TIMEOUT, RECV_BUFFER_PACKETS,
};
use crate::crypto::{check_passphrase, KeyLength, KeySet, KeyedRng, KmMessage};
use crate::error::Error;
use crate::handshake::{
    encode_peer_ip, ext_flags, srt_flags, Handshake, HandshakeType, HsExtension, RejectReason,
    SrtHsExt, SRT_MAGIC,
};
use crate::packet::{ControlBody, ControlPacket, Packet, MAX_PACKET_SIZE};
use crate::seq::SeqNo;

/// The SRT version we announce (1.5.0).
pub const SRT_VERSION: u32 = 0x0001_0500;
/// The oldest peer version accepted (1.3.0, the first with HSv5).
pub const MIN_PEER_VERSION: u32 = 0x0001_0300;
/// Default receive latency (`SRTO_RCVLATENCY`, 120 ms).
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(120);
/// SYN cookies are bound to a time bucket of this length; the current and the previous
/// bucket are accepted.
pub const COOKIE_BUCKET: Duration = Duration::from_secs(64);
/// Conclusions awaiting `accept`/`reject` at once; beyond, callers get `SRT_REJ_BACKLOG`.
pub const MAX_PENDING_REQUESTS: usize = 1_024;
/// A request not answered within this time is forgotten.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers kept to repeat when a caller resends its conclusion (the answer was lost).
pub const MAX_REMEMBERED_REPLIES: usize = 1_024;
/// How long an answer is kept for repeats (callers give up after 3 s by default).
pub const REPLY_MEMORY: Duration = Duration::from_secs(10);
/// Handshake flags we announce in HSRSP/HSREQ.
pub(crate) const OUR_FLAGS: u32 = srt_flags::TSBPDSND
    | srt_flags::TSBPDRCV
    | srt_flags::HAICRYPT
    | srt_flags::TLPKTDROP
    | srt_flags::NAKREPORT
    | srt_flags::REXMITFLG;
/// Handshake extension type of the congestion controller name.
const EXT_CONGESTION: u16 = 6;
/// Handshake extension type of the packet filter configuration.
const EXT_FILTER: u16 = 7;
/// Handshake extension type of the group membership.
const EXT_GROUP: u16 = 8;

/// Listener configuration.
#[derive(Clone)]
pub struct ListenerConfig {
    /// Random secret keying SYN cookies, socket IDs and sequence numbers. Give 32 random
    /// bytes (the library reads no entropy itself); fixed values make tests reproducible.
    pub secret: [u8; 32],
    /// Receive latency asked for when `accept` names none (the larger of both sides' wins).
    pub latency: Duration,
    /// Close a connection after this long without a packet from the peer.
    pub peer_idle_timeout: Duration,
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("latency", &self.latency)
            .field("peer_idle_timeout", &self.peer_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl ListenerConfig {
    /// Defaults (120 ms latency, 5 s idle timeout) with the given secret.
    pub fn new(secret: [u8; 32]) -> Self {
        ListenerConfig {
            secret,
            latency: DEFAULT_LATENCY,
            peer_idle_timeout: DEFAULT_PEER_IDLE_TIMEOUT,
        }
    }
}

/// What the application decides for one connection request.
#[derive(Clone, Default)]
pub struct AcceptParams {
    /// The passphrase this stream must be encrypted with; `None`: unencrypted only.
    pub passphrase: Option<String>,
    /// Receive latency for this connection (`None`: the listener's).
    pub latency: Option<Duration>,
    /// Refuse callers whose key length differs (`None`: take the caller's, as libsrt does).
    pub enforce_key_length: Option<KeyLength>,
}

impl std::fmt::Debug for AcceptParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptParams")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("latency", &self.latency)
            .field("enforce_key_length", &self.enforce_key_length)
            .finish()
    }
}

/// A caller that completed the cookie exchange and waits for `accept` or `reject`.
#[derive(Debug, Clone)]
pub struct ConnectionRequest {
    peer: SocketAddr,
    hs: Handshake,
    hsreq: SrtHsExt,
    hs_timestamp: u32,
    received_at: Instant,
}

impl ConnectionRequest {
    /// The caller's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
    /// The stream ID the caller sent (`SRTO_STREAMID`), if any.
    pub fn stream_id(&self) -> Option<&str> {
        self.hs.stream_id()
    }
    /// The caller's socket ID.
    pub fn peer_socket_id(&self) -> u32 {
        self.hs.socket_id
    }
    /// The caller's key length if it encrypts.
    pub fn key_length(&self) -> Option<KeyLength> {
        self.hs
            .kmreq()
            .and_then(|k| KmMessage::parse(k).ok())
            .map(|m| m.key_len)
    }
    /// Whether the caller encrypts.
    pub fn is_encrypted(&self) -> bool {
        self.hs.kmreq().is_some()
    }
    /// The caller's SRT version, `0x00MMmmpp`.
    pub fn peer_version(&self) -> u32 {
        self.hsreq.version
    }
}

/// What the listener asks of its driver after a datagram.
#[derive(Debug)]
pub enum ListenerOutput {
    /// Nothing to do (ignored or already answered).
    Nothing,
    /// A conclusion whose SYN cookie is not one this listener gave to that address in the
    /// current or the previous bucket (spoofed, guessed or stale): ignored, nothing sent, no
    /// state kept. Reported apart from [`ListenerOutput::Nothing`] so a driver can count it.
    BadCookie,
    /// Send this datagram back to the sender.
    Transmit(Vec<u8>),
    /// A caller wants to connect: call [`Listener::accept`] or [`Listener::reject`].
    Request(ConnectionRequest),
}

/// A refused connection request.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The reason sent to the caller.
    pub reason: RejectReason,
    /// The rejection handshake to send to the caller.
    pub response: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Reply {
    peer: SocketAddr,
    peer_id: u32,
    response: Option<Vec<u8>>,
    at: Instant,
}

/// The listening side of an SRT socket.
///
/// # Driver call order
///
/// The server owns one UDP socket. For each datagram whose destination socket ID
/// ([`crate::peek_dest_socket_id`]) is 0, it calls [`Listener::handle_datagram`]; other IDs
/// go to the matching [`Connection`]. The listener answers inductions itself
/// ([`ListenerOutput::Transmit`], no state kept) and turns a valid conclusion into a
/// [`ListenerOutput::Request`]; the server inspects [`ConnectionRequest::stream_id`], then
/// calls [`Listener::accept`] (send the returned datagram, register the `Connection` under
/// [`Connection::socket_id`]) or [`Listener::reject`] (send the datagram). Repeated
/// conclusions are answered from memory. The listener has no timers.
#[derive(Debug)]
pub struct Listener {
    config: ListenerConfig,
    start: Instant,
    rng: KeyedRng,
    replies: VecDeque<Reply>,
}

impl Listener {
    /// A listener started at `now`.
    pub fn new(now: Instant, config: ListenerConfig) -> Self {
        Listener {
            rng: KeyedRng::new(config.secret),
            config,
            start: now,
            replies: VecDeque::new(),
        }
    }

    /// Requests and answers remembered (to show a flood costs nothing).
    pub fn state_len(&self) -> usize {
        self.replies.len()
    }

    fn timestamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_micros() as u32
    }

    fn cookie(&self, peer: SocketAddr, bucket: u64) -> u32 {
        let ip = match peer.ip() {
            std::net::IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v) => v.octets(),
        };
        let m = self.rng.mac(&[
            b"cookie",
            &ip,
            &peer.port().to_be_bytes(),
            &bucket.to_be_bytes(),
        ]);
        u32::from_be_bytes([m[0], m[1], m[2], m[3]])
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / COOKIE_BUCKET.as_secs()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(r) = self.replies.front() {
            let limit = if r.response.is_some() {
                REPLY_MEMORY
            } else {
                PENDING_TIMEOUT
            };
            if now.saturating_duration_since(r.at) >= limit {
                self.replies.pop_front();
            } else {
                break;
            }
        }
    }

    fn wrap(&self, now: Instant, dest: u32, hs: Handshake) -> Vec<u8> {
        Packet::Control(ControlPacket {
            timestamp: self.timestamp(now),
            dest,
            body: ControlBody::Handshake(hs),
        })
        .to_bytes()
    }

    fn rejection_hs(req: &Handshake, peer: SocketAddr, reason: RejectReason) -> Handshake {
        Handshake {
            version: 5,
            encryption: 0,
            extension_field: 0,
            initial_seq: req.initial_seq,
            mtu: req.mtu,
            flow_window: req.flow_window,
            hs_type: HandshakeType::Rejection(reason),
            socket_id: 0,
            syn_cookie: req.syn_cookie,
            peer_ip: encode_peer_ip(peer.ip()),
            extensions: Vec::new(),
        }
    }

    fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        peer_id: u32,
        response: Option<Vec<u8>>,
    ) {
        if let Some(r) = self
            .replies
            .iter_mut()
            .find(|r| r.peer == peer && r.peer_id == peer_id)
        {
            r.response = response;
            r.at = now;
            return;
        }
        if self.replies.len() >= MAX_REMEMBERED_REPLIES {
            self.replies.pop_front();
        }
        self.replies.push_back(Reply {
            peer,
            peer_id,
            response,
            at: now,
        });
    }

    /// Feeds one datagram sent to socket ID 0 from `from`. `Err`: malformed, ignored.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<ListenerOutput, Error> {
        self.expire(now);
        let Packet::Control(ControlPacket {
            timestamp,
            body: ControlBody::Handshake(hs),
            ..
        }) = Packet::parse(data)?
        else {
            return Ok(ListenerOutput::Nothing);
        };
        match hs.hs_type {
            HandshakeType::Induction => {
                let mut resp = hs.clone();
                resp.version = 5;
                resp.encryption = 0;
                resp.extension_field = SRT_MAGIC;
                resp.syn_cookie = self.cookie(from, self.bucket(now));
                resp.peer_ip = encode_peer_ip(from.ip());
                resp.extensions.clear();
                Ok(ListenerOutput::Transmit(self.wrap(now, hs.socket_id, resp)))
            }
            HandshakeType::Conclusion => self.on_conclusion(now, from, timestamp, hs),
            _ => Ok(ListenerOutput::Nothing),
        }
    }

    fn on_conclusion(
        &mut self,
        now: Instant,
        from: SocketAddr,
        timestamp: u32,
        hs: Handshake,
    ) -> Result<ListenerOutput, Error> {
        let bucket = self.bucket(now);
        let valid = hs.syn_cookie == self.cookie(from, bucket)
            || (bucket > 0 && hs.syn_cookie == self.cookie(from, bucket - 1));
        if !valid {
            // Unknown cookie: spoofed or stale. No answer, no state.
            return Ok(ListenerOutput::BadCookie);
        }
        if let Some(r) = self
            .replies
            .iter()
            .find(|r| r.peer == from && r.peer_id == hs.socket_id)
        {
            return Ok(match &r.response {
                Some(resp) => ListenerOutput::Transmit(resp.clone()),
                None => ListenerOutput::Nothing,
            });
        }
        let reject = |this: &mut Self, reason| {
            let resp = this.wrap(now, hs.socket_id, Self::rejection_hs(&hs, from, reason));
            this.remember(now, from, hs.socket_id, Some(resp.clone()));
            Ok(ListenerOutput::Transmit(resp))
        };
        if hs.version != 5 {
            return reject(self, RejectReason::VERSION);
        }
        let Some(hsreq) = hs.hsreq() else {
            return reject(self, RejectReason::ROGUE);
        };
        if hsreq.version < MIN_PEER_VERSION {
            return reject(self, RejectReason::VERSION);
        }
        if hsreq.flags & srt_flags::STREAM != 0 {
            return reject(self, RejectReason::MESSAGEAPI);
        }
        for e in &hs.extensions {
            if let HsExtension::Other { ext_type, data } = e {
                match *ext_type {
                    EXT_CONGESTION => {
                        let name = crate::handshake::decode_stream_id(data).unwrap_or_default();
                        if name != "live" {
                            return reject(self, RejectReason::CONGESTION);
                        }
                    }
                    EXT_FILTER => return reject(self, RejectReason::FILTER),
                    EXT_GROUP => return reject(self, RejectReason::GROUP),
                    _ => {}
                }
            }
        }
        let pending = self.replies.iter().filter(|r| r.response.is_none()).count();
        if pending >= MAX_PENDING_REQUESTS {
            return reject(self, RejectReason::BACKLOG);
        }
        self.remember(now, from, hs.socket_id, None);
        Ok(ListenerOutput::Request(ConnectionRequest {
            peer: from,
            hs,
            hsreq,
            hs_timestamp: timestamp,
            received_at: now,
        }))
    }

    /// Refuses a request; send the returned datagram to the caller.
    pub fn reject(
        &mut self,
        now: Instant,
        req: ConnectionRequest,
        reason: RejectReason,
    ) -> Vec<u8> {
        let resp = self.wrap(
            now,
            req.hs.socket_id,
            Self::rejection_hs(&req.hs, req.peer, reason),
        );
        self.remember(now, req.peer, req.hs.socket_id, Some(resp.clone()));
        resp
    }

    /// Accepts a request with this connection's passphrase and latency. On success, send
    /// the returned datagram and route the connection's socket ID to it. The request can
    /// still be refused here (wrong or missing passphrase, key length); then send the
    /// rejection's datagram. Same as [`Listener::verify`] then [`Listener::complete`].
    pub fn accept(
        &mut self,
        now: Instant,
        req: ConnectionRequest,
        params: AcceptParams,
    ) -> Result<(Connection, Vec<u8>), Rejection> {
        let verified = self.verify(now, req, &params)?;
        Ok(self.complete(now, verified))
    }

    /// Checks a request against this connection's passphrase, key length and latency
    /// without answering it yet, so the application can still refuse a request whose
    /// handshake is good (e.g. its stream is busy) with a rejection code of its own:
    /// [`Listener::complete`] it, or [`Listener::reject`] its [`Verified::into_request`].
    /// A request that fails the checks is refused here; send the rejection's datagram.
    pub fn verify(
        &mut self,
        now: Instant,
        req: ConnectionRequest,
        params: &AcceptParams,
    ) -> Result<Verified, Rejection> {
        match self.check(&req, params) {
            Ok((crypto, recv_latency, peer_latency)) => Ok(Verified {
                req,
                crypto,
                recv_latency,
                peer_latency,
            }),
            Err(reason) => Err(Rejection {
                reason,
                response: self.reject(now, req, reason),
            }),
        }
    }

    /// The crypto state and the receive and peer latencies of a request, or why not.
    fn check(
        &self,
        req: &ConnectionRequest,
        params: &AcceptParams,
    ) -> Result<(Option<CryptoParams>, Duration, Duration), RejectReason> {
        let hs = &req.hs;
        let latency = params.latency.unwrap_or(self.config.latency);
        let recv_latency = latency.max(Duration::from_millis(u64::from(req.hsreq.send_latency_ms)));
        let peer_latency = latency.max(Duration::from_millis(u64::from(req.hsreq.recv_latency_ms)));
        let crypto = match (hs.kmreq(), &params.passphrase) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => return Err(RejectReason::UNSECURE),
            (Some(km), Some(pass)) => {
                check_passphrase(pass).map_err(|_| RejectReason::IPE)?;
                let m = KmMessage::parse(km).map_err(|_| RejectReason::ROGUE)?;
                if params.enforce_key_length.is_some_and(|k| k != m.key_len) {
                    return Err(RejectReason::UNSECURE);
                }
                let (even, odd) = m.open(pass).map_err(|_| RejectReason::BADSECRET)?;
                Some(CryptoParams {
                    passphrase: Secret(pass.clone()),
                    keys: KeySet {
                        salt: m.salt,
                        even,
                        odd,
                    },
                })
            }
        };
        Ok((crypto, recv_latency, peer_latency))
    }

    /// Answers a [`Verified`] request: send the returned datagram and route the
    /// connection's socket ID (from the request's address) to the connection.
    pub fn complete(&mut self, now: Instant, verified: Verified) -> (Connection, Vec<u8>) {
        let Verified {
            req,
            crypto,
            recv_latency,
            peer_latency,
        } = verified;
        let hs = &req.hs;
        let mut local_id = 0;
        while local_id == 0 {
            local_id = self.rng.next_u32() & 0x3FFF_FFFF;
        }
        let mut ext_field = ext_flags::HSREQ;
        let mut extensions = vec![HsExtension::HsRsp(SrtHsExt {
            version: SRT_VERSION,
            flags: OUR_FLAGS,
            recv_latency_ms: recv_latency.as_millis().min(0xFFFF) as u16,
            send_latency_ms: peer_latency.as_millis().min(0xFFFF) as u16,
        })];
        if let Some(km) = hs.kmreq() {
            ext_field |= ext_flags::KMREQ;
            extensions.push(HsExtension::KmRsp(km.clone()));
        }
        let resp = Handshake {
            version: 5,
            encryption: 0,
            extension_field: ext_field,
            initial_seq: hs.initial_seq,
            mtu: hs.mtu.min(MAX_PACKET_SIZE as u32),
            flow_window: RECV_BUFFER_PACKETS as u32,
            hs_type: HandshakeType::Conclusion,
            socket_id: local_id,
            syn_cookie: hs.syn_cookie,
            peer_ip: encode_peer_ip(req.peer.ip()),
            extensions,
        };
        let response = self.wrap(now, hs.socket_id, resp);
        self.remember(now, req.peer, hs.socket_id, Some(response.clone()));
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let peer_start = req
            .received_at
            .checked_sub(Duration::from_micros(u64::from(req.hs_timestamp)))
            .unwrap_or(req.received_at);
        let conn = Connection::new(ConnParams {
            now,
            start: self.start,
            local_id,
            peer_id: hs.socket_id,
            peer_addr: req.peer,
            stream_id: hs.stream_id().map(str::to_owned),
            isn: SeqNo::new(hs.initial_seq.get()),
            peer_start,
            recv_latency,
            peer_latency,
            tlpktdrop: req.hsreq.flags & srt_flags::TLPKTDROP != 0,
            idle_timeout: self.config.peer_idle_timeout,
            crypto,
            rng: KeyedRng::new(seed),
        });
        (conn, response)
    }
}

/// A connection request whose handshake passed [`Listener::verify`], not answered yet.
#[derive(Debug)]
pub struct Verified {
    req: ConnectionRequest,
    crypto: Option<CryptoParams>,
    recv_latency: Duration,
    peer_latency: Duration,
}

impl Verified {
    /// The request (to [`Listener::reject`] it after all).
    pub fn into_request(self) -> ConnectionRequest {
        self.req
    }
    /// The request.
    pub fn request(&self) -> &ConnectionRequest {
        &self.req
    }
    /// Whether the connection will be encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_some()
    }
}
