//! A minimal HTTP/1.1 GET over hyper's connection-pooling client (keep-alive, like a
//! player).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Time allowed for one GET, response body included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (a segment of a high-bitrate stream is a few MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One client with its own connection pool.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Why a GET failed before it produced a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// Connect, send or receive failed.
    Transport,
    /// [`HTTP_TIMEOUT`] passed.
    Timeout,
    /// The URL could not be parsed or uses another scheme than `http://`.
    BadUrl,
    /// The body exceeded [`MAX_BODY_BYTES`].
    TooLarge,
}

impl GetError {
    /// The error kind as counted in the report.
    pub fn kind(self) -> &'static str {
        match self {
            GetError::Transport => "transport",
            GetError::Timeout => "timeout",
            GetError::BadUrl => "bad_url",
            GetError::TooLarge => "too_large",
        }
    }
}

/// A new client (HTTP only; the viewers play from the origin, not through TLS).
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`: the status and the body.
pub async fn get(client: &HttpClient, url: &str) -> Result<(u16, Bytes), GetError> {
    get_body(client, url, HTTP_TIMEOUT).await
}

/// GET `url` within `timeout` (a blocking playlist reload is held by the server): the
/// status and the body.
pub async fn get_body(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), GetError> {
    let uri: http::Uri = url.parse().map_err(|_| GetError::BadUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(GetError::BadUrl);
    }
    let fut = async {
        let resp = client.get(uri).await.map_err(|_| GetError::Transport)?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES);
        let body = limited
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    GetError::TooLarge
                } else {
                    GetError::Transport
                }
            })?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| GetError::Timeout)?
}

/// A GET timed as a player sees it: when the response head and the first body bytes
/// arrived, and when the body was complete (a chunked response of a segment being written
/// delivers its first parts long before its end).
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// The status.
    pub status: u16,
    /// Body bytes.
    pub bytes: u64,
    /// When the first body bytes (or the end of an empty body) arrived.
    pub first_byte: tokio::time::Instant,
    /// When the body was complete.
    pub done: tokio::time::Instant,
}

/// GET `url`, reading the body as it arrives (not kept) and timing it; `timeout` bounds the
/// whole exchange.
pub async fn get_timed(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<Timed, GetError> {
    let uri: http::Uri = url.parse().map_err(|_| GetError::BadUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(GetError::BadUrl);
    }
    let fut = async {
        let resp = client.get(uri).await.map_err(|_| GetError::Transport)?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut first_byte = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| GetError::Transport)?;
            if let Some(data) = frame.data_ref() {
                if data.is_empty() {
                    continue;
                }
                first_byte.get_or_insert_with(tokio::time::Instant::now);
                bytes += data.len() as u64;
                if bytes > MAX_BODY_BYTES as u64 {
                    return Err(GetError::TooLarge);
                }
            }
        }
        let done = tokio::time::Instant::now();
        Ok(Timed {
            status,
            bytes,
            first_byte: first_byte.unwrap_or(done),
            done,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| GetError::Timeout)?
}
