//! The RTMPS certificate: PEM files read and checked (the chain parses, the key parses and
//! matches the chain's first certificate), turned into the `rustls` server configuration
//! the RTMPS listener hands to each handshake.
//!
//! The crypto provider is aws-lc-rs, the one `rustls` is already built with for reqwest and
//! redis; it is named here rather than taken from the process default, so nothing depends on
//! who installed one first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of the RTMPS certificate (`tls-cert`, `tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("{path}: no PEM certificate could be read ({reason})")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file holds no PEM private key, or a broken one.
    #[error("{path}: no PEM private key could be read ({reason})")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's, or `rustls` refuses the pair.
    #[error("the key {key} does not go with the certificate {cert}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Reads both files and builds the server configuration; every failure names its file.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let cert_error = |reason: String| TlsError::Cert {
            path: self.cert.clone(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_error("no `BEGIN CERTIFICATE` section".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair_error = |reason: String| TlsError::Pair {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason,
        };
        // `with_single_cert` checks that the key's public half is the leaf certificate's.
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| pair_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| pair_error(e.to_string()))?;
        Ok(Arc::new(config))
    }
}
