//! RTMPS: RTMP over TLS (rustls), on its own listener (`--rtmps-listen`).
//!
//! The accept loop and the connection driver are RTMP's ([`super::rtmp`]), with the same
//! caps: a connection holds its slot (`--max-connections`, per source, the descriptor
//! reserve) from the accept, through the TLS handshake. What RTMPS adds:
//! - [`handshake`]: the first byte is peeked, so a plain RTMP client (its first byte is the
//!   RTMP version, 3) or garbage is refused at once, before any TLS work; then the TLS
//!   handshake, within `--rtmp-handshake-timeout` of the accept. Every failure is counted
//!   (`tidegate_tls_handshake_failures_total{reason}`) and logged, rate-limited.
//! - [`Certificate`]: the server configuration in use, swapped when the PEM files change
//!   ([`Certificate::watch`] polls their size, inode and mtime every
//!   [`CERTIFICATE_POLL_INTERVAL`]). A handshake takes the configuration current when it
//!   starts, so live connections keep theirs; a reload that fails (a file half-written, a
//!   key that does not match) keeps the previous certificate; when the files stay so for one
//!   more poll it warns (once per change) and counts
//!   `tidegate_tls_certificate_reloads_total{result="failed"}`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tidegate_config::tls::{TlsError, TlsFiles};
use tidegate_events::metrics::{CertificateReload, Metrics, TlsHandshakeFailure};
use tidegate_limits::LogLimiter;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Context;

/// How often the certificate files are looked at for a change.
pub const CERTIFICATE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The first byte of a TLS handshake record (content type 22).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The first byte a plain RTMP client sends (C0: the RTMP version).
const RTMP_VERSION: u8 = 0x03;

/// Accepts RTMPS connections until `shutdown` is cancelled: RTMP's accept loop and driver
/// over TLS with `cert`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    cert: Arc<Certificate>,
    shutdown: CancellationToken,
) {
    super::rtmp::accept_loop(listener, ctx, Some(cert), shutdown).await;
}

/// What identifies a version of a file: a replaced file (rename) has another inode, an
/// edited one another size or mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The RTMPS certificate in use, reloaded when its files change.
pub struct Certificate {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificate {
    /// Reads the files; a failure here is a failure to start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(config),
        }))
    }

    /// The acceptor for a new handshake, with the certificate in use now.
    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files again: on success new handshakes use them, on failure the previous
    /// certificate stays.
    fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    fn stamps(&self) -> (Option<FileStamp>, Option<FileStamp>) {
        (stamp(&self.files.cert), stamp(&self.files.key))
    }

    /// Polls the files every [`CERTIFICATE_POLL_INTERVAL`] until `stop`, reloading after
    /// each change. A reload that fails is tried again at the next change of either file;
    /// it is reported (a warning, the `failed` count) only when the files then stay as they
    /// are for one more poll, so replacing the certificate and then the key is not a
    /// failure.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut seen = self.stamps();
        // A failed reload of the files as they are now, not reported yet.
        let mut unreported: Option<TlsError> = None;
        let mut tick = tokio::time::interval(CERTIFICATE_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = self.stamps();
            if now == seen {
                if let Some(e) = unreported.take() {
                    metrics.tls_certificate_reloaded(CertificateReload::Failed);
                    warn!(error = %e, "rtmps: certificate files changed but cannot be used; keeping the previous certificate");
                }
                continue;
            }
            seen = now;
            unreported = None;
            match self.reload() {
                Ok(()) => {
                    metrics.tls_certificate_reloaded(CertificateReload::Reloaded);
                    info!(
                        cert = %self.files.cert.display(),
                        "rtmps: certificate reloaded; new handshakes use it"
                    );
                }
                Err(e) => unreported = Some(e),
            }
        }
    }
}

/// A TLS handshake that failed.
pub(crate) struct HandshakeFailure {
    reason: TlsHandshakeFailure,
    detail: String,
}

impl HandshakeFailure {
    fn new(reason: TlsHandshakeFailure, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// Counts it and logs it (rate-limited: anyone can cause one).
    pub(crate) fn report(&self, metrics: &Metrics, log: &LogLimiter) {
        metrics.tls_handshake_failed(self.reason);
        if log.allow(Instant::now()) {
            warn!(
                reason = self.reason.as_str(),
                error = %self.detail,
                "rtmps connection refused: TLS handshake failed"
            );
        }
    }
}

/// The TLS handshake of an accepted connection, by `deadline`: `Ok(None)` when the worker
/// shuts down meanwhile.
pub(crate) async fn handshake(
    sock: TcpStream,
    cert: &Certificate,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<Option<TlsStream<TcpStream>>, HandshakeFailure> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let timeout =
        || HandshakeFailure::new(TlsHandshakeFailure::Timeout, "no TLS handshake in time");
    let handshake = async {
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, sock.peek(&mut first)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) => {
                return Err(HandshakeFailure::new(
                    TlsHandshakeFailure::Closed,
                    e.to_string(),
                ))
            }
            Ok(Ok(0)) => {
                return Err(HandshakeFailure::new(
                    TlsHandshakeFailure::Closed,
                    "closed before sending anything",
                ))
            }
            Ok(Ok(_)) => {}
        }
        match first[0] {
            TLS_HANDSHAKE_RECORD => {}
            RTMP_VERSION => {
                return Err(HandshakeFailure::new(
                    TlsHandshakeFailure::PlainRtmp,
                    "the client speaks plain RTMP to the RTMPS port: publish to rtmps:// here, or rtmp:// on the RTMP port",
                ))
            }
            other => {
                return Err(HandshakeFailure::new(
                    TlsHandshakeFailure::NotTls,
                    format!("the first byte ({other:#04x}) starts no TLS handshake"),
                ))
            }
        }
        match tokio::time::timeout_at(deadline, cert.acceptor().accept(sock)).await {
            Err(_) => Err(timeout()),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(
                HandshakeFailure::new(TlsHandshakeFailure::Closed, e.to_string()),
            ),
            Ok(Err(e)) => Err(HandshakeFailure::new(
                TlsHandshakeFailure::Tls,
                e.to_string(),
            )),
        }
    };
    tokio::select! {
        r = handshake => r.map(Some),
        () = shutdown.cancelled() => Ok(None),
    }
}
