//! Deterministic simulation: a caller and a listener over a seeded lossy network with a
//! simulated clock, always advancing to the earliest deadline.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_srt::{
    peek_dest_socket_id, AcceptParams, Caller, CallerConfig, Connection, ConnectionRequest, Error,
    Event, Listener, ListenerConfig, ListenerOutput,
};

/// xorshift64*: a tiny seeded generator so runs are reproducible.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub const CALLER_ADDR: &str = "10.0.0.1:5000";
pub const LISTENER_ADDR: &str = "10.0.0.2:9000";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum To {
    Caller,
    Listener,
}

/// A datagram in flight: arrival time, tie-breaker, destination, bytes.
type InFlight = Reverse<(Instant, u64, To, Vec<u8>)>;

/// A network with loss, a base delay and jitter (which reorders).
pub struct Net {
    pub rng: Rng,
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    seq: u64,
    queue: BinaryHeap<InFlight>,
    pub sent: u64,
    pub dropped: u64,
}

impl Net {
    pub fn new(seed: u64, loss: f64, delay: Duration, jitter: Duration) -> Self {
        Net {
            rng: Rng::new(seed),
            loss,
            delay,
            jitter,
            seq: 0,
            queue: BinaryHeap::new(),
            sent: 0,
            dropped: 0,
        }
    }
    pub fn send(&mut self, now: Instant, to: To, data: Vec<u8>) {
        self.sent += 1;
        if self.rng.chance(self.loss) {
            self.dropped += 1;
            return;
        }
        let j = self.rng.below(self.jitter.as_micros() as u64 + 1);
        let at = now + self.delay + Duration::from_micros(j);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, to, data)));
    }
    pub fn next_time(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, ..))| *t)
    }
    pub fn pop_due(&mut self, now: Instant) -> Option<(To, Vec<u8>)> {
        if self.next_time()? <= now {
            self.queue.pop().map(|Reverse((_, _, to, d))| (to, d))
        } else {
            None
        }
    }
}

pub fn caller_addr() -> SocketAddr {
    CALLER_ADDR.parse().unwrap()
}
pub fn listener_addr() -> SocketAddr {
    LISTENER_ADDR.parse().unwrap()
}

/// Runs the handshake over `net`. `decide` sees each request and returns the accept
/// parameters, or `Err(reason)` to reject.
pub fn handshake(
    now: &mut Instant,
    net: &mut Net,
    caller_cfg: CallerConfig,
    decide: impl Fn(&ConnectionRequest) -> Result<AcceptParams, tidegate_srt::RejectReason>,
) -> (
    Result<Connection, Error>,
    Option<Result<Connection, tidegate_srt::RejectReason>>,
) {
    let mut listener = Listener::new(*now, ListenerConfig::new([42; 32]));
    let mut caller = Caller::new(*now, listener_addr(), caller_cfg).unwrap();
    let mut server_side: Option<Result<Connection, tidegate_srt::RejectReason>> = None;
    loop {
        while let Some(d) = caller.poll_transmit(*now) {
            net.send(*now, To::Listener, d);
        }
        if let Some(out) = caller.poll_outcome() {
            return (out, server_side);
        }
        while let Some((to, d)) = net.pop_due(*now) {
            match to {
                To::Caller => {
                    let _ = caller.handle_datagram(*now, &d);
                }
                To::Listener => {
                    assert_eq!(peek_dest_socket_id(&d), Some(0));
                    match listener.handle_datagram(*now, caller_addr(), &d) {
                        Ok(ListenerOutput::Transmit(r)) => net.send(*now, To::Caller, r),
                        Ok(ListenerOutput::Request(req)) => match decide(&req) {
                            Ok(p) => match listener.accept(*now, req, p) {
                                Ok((c, r)) => {
                                    net.send(*now, To::Caller, r);
                                    server_side = Some(Ok(c));
                                }
                                Err(rej) => {
                                    net.send(*now, To::Caller, rej.response);
                                    server_side = Some(Err(rej.reason));
                                }
                            },
                            Err(reason) => {
                                let r = listener.reject(*now, req, reason);
                                net.send(*now, To::Caller, r);
                                server_side = Some(Err(reason));
                            }
                        },
                        Ok(ListenerOutput::Nothing) => {}
                        Ok(ListenerOutput::BadCookie) => panic!("the caller's cookie was refused"),
                        Err(e) => panic!("listener refused a handshake datagram: {e}"),
                    }
                }
            }
            while let Some(d) = caller.poll_transmit(*now) {
                net.send(*now, To::Listener, d);
            }
            if let Some(out) = caller.poll_outcome() {
                return (out, server_side);
            }
        }
        caller.handle_timeout(*now);
        let next = [caller.poll_timeout(), net.next_time()]
            .into_iter()
            .flatten()
            .min()
            .expect("handshake stalled");
        *now = next.max(*now);
    }
}

/// Both ends of an established connection plus the network between them.
pub struct Pair {
    pub now: Instant,
    pub net: Net,
    pub caller: Connection,
    pub listener: Connection,
    pub caller_events: Vec<Event>,
    pub listener_events: Vec<Event>,
}

impl Pair {
    pub fn new(mut net: Net, caller_cfg: CallerConfig, params: AcceptParams) -> Pair {
        let mut now = Instant::now();
        let (c, l) = handshake(&mut now, &mut net, caller_cfg, |_| Ok(params.clone()));
        let caller = c.expect("caller connected");
        let listener = l
            .expect("listener saw a request")
            .expect("listener accepted");
        Pair {
            now,
            net,
            caller,
            listener,
            caller_events: Vec::new(),
            listener_events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(d) = self.caller.poll_transmit(self.now) {
            self.net.send(self.now, To::Listener, d);
        }
        while let Some(d) = self.listener.poll_transmit(self.now) {
            self.net.send(self.now, To::Caller, d);
        }
        while let Some(e) = self.caller.poll_event() {
            self.caller_events.push(e);
        }
        while let Some(e) = self.listener.poll_event() {
            self.listener_events.push(e);
        }
    }

    /// Processes everything due at `self.now`, then moves the clock to the earliest of the
    /// next deadline and `until`. Returns false when nothing is scheduled any more.
    pub fn step(&mut self, until: Instant) -> bool {
        self.drain();
        while let Some((to, d)) = self.net.pop_due(self.now) {
            let r = match to {
                To::Caller => self.caller.handle_datagram(self.now, &d),
                To::Listener => {
                    assert_eq!(peek_dest_socket_id(&d), Some(self.listener.socket_id()));
                    self.listener.handle_datagram(self.now, &d)
                }
            };
            r.expect("peers only send well-formed datagrams");
            self.drain();
        }
        for c in [&mut self.caller, &mut self.listener] {
            if c.poll_timeout().is_some_and(|t| t <= self.now) {
                c.handle_timeout(self.now);
            }
        }
        self.drain();
        let next = [
            self.caller.poll_timeout(),
            self.listener.poll_timeout(),
            self.net.next_time(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                self.now = t.min(until).max(self.now);
                true
            }
            None => {
                self.now = until.max(self.now);
                false
            }
        }
    }

    /// Runs until `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.now < t {
            self.step(t);
        }
        self.step(t);
    }

    /// Payloads the listener delivered.
    pub fn listener_payloads(&self) -> Vec<Bytes> {
        self.listener_events
            .iter()
            .filter_map(|e| match e {
                Event::Payload(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A 1316-byte payload carrying its index.
pub fn payload(i: u64) -> Bytes {
    let mut v = vec![(i % 251) as u8; 1316];
    v[..8].copy_from_slice(&i.to_be_bytes());
    Bytes::from(v)
}

pub fn index_of(p: &[u8]) -> u64 {
    u64::from_be_bytes(p[..8].try_into().unwrap())
}

/// Streams `seconds` of `bitrate` in 1316-byte payloads from the caller, then runs
/// `tail` more. Returns the number of payloads sent.
pub fn stream(pair: &mut Pair, seconds: u64, bitrate: u64, tail: Duration) -> u64 {
    let interval = Duration::from_nanos(1316 * 8 * 1_000_000_000 / bitrate);
    let start = pair.now;
    let end = start + Duration::from_secs(seconds);
    let mut next_send = start;
    let mut i = 0;
    while next_send < end {
        pair.run_until(next_send);
        pair.caller.send(pair.now, payload(i)).unwrap();
        i += 1;
        next_send += interval;
    }
    pair.run_until(end + tail);
    i
}
