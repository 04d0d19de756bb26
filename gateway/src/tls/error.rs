//! Why a TLS configuration could not be built or a handshake failed; each names the file at fault.

use std::path::PathBuf;

/// A TLS setup or handshake error.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `TlsSettings::validate` refused the settings; the message names the field.
    #[error("invalid TLS settings: {0}")]
    Settings(String),
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{}: malformed PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// A certificate file (or CA bundle) holds no `CERTIFICATE` block.
    #[error("{}: no certificate in PEM (expected a `BEGIN CERTIFICATE` block)", path.display())]
    NoCertificate { path: PathBuf },
    /// A key file holds no private key.
    #[error(
        "{}: no private key in PEM (expected a PKCS#8, PKCS#1 or SEC1 `PRIVATE KEY` block)",
        path.display()
    )]
    NoKey { path: PathBuf },
    /// A certificate or key is not usable (bad DER, unsupported algorithm).
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// The private key does not belong to the leaf certificate.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the assembled configuration.
    #[error("cannot build TLS configuration: {0}")]
    Config(String),
    /// The handshake with a client failed (protocol error, refused client certificate, I/O).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}
