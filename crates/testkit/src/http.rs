//! HTTP as the tests need it: a blocking client (`ureq`, no redirects, 15 s timeout), URI
//! resolution against a playlist URL, and a tiny static file server.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The shared client: 15 s timeout, redirects not followed.
pub(crate) fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(15))
            .redirects(0)
            .build()
    })
}

/// GET; transport errors are `Err`, any HTTP status is `Ok`.
pub fn try_get(url: &str) -> Result<Resp, String> {
    try_get_with(url, None)
}

/// GET with `Authorization: Bearer TOKEN` when `bearer` is given; as [`try_get`] otherwise.
pub fn try_get_with(url: &str, bearer: Option<&str>) -> Result<Resp, String> {
    let mut req = agent().get(url);
    if let Some(token) = bearer {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("GET {url}: {e}")),
    };
    let status = resp.status();
    let content_type = resp.header("content-type").map(str::to_string);
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    Ok(Resp {
        status,
        content_type,
        body,
    })
}

/// GET, panicking on a transport error.
pub fn get(url: &str) -> Resp {
    try_get(url).unwrap_or_else(|e| panic!("{e}"))
}

/// POST with an empty body; transport errors are `Err`, any HTTP status is `Ok(status)`.
pub fn try_post(url: &str) -> Result<u16, String> {
    match agent().post(url).send_bytes(&[]) {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(s, _)) => Ok(s),
        Err(e) => Err(format!("POST {url}: {e}")),
    }
}

/// Resolves a playlist-relative URI.
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return uri.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if let Some(rest) = uri.strip_prefix('/') {
        // scheme://host[:port]/...
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[after_scheme..]
            .find('/')
            .map(|i| i + after_scheme)
            .unwrap_or(base.len());
        return format!("{}/{rest}", &base[..host_end]);
    }
    match base.rfind('/') {
        Some(i) => format!("{}{uri}", &base[..=i]),
        None => uri.to_string(),
    }
}

/// A tiny static file server for `root` on a loopback port (for checking the checker on
/// playlists that ffmpeg's own HLS muxer writes). Serves until the process exits.
pub fn serve_dir(root: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            thread::spawn(move || serve_one(stream, &root));
        }
    });
    addr
}

fn serve_one(mut s: TcpStream, root: &Path) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).into_owned();
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
    let rel = path.split('?').next().unwrap_or("").trim_start_matches('/');
    let file = root.join(rel);
    let (status, ctype, body) = if rel.contains("..") {
        ("403 Forbidden", "text/plain", b"no".to_vec())
    } else if let Ok(body) = fs::read(&file) {
        let ctype = match file.extension().and_then(|e| e.to_str()) {
            Some("m3u8") => "application/vnd.apple.mpegurl",
            Some("ts") => "video/mp2t",
            Some("m4s") | Some("mp4") => "video/mp4",
            _ => "application/octet-stream",
        };
        ("200 OK", ctype, body)
    } else {
        ("404 Not Found", "text/plain", b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body);
}

/// `method url` with `Authorization: Bearer token` and an optional JSON body, as the admin
/// API's tests call it: the status and the JSON answer (an error status is an answer too;
/// a transport failure or an answer that is not JSON fails the test).
pub fn api_as(
    token: &str,
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = api_raw(Some(token), method, url, body);
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: {status}, not JSON ({e}): {text}"));
    (status, json)
}

/// As [`api_as`], with or without a token, the answer's body as text (what a refusal
/// outside the API's JSON looks like).
pub fn api_raw(
    token: Option<&str>,
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let mut req = ureq::request(method, url);
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let resp = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp
        .into_string()
        .unwrap_or_else(|e| panic!("{method} {url}: {status}, unreadable body: {e}"));
    (status, text)
}
