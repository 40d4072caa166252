//! Where to publish and play: the URLs a worker prints when it starts, built from the
//! addresses its listeners actually bound (so `--rtmp-listen 127.0.0.1:0` shows the port the
//! kernel chose).
//!
//! A wildcard listen address (`0.0.0.0`, `::`) is shown as `localhost`, which works on this
//! machine; the text says so and names the host for clients elsewhere.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The stream key placeholder in the printed URLs.
const KEY: &str = "<key>";

/// The host part of a URL for clients of `addr`: `localhost` for a wildcard address, the
/// address itself (IPv6 in brackets) otherwise.
fn host_of(addr: SocketAddr) -> String {
    match addr {
        a if a.ip().is_unspecified() => "localhost".to_owned(),
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// The publish, play and dashboard URLs of a worker listening on these addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `rtmp://HOST:PORT/live/<key>`.
    pub rtmp: String,
    /// `rtmps://HOST:PORT/live/<key>`, when RTMPS is on.
    pub rtmps: Option<String>,
    /// `srt://HOST:PORT?streamid=#!::r=live/<key>,m=publish` (the access-control syntax).
    pub srt: String,
    /// `srt://HOST:PORT?streamid=<key>` (the bare form).
    pub srt_bare: String,
    /// `http://HOST:PORT/hls/default/<key>/index.m3u8` (open mode: tenant `default`).
    pub play: String,
    /// `http://HOST:PORT/`.
    pub dashboard: String,
    /// Whether some listener is on a wildcard address (shown as `localhost`).
    pub wildcard: bool,
}

impl Urls {
    /// The URLs for listeners bound to `rtmp`, `srt` and `http`.
    pub fn new(rtmp: SocketAddr, srt: SocketAddr, http: SocketAddr) -> Self {
        let (r, s, h) = (host_of(rtmp), host_of(srt), host_of(http));
        Self {
            rtmp: format!("rtmp://{r}:{}/live/{KEY}", rtmp.port()),
            rtmps: None,
            srt: format!(
                "srt://{s}:{}?streamid=#!::r=live/{KEY},m=publish",
                srt.port()
            ),
            srt_bare: format!("srt://{s}:{}?streamid={KEY}", srt.port()),
            play: format!("http://{h}:{}/hls/default/{KEY}/index.m3u8", http.port()),
            dashboard: format!("http://{h}:{}/", http.port()),
            wildcard: [rtmp, srt, http].iter().any(|a| a.ip().is_unspecified()),
        }
    }

    /// The same, with the RTMPS listener bound to `rtmps`.
    pub fn with_rtmps(mut self, rtmps: SocketAddr) -> Self {
        self.rtmps = Some(format!(
            "rtmps://{}:{}/live/{KEY}",
            host_of(rtmps),
            rtmps.port()
        ));
        self.wildcard |= rtmps.ip().is_unspecified();
        self
    }

    /// The text a worker logs once at start: one URL a line, then which host `localhost`
    /// stands for when a listener is on a wildcard address.
    pub fn banner(&self, host_name: Option<&str>) -> String {
        let mut t = String::from("publish and play at:\n");
        let _ = writeln!(t, "  publish RTMP  {}", self.rtmp);
        if let Some(rtmps) = &self.rtmps {
            let _ = writeln!(t, "  publish RTMPS {rtmps}");
        }
        let _ = writeln!(t, "  publish SRT   {}", self.srt);
        let _ = writeln!(t, "                {}  (bare stream id)", self.srt_bare);
        let _ = writeln!(t, "  play HLS      {}", self.play);
        let _ = write!(t, "  dashboard     {}", self.dashboard);
        if self.wildcard {
            let elsewhere = host_name.map_or_else(
                || "this machine's name or address".to_owned(),
                |h| format!("`{h}` (this host's name) or its address"),
            );
            let _ = write!(
                t,
                "\n  (listening on all interfaces: `localhost` works on this machine; from \
                 elsewhere use {elsewhere})"
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_addresses_are_shown_as_bound() {
        let u = Urls::new(
            "127.0.0.1:41935".parse().unwrap(),
            "127.0.0.1:49000".parse().unwrap(),
            "[::1]:48080".parse().unwrap(),
        );
        assert_eq!(u.rtmp, "rtmp://127.0.0.1:41935/live/<key>");
        assert_eq!(
            u.srt,
            "srt://127.0.0.1:49000?streamid=#!::r=live/<key>,m=publish"
        );
        assert_eq!(u.srt_bare, "srt://127.0.0.1:49000?streamid=<key>");
        assert_eq!(u.play, "http://[::1]:48080/hls/default/<key>/index.m3u8");
        assert_eq!(u.dashboard, "http://[::1]:48080/");
        assert!(!u.wildcard);
        assert!(!u.banner(Some("box")).contains("all interfaces"));
    }

    #[test]
    fn wildcard_addresses_are_shown_as_localhost_and_say_so() {
        let u = Urls::new(
            "0.0.0.0:1935".parse().unwrap(),
            "0.0.0.0:9000".parse().unwrap(),
            "[::]:8080".parse().unwrap(),
        );
        assert_eq!(u.rtmp, "rtmp://localhost:1935/live/<key>");
        assert_eq!(u.play, "http://localhost:8080/hls/default/<key>/index.m3u8");
        let text = u.banner(Some("box"));
        assert!(text.contains("listening on all interfaces"), "{text}");
        assert!(text.contains("`box`"), "{text}");
        assert_eq!(text.lines().count(), 7, "{text}");
    }

    #[test]
    fn the_rtmps_url_is_shown_when_rtmps_listens() {
        let u = Urls::new(
            "127.0.0.1:1935".parse().unwrap(),
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        assert_eq!(u.rtmps, None);
        assert!(!u.banner(None).contains("rtmps://"));
        let u = u.with_rtmps("0.0.0.0:1936".parse().unwrap());
        assert_eq!(
            u.rtmps.as_deref(),
            Some("rtmps://localhost:1936/live/<key>")
        );
        let text = u.banner(Some("box"));
        assert!(
            text.contains("publish RTMPS rtmps://localhost:1936/live/<key>"),
            "{text}"
        );
        assert!(text.contains("listening on all interfaces"), "{text}");
    }
}
