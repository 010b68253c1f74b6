//! The connection layer: what every protocol shares and none knows about. Connection identity
//! and lifetime, which side the instrumented process is on, and each direction of a connection
//! as an ordered byte stream with gaps, whatever the capture mode feeds it.

pub mod reassembly;
pub mod stream;
