//! The caller side of the HSv5 handshake: induction, then conclusion.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::connection::{
    ConnParams, Connection, CryptoParams, Secret, DEFAULT_PEER_IDLE_TIMEOUT, RECV_BUFFER_PACKETS,
};
use crate::crypto::{check_passphrase, KeyLength, KeySet, KeyedRng, KmMessage, KmState, Sek};
use crate::error::Error;
use crate::handshake::{
    encode_peer_ip, ext_flags, Handshake, HandshakeType, HsExtension, RejectReason, SrtHsExt,
    SRT_MAGIC, UDT_DGRAM,
};
use crate::listener::{DEFAULT_LATENCY, OUR_FLAGS, SRT_VERSION};
use crate::packet::{ControlBody, ControlPacket, Packet, MAX_PACKET_SIZE};
use crate::seq::SeqNo;

/// A handshake packet is repeated after this long without an answer (libsrt: 250 ms).
pub const HANDSHAKE_RESEND: Duration = Duration::from_millis(250);
/// Default connect timeout (`SRTO_CONNTIMEO`, 3 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Caller configuration.
#[derive(Clone)]
pub struct CallerConfig {
    /// Random secret for the socket ID, initial sequence number, salt and keys.
    pub secret: [u8; 32],
    /// Stream ID to send (`SRTO_STREAMID`).
    pub stream_id: Option<String>,
    /// Passphrase (10..=79 bytes) to encrypt with; `None`: unencrypted.
    pub passphrase: Option<String>,
    /// Key length when encrypting (`SRTO_PBKEYLEN`).
    pub key_length: KeyLength,
    /// Latency asked for, both directions (`SRTO_LATENCY`).
    pub latency: Duration,
    /// Close after this long without a packet from the peer.
    pub peer_idle_timeout: Duration,
    /// Give up the handshake after this long.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for CallerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerConfig")
            .field("stream_id", &self.stream_id)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("key_length", &self.key_length)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl CallerConfig {
    /// Defaults: no stream ID, unencrypted, AES-128 if a passphrase is set, 120 ms.
    pub fn new(secret: [u8; 32]) -> Self {
        CallerConfig {
            secret,
            stream_id: None,
            passphrase: None,
            key_length: KeyLength::Aes128,
            latency: DEFAULT_LATENCY,
            peer_idle_timeout: DEFAULT_PEER_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

#[derive(Debug)]
enum State {
    Induction,
    Conclusion { hs: Handshake },
    Done,
}

/// An encrypting caller's key material: the KM message it sends, the key that message
/// carries and the passphrase that wraps it.
#[derive(Debug)]
struct CallerKeys {
    km: KmMessage,
    sek: Sek,
    passphrase: Secret,
}

/// The calling side of an SRT connection, until it is established.
///
/// # Driver call order
///
/// Create it, then loop: drain [`Caller::poll_transmit`] (send each datagram to the
/// remote), wait for a datagram or [`Caller::poll_timeout`], feed it to
/// [`Caller::handle_datagram`] or call [`Caller::handle_timeout`], and check
/// [`Caller::poll_outcome`]: `Ok(Connection)` continues with that connection (datagrams
/// then go to it), `Err` ends the attempt (rejection or timeout).
#[derive(Debug)]
pub struct Caller {
    config: CallerConfig,
    remote: SocketAddr,
    start: Instant,
    deadline: Instant,
    next_send: Instant,
    state: State,
    socket_id: u32,
    isn: SeqNo,
    keys: Option<CallerKeys>,
    rng: KeyedRng,
    outcome: Option<Result<Connection, Error>>,
}

impl Caller {
    /// Starts connecting to `remote` at `now`.
    pub fn new(now: Instant, remote: SocketAddr, config: CallerConfig) -> Result<Caller, Error> {
        let mut rng = KeyedRng::new(config.secret);
        let mut socket_id = 0;
        while socket_id == 0 {
            socket_id = rng.next_u32() & 0x3FFF_FFFF;
        }
        let isn = SeqNo::new(rng.next_u32());
        let keys = match &config.passphrase {
            None => None,
            Some(p) => {
                check_passphrase(p)?;
                let sek = rng.sek(config.key_length);
                let mut salt = [0u8; 16];
                rng.fill(&mut salt);
                Some(CallerKeys {
                    km: KmMessage::seal(p, salt, Some(&sek), None)?,
                    sek,
                    passphrase: Secret(p.clone()),
                })
            }
        };
        if let Some(s) = &config.stream_id {
            if s.len() > crate::handshake::MAX_STREAM_ID_LEN {
                return Err(Error::Config("stream ID longer than 512 bytes"));
            }
        }
        Ok(Caller {
            deadline: now.checked_add(config.connect_timeout).unwrap_or(now),
            config,
            remote,
            start: now,
            next_send: now,
            state: State::Induction,
            socket_id,
            isn,
            keys,
            rng,
            outcome: None,
        })
    }

    /// Our socket ID (the destination ID of the peer's answers).
    pub fn socket_id(&self) -> u32 {
        self.socket_id
    }

    fn induction(&self) -> Handshake {
        Handshake {
            version: 4,
            encryption: 0,
            extension_field: UDT_DGRAM,
            initial_seq: self.isn,
            mtu: MAX_PACKET_SIZE as u32,
            flow_window: RECV_BUFFER_PACKETS as u32,
            hs_type: HandshakeType::Induction,
            socket_id: self.socket_id,
            syn_cookie: 0,
            peer_ip: encode_peer_ip(self.remote.ip()),
            extensions: Vec::new(),
        }
    }

    fn conclusion(&self, cookie: u32) -> Handshake {
        let lat = self.config.latency.as_millis().min(0xFFFF) as u16;
        let mut ext_field = ext_flags::HSREQ;
        let mut extensions = vec![HsExtension::HsReq(SrtHsExt {
            version: SRT_VERSION,
            flags: OUR_FLAGS,
            recv_latency_ms: lat,
            send_latency_ms: lat,
        })];
        let mut encryption = 0;
        if let Some(CallerKeys { km, .. }) = &self.keys {
            ext_field |= ext_flags::KMREQ;
            encryption = km.key_len.hs_field();
            extensions.push(HsExtension::KmReq(Bytes::from(km.to_bytes())));
        }
        if let Some(s) = &self.config.stream_id {
            ext_field |= ext_flags::CONFIG;
            extensions.push(HsExtension::StreamId(s.clone()));
        }
        Handshake {
            version: 5,
            encryption,
            extension_field: ext_field,
            hs_type: HandshakeType::Conclusion,
            syn_cookie: cookie,
            extensions,
            ..self.induction()
        }
    }

    /// Feeds a datagram from the remote. `Err`: malformed, ignored.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let Packet::Control(ControlPacket {
            timestamp,
            body: ControlBody::Handshake(hs),
            ..
        }) = Packet::parse(data)?
        else {
            return Ok(());
        };
        match (&self.state, hs.hs_type) {
            (State::Induction | State::Conclusion { .. }, HandshakeType::Rejection(r)) => {
                self.finish(Err(Error::Rejected(r)));
            }
            (State::Induction, HandshakeType::Induction) => {
                if hs.version < 5 || hs.extension_field != SRT_MAGIC {
                    self.finish(Err(Error::Rejected(RejectReason::VERSION)));
                    return Ok(());
                }
                self.state = State::Conclusion {
                    hs: self.conclusion(hs.syn_cookie),
                };
                self.next_send = now;
            }
            (State::Conclusion { .. }, HandshakeType::Conclusion) => {
                self.on_conclusion(now, timestamp, &hs);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, r: Result<Connection, Error>) {
        self.state = State::Done;
        self.outcome = Some(r);
    }

    fn on_conclusion(&mut self, now: Instant, timestamp: u32, hs: &Handshake) {
        let Some(rsp) = hs.hsrsp() else {
            self.finish(Err(Error::Rejected(RejectReason::ROGUE)));
            return;
        };
        let crypto = match (&self.keys, hs.kmrsp()) {
            (None, _) => None,
            (Some(_), None) => {
                self.finish(Err(Error::Rejected(RejectReason::UNSECURE)));
                return;
            }
            (Some(keys), Some(answer)) => {
                // A KMRSP of one word is not key material but a KM state: refused.
                if let Ok(state) = <[u8; 4]>::try_from(answer.as_ref()) {
                    let state = u32::from_be_bytes(state);
                    let reason = if state == KmState::BadSecret as u32 {
                        RejectReason::BADSECRET
                    } else {
                        RejectReason::UNSECURE
                    };
                    self.finish(Err(Error::Rejected(reason)));
                    return;
                }
                Some(CryptoParams {
                    passphrase: keys.passphrase.clone(),
                    keys: KeySet {
                        salt: keys.km.salt,
                        even: Some(keys.sek.clone()),
                        odd: None,
                    },
                })
            }
        };
        let lat = self.config.latency;
        let recv_latency = lat.max(Duration::from_millis(u64::from(rsp.send_latency_ms)));
        let peer_latency = Duration::from_millis(u64::from(rsp.recv_latency_ms)).max(lat);
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let conn = Connection::new(ConnParams {
            now,
            start: self.start,
            local_id: self.socket_id,
            peer_id: hs.socket_id,
            peer_addr: self.remote,
            stream_id: self.config.stream_id.clone(),
            isn: self.isn,
            peer_start: now
                .checked_sub(Duration::from_micros(u64::from(timestamp)))
                .unwrap_or(now),
            recv_latency,
            peer_latency,
            tlpktdrop: true,
            idle_timeout: self.config.peer_idle_timeout,
            crypto,
            rng: KeyedRng::new(seed),
        });
        self.finish(Ok(conn));
    }

    /// Repeats the handshake or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Done) && now >= self.deadline {
            self.finish(Err(Error::HandshakeTimeout));
        }
    }

    /// The next handshake datagram to send, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next_send {
            return None;
        }
        let hs = match &self.state {
            State::Induction => self.induction(),
            State::Conclusion { hs } => hs.clone(),
            State::Done => return None,
        };
        self.next_send = now.checked_add(HANDSHAKE_RESEND).unwrap_or(now);
        Some(
            Packet::Control(ControlPacket {
                timestamp: now.saturating_duration_since(self.start).as_micros() as u32,
                dest: 0,
                body: ControlBody::Handshake(hs),
            })
            .to_bytes(),
        )
    }

    /// When to call [`Caller::handle_timeout`] / [`Caller::poll_transmit`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            _ => Some(self.next_send.min(self.deadline)),
        }
    }

    /// The result, once: the established connection, or why it failed.
    pub fn poll_outcome(&mut self) -> Option<Result<Connection, Error>> {
        self.outcome.take()
    }
}
