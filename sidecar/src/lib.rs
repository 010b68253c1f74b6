//! The OBI sidecar: captures the traffic of its pod's processes with eBPF, parses the protocols it
//! carries, and exports OpenTelemetry spans and metrics.
//!
//! The data path, top-down: [`capture`] (kernel hooks and their events) → [`connection`]
//! (per-connection byte streams, trace context) → [`protocol`] (one parser per protocol) →
//! [`transaction`] → [`telemetry`] (one mapping per protocol to spans and metrics) → [`export`].

pub mod capture;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod error;
pub mod export;
pub mod protocol;
pub mod run;
pub mod sock_diag;
pub mod telemetry;
pub mod transaction;

pub use error::{Error, Result};
