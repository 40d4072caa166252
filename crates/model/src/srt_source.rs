//! [`SrtSource`]: a `[[pull]]` entry's `srt://host:port?...` URL, parsed once (libsrt's URI
//! syntax, caller mode).

use std::time::Duration;

use tidegate_srt::KeyLength;

/// Largest receive latency a pull URL may ask for.
const MAX_LATENCY: Duration = Duration::from_secs(10);

/// A parsed `srt://host:port?...` pull URL (libsrt's URI syntax, caller mode).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtSource {
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

impl std::fmt::Debug for SrtSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtSource")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("stream_id", &self.stream_id)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("key_length", &self.key_length)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl SrtSource {
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
/// (see [`SrtSource`]); times are in milliseconds as libsrt and `srt-live-transmit` take
/// them. Values may be percent-encoded (a stream ID `#!::r=...` must be written `%23!::r=...`).
pub fn parse_srt_url(url: &str) -> Result<SrtSource, String> {
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
    let mut src = SrtSource {
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

impl std::str::FromStr for SrtSource {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        parse_srt_url(url)
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
