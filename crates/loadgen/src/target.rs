//! Publish URLs: `rtmp://HOST[:PORT]/APP/KEY` and
//! `srt://HOST:PORT[?streamid=...&passphrase=...&pbkeylen=16&latency=120]`. `{i}` anywhere
//! in a URL template is replaced by the publisher's (or viewer's) index, and `{N+i}` by
//! `N` plus the index (one port per publisher: `srt://127.0.0.1:{9000+i}`).

use std::time::Duration;

use crate::error::LoadgenError;

/// Default RTMP port.
const RTMP_DEFAULT_PORT: u16 = 1935;
/// Default SRT port (tidegate's `--srt-listen`).
const SRT_DEFAULT_PORT: u16 = 9000;
/// Longest SRT latency accepted in a URL, ms (the handshake field is 16 bits).
const MAX_SRT_LATENCY_MS: u64 = 65_535;

/// The transport a publisher uses. The ramp-up, the keyframe staggering
/// ([`crate::schedule`]) and the accounting ([`crate::report`]) are shared; each transport
/// has its own driver task: RTMP sends each FLV tag body as one RTMP message through
/// [`tidegate_rtmp::ClientSession`] ([`crate::rtmp_publisher`]); SRT sends the input as
/// MPEG-TS in 1316-byte payloads through the [`tidegate_srt::Caller`]
/// ([`crate::srt_publisher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `rtmp://`
    Rtmp,
    /// `srt://`
    Srt,
}

/// One publisher's SRT destination.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtTarget {
    /// `host:port` to send to.
    pub addr: String,
    /// Stream ID (`SRTO_STREAMID`; a secret like an RTMP key: never printed).
    pub stream_id: String,
    /// Passphrase to encrypt with (`SRTO_PASSPHRASE`).
    pub passphrase: Option<String>,
    /// Key length in bytes (`SRTO_PBKEYLEN`: 16, 24 or 32).
    pub key_bytes: usize,
    /// Latency asked for (`SRTO_LATENCY`, `latency=` in milliseconds as in libsrt URIs).
    pub latency: Option<Duration>,
}

impl std::fmt::Debug for SrtTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtTarget")
            .field("addr", &self.addr)
            .field("encrypted", &self.passphrase.is_some())
            .field("key_bytes", &self.key_bytes)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

/// One publisher's RTMP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpTarget {
    /// `host:port` to connect to.
    pub addr: String,
    /// Application (`live`).
    pub app: String,
    /// Stream key, with any `?query` (a secret: never print it).
    pub stream_key: String,
    /// `rtmp://host:port/app`, announced in `connect`.
    pub tc_url: String,
}

/// Replaces every `{i}` in `template` with `index`, and every `{N+i}` (N decimal) with
/// `N + index`.
pub fn expand(template: &str, index: usize) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, from) = rest.split_at(open);
        out.push_str(before);
        let inner = from.get(1..).and_then(|r| r.find('}').map(|c| &r[..c]));
        let value = inner.and_then(|inner| {
            if inner == "i" {
                return Some(index);
            }
            let base = inner.strip_suffix("+i")?;
            if base.is_empty() || !base.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            base.parse::<usize>().ok()?.checked_add(index)
        });
        match (inner, value) {
            (Some(inner), Some(v)) => {
                out.push_str(&v.to_string());
                rest = &from[inner.len() + 2..];
            }
            _ => {
                out.push('{');
                rest = &from[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Protocol {
    /// The protocol of a publish URL template; RTMPS is refused with
    /// [`LoadgenError::Unsupported`], other schemes with [`LoadgenError::BadUrl`].
    pub fn parse(url: &str) -> Result<Protocol, LoadgenError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("rtmp") => Ok(Protocol::Rtmp),
            Some("srt") => Ok(Protocol::Srt),
            Some("rtmps") => Err(LoadgenError::Unsupported("RTMPS (rtmps://)")),
            _ => Err(LoadgenError::BadUrl {
                url: url.into(),
                why: "the publish URL must start with rtmp:// or srt://",
            }),
        }
    }
}

impl RtmpTarget {
    /// Parses `rtmp://HOST[:PORT]/APP/KEY` (the key may contain `/` and a `?query`).
    /// Errors name the URL template, never the expanded key.
    pub fn parse(url: &str) -> Result<RtmpTarget, LoadgenError> {
        let bad = |why| LoadgenError::BadUrl {
            url: "(publish URL)".into(),
            why,
        };
        let rest = url
            .strip_prefix("rtmp://")
            .or_else(|| url.strip_prefix("RTMP://"))
            .ok_or(bad("the scheme must be rtmp://"))?;
        let (authority, path) = rest.split_once('/').ok_or(bad("no /APP/KEY path"))?;
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let addr = if authority.starts_with('[') {
            // [v6]:port or [v6]
            match authority.rsplit_once("]:") {
                Some((_, port)) => {
                    port.parse::<u16>().map_err(|_| bad("bad port"))?;
                    authority.to_string()
                }
                None => format!("{authority}:{RTMP_DEFAULT_PORT}"),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => {
                    if host.is_empty() {
                        return Err(bad("no host"));
                    }
                    port.parse::<u16>().map_err(|_| bad("bad port"))?;
                    authority.to_string()
                }
                None => format!("{authority}:{RTMP_DEFAULT_PORT}"),
            }
        };
        let (app, key) = path
            .split_once('/')
            .ok_or(bad("no stream key after the app"))?;
        if app.is_empty() || key.is_empty() {
            return Err(bad("empty app or stream key"));
        }
        Ok(RtmpTarget {
            tc_url: format!("rtmp://{addr}/{app}"),
            addr,
            app: app.to_string(),
            stream_key: key.to_string(),
        })
    }
}

impl SrtTarget {
    /// Parses `srt://HOST[:PORT][?streamid=...&passphrase=...&pbkeylen=N&latency=MS]`
    /// (values may be percent-encoded; other libsrt URI options are ignored). Without a
    /// `streamid`, publisher `index` sends `#!::r=live/bench{index},m=publish`, the keys
    /// of the default RTMP URL. Errors never echo the stream ID or the passphrase.
    pub fn parse(url: &str, index: usize) -> Result<SrtTarget, LoadgenError> {
        let bad = |why| LoadgenError::BadUrl {
            url: "(SRT publish URL)".into(),
            why,
        };
        let rest = url
            .strip_prefix("srt://")
            .or_else(|| url.strip_prefix("SRT://"))
            .ok_or(bad("the scheme must be srt://"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected srt://HOST:PORT?streamid=..."));
        }
        let addr = host_port(authority, SRT_DEFAULT_PORT).ok_or(bad("bad host or port"))?;
        let mut t = SrtTarget {
            addr,
            stream_id: format!("#!::r=live/bench{index},m=publish"),
            passphrase: None,
            key_bytes: 16,
            latency: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or(bad("bad percent-encoding in the query"))?;
            match k {
                "streamid" => {
                    if v.is_empty() || v.len() > 512 {
                        return Err(bad("the streamid must be 1 to 512 bytes"));
                    }
                    t.stream_id = v;
                }
                "passphrase" => {
                    if !(10..=79).contains(&v.len()) {
                        return Err(bad("the passphrase must be 10 to 79 characters"));
                    }
                    t.passphrase = Some(v);
                }
                "pbkeylen" => {
                    t.key_bytes = match v.parse::<usize>() {
                        Ok(n @ (16 | 24 | 32)) => n,
                        _ => return Err(bad("pbkeylen must be 16, 24 or 32")),
                    };
                }
                "latency" => {
                    let ms = v
                        .parse::<u64>()
                        .ok()
                        .filter(|&ms| ms <= MAX_SRT_LATENCY_MS)
                        .ok_or(bad("latency must be milliseconds (0 to 65535)"))?;
                    t.latency = Some(Duration::from_millis(ms));
                }
                _ => {}
            }
        }
        Ok(t)
    }
}

/// `host:port`, `[v6]:port`, or either without the port (then `default_port`).
fn host_port(authority: &str, default_port: u16) -> Option<String> {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((_, port)) => {
                port.parse::<u16>().ok()?;
                Some(authority.to_string())
            }
            None if authority.ends_with(']') => Some(format!("{authority}:{default_port}")),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            if host.is_empty() || host.contains(':') {
                return None;
            }
            port.parse::<u16>().ok()?;
            Some(authority.to_string())
        }
        None => Some(format!("{authority}:{default_port}")),
    }
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`). `None` on a bad escape or a
/// result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
