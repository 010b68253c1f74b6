//! The OBI sidecar: loads pod-scoped eBPF capture, turns HTTP/1.x traffic into OpenTelemetry
//! spans and metrics, and exports them.

pub mod capture;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod error;
pub mod export;
pub mod metrics;
pub mod printer;
pub mod protocol;
pub mod route;
pub mod run;
pub mod sock_diag;
pub mod spans;
pub mod tracker;
pub mod transaction;

pub use error::{Error, Result};
