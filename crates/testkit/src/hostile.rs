//! Hostile peers for the end-to-end tests: raw TCP connections from chosen loopback source
//! addresses (127.0.0.2 and up, so that per-source caps never hit the checker on 127.0.0.1),
//! a hand-built RTMP client (handshake, AMF0 commands, oversized message claims, a publisher
//! that never reads), SRT control packets built byte by byte, and what the test needs to
//! watch the server: its RSS and descriptor count from `/proc`, labelled metric samples, and
//! a background checker that keeps fetching a live playlist.
//!
//! Nothing here is a fake: every attack talks to the real `tidegate` binary over loopback.
//! A test imports them with `use tidegate_testkit::hostile::*;`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::hls::parse_media_playlist;

// ---------------------------------------------------------------------------------------
// Sources, sockets and the server's process
// ---------------------------------------------------------------------------------------

/// How many distinct attacker source addresses there are (127.0.0.2 ..= 127.0.0.9).
pub const ATTACKER_ADDRS: u8 = 8;

/// Attacker source address `i` (0-based, wraps): 127.0.0.2 + i mod 8. Never 127.0.0.1,
/// which is the legitimate publisher's and the checker's.
pub fn attacker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(ATTACKER_ADDRS)) as u8)
}

/// A TCP connection to `to` from `from` (port chosen by the kernel), with the receive buffer
/// shrunk to `recv_buffer` bytes when given (set before connecting, so the window the peer
/// sees is small from the first segment).
pub fn tcp_from(
    from: Ipv4Addr,
    to: SocketAddr,
    recv_buffer: Option<usize>,
) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(n) = recv_buffer {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(3))?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// Descriptors this test process wants: the HTTP attack alone holds about a thousand
/// sockets at once.
pub const TEST_FDS_WANTED: u64 = 4096;

/// Raises this process's soft `RLIMIT_NOFILE` towards [`TEST_FDS_WANTED`] (within the hard
/// limit) with util-linux `prlimit`, for machines whose default soft limit is 1024. Returns
/// the soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    let read = || -> Option<(u64, Option<u64>)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut nums = line
            .trim_start_matches("Max open files")
            .split_whitespace()
            .map(|v| v.parse::<u64>().ok());
        Some((nums.next()??, nums.next()?))
    };
    let Some((soft, hard)) = read() else { return 0 };
    if soft >= TEST_FDS_WANTED {
        return soft;
    }
    let want = hard.map_or(TEST_FDS_WANTED, |h| h.min(TEST_FDS_WANTED));
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:"))
        .status();
    read().map_or(soft, |(s, _)| s)
}

/// A UDP socket bound to `from` on a kernel-chosen port.
pub fn udp_from(from: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddrV4::new(from, 0))
        .unwrap_or_else(|e| panic!("cannot bind a UDP socket to {from}: {e}"))
}

/// Whether the peer has closed (or reset) `s`. Drains whatever the peer sent; never
/// blocks. A socket whose peer still holds it open reads `WouldBlock`.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    let _ = s.set_nonblocking(false);
    closed
}

/// How many of `socks` the peer has closed (see [`closed_by_peer`]).
pub fn count_closed(socks: &mut [TcpStream]) -> usize {
    socks.iter_mut().map(closed_by_peer).filter(|c| *c).count()
}

/// Resident set size of process `pid` in KiB (`VmRSS`), 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A deterministic xorshift generator (reproducible runs, no extra crate).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A random non-zero 32-bit value (an SRT socket id or cookie).
    pub fn nonzero_u32(&mut self) -> u32 {
        loop {
            let v = self.next_u64() as u32;
            if v != 0 {
                return v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// Sum of the samples of metric `name` (with or without the `_total` counters get) whose
/// labels include every `(label, value)` of `labels`; 0 when there is none.
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let total = format!("{name}_total");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name && n != total {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.trim().parse::<f64>().ok())?
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

// ---------------------------------------------------------------------------------------
// HTTP by hand
// ---------------------------------------------------------------------------------------

/// Sends one complete `GET path` on `s` (keep-alive) and reads the response head and a body
/// of `Content-Length` bytes. Returns the status code.
pub fn http_get_on(s: &mut TcpStream, path: &str, extra_headers: &str) -> std::io::Result<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n");
    s.write_all(req.as_bytes())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(status);
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "http response"));
        }
        match s.read(&mut chunk)? {
            0 => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "http eof")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// RTMP by hand
// ---------------------------------------------------------------------------------------

/// RTMP message types the attacks use.
pub mod rtmp_type {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// User Control (ping requests among others).
    pub const USER_CONTROL: u8 = 4;
    /// Audio.
    pub const AUDIO: u8 = 8;
    /// Video.
    pub const VIDEO: u8 = 9;
    /// AMF0 command.
    pub const COMMAND_AMF0: u8 = 20;
}

/// The chunk size the hand-built client announces right after the handshake.
pub const RTMP_CHUNK_SIZE: usize = 60_000;

/// An AMF0 value, as far as the attacks need.
pub enum Amf {
    /// Number.
    Num(f64),
    /// String (at most 65535 bytes).
    Str(String),
    /// Null.
    Null,
    /// Object with string keys.
    Obj(Vec<(&'static str, Amf)>),
}

impl Amf {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Amf::Num(n) => {
                out.push(0x00);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf::Str(s) => {
                out.push(0x02);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Amf::Null => out.push(0x05),
            Amf::Obj(fields) => {
                out.push(0x03);
                for (k, v) in fields {
                    out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                    out.extend_from_slice(k.as_bytes());
                    v.write(out);
                }
                out.extend_from_slice(&[0, 0, 0x09]);
            }
        }
    }
}

/// AMF0 encoding of `values`, one after another.
pub fn amf0(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.write(&mut out);
    }
    out
}

/// One RTMP message as chunks of `chunk_size`: a type-0 header on chunk stream `csid`
/// (2..=63) announcing `announced_len` bytes of `msg_type` on message stream `stream_id`,
/// then `payload` (which may be shorter than announced: the rest never comes).
pub fn rtmp_chunks(
    csid: u8,
    msg_type: u8,
    stream_id: u32,
    announced_len: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16 + payload.len() / chunk_size);
    out.push(csid & 0x3F);
    out.extend_from_slice(&[0, 0, 0]); // timestamp
    out.extend_from_slice(&announced_len.to_be_bytes()[1..]);
    out.push(msg_type);
    out.extend_from_slice(&stream_id.to_le_bytes());
    for (i, part) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3F));
        }
        out.extend_from_slice(part);
    }
    out
}

/// A complete RTMP message (announced length = payload length).
pub fn rtmp_message(csid: u8, msg_type: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    rtmp_chunks(
        csid,
        msg_type,
        stream_id,
        payload.len() as u32,
        payload,
        RTMP_CHUNK_SIZE,
    )
}

/// The chunk size an RTMP connection starts with, until a Set Chunk Size.
pub const RTMP_DEFAULT_CHUNK_SIZE: usize = 128;

/// The plain RTMP handshake: C0+C1, read S0+S1+S2, C2 (an echo of S1). The chunk size
/// stays [`RTMP_DEFAULT_CHUNK_SIZE`]. `Err` when the server closes or does not answer
/// within `timeout`: how a refused connection looks from here.
pub fn rtmp_plain_handshake(s: &mut TcpStream, timeout: Duration) -> std::io::Result<()> {
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0; 8]);
    c0c1.extend((0..1528u32).map(|i| (i * 7 + 3) as u8));
    s.write_all(&c0c1)?;
    s.set_read_timeout(Some(timeout))?;
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.read_exact(&mut s0s1s2)?;
    s.write_all(&s0s1s2[1..1537])
}

/// [`rtmp_plain_handshake`], then Set Chunk Size [`RTMP_CHUNK_SIZE`] (sent with the default
/// 128-byte chunking, as it is one chunk).
pub fn rtmp_handshake(s: &mut TcpStream, timeout: Duration) -> std::io::Result<()> {
    rtmp_plain_handshake(s, timeout)?;
    let size = (RTMP_CHUNK_SIZE as u32).to_be_bytes();
    s.write_all(&rtmp_chunks(
        2,
        rtmp_type::SET_CHUNK_SIZE,
        0,
        4,
        &size,
        RTMP_DEFAULT_CHUNK_SIZE,
    ))?;
    Ok(())
}

/// `connect` (app `live`), `createStream` and `publish key` on message stream 1: what an
/// encoder sends after the handshake.
pub fn rtmp_publish_commands(rtmp: SocketAddr, key: &str) -> Vec<u8> {
    let mut out = rtmp_message(
        3,
        rtmp_type::COMMAND_AMF0,
        0,
        &amf0(&[
            Amf::Str("connect".into()),
            Amf::Num(1.0),
            Amf::Obj(vec![
                ("app", Amf::Str("live".into())),
                ("type", Amf::Str("nonprivate".into())),
                (
                    "flashVer",
                    Amf::Str("FMLE/3.0 (compatible; hostile)".into()),
                ),
                ("tcUrl", Amf::Str(format!("rtmp://{rtmp}/live"))),
            ]),
        ]),
    );
    out.extend(rtmp_message(
        3,
        rtmp_type::COMMAND_AMF0,
        0,
        &amf0(&[Amf::Str("createStream".into()), Amf::Num(2.0), Amf::Null]),
    ));
    out.extend(rtmp_message(
        5,
        rtmp_type::COMMAND_AMF0,
        1,
        &amf0(&[
            Amf::Str("publish".into()),
            Amf::Num(0.0),
            Amf::Null,
            Amf::Str(key.into()),
            Amf::Str("live".into()),
        ]),
    ));
    out
}

/// What became of a publish attempt, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishAnswer {
    /// `NetStream.Publish.Start`.
    Started,
    /// An `onStatus` of level error, or the server closed the connection.
    Refused,
    /// Neither within the wait.
    NoAnswer,
}

/// Reads the server's answers on `s` until the publish is started or refused, or `within`
/// passes. (Searches the raw bytes for the status codes: the answers are a few hundred
/// bytes, well inside one 4096-byte chunk.)
pub fn rtmp_publish_outcome(s: &mut TcpStream, within: Duration) -> PublishAnswer {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        if find(&seen, b"NetStream.Publish.Start").is_some() {
            return PublishAnswer::Started;
        }
        if find(&seen, b"NetStream.Publish.").is_some() || find(&seen, b"_error").is_some() {
            return PublishAnswer::Refused;
        }
        if Instant::now() > deadline {
            return PublishAnswer::NoAnswer;
        }
        match s.read(&mut buf) {
            Ok(0) => return PublishAnswer::Refused,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return PublishAnswer::Refused,
        }
    }
}

/// One complete publish attempt from `from`: connect, handshake, publish `key`, wait for the
/// answer. The stream is returned open (the caller decides whether to send, stall or close).
pub fn rtmp_publish_from(
    from: Ipv4Addr,
    rtmp: SocketAddr,
    key: &str,
    recv_buffer: Option<usize>,
) -> (Option<TcpStream>, PublishAnswer) {
    let Ok(mut s) = tcp_from(from, rtmp, recv_buffer) else {
        return (None, PublishAnswer::Refused);
    };
    if rtmp_handshake(&mut s, Duration::from_secs(5)).is_err() {
        return (None, PublishAnswer::Refused);
    }
    if s.write_all(&rtmp_publish_commands(rtmp, key)).is_err() {
        return (None, PublishAnswer::Refused);
    }
    let outcome = rtmp_publish_outcome(&mut s, Duration::from_secs(5));
    (Some(s), outcome)
}

/// An `FCPublish` command whose stream name is `name_len` bytes: the server echoes the name
/// in `onFCPublish`, so every such message makes it write as much as it read.
pub fn rtmp_fcpublish_echo(name_len: usize) -> Vec<u8> {
    rtmp_message(
        3,
        rtmp_type::COMMAND_AMF0,
        0,
        &amf0(&[
            Amf::Str("FCPublish".into()),
            Amf::Num(9.0),
            Amf::Null,
            Amf::Str("x".repeat(name_len.min(65_535))),
        ]),
    )
}

// ---------------------------------------------------------------------------------------
// SRT packets by hand
// ---------------------------------------------------------------------------------------

/// Handshake type of an induction request.
const SRT_HS_INDUCTION: u32 = 1;
/// Handshake type of a conclusion request.
const SRT_HS_CONCLUSION: u32 = 0xFFFF_FFFF;

fn srt_handshake(
    version: u32,
    ext_field: u16,
    hs_type: u32,
    socket_id: u32,
    cookie: u32,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes()); // control, type handshake
    p.extend_from_slice(&0u32.to_be_bytes()); // type-specific
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&0u32.to_be_bytes()); // destination socket id: the listener
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&u32::from(ext_field).to_be_bytes()); // encryption 0 | extension
    p.extend_from_slice(&0x0100_0000u32.to_be_bytes()); // initial sequence number
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&hs_type.to_be_bytes());
    p.extend_from_slice(&socket_id.to_be_bytes());
    p.extend_from_slice(&cookie.to_be_bytes());
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p
}

/// An SRT v4 induction request (what a caller sends first) from socket `socket_id`.
pub fn srt_induction(socket_id: u32) -> Vec<u8> {
    srt_handshake(4, 2, SRT_HS_INDUCTION, socket_id, 0)
}

/// An HSv5 conclusion request from socket `socket_id` carrying SYN cookie `cookie` (for the
/// attacks: a cookie the listener never issued) and no extensions.
pub fn srt_conclusion(socket_id: u32, cookie: u32) -> Vec<u8> {
    srt_handshake(5, 0, SRT_HS_CONCLUSION, socket_id, cookie)
}

/// An SRT SHUTDOWN control packet (16-byte header, 4-byte empty CIF) addressed to socket
/// `dest_socket_id`.
pub fn srt_shutdown(dest_socket_id: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&0x8005_0000u32.to_be_bytes()); // control, type shutdown
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&dest_socket_id.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p
}

/// An HSv5 conclusion as libsrt's caller sends it in live mode: `HSREQ` (version 1.5.0,
/// TSBPD both ways, too-late drop, NAK reports, retransmit flag; 120 ms latency) and the
/// stream id `sid` (libsrt's word-swapped encoding), with the listener's `cookie`.
pub fn srt_conclusion_publish(socket_id: u32, cookie: u32, sid: &str) -> Vec<u8> {
    // HSREQ | CONFIG (a stream id) in the extension field.
    let mut p = srt_handshake(5, 0x1 | 0x4, SRT_HS_CONCLUSION, socket_id, cookie);
    let hsreq: [u32; 3] = [
        0x0001_0500,
        0x01 | 0x02 | 0x08 | 0x10 | 0x20,
        (120 << 16) | 120,
    ];
    p.extend_from_slice(&((1u32 << 16) | 3).to_be_bytes());
    for w in hsreq {
        p.extend_from_slice(&w.to_be_bytes());
    }
    let mut id = sid.as_bytes().to_vec();
    id.resize(id.len().div_ceil(4) * 4, 0);
    for w in id.chunks_exact_mut(4) {
        w.reverse();
    }
    p.extend_from_slice(&((5u32 << 16) | (id.len() / 4) as u32).to_be_bytes());
    p.extend_from_slice(&id);
    p
}

/// What an SRT caller's handshake came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtAnswer {
    /// The listener answered the conclusion with its own: the connection is up.
    Connected,
    /// It answered with a rejection (a handshake type that is a reject code).
    Rejected(u32),
    /// No answer to the induction or the conclusion.
    NoAnswer,
}

/// A caller that completes the handshake for stream id `sid` on `sock` and then sends
/// nothing: a publisher that never carries media.
pub fn srt_connect_silent(
    sock: &UdpSocket,
    to: SocketAddr,
    socket_id: u32,
    sid: &str,
) -> SrtAnswer {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 1500];
    // A handshake answer: control type 0 with a CIF of at least 48 bytes.
    let mut answer = |send: &[u8]| -> Option<[u8; 64]> {
        for _ in 0..4 {
            let _ = sock.send_to(send, to);
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    break;
                };
                if n >= 64 && buf[0..4] == [0x80, 0, 0, 0] {
                    let mut hs = [0u8; 64];
                    hs.copy_from_slice(&buf[..64]);
                    return Some(hs);
                }
            }
        }
        None
    };
    let Some(induction) = answer(&srt_induction(socket_id)) else {
        return SrtAnswer::NoAnswer;
    };
    let word = |hs: &[u8; 64], i: usize| {
        u32::from_be_bytes([
            hs[16 + i * 4],
            hs[17 + i * 4],
            hs[18 + i * 4],
            hs[19 + i * 4],
        ])
    };
    let cookie = word(&induction, 7);
    let Some(conclusion) = answer(&srt_conclusion_publish(socket_id, cookie, sid)) else {
        return SrtAnswer::NoAnswer;
    };
    match word(&conclusion, 5) {
        SRT_HS_CONCLUSION => SrtAnswer::Connected,
        code => SrtAnswer::Rejected(code),
    }
}

// ---------------------------------------------------------------------------------------
// The checker: a viewer on 127.0.0.1 that never stops looking
// ---------------------------------------------------------------------------------------

/// One fetch of the checked playlist.
#[derive(Debug, Clone)]
pub struct Look {
    /// When it was made.
    pub at: Instant,
    /// The playlist's next media sequence number, or why the fetch (of the playlist or of its
    /// newest segment) failed.
    pub next_msn: Result<u64, String>,
}

/// Fetches a live playlist (and its newest segment) every `every` from a background
/// thread, each time on a new connection from 127.0.0.1, and keeps what it saw.
pub struct Checker {
    looks: Arc<Mutex<Vec<Look>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts looking at `url`.
    pub fn start(url: String, every: Duration) -> Checker {
        let looks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let looks = looks.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                // No pooled connections: every look is a new connection, as a new viewer's.
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(4))
                    .max_idle_connections(0)
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let next_msn = look_once(&agent, &url);
                    if let Ok(mut l) = looks.lock() {
                        l.push(Look { at, next_msn });
                    }
                    thread::sleep(every);
                }
            })
        };
        Checker {
            looks,
            stop,
            thread: Some(thread),
        }
    }

    /// Every look made since `since`.
    pub fn since(&self, since: Instant) -> Vec<Look> {
        self.looks
            .lock()
            .map(|l| l.iter().filter(|x| x.at >= since).cloned().collect())
            .unwrap_or_default()
    }

    /// The highest next media sequence number seen so far (0 before the first success).
    pub fn latest_msn(&self) -> u64 {
        self.looks
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.next_msn.as_ref().ok().copied())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// The longest stretch since `since` in which every look failed (from the first failed
    /// look to the next successful one, or to now), with the last error seen in it.
    pub fn longest_outage(&self, since: Instant) -> (Duration, Option<String>) {
        let mut longest = Duration::ZERO;
        let mut why = None;
        let mut started: Option<Instant> = None;
        let mut last_err = None;
        for l in self.since(since) {
            match (&l.next_msn, started) {
                (Err(e), None) => {
                    started = Some(l.at);
                    last_err = Some(e.clone());
                }
                (Err(e), Some(_)) => last_err = Some(e.clone()),
                (Ok(_), Some(s)) => {
                    if l.at - s > longest {
                        longest = l.at - s;
                        why = last_err.take();
                    }
                    started = None;
                }
                (Ok(_), None) => {}
            }
        }
        if let Some(s) = started {
            if s.elapsed() > longest {
                longest = s.elapsed();
                why = last_err;
            }
        }
        (longest, why)
    }

    /// Stops the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn look_once(agent: &ureq::Agent, url: &str) -> Result<u64, String> {
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("playlist: {e}"))?;
    let text = resp
        .into_string()
        .map_err(|e| format!("playlist body: {e}"))?;
    let pl = parse_media_playlist(url, &text)?;
    let newest = pl
        .segments
        .last()
        .ok_or_else(|| "playlist lists no segment".to_string())?;
    let seg_url = pl.segment_url(newest);
    let resp = agent
        .get(&seg_url)
        .call()
        .map_err(|e| format!("segment {seg_url}: {e}"))?;
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("segment {seg_url}: {e}"))?;
    if body.is_empty() {
        return Err(format!("segment {seg_url}: empty"));
    }
    Ok(pl.next_msn())
}
