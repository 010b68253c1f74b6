//! The crate's error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the webhook. The admission decision itself never fails: it fails
/// open, so these only reach callers as startup errors, warnings or HTTP 400 answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration variable is missing a valid value; `variable` is the full environment name.
    #[error("{variable}: {reason}")]
    Config { variable: String, reason: String },

    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    /// The certificate or key is unusable (bad PEM, no certificate, key does not match, ...).
    #[error("invalid TLS material: {0}")]
    Tls(String),

    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },

    /// Logging could not be set up.
    #[error("cannot initialise logging: {0}")]
    Logging(String),

    /// A resource quantity that the Kubernetes grammar does not accept.
    #[error("{0}")]
    Quantity(&'static str),

    /// An `obi-injection/open-port` list that is not ports and ranges.
    #[error("{0}")]
    PortList(String),

    /// A request body that is not an `admission.k8s.io/v1` AdmissionReview with a request.
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Review(String),

    /// An AdmissionReview response could not be encoded.
    #[error("cannot encode the AdmissionReview response: {0}")]
    Encode(String),

    /// An I/O error while serving (other than per-connection errors, which are only logged).
    #[error("server I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
