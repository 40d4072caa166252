//! SRT caller (pull): a configured stream pulls from a remote SRT listener (an encoder or
//! contribution gateway that only listens, e.g. ffmpeg `mode=listener`).
//!
//! One task per `[[pull]]` entry. Each attempt binds a fresh UDP socket, runs the sans-IO
//! [`Caller`] handshake, then hands the established [`tidegate_srt::Connection`] to the same
//! [`ConnectionDriver`] the listener uses (SRT → MPEG-TS demuxer → publisher). When the
//! connection fails or ends, the task tries again with capped exponential backoff
//! ([`BACKOFF_MIN`] → [`BACKOFF_MAX`]); meanwhile the stream follows the normal lifecycle
//! (reconnecting, resumed with a discontinuity, ended after the reconnect window).
//!
//! In a cluster every replica may carry the same `[[pull]]` list: before calling its
//! source a worker looks at the stream's lease, and while another worker holds it live it
//! stands by (polls every [`STANDBY_POLL`]) instead of calling. A pull never takes a stream
//! from a live holder ([`crate::stream::Streams::begin_pull`]). When the pulling worker dies
//! or drains, its lease lapses (or says the publisher left) and a standing-by worker calls
//! the source and continues the playlist.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tidegate_srt::{Caller, CallerConfig, Error as SrtError, KeyLength};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::srt::{os_secret, send, ConnectionDriver, Inbox};
use crate::config::PullConfig;
use crate::metrics::{ConnectionErrorReason as Reason, Protocol, ProtocolLabels};
use crate::store::StreamId;
use crate::Context;

/// First wait after a failed attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a standing-by worker looks at the lease of the worker that pulls.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Largest receive latency a pull URL may ask for.
const MAX_LATENCY: Duration = Duration::from_secs(10);
/// Largest datagram read (SRT live packets are 1332 bytes; room for GRO batches).
const DATAGRAM_BUF: usize = 64 * 1024;

/// A parsed `srt://host:port?...` pull URL (libsrt's URI syntax, caller mode).
#[derive(Clone, PartialEq, Eq)]
pub struct PullSource {
    /// Host name or IP address (without IPv6 brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// `streamid=`: the stream ID sent to the listener.
    pub stream_id: Option<String>,
    /// `passphrase=`: encrypt with this passphrase.
    pub passphrase: Option<String>,
    /// `pbkeylen=`: AES key length when encrypting (16 unless set).
    pub key_length: KeyLength,
    /// `latency=` (milliseconds, or with a unit: `200ms`); the server's `srt-latency` unless
    /// set.
    pub latency: Option<Duration>,
    /// `conntimeo=` (milliseconds): how long one handshake attempt may take.
    pub connect_timeout: Duration,
    /// `peeridletimeo=` (milliseconds): silence after which the connection is declared dead.
    pub peer_idle_timeout: Duration,
}

impl std::fmt::Debug for PullSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSource")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("stream_id", &self.stream_id)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("key_length", &self.key_length)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl PullSource {
    /// `host:port`, as logged (the query, which may hold a passphrase, never is).
    pub fn remote(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Options of a pull URL, listed in error messages.
const OPTIONS: &str = "streamid, passphrase, pbkeylen, latency, conntimeo, peeridletimeo, mode=caller, transtype=live, pkt_size/payload_size=1316";

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

fn millis(key: &str, v: &str) -> Result<Duration, String> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(v)
        .map_err(|_| format!("`{key}={v}`: expected milliseconds (e.g. 200) or a duration (200ms)"))
}

/// Parses a pull URL: `srt://HOST:PORT[?key=value&...]`, options as in libsrt's URI syntax
/// (see [`PullSource`]); times are in milliseconds as libsrt and `srt-live-transmit` take
/// them. Values may be percent-encoded (a stream ID `#!::r=...` must be written `%23!::r=...`).
pub fn parse_srt_url(url: &str) -> Result<PullSource, String> {
    let rest = url
        .strip_prefix("srt://")
        .ok_or("must start with srt:// (tidegate pulls SRT only)")?;
    if rest.contains('#') {
        return Err("`#` starts a URL fragment: write a stream ID `#!::...` as `%23!::...`".into());
    }
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or("an IPv6 host needs a port: srt://[::1]:9000")?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or("needs a port: srt://HOST:PORT")?
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("`{host}` is not a host name or address"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port (1-65535)"))?;
    let mut src = PullSource {
        host: host.to_owned(),
        port,
        stream_id: None,
        passphrase: None,
        key_length: KeyLength::Aes128,
        latency: None,
        connect_timeout: tidegate_srt::caller::DEFAULT_CONNECT_TIMEOUT,
        peer_idle_timeout: tidegate_srt::connection::DEFAULT_PEER_IDLE_TIMEOUT,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("option `{pair}` has no value"))?;
        let v = percent_decode(v)?;
        match k {
            "streamid" => {
                if v.is_empty() || v.len() > tidegate_srt::handshake::MAX_STREAM_ID_LEN {
                    return Err("streamid must be 1 to 512 bytes".into());
                }
                src.stream_id = Some(v);
            }
            "passphrase" => {
                if !(10..=79).contains(&v.len()) {
                    return Err("passphrase must be 10 to 79 characters (SRT rule)".into());
                }
                src.passphrase = Some(v);
            }
            "pbkeylen" => {
                src.key_length = match v.as_str() {
                    "0" | "16" => KeyLength::Aes128,
                    "24" => KeyLength::Aes192,
                    "32" => KeyLength::Aes256,
                    _ => return Err(format!("pbkeylen={v}: must be 16, 24 or 32")),
                }
            }
            "latency" | "rcvlatency" => {
                let d = millis(k, &v)?;
                if d > MAX_LATENCY {
                    return Err(format!(
                        "{k}={v} is over {}s: the unit is milliseconds (libsrt), not ffmpeg's microseconds",
                        MAX_LATENCY.as_secs()
                    ));
                }
                src.latency = Some(d);
            }
            "conntimeo" => {
                src.connect_timeout = millis(k, &v)?;
                if !(Duration::from_millis(100)..=Duration::from_secs(60))
                    .contains(&src.connect_timeout)
                {
                    return Err(format!("conntimeo={v}: must be 100ms to 60s"));
                }
            }
            "peeridletimeo" => {
                src.peer_idle_timeout = millis(k, &v)?;
                if !(Duration::from_millis(500)..=Duration::from_secs(300))
                    .contains(&src.peer_idle_timeout)
                {
                    return Err(format!("peeridletimeo={v}: must be 500ms to 300s"));
                }
            }
            "mode" if v != "caller" => {
                return Err(format!(
                    "mode={v}: tidegate pulls as the caller; the remote end must be the listener"
                ))
            }
            "transtype" if v != "live" => {
                return Err(format!("transtype={v}: only live is supported"));
            }
            "pkt_size" | "payload_size" if v != "1316" => {
                return Err(format!("{k}={v}: only 1316 (7 TS packets) is supported"));
            }
            "mode" | "transtype" | "pkt_size" | "payload_size" => {}
            other => return Err(format!("unknown option `{other}` (supported: {OPTIONS})")),
        }
    }
    if src.passphrase.is_none() && query.contains("pbkeylen=") {
        return Err("pbkeylen needs a passphrase".into());
    }
    Ok(src)
}

/// Replaces the value of `passphrase=` in a URL with `<redacted>` (for `check-config`).
pub fn redact_url(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some(("passphrase", _)) => "passphrase=<redacted>".to_owned(),
            _ => p.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// A UDP socket owned by one pulled connection, read in batches through `quinn-udp` (GRO
/// may coalesce datagrams, which are split again here).
pub(crate) struct PullSocket {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    buf: Vec<u8>,
    pending: VecDeque<(SocketAddr, Bytes)>,
    ingest: Counter,
}

impl PullSocket {
    /// The next datagram and its sender. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> std::io::Result<(SocketAddr, Bytes)> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Ok(d);
            }
            let mut meta = [RecvMeta::default()];
            let socket = &self.socket;
            let state = &self.state;
            let buf = &mut self.buf;
            socket
                .async_io(Interest::READABLE, || {
                    let mut slices = [IoSliceMut::new(buf)];
                    state.recv(UdpSockRef::from(&**socket), &mut slices, &mut meta)
                })
                .await?;
            let [m] = meta;
            let stride = m.stride.max(1);
            let data = self.buf.get(..m.len).unwrap_or(&[]);
            self.ingest.inc_by(data.len() as u64);
            for d in data.chunks(stride) {
                self.pending.push_back((m.addr, Bytes::copy_from_slice(d)));
            }
        }
    }
}

/// Runs one `[[pull]]` entry until `shutdown` is cancelled or the worker drains.
pub async fn run(ctx: Arc<Context>, pull: PullConfig, shutdown: CancellationToken) {
    let (Ok(source), Some(id)) = (
        parse_srt_url(&pull.url),
        StreamId::new("default", &pull.stream),
    ) else {
        // Validated at load; unreachable in a running worker.
        warn!("srt pull: invalid entry skipped");
        return;
    };
    let span = info_span!("srt_pull", stream = %id, remote = %source.remote());
    run_source(ctx, id, source, shutdown).instrument(span).await;
}

async fn run_source(
    ctx: Arc<Context>,
    id: StreamId,
    source: PullSource,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt: u64 = 0;
    let mut standing_by: Option<String> = None;
    // Replicas started together would all find the lease free and call the source at
    // once; a random wait of up to one standby poll lets the first one's lease show.
    // Without OS randomness (the worker checked it at start) there is no jitter.
    let secret = os_secret().unwrap_or_default();
    let jitter = u64::from(u16::from_le_bytes([secret[0], secret[1]]));
    let first_wait = STANDBY_POLL.mul_f64(jitter as f64 / f64::from(u16::MAX));
    tokio::select! {
        () = tokio::time::sleep(first_wait) => {}
        () = shutdown.cancelled() => return,
    }
    while !shutdown.is_cancelled() {
        // Another worker pulls this stream (same `[[pull]]` on every replica): stand by
        // without calling the source, and take over once that worker's lease lapses.
        match ctx.streams.held_elsewhere(&id).await {
            Ok(Some(owner)) => {
                if standing_by.as_deref() != Some(owner.as_str()) {
                    info!(worker = %owner, "srt pull: standing by; another worker pulls this stream");
                    standing_by = Some(owner);
                }
                tokio::select! {
                    () = tokio::time::sleep(STANDBY_POLL) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            Ok(None) => {
                if standing_by.take().is_some() {
                    info!("srt pull: the other worker let go; pulling");
                    backoff = BACKOFF_MIN;
                    attempt = 0;
                }
            }
            // The store is down: pulling anyway keeps the stream going on this worker;
            // the epoch still fences a second puller once the store is back.
            Err(e) => warn!(error = %e, "srt pull: cannot tell whether another worker pulls"),
        }
        attempt += 1;
        let outcome = tokio::select! {
            o = attempt_once(&ctx, &id, &source, &shutdown) => o,
            () = shutdown.cancelled() => break,
        };
        match outcome {
            Attempt::Stop => break,
            Attempt::Streamed => {
                // It worked for a while: the next failure starts from the shortest wait.
                backoff = BACKOFF_MIN;
                attempt = 0;
                continue;
            }
            Attempt::Failed => {}
        }
        info!(
            attempt,
            retry_in_ms = backoff.as_millis() as u64,
            "srt pull: retrying"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    info!("srt pull: stopped");
}

enum Attempt {
    /// Delivered media for a while, then ended: reconnect at once.
    Streamed,
    /// Could not connect or publish: wait, then try again.
    Failed,
    /// The worker is draining: stop pulling.
    Stop,
}

async fn attempt_once(
    ctx: &Arc<Context>,
    id: &StreamId,
    source: &PullSource,
    shutdown: &CancellationToken,
) -> Attempt {
    let metrics = &ctx.metrics;
    let remote = match tokio::net::lookup_host((source.host.as_str(), source.port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => {
                metrics.connection_error(Protocol::Srt, Reason::PullResolve);
                warn!("srt pull: host has no address");
                return Attempt::Failed;
            }
        },
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullResolve);
            warn!(error = %e, "srt pull: cannot resolve the host");
            return Attempt::Failed;
        }
    };
    let local: SocketAddr = if remote.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connected: only the remote's datagrams arrive, and an ICMP "port unreachable" (nobody
    // listens) fails the attempt at once instead of after the connect timeout.
    let socket = match super::srt::bind(local, super::srt::PULL_RECV_BUFFER) {
        Ok(s) => match s.connect(remote).await {
            Ok(()) => Arc::new(s),
            Err(e) => {
                metrics.connection_error(Protocol::Srt, Reason::PullSocket);
                warn!(error = %e, "srt pull: cannot open a UDP socket");
                return Attempt::Failed;
            }
        },
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullSocket);
            warn!(error = %e, "srt pull: cannot open a UDP socket");
            return Attempt::Failed;
        }
    };
    let state = match UdpSocketState::new(UdpSockRef::from(&*socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullSocket);
            warn!(error = %e, "srt pull: cannot set up the UDP socket");
            return Attempt::Failed;
        }
    };
    let mut sock = PullSocket {
        socket: socket.clone(),
        state: state.clone(),
        buf: vec![0u8; DATAGRAM_BUF],
        pending: VecDeque::new(),
        ingest: metrics
            .ingest_bytes
            .get_or_create(&ProtocolLabels {
                protocol: Protocol::Srt,
            })
            .clone(),
    };
    let secret = match os_secret() {
        Ok(s) => s,
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::Random);
            warn!(error = %e, "srt pull: no random bytes from the operating system");
            return Attempt::Failed;
        }
    };
    let mut config = CallerConfig::new(secret);
    config.stream_id = source.stream_id.clone();
    config.passphrase = source.passphrase.clone();
    config.key_length = source.key_length;
    config.latency = source.latency.unwrap_or(ctx.config.srt_latency);
    config.connect_timeout = source.connect_timeout;
    config.peer_idle_timeout = source.peer_idle_timeout;
    let conn = match handshake(&mut sock, remote, config).await {
        Ok(conn) => conn,
        Err((reason, e)) => {
            metrics.connection_error(Protocol::Srt, reason);
            warn!(peer = %remote, error = %e, "srt pull: cannot connect");
            return Attempt::Failed;
        }
    };
    metrics
        .connections
        .get_or_create(&ProtocolLabels {
            protocol: Protocol::Srt,
        })
        .inc();
    let publisher = match ctx.streams.begin_pull(id.clone()).await {
        Ok(p) => p,
        Err(e) => {
            metrics.refused(Protocol::Srt, e.reason());
            let mut conn = conn;
            let now = Instant::now();
            conn.close(now);
            while let Some(d) = conn.poll_transmit(now) {
                send(&socket, &state, remote, &d);
            }
            if matches!(e, crate::stream::PublishError::Draining) {
                info!("srt pull: worker draining, not publishing");
                return Attempt::Stop;
            }
            warn!(
                reason = e.reason().as_str(),
                "srt pull: publish refused: {e}"
            );
            return Attempt::Failed;
        }
    };
    info!(
        peer = %remote,
        epoch = publisher.epoch(),
        latency_ms = conn.latency().as_millis() as u64,
        encrypted = conn.is_encrypted(),
        "srt pull: connected, publishing"
    );
    let driver = ConnectionDriver::new(
        ctx.clone(),
        socket,
        state,
        conn,
        publisher,
        Inbox::Own(sock),
    );
    let started = Instant::now();
    let end = driver.run(shutdown.clone()).await;
    if end.reason == "worker draining" {
        return Attempt::Stop;
    }
    // A source that accepts and drops at once must not make us spin.
    if end.delivered > 0 && started.elapsed() >= BACKOFF_MAX {
        Attempt::Streamed
    } else {
        Attempt::Failed
    }
}

/// Runs the caller handshake on `sock` until it connects or fails (metric reason and
/// message).
async fn handshake(
    sock: &mut PullSocket,
    remote: SocketAddr,
    config: CallerConfig,
) -> Result<tidegate_srt::Connection, (Reason, String)> {
    let failed = |e: SrtError| {
        let reason = match e {
            SrtError::HandshakeTimeout => Reason::PullTimeout,
            SrtError::Rejected(_) => Reason::PullRejected,
            _ => Reason::PullHandshake,
        };
        (reason, e.to_string())
    };
    let mut caller = Caller::new(Instant::now(), remote, config).map_err(failed)?;
    loop {
        let now = Instant::now();
        caller.handle_timeout(now);
        if let Some(outcome) = caller.poll_outcome() {
            return outcome.map_err(failed);
        }
        while let Some(d) = caller.poll_transmit(now) {
            // The socket is connected to `remote`; unlike quinn-udp's send, tokio's reports
            // the ICMP refusal.
            match sock.socket.try_send(&d) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err((
                        Reason::PullRefused,
                        "connection refused (nobody listens)".into(),
                    ));
                }
                _ => {}
            }
        }
        let deadline = caller.poll_timeout().unwrap_or(now + BACKOFF_MIN);
        tokio::select! {
            r = sock.recv() => match r {
                Ok((from, d)) if from == remote => {
                    // Malformed handshake answers are ignored; the timeout decides.
                    let _ = caller.handle_datagram(Instant::now(), &d);
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err((Reason::PullRefused, "connection refused (nobody listens)".into()));
                }
                Err(_) => tokio::time::sleep_until(deadline.into()).await,
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = parse_srt_url(
            "srt://127.0.0.1:7001?streamid=%23!::r=live/cam,m=request&passphrase=correcthorse&pbkeylen=32&latency=200ms",
        )
        .unwrap();
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 7001);
        assert_eq!(s.stream_id.as_deref(), Some("#!::r=live/cam,m=request"));
        assert_eq!(s.passphrase.as_deref(), Some("correcthorse"));
        assert_eq!(s.key_length, KeyLength::Aes256);
        assert_eq!(s.latency, Some(Duration::from_millis(200)));
        assert!(!format!("{s:?}").contains("correcthorse"));
        let s = parse_srt_url("srt://encoder.example:9000?latency=300&conntimeo=1500").unwrap();
        assert_eq!(s.remote(), "encoder.example:9000");
        assert_eq!(s.latency, Some(Duration::from_millis(300)));
        assert_eq!(s.connect_timeout, Duration::from_millis(1500));
        let s = parse_srt_url("srt://[::1]:9000/").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 9000));
        assert_eq!(s.remote(), "[::1]:9000");
        assert!(parse_srt_url("srt://h:1?mode=caller&transtype=live&pkt_size=1316").is_ok());

        let bad = |u: &str, needle: &str| {
            let e = parse_srt_url(u).unwrap_err();
            assert!(e.contains(needle), "{u}: {e}");
        };
        bad("rtmp://h:1", "srt://");
        bad("srt://host", "port");
        bad("srt://host:0", "port");
        bad("srt://host:99999", "port");
        bad("srt://:9000", "host");
        bad("srt://h:1?streamid=#!::r=x", "%23");
        bad("srt://h:1?passphrase=short", "10 to 79");
        bad(
            "srt://h:1?passphrase=longenough1&pbkeylen=20",
            "16, 24 or 32",
        );
        bad("srt://h:1?pbkeylen=16", "needs a passphrase");
        bad("srt://h:1?latency=200000", "milliseconds");
        bad("srt://h:1?latency=fast", "milliseconds");
        bad("srt://h:1?mode=listener", "listener");
        bad("srt://h:1?nosuch=1", "unknown option `nosuch`");
        bad("srt://h:1?streamid", "no value");
        bad("srt://h:1?streamid=%zz", "percent");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("srt://h:1?streamid=a&passphrase=secretsecret&latency=1"),
            "srt://h:1?streamid=a&passphrase=<redacted>&latency=1"
        );
        assert_eq!(redact_url("srt://h:1"), "srt://h:1");
    }
}
