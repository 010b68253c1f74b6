//! Application protocol parsing: pure functions and state machines over captured bytes, with no
//! knowledge of sockets or events.

pub mod chunked;
pub mod http1;
pub mod http2;
pub mod stream;
