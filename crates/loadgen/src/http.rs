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
    tokio::time::timeout(HTTP_TIMEOUT, fut)
        .await
        .map_err(|_| GetError::Timeout)?
}
