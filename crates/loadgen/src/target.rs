//! Publish URLs: `rtmp://HOST[:PORT]/APP/KEY` (works now) and `srt://HOST:PORT?streamid=...`
//! (designed for, refused until the SRT caller lands). `{i}` anywhere in a URL template is
//! replaced by the publisher's (or viewer's) index.

use crate::error::LoadgenError;

/// Default RTMP port.
const RTMP_DEFAULT_PORT: u16 = 1935;

/// The transport a publisher uses. The pacing ([`crate::schedule`]) and the accounting
/// ([`crate::report`]) are shared; each transport has its own driver task:
/// RTMP sends each FLV tag body as one RTMP message through
/// [`tidegate_rtmp::ClientSession`]. SRT will mux the same tags into MPEG-TS and send it in
/// 1316-byte payloads through the `tidegate-srt` caller; [`Protocol::parse`] refuses it
/// until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `rtmp://`
    Rtmp,
    /// `srt://` (not yet supported).
    Srt,
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

/// Replaces every `{i}` in `template` with `index`.
pub fn expand(template: &str, index: usize) -> String {
    template.replace("{i}", &index.to_string())
}

impl Protocol {
    /// The protocol of a publish URL template; SRT is refused with
    /// [`LoadgenError::Unsupported`], other schemes with [`LoadgenError::BadUrl`].
    pub fn parse(url: &str) -> Result<Protocol, LoadgenError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("rtmp") => Ok(Protocol::Rtmp),
            Some("srt") => Err(LoadgenError::Unsupported(
                "SRT publishing (srt://) — it lands with the SRT caller; use rtmp:// for now",
            )),
            Some("rtmps") => Err(LoadgenError::Unsupported("RTMPS (rtmps://)")),
            _ => Err(LoadgenError::BadUrl {
                url: url.into(),
                why: "the publish URL must start with rtmp://",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rtmp_urls() {
        let t = RtmpTarget::parse(&expand("rtmp://127.0.0.1:1936/live/bench{i}", 7)).unwrap();
        assert_eq!(
            t,
            RtmpTarget {
                addr: "127.0.0.1:1936".into(),
                app: "live".into(),
                stream_key: "bench7".into(),
                tc_url: "rtmp://127.0.0.1:1936/live".into(),
            }
        );
        let t = RtmpTarget::parse("rtmp://example.com/app/a/b?token=x").unwrap();
        assert_eq!(t.addr, "example.com:1935");
        assert_eq!(t.stream_key, "a/b?token=x");
        let t = RtmpTarget::parse("rtmp://[::1]:19350/live/k").unwrap();
        assert_eq!(t.addr, "[::1]:19350");
        assert_eq!(
            RtmpTarget::parse("rtmp://[::1]/live/k").unwrap().addr,
            "[::1]:1935"
        );
    }

    #[test]
    fn rejects_bad_urls_without_echoing_the_key() {
        for u in [
            "http://h/live/k",
            "rtmp://",
            "rtmp://h",
            "rtmp://h/live",
            "rtmp://h/live/",
            "rtmp://:1935/live/k",
            "rtmp://h:x/live/k",
            "rtmp://h:99999/live/secret",
        ] {
            let e = RtmpTarget::parse(u).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{u}: {e}");
        }
    }

    #[test]
    fn srt_is_designed_for_but_refused_clearly() {
        assert_eq!(Protocol::parse("rtmp://h/live/k").unwrap(), Protocol::Rtmp);
        let e = Protocol::parse("srt://h:9000?streamid=k").unwrap_err();
        assert!(matches!(e, LoadgenError::Unsupported(_)));
        assert!(e.to_string().contains("not yet supported"), "{e}");
        assert!(matches!(
            Protocol::parse("ftp://h/x"),
            Err(LoadgenError::BadUrl { .. })
        ));
    }

    #[test]
    fn expands_every_placeholder() {
        assert_eq!(expand("a{i}/b{i}", 3), "a3/b3");
        assert_eq!(expand("plain", 3), "plain");
    }
}
