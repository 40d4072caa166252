//! A blocking SRT receiver: one std UDP socket driving a `Listener` and its connections.
//!
//! ```text
//! cargo run -p tidegate-srt --example srt_recv -- 127.0.0.1:9000 [--passphrase P] [--out FILE] [--seconds N] [--reject CODE]
//! ```
//! Prints each connection's stream ID and, when it closes (or after `--seconds`), the bytes
//! received and its statistics.
// An example, a tool for people run by hand: it may unwrap, panic and index; the crate's
// deny lints are for its library code, which peer input reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tidegate_srt::{
    peek_dest_socket_id, AcceptParams, Connection, Event, Listener, ListenerConfig, ListenerOutput,
    RejectReason,
};

/// What the receiver is told to do.
#[derive(Debug, Clone, Default)]
pub struct RecvOptions {
    /// Passphrase required from callers.
    pub passphrase: Option<String>,
    /// Write the payload here.
    pub out: Option<std::path::PathBuf>,
    /// Stop after this long.
    pub seconds: Option<u64>,
    /// Reject every caller with this code.
    pub reject: Option<u32>,
    /// Receive latency (ms).
    pub latency: Option<u64>,
    /// Stop after the first connection closes.
    pub once: bool,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct RecvReport {
    /// Stream IDs of accepted connections.
    pub stream_ids: Vec<Option<String>>,
    /// Payload bytes received over all connections.
    pub bytes: u64,
    /// Rejection reasons sent.
    pub rejected: Vec<RejectReason>,
    /// Statistics of each finished connection.
    pub stats: Vec<tidegate_srt::Stats>,
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().ok_or("usage: srt_recv ADDR")?.parse()?;
    let mut o = RecvOptions {
        once: true,
        ..RecvOptions::default()
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--passphrase" => o.passphrase = args.next(),
            "--out" => o.out = args.next().map(Into::into),
            "--seconds" => o.seconds = args.next().map(|s| s.parse::<u64>()).transpose()?,
            "--reject" => o.reject = args.next().map(|s| s.parse::<u32>()).transpose()?,
            "--latency" => o.latency = args.next().map(|s| s.parse::<u64>()).transpose()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let sock = UdpSocket::bind(addr)?;
    println!("listening on {}", sock.local_addr()?);
    let report = run(&sock, &o)?;
    println!("{report:?}");
    Ok(())
}

/// Serves callers on `sock` until the options say stop.
pub fn run(sock: &UdpSocket, o: &RecvOptions) -> Result<RecvReport, Box<dyn std::error::Error>> {
    let passphrase = o.passphrase.clone();
    let reject = o.reject;
    let latency = o.latency;
    let mut report = RecvReport::default();
    let t0 = Instant::now();
    // SYN cookies, socket IDs and keys come from this secret: from the OS, or no listener.
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let mut listener = Listener::new(t0, ListenerConfig::new(secret));
    let mut conns: HashMap<u32, (Connection, SocketAddr, u64)> = HashMap::new();
    let mut out = match &o.out {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let deadline = o.seconds.map(|s| t0 + Duration::from_secs(s));
    let mut buf = [0u8; 2048];
    let mut served = false;
    loop {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(100);
        for (c, _, _) in conns.values() {
            if let Some(t) = c.poll_timeout() {
                wake = wake.min(t);
            }
        }
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_micros(200));
        sock.set_read_timeout(Some(wait))?;
        let received = match sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((n, from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if let Some((n, from)) = received {
            let data = &buf[..n];
            match peek_dest_socket_id(data) {
                Some(0) => match listener.handle_datagram(now, from, data) {
                    Ok(ListenerOutput::Transmit(d)) => {
                        sock.send_to(&d, from)?;
                    }
                    Ok(ListenerOutput::Request(req)) => {
                        println!(
                            "request from {} stream id {:?} encrypted {:?}",
                            req.peer_addr(),
                            req.stream_id(),
                            req.key_length()
                        );
                        if let Some(code) = reject {
                            report.rejected.push(RejectReason(code));
                            let d = listener.reject(now, req, RejectReason(code));
                            sock.send_to(&d, from)?;
                        } else {
                            let params = AcceptParams {
                                passphrase: passphrase.clone(),
                                latency: latency.map(Duration::from_millis),
                                enforce_key_length: None,
                            };
                            match listener.accept(now, req, params) {
                                Ok((c, d)) => {
                                    sock.send_to(&d, from)?;
                                    println!(
                                        "accepted socket {:#x} stream id {:?} latency {:?}",
                                        c.socket_id(),
                                        c.stream_id(),
                                        c.latency()
                                    );
                                    conns.insert(c.socket_id(), (c, from, 0));
                                }
                                Err(r) => {
                                    println!("rejected: {}", r.reason);
                                    report.rejected.push(r.reason);
                                    sock.send_to(&r.response, from)?;
                                }
                            }
                        }
                    }
                    Ok(ListenerOutput::Nothing | ListenerOutput::BadCookie) => {}
                    Err(e) => eprintln!("bad handshake datagram: {e}"),
                },
                Some(id) => {
                    if let Some((c, peer, _)) = conns.get_mut(&id) {
                        if *peer == from {
                            if let Err(e) = c.handle_datagram(now, data) {
                                eprintln!("bad datagram: {e}");
                            }
                        }
                    }
                }
                None => {}
            }
        }
        let mut closed = Vec::new();
        for (id, (c, peer, bytes)) in conns.iter_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
            while let Some(d) = c.poll_transmit(now) {
                sock.send_to(&d, *peer)?;
            }
            while let Some(ev) = c.poll_event() {
                match ev {
                    Event::Payload(p) => {
                        *bytes += p.len() as u64;
                        if let Some(f) = &mut out {
                            f.write_all(&p)?;
                        }
                    }
                    Event::Closed { reason } => {
                        println!("closed: {reason:?}");
                        closed.push(*id);
                    }
                }
            }
        }
        for id in closed {
            if let Some((c, _, bytes)) = conns.remove(&id) {
                println!("stream id {:?} bytes received {bytes}", c.stream_id());
                report.stream_ids.push(c.stream_id().map(str::to_owned));
                report.bytes += bytes;
                report.stats.push(c.stats());
                served = true;
            }
        }
        if o.once && served && conns.is_empty() {
            return Ok(report);
        }
        if deadline.is_some_and(|d| now >= d) {
            for (c, _, bytes) in conns.values() {
                report.stream_ids.push(c.stream_id().map(str::to_owned));
                report.bytes += bytes;
                report.stats.push(c.stats());
            }
            return Ok(report);
        }
    }
}
