//! OBI admission webhook: injects the OBI eBPF sidecar into Deployments of opted-in namespaces.
//!
//! The decision is pure ([`admission::review`] → [`injection::plan`]): AdmissionReview bytes in,
//! AdmissionReview bytes out, never a panic, failing open. [`server`] puts it behind rustls with
//! certificate reloading, limits, metrics and graceful shutdown.

pub mod admission;
pub mod config;
pub mod error;
pub mod injection;
pub mod logging;
pub mod metrics;
pub mod ports;
pub mod quantity;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod status;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
