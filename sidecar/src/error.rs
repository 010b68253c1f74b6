//! The sidecar's error type.

/// Everything that can go wrong in the sidecar library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ring buffer record that does not match the kernel/user ABI.
    #[error("malformed event from the kernel: {0}")]
    MalformedEvent(&'static str),
}

/// Result with the sidecar's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
